"""The HTTP server (aiohttp): the published folder, behind the connection gate and a header
timeout."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from digest.serve.limits import ConnectionGate, Limits
from digest.serve.paths import Redirect, content_type, resolve_path

log = logging.getLogger("digest.serve")

# aiohttp's default access format, named here so the log lines stay what operators grep for.
_ACCESS_FORMAT = '%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"'
# In-flight HTTP requests get this long after SIGTERM; idle keep-alive connections close at once.
_HTTP_SHUTDOWN_SECONDS = 5.0


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


class HTTPServer:
    """The aiohttp runner and the listening socket in front of it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self.runner = runner
        self.server = server

    async def cleanup(self) -> None:
        self.server.close()  # no new connections; the runner closes the open ones
        await self.runner.cleanup()


async def start_http(
    root: Path, host: str, port: int, limits: Limits, gate: ConnectionGate
) -> HTTPServer:
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
    return HTTPServer(runner, server)
