"""The Gemini server (jetforce, on twisted's asyncio reactor): the published folder for the
capsule's host name only, behind the connection gate and a request-line timeout."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.asyncioreactor import AsyncioSelectorReactor

from digest.serve.certificate import certificate_fingerprint
from digest.serve.limits import ConnectionGate, Limits
from digest.serve.paths import Redirect, content_type, resolve_path

log = logging.getLogger("digest.serve")

_GEMINI_CHUNK = 64 * 1024
# The Gemini spec caps a request's URL at 1024 bytes.
_GEMINI_MAX_REQUEST = 1024


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


def listen_gemini(
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
