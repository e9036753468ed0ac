"""A Gemini protocol client: what aiohttp is to the HTTP fetcher, this is to gemini://.

Wire only: connect (with the caller's address check on every resolved address), TLS with SNI,
one request line, the `<status> <meta>` header, the body. Status meanings, redirects, trust of
certificate keys and deadlines belong to the fetcher (digest.fetch), which knows the policy.

Certificates are not verified here: Gemini capsules mostly use self-signed certificates, so
the caller pins each host's key on first use. `Connection.fingerprint` is the SHA-256 of the
certificate's SubjectPublicKeyInfo rather than of the whole certificate, so a capsule that
renews its certificate with the same key (the usual way) keeps its pin; expiry dates are
not looked at at all, since with a pinned key they add no safety.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, uses_netloc, uses_relative

DEFAULT_PORT = 1965
MAX_URL_BYTES = 1024
MAX_META_BYTES = 1024
_MAX_HEADER = 2 + 1 + MAX_META_BYTES  # status, space, meta (without CR LF)
_READ_CHUNK = 64 * 1024
# A space then the meta; a bare status ("20") is tolerated, as several servers send it.
_HEADER_LINE = re.compile(rb"([1-6][0-9])(?: (.*))?", re.DOTALL)

# urljoin only resolves relative references for schemes it knows; gemini resolves like http.
for _known in (uses_relative, uses_netloc):
    if "gemini" not in _known:
        _known.append("gemini")

AddressCheck = Callable[[str, str], None]
"""Called with (host, address) for every address a host resolves to; raises to refuse it."""


class GeminiError(Exception):
    """A failure worded for the user: connecting, TLS, or a response that breaks the protocol."""


@dataclass(frozen=True)
class Response:
    status: int  # 10 to 69
    meta: str  # the media type for 2x, the target for 3x, a message otherwise


def host_key(host: str, port: int) -> str:
    """How a host is named in known-hosts maps and messages: `host:port`, IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(base: str, reference: str) -> str:
    """A redirect target, which may be relative, as an absolute URL."""
    return urljoin(base, reference)


@functools.cache
def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Trust is the caller's key pin, not a certificate chain (see the module docstring).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # the Gemini specification's floor
    # Many servers close the socket without a TLS close_notify after the body; the body
    # still ends where the server meant it to, so that is not an error for a feed.
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    return context


class Connection:
    """One TLS connection to a capsule: one request, one response (Gemini never reuses one)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fingerprint: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = b""  # bytes read past the header: the start of the body
        self.fingerprint = fingerprint

    async def request(self, url: str) -> Response:
        """Send the request line and read the response header (the body stays unread)."""
        line = url.encode("utf-8")
        if len(line) > MAX_URL_BYTES:
            raise GeminiError(f"URL longer than {MAX_URL_BYTES} bytes: Gemini cannot request it")
        if any(byte < 0x20 or byte == 0x7F for byte in line):
            raise GeminiError("URL contains control characters")
        self._writer.write(line + b"\r\n")
        await self._writer.drain()
        header, self._pending = await self._read_header()
        match = _HEADER_LINE.fullmatch(header)
        if match is None:
            raise GeminiError(f"malformed response header {_shown(header)}")
        try:
            meta = (match.group(2) or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise GeminiError(f"malformed response header {_shown(header)}") from None
        return Response(int(match.group(1)), meta)

    async def read_body(self, max_bytes: int) -> bytes:
        """The rest of the stream, which ends when the server closes the connection."""
        chunks = [self._pending]
        total = len(self._pending)
        while total <= max_bytes:
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
        raise GeminiError(f"body exceeds {max_bytes} bytes")

    async def _read_header(self) -> tuple[bytes, bytes]:
        buffer = b""
        while b"\n" not in buffer:
            if len(buffer) > _MAX_HEADER + 2:
                break
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                if not buffer:
                    raise GeminiError("server closed the connection without a response")
                raise GeminiError(f"malformed response header {_shown(buffer)}: no line end")
            buffer += chunk
        # CRLF is the rule; a bare LF is accepted, as other clients do.
        header, _, rest = buffer.partition(b"\n")
        header = header.removesuffix(b"\r")
        if len(header) > _MAX_HEADER:
            raise GeminiError(f"malformed response header: meta longer than {MAX_META_BYTES} bytes")
        return header, rest


@asynccontextmanager
async def connect(host: str, port: int, check_address: AddressCheck) -> AsyncIterator[Connection]:
    """Resolve, check every address, then connect to the checked addresses only.

    Connecting by address (not by name) means a second DNS answer cannot slip past the check.
    No timeout here: the caller's deadline covers the whole exchange.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise GeminiError(f"could not resolve host {host}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        check_address(host, address)
    reader, writer = await _open(host, port, addresses)
    try:
        yield Connection(reader, writer, _fingerprint(writer))
    finally:
        # abort, not close: a TLS shutdown could wait on a server that no longer answers.
        writer.transport.abort()


async def _open(
    host: str, port: int, addresses: list[str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    failure = GeminiError(f"could not resolve host {host}")
    for address in addresses:
        try:
            return await asyncio.open_connection(
                address, port, ssl=_client_context(), server_hostname=host
            )
        except ssl.SSLError as exc:
            failure = GeminiError(f"TLS handshake with {host_key(host, port)} failed: {exc.reason}")
        except OSError as exc:
            # asyncio's strerror names the address again; the errno's own words suffice.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            failure = GeminiError(f"could not connect to {host_key(host, port)}: {reason}")
    raise failure


def _fingerprint(writer: asyncio.StreamWriter) -> str:
    """SHA-256 of the server certificate's public key (SubjectPublicKeyInfo, DER), as
    `SHA256:<hex>`: the same value `openssl x509 -pubkey | openssl pkey -pubin -outform der |
    sha256sum` prints, so an operator can check a key out of band."""
    tls = writer.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
    if not der:
        raise GeminiError("server sent no TLS certificate")
    # Imported here: every poll imports this module, and few sites follow a capsule.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError as exc:
        raise GeminiError(f"server certificate cannot be read: {exc}") from None
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + hashlib.sha256(spki).hexdigest()


def _shown(raw: bytes) -> str:
    """A server's bytes quoted for an error message, shortened."""
    text = raw[:60].decode("utf-8", errors="replace")
    return repr(text) + ("…" if len(raw) > 60 else "")
