"""Serve the published folder over HTTP (aiohttp) and Gemini (jetforce) from one process.

Both servers run on one asyncio loop: twisted's asyncio reactor wraps the loop, so jetforce's
twisted protocol and aiohttp's server share one thread, one signal handler (twisted's: SIGINT
and SIGTERM stop the reactor, which first awaits aiohttp's cleanup) and one shutdown path. A
second thread would need its own loop, a cross-thread stop and two places that can hang on
exit; the shared loop has none of that. The cost: the reactor must be installed before anything
imports ``twisted.internet.reactor`` (jetforce does at import), so jetforce is imported only
inside ``serve`` and ``serve`` runs once per process.

Both servers map a URL path to a file the same way (``resolve_path``): no ``..``, no empty or
hidden (dot) segments, symlinks only when they stay inside the folder, a directory serves its
index file, and no directory is ever listed.

Both also guard against clients that hold connections open (``Limits``): a request's headers
(HTTP) or request line (Gemini) must arrive within ``header_timeout`` of the connection opening
(HTTP: or of the next request's first byte), an idle HTTP keep-alive connection closes after
``idle_timeout``, and one ``ConnectionGate`` caps the open connections of both servers below the
descriptor limit: beyond it a new connection is closed at once, and the log says so once, not
per connection.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import mimetypes
import os
import re
import resource
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred
from twisted.internet.main import installReactor

from digest.files import write_atomically

log = logging.getLogger("digest.serve")

# Text types carry their charset so no client guesses; feed.xml is Atom, other XML is not.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".gmi": "text/gemini; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",  # feeds.opml: what feed readers expect to import
}
ATOM_TYPE = "application/atom+xml; charset=utf-8"
# aiohttp's default access format, named here so the log lines stay what operators grep for.
_ACCESS_FORMAT = '%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"'
# In-flight HTTP requests get this long after SIGTERM; idle keep-alive connections close at once.
_HTTP_SHUTDOWN_SECONDS = 5.0
_GEMINI_CHUNK = 64 * 1024
# The Gemini spec caps a request's URL at 1024 bytes.
_GEMINI_MAX_REQUEST = 1024
# The connection cap leaves room for the descriptors a connection may hold besides its socket
# (the file being served), the listening sockets, the database and the log.
_MAX_CONNECTIONS = 512
_RESERVED_DESCRIPTORS = 64
# RFC 5280 4.1.2.5: a certificate with no well-defined expiry. Gemini clients pin a capsule's
# certificate on first use (TOFU), so a certificate that expired would look like an attack.
_NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def default_max_connections() -> int:
    """512, or fewer when the process's descriptor limit is low: half of what is left of the
    soft RLIMIT_NOFILE after 64 reserved, since a connection may hold a served file open too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    return max(8, min(_MAX_CONNECTIONS, (soft - _RESERVED_DESCRIPTORS) // 2))


@dataclass(frozen=True)
class Limits:
    """How long clients may take and how many may be connected at once (both servers)."""

    header_timeout: float = 10.0  # seconds to send an HTTP request's headers / the Gemini line
    idle_timeout: float = 60.0  # seconds an HTTP keep-alive connection may sit idle
    max_connections: int | None = None  # None: default_max_connections()


class ConnectionGate:
    """Counts the open connections of both servers and refuses new ones at `limit`. The log
    says "limit reached" once, and once more when the count is back under it (with how many
    were refused meanwhile); the gap between the two levels keeps a server that sits at its
    limit from logging each connection."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the connection limit must be at least 1, not {limit}")
        self.limit = limit
        self.resume_at = limit - max(1, limit // 10)
        self.open = 0
        self.refused = 0
        self.full = False

    def admit(self) -> bool:
        """True, counting the connection in, or False: close it at once."""
        if self.open >= self.limit:
            self.refused += 1
            if not self.full:
                self.full = True
                log.warning("connection limit reached (%d); refusing new connections", self.limit)
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
        if self.full and self.open <= self.resume_at:
            log.warning(
                "accepting connections again (%d open); refused %d at the limit",
                self.open,
                self.refused,
            )
            self.full = False
            self.refused = 0


class Redirect(enum.Enum):
    """The path names a directory without its trailing slash."""

    ADD_SLASH = "add-slash"


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` for --http/--gemini: "127.0.0.1:8080", "[::1]:1965", or ":8080" for every
    IPv4 interface ("[::]:8080" for IPv6, and IPv4 too on a dual-stack host). Port 0 picks a
    free port, which the startup log names."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.%\w]+)\]|([^:\[\]\s]*)):(\d{1,5})", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not host:port (IPv6 in brackets: [::1]:1965)")
    v6, host, port_text = match.groups()
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{text!r}: port {port} is out of range")
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            raise ValueError(f"{text!r}: {v6!r} is not an IPv6 address") from None
        return v6, port
    return host or "0.0.0.0", port


def content_type(path: Path) -> str:
    """The Content-Type (HTTP) or MIME meta (Gemini) for a served file."""
    if path.name == "feed.xml":
        return ATOM_TYPE
    known = _CONTENT_TYPES.get(path.suffix.lower())
    return known or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def resolve_path(root: Path, url_path: str, index: str) -> Path | Redirect | None:
    """The file a decoded URL path names under `root`, `Redirect.ADD_SLASH` for a directory
    asked without its slash, or None (not found, or outside the folder: both look the same)."""
    if not url_path.startswith("/") or "\x00" in url_path:
        return None
    parts = url_path[1:].split("/")
    *folders, last = parts
    # Empty segments would turn "//evil.example" into a protocol-relative redirect.
    if any(not name or name.startswith(".") for name in folders) or last.startswith("."):
        return None
    try:
        # Resolved per request, so a deploy that swaps a symlinked folder is seen at once.
        base = Path(os.path.realpath(root))
        target = Path(os.path.realpath(base.joinpath(*parts)))
        if not target.is_relative_to(base):
            return None
        if target.is_dir():
            if last:
                return Redirect.ADD_SLASH
            target = Path(os.path.realpath(target / index))
            if not target.is_relative_to(base):
                return None
        elif not last:
            return None
        return target if target.is_file() else None
    except (OSError, ValueError):
        return None


# --- TLS certificate ------------------------------------------------------------------------


def certificate_fingerprint(cert_pem: Path) -> str:
    """SHA-256 of the certificate's DER form, as hex: what TOFU clients show and pin."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def ensure_certificate(state_dir: Path, hostname: str) -> Path:
    """The self-signed certificate for `hostname` in `state_dir`, made on first use and then
    reused, so clients that pinned it keep trusting us. One PEM file holds key and certificate
    (mode 0600), renamed into place whole: two first starts cannot pair one's key with the
    other's certificate."""
    safe_name = re.sub(r"[^A-Za-z0-9.-]", "_", hostname)
    path = state_dir / f"gemini-{safe_name}.pem"
    if path.exists():
        certificate_fingerprint(path)  # a damaged file stops us here, not at the first client
        return path
    state_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, hostname)])
    try:
        alt_name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt_name = x509.DNSName(hostname)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))  # tolerate clients whose clock is behind
        .not_valid_after(_NO_EXPIRY)
        .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(path, pem, mode=0o600)  # it holds the private key
    log.info("generated a Gemini certificate for %s in %s", hostname, path)
    return path


