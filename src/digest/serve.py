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
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import mimetypes
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
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
}
ATOM_TYPE = "application/atom+xml; charset=utf-8"
# aiohttp's default access format, named here so the log lines stay what operators grep for.
_ACCESS_FORMAT = '%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"'
# In-flight HTTP requests get this long after SIGTERM; idle keep-alive connections close at once.
_HTTP_SHUTDOWN_SECONDS = 5.0
_GEMINI_CHUNK = 64 * 1024
# RFC 5280 4.1.2.5: a certificate with no well-defined expiry. Gemini clients pin a capsule's
# certificate on first use (TOFU), so a certificate that expired would look like an attack.
_NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


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


async def _start_http(root: Path, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(
        http_app(root),
        access_log=logging.getLogger("digest.serve.http"),
        access_log_format=_ACCESS_FORMAT,
        shutdown_timeout=_HTTP_SHUTDOWN_SECONDS,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    for address in runner.addresses:
        bound_host, bound_port = address[0], address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("HTTP listening on http://%s:%d/", shown, bound_port)
    return runner


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


def _listen_gemini(
    reactor: AsyncioSelectorReactor,
    root: Path,
    host: str,
    port: int,
    hostname: str,
    certfile: Path,
    keyfile: Path | None,
) -> None:
    # Imported here: jetforce imports twisted's global reactor, which must be ours by now.
    from jetforce.server import GeminiServer
    from jetforce.tls import GeminiCertificateOptions
    from twisted.protocols.tls import TLSMemoryBIOFactory

    gemini_log = logging.getLogger("digest.serve.gemini")

    class Server(GeminiServer):
        """jetforce's factory, logging through `logging` instead of print."""

        def log_access(self, message: str) -> None:
            gemini_log.info("%s", message)

        def log_message(self, message: str) -> None:
            gemini_log.warning("%s", message)

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
    factory = TLSMemoryBIOFactory(options, False, server)  # type: ignore[arg-type]
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
) -> None:
    """Serve `output_dir` over HTTP and/or Gemini until SIGINT or SIGTERM, then return (exit 0).

    Either server may be None (off). `hostname` is the capsule's name: Gemini requests for
    another host are refused, and the self-signed certificate made in `state_dir` on first
    start (and reused after, for clients that pinned it) names it; `cert` and `key` (PEM; the
    key may sit in the cert file) replace that certificate. Access logs go to the
    "digest.serve.http" and "digest.serve.gemini" loggers at INFO, startup lines (the bound
    addresses, the certificate fingerprint) to "digest.serve". Runs once per process: it
    installs twisted's asyncio reactor. Raises OSError when a port cannot be bound.
    """
    if http is None and gemini is None:
        raise ValueError("nothing to serve: turn on HTTP, Gemini or both")
    if key is not None and cert is None:
        raise ValueError("a key needs its certificate")
    if not output_dir.is_dir():
        raise FileNotFoundError(f"output folder {output_dir} does not exist: build the site first")

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
    runner: web.AppRunner | None = None
    try:
        if http is not None:
            runner = loop.run_until_complete(_start_http(output_dir, *http))
        if gemini is not None:
            certfile = cert if cert is not None else ensure_certificate(state_dir, hostname)
            _listen_gemini(reactor, output_dir, *gemini, hostname, certfile, key)
        if runner is not None:
            cleanup = runner.cleanup
            reactor.addSystemEventTrigger(
                "before", "shutdown", lambda: Deferred.fromFuture(loop.create_task(cleanup()))
            )
        reactor.callWhenRunning(
            lambda: reactor.stop() if stop_asked.is_set() else None  # type: ignore[no-untyped-call]
        )
        log.info("serving %s; SIGINT or SIGTERM stops", output_dir)
        reactor.run()  # type: ignore[no-untyped-call]
        runner = None  # the shutdown trigger cleaned it up
    finally:
        if runner is not None:
            loop.run_until_complete(runner.cleanup())
        loop.close()
