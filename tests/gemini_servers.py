"""Real Gemini servers for the tests: jetforce in a subprocess for real capsules, and a small
asyncio TLS server of our own for the answers jetforce never gives (odd statuses, broken
headers, endless bodies, silence)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Handler = Callable[[str, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Certificate:
    certfile: Path
    keyfile: Path
    key: ec.EllipticCurvePrivateKey
    fingerprint: str  # what the client should report: SHA256:<hex> of the public key


def make_certificate(
    directory: Path,
    name: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    expired: bool = False,
    trusted_for_ip: bool = False,
) -> Certificate:
    """A self-signed certificate (for `key`, to play a renewal with the same key);
    `trusted_for_ip`: one a verifying client accepts for 127.0.0.1 once it trusts the file
    (an IP address SAN, and a CA of its own)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(days=30), now - timedelta(days=1))
        if expired
        else (
            now - timedelta(days=1),
            now + timedelta(days=30),
        )
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if trusted_for_ip:
        certificate = certificate.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), critical=False
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    signed = certificate.sign(key, hashes.SHA256())
    certfile, keyfile = directory / f"{name}.crt", directory / f"{name}.key"
    certfile.write_bytes(signed.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Certificate(certfile, keyfile, key, "SHA256:" + hashlib.sha256(spki).hexdigest())


# Under pytest-xdist, worker gwN draws its ports from a block of its own below the kernel's
# ephemeral ports (32768 and up on Linux), so that no other worker, and no outgoing
# connection, can take a port between a test asking for it and a server binding it.
_WORKER_PORTS = 400
_WORKER_PORTS_FROM = 20000
_port_draws = random.Random()  # its own: tests may seed the global one


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (nor will, from another test worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        low = _WORKER_PORTS_FROM + _WORKER_PORTS * (int(worker[2:]) % 30)
        for port in _port_draws.sample(range(low, low + _WORKER_PORTS), _WORKER_PORTS):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        given: int = sock.getsockname()[1]
        return given


@contextmanager
def jetforce(directory: Path, certificate: Certificate, port: int) -> Iterator[str]:
    """jetforce serving `directory` on 127.0.0.1:`port`; yields the capsule's base URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jetforce",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--hostname",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--tls-certfile",
            str(certificate.certfile),
            "--tls-keyfile",
            str(certificate.keyfile),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(process, port)
        yield f"gemini://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()


def _wait_for_port(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            assert process.stderr is not None
            raise RuntimeError(f"jetforce exited: {process.stderr.read().decode()}")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"jetforce did not listen on port {port}")


def reply(header: str, body: bytes = b"") -> Handler:
    """A handler that sends one header line (CRLF added) and a body."""

    async def handler(_request: str, writer: asyncio.StreamWriter) -> None:
        writer.write(header.encode() + b"\r\n" + body)
        await writer.drain()

    return handler


def raw(data: bytes) -> Handler:
    """A handler that sends exactly `data`, however broken."""

    async def handler(_request: str, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return handler


async def never_answer(_request: str, _writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


@dataclass
class GeminiServer:
    url: str  # gemini://127.0.0.1:PORT, no trailing slash
    requests: list[str] = field(default_factory=list)  # request lines received, CRLF removed
    server_names: list[str | None] = field(default_factory=list)  # SNI of each handshake


@asynccontextmanager
async def gemini_server(
    routes: dict[str, Handler], certificate: Certificate, host: str = "127.0.0.1"
) -> AsyncIterator[GeminiServer]:
    """Our own TLS server: answers each request by the handler for its path (else 51)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.certfile, certificate.keyfile)
    server_names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    writers: list[asyncio.StreamWriter] = []
    requests: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            request = (await reader.readuntil(b"\r\n"))[:-2].decode()
            requests.append(request)
            await routes.get(urlsplit(request).path, reply("51 Not found"))(request, writer)
        writer.transport.abort()

    server = await asyncio.start_server(serve, host, 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield GeminiServer(f"gemini://{host}:{port}", requests, server_names)
    finally:
        server.close()
        # Drop live connections too, or a silent handler keeps wait_closed() waiting.
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


@contextmanager
def gemini_server_thread(routes: dict[str, Handler], certificate: Certificate) -> Iterator[str]:
    """`gemini_server` on an event loop of its own in a thread, for code that runs its own loop
    (the poller's asyncio.run); yields the base URL."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started: Future[str] = Future()

    async def serve() -> None:
        async with gemini_server(routes, certificate) as server:
            started.set_result(server.url)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        yield started.result(timeout=30)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