# --- HTTP -----------------------------------------------------------------------------------


def http_app(root: Path) -> web.Application:
    """GET and HEAD of the files under `root`; ETag, Last-Modified, 304 and Range come from
    aiohttp's FileResponse (strong ETag from mtime and size)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        target = resolve_path(root, request.path, "index.html")
        if target is Redirect.ADD_SLASH:
            query = request.rel_url.raw_query_string
            location = request.rel_url.raw_path + "/" + (f"?{query}" if query else "")
            raise web.HTTPMovedPermanently(location=location)
        if target is None:
            raise web.HTTPNotFound()
        headers = {"Content-Type": content_type(target), "X-Content-Type-Options": "nosniff"}
        return web.FileResponse(target, headers=headers)

    app = web.Application()
    app.router.add_get("/{path:.*}", handle)  # HEAD too
    return app


class _GuardedHTTP(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the gate and a header timeout: aiohttp
    3.14 has its keep-alive timeout (idle connections), but nothing that bounds the time a
    client takes to send its headers. The timer starts with the connection, and again with the
    first byte of each later request, and stops at the blank line that ends the headers."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate, header_timeout: float):
        self._inner = inner
        self._gate = gate
        self._header_timeout = header_timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes of the headers so far: the blank line may straddle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._gate.admit():
            transport.abort()
            return
        self._transport = transport
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        view = self._tail + data
        while view:
            if self._timer is None:
                self._arm()  # a new request begins
            end = view.find(b"\r\n\r\n")
            if end < 0:
                self._tail = view[-3:]
                break
            self._disarm()
            view = view[end + 4 :]
        else:
            self._tail = b""
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return  # refused at the gate
        self._transport = None
        self._disarm()
        self._gate.release()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _arm(self) -> None:
        self._tail = b""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.abort()


class _HTTPServer:
    """The aiohttp runner and the listening socket in front of it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self.runner = runner
        self.server = server

    async def cleanup(self) -> None:
        self.server.close()  # no new connections; the runner closes the open ones
        await self.runner.cleanup()


