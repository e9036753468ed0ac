"""Serve the published folder over HTTP (aiohttp) and Gemini (jetforce) from one process.

Both servers run on one asyncio loop: twisted's asyncio reactor wraps the loop, so jetforce's
twisted protocol and aiohttp's server share one thread, one signal handler (twisted's: SIGINT
and SIGTERM stop the reactor, which first awaits aiohttp's cleanup) and one shutdown path. A
second thread would need its own loop, a cross-thread stop and two places that can hang on
exit; the shared loop has none of that. The cost: the reactor must be installed before anything
imports ``twisted.internet.reactor`` (jetforce does at import), so jetforce is imported only
once ``serve`` has installed it (in ``gemini.listen_gemini``), and ``serve`` runs once per
process.

The parts: ``paths`` maps a URL path to a file the same way for both servers; ``limits`` guards
both against clients that hold connections open (header and idle timeouts, one connection cap
below the descriptor limit, logged once when reached, not per connection); ``http`` and
``gemini`` are the two servers, ``certificate`` the capsule's TLS certificate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import signal
import threading
from pathlib import Path

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred
from twisted.internet.main import installReactor

from digest.serve.certificate import ensure_certificate
from digest.serve.gemini import listen_gemini
from digest.serve.http import HTTPServer, start_http
from digest.serve.limits import ConnectionGate, Limits, default_max_connections
from digest.serve.paths import Redirect, content_type, resolve_path

__all__ = [
    "Limits",
    "Redirect",
    "content_type",
    "ensure_certificate",
    "parse_listen",
    "resolve_path",
    "serve",
]

log = logging.getLogger("digest.serve")


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
    runner: HTTPServer | None = None
    try:
        if http is not None:
            runner = loop.run_until_complete(start_http(output_dir, *http, limits, gate))
        if gemini is not None:
            certfile = cert if cert is not None else ensure_certificate(state_dir, hostname)
            listen_gemini(reactor, output_dir, *gemini, hostname, certfile, key, limits, gate)
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
