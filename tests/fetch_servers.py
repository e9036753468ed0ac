"""Real local servers for the fetch tests: the misbehaving kinds pytest-httpserver cannot play
(dripping, huge, compressed bodies) and a counter of simultaneous requests."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

from aiohttp import web

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
WebHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def web_server(routes: dict[str, WebHandler], host: str = "127.0.0.1") -> AsyncIterator[str]:
    """An aiohttp.web server with GET `routes`; yields its base URL (no trailing slash)."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(handler: StreamHandler) -> AsyncIterator[str]:
    """A bare TCP server that speaks whatever `handler` writes; yields its base URL."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with suppress(ConnectionError):
            await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        # Close live connections too, or a dripping handler keeps wait_closed() waiting.
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def drip_one_byte_per_second(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Headers at once, then a 1000-byte body at one byte a second."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 1000\r\n\r\n"
    )
    for _ in range(1000):
        writer.write(b"<")
        await writer.drain()
        await asyncio.sleep(1)


def gzip_of_zeros(size: int, chunk: int = 1024 * 1024) -> bytes:
    """gzip of `size` zero bytes, compressed a chunk at a time so memory stays small."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    zeros = bytes(chunk)
    parts = [compressor.compress(zeros) for _ in range(size // chunk)]
    parts.append(compressor.flush())
    return b"".join(parts)


class InFlight:
    """Counts requests being served at once, per server and across servers."""

    def __init__(self, parent: InFlight | None = None) -> None:
        self.parent = parent
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)
        if self.parent is not None:
            self.parent.enter()

    def leave(self) -> None:
        self.current -= 1
        if self.parent is not None:
            self.parent.leave()