async def _start_http(
    root: Path, host: str, port: int, limits: Limits, gate: ConnectionGate
) -> _HTTPServer:
    runner = web.AppRunner(
        http_app(root),
        access_log=logging.getLogger("digest.serve.http"),
        access_log_format=_ACCESS_FORMAT,
        shutdown_timeout=_HTTP_SHUTDOWN_SECONDS,
        keepalive_timeout=limits.idle_timeout,
    )
    await runner.setup()
    handlers = runner.server
    assert handlers is not None

    def guarded() -> asyncio.Protocol:
        return _GuardedHTTP(handlers(), gate, limits.header_timeout)

    try:
        # Our own listening socket rather than web.TCPSite, to put the guard in front.
        server = await asyncio.get_running_loop().create_server(
            guarded, host, port, reuse_address=True
        )
    except BaseException:
        await runner.cleanup()
        raise
    for sock in server.sockets:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("HTTP listening on http://%s:%d/", shown, bound_port)
    return _HTTPServer(runner, server)


# --- Gemini ---------------------------------------------------------------------------------

SendStatus = Callable[[int, str], None]


class GeminiFiles:
    """A jetforce application (``app(environ, send_status) -> body chunks``) serving the files
    under `root` for gemini://`hostname`/ only: other hosts and schemes get 53, as the Gemini
    spec asks of a server that is no proxy. The port is not checked, so a capsule behind a
    port forward still answers URLs that name the public port."""

    def __init__(self, root: Path, hostname: str) -> None:
        self.root = root
        self.hostname = hostname.lower()

    def __call__(self, environ: dict[str, Any], send_status: SendStatus) -> Iterator[bytes]:
        try:
            url = urlsplit(str(environ["GEMINI_URL"]))
            host = url.hostname
            url.port  # noqa: B018  (raises ValueError on a malformed port)
        except ValueError:
            send_status(59, "Bad request")
            return
        if url.username is not None or url.password is not None or not host:
            send_status(59, "Bad request")
            return
        if url.scheme.lower() != "gemini" or host.lower().rstrip(".") != self.hostname:
            send_status(53, "Proxy request refused")
            return
        target = resolve_path(self.root, unquote(url.path) or "/", "index.gmi")
        if target is Redirect.ADD_SLASH:
            send_status(31, url._replace(path=url.path + "/", query="", fragment="").geturl())
            return
        if target is None:
            send_status(51, "Not found")
            return
        try:
            source = target.open("rb")
        except OSError:
            send_status(51, "Not found")
            return
        send_status(20, content_type(target))
        with source:
            while chunk := source.read(_GEMINI_CHUNK):
                yield chunk


def _printable(text: str) -> str:
    """`text` with control characters escaped: a client's URL goes into the log on one line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _request_line_problem(line: bytes) -> str | None:
    """Why a Gemini request line is malformed before it reaches the application, or None."""
    if len(line) > _GEMINI_MAX_REQUEST:
        return f"request line over {_GEMINI_MAX_REQUEST} bytes"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "request line is not UTF-8"
    return None


def _listen_gemini(
    reactor: AsyncioSelectorReactor,
    root: Path,
    host: str,
    port: int,
    hostname: str,
    certfile: Path,
    keyfile: Path | None,
    limits: Limits,
    gate: ConnectionGate,
) -> None:
    # Imported here: jetforce imports twisted's global reactor, which must be ours by now.
    from jetforce.protocol import GeminiProtocol
    from jetforce.server import GeminiServer
    from jetforce.tls import GeminiCertificateOptions
    from twisted.internet.defer import Deferred as TwistedDeferred
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    gemini_log = logging.getLogger("digest.serve.gemini")

    class Protocol(GeminiProtocol):
        """jetforce's protocol with our request timeout, one request per connection, and a
        malformed request line answered 59 with one access line (jetforce logs a traceback
        and leaves a failed Deferred behind)."""

        # From the connection's start, TLS handshake included (jetforce types it int: any number).
        REQUEST_TIMEOUT = limits.header_timeout  # type: ignore[assignment]
        _answered = False

        def lineReceived(  # type: ignore[override]  # None: no request to await
            self, line: bytes
        ) -> TwistedDeferred[None] | None:
            if self._answered:
                return None  # a second line on the connection: ignored
            self._answered = True
            problem = _request_line_problem(line)
            if problem is not None:
                self._refuse(line, problem)
                return None
            deferred: TwistedDeferred[None] = super().lineReceived(line)
            return deferred

        def lineLengthExceeded(self, line: bytes) -> None:
            if not self._answered:
                self._answered = True
                self._refuse(line, f"request line over {_GEMINI_MAX_REQUEST} bytes")

        def _refuse(self, line: bytes, problem: str) -> None:
            self.setTimeout(None)  # type: ignore[no-untyped-call]
            shown = line[:100].decode("utf-8", "backslashreplace")
            self.url = shown + ("…" if len(line) > 100 else "")
            self.write_status(59, f"Bad request: {problem}")
            self.flush_status()
            self.log_request()
            self.finish_connection()

        def timeoutConnection(self) -> None:
            # Nothing to answer and nothing to flush: drop the socket, even mid-handshake.
            self.transport.abortConnection()

    class Server(GeminiServer):
        """jetforce's factory, logging through `logging` instead of print."""

        protocol_class = Protocol

        def log_access(self, message: str) -> None:
            gemini_log.info("%s", _printable(message))

        def log_message(self, message: str) -> None:
            gemini_log.warning("%s", message)

    class GatedTLSFactory(TLSMemoryBIOFactory):
        """Closes a connection at once when the gate is shut (buildProtocol None)."""

        def buildProtocol(  # type: ignore[override]  # None: refused
            self, addr: Any
        ) -> TLSMemoryBIOProtocol | None:
            if not gate.admit():
                return None
            built: TLSMemoryBIOProtocol = super().buildProtocol(addr)
            return built

        def unregisterProtocol(self, p: Any) -> None:
            super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
            gate.release()

    options = GeminiCertificateOptions(
        certfile=str(certfile), keyfile=None if keyfile is None else str(keyfile)
    )
    options.getContext()  # a bad certificate or key fails now, not at the first client
    server = Server(
        GeminiFiles(root, hostname),
        reactor=reactor,
        host=host,
        port=port,
        hostname=hostname,
        certfile=str(certfile),
        keyfile=None if keyfile is None else str(keyfile),
    )
    # listenTCP rather than jetforce's endpoint: a port in use raises here instead of being
    # logged from a Deferred while the process runs on without a Gemini server.
    # mypy sees no zope @implementer: the options and the factory provide the interfaces.
    factory = GatedTLSFactory(options, False, server)  # type: ignore[arg-type]
    listening = reactor.listenTCP(port, factory, interface=host)  # type: ignore[no-untyped-call]
    server.port = listening.getHost().port
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "Gemini listening on %s:%d for gemini://%s/ (certificate %s, SHA-256 %s)",
        shown,
        server.port,
        hostname,
        certfile,
        certificate_fingerprint(certfile),
    )


def serve(
    output_dir: Path,
    *,
    http: tuple[str, int] | None,
    gemini: tuple[str, int] | None,
    hostname: str,
    cert: Path | None,
    key: Path | None,
    state_dir: Path,
    limits: Limits | None = None,
) -> None:
    """Serve `output_dir` over HTTP and/or Gemini until SIGINT or SIGTERM, then return (exit 0).

    Either server may be None (off). `hostname` is the capsule's name: Gemini requests for
    another host are refused, and the self-signed certificate made in `state_dir` on first
    start (and reused after, for clients that pinned it) names it; `cert` and `key` (PEM; the
    key may sit in the cert file) replace that certificate. Access logs go to the
    "digest.serve.http" and "digest.serve.gemini" loggers at INFO, startup lines (the bound
    addresses, the certificate fingerprint) to "digest.serve". Runs once per process: it
    installs twisted's asyncio reactor. Raises OSError when a port cannot be bound.
    `limits` (timeouts and the connection cap) defaults to ``Limits()``.
    """
    if http is None and gemini is None:
        raise ValueError("nothing to serve: turn on HTTP, Gemini or both")
    if key is not None and cert is None:
        raise ValueError("a key needs its certificate")
    if not output_dir.is_dir():
        raise FileNotFoundError(f"output folder {output_dir} does not exist: build the site first")
    limits = limits or Limits()
    gate = ConnectionGate(limits.max_connections or default_max_connections())

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    reactor = AsyncioSelectorReactor(loop)
    # Our own stop handlers from the start: a signal before the reactor runs is remembered
    # and honoured once it does, so a SIGTERM just after the "listening" lines still ends in
    # a clean exit 0, not the default kill. (twisted keeps a SIGINT handler it finds in place.)
    stop_asked = threading.Event()

    def on_stop_signal(_signum: int, _frame: object) -> None:
        if reactor.running:
            reactor.callFromThread(reactor.stop)  # type: ignore[no-untyped-call]
        else:
            stop_asked.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_stop_signal)
    # Raises ReactorAlreadyInstalledError when a reactor is in place: serve runs once a process.
    installReactor(reactor)  # type: ignore[no-untyped-call]
    runner: _HTTPServer | None = None
    try:
        if http is not None:
            runner = loop.run_until_complete(_start_http(output_dir, *http, limits, gate))
        if gemini is not None:
            certfile = cert if cert is not None else ensure_certificate(state_dir, hostname)
            _listen_gemini(reactor, output_dir, *gemini, hostname, certfile, key, limits, gate)
        if runner is not None:
            cleanup = runner.cleanup
            reactor.addSystemEventTrigger(
                "before", "shutdown", lambda: Deferred.fromFuture(loop.create_task(cleanup()))
            )
        reactor.callWhenRunning(
            lambda: reactor.stop() if stop_asked.is_set() else None  # type: ignore[no-untyped-call]
        )
        log.info(
            "serving %s; SIGINT or SIGTERM stops (header timeout %g s, idle timeout %g s, "
            "at most %d connections)",
            output_dir,
            limits.header_timeout,
            limits.idle_timeout,
            gate.limit,
        )
        reactor.run()  # type: ignore[no-untyped-call]
        runner = None  # the shutdown trigger cleaned it up
    finally:
        if runner is not None:
            loop.run_until_complete(runner.cleanup())
        loop.close()
