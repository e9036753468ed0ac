"""The feeds every benchmarked system polls, served from a separate process: deterministic
synthetic RSS, or the real published feeds of `../shared/realfeeds` (issue 12), cycled.

The server runs in its own process so that it never competes for the poller's event loop,
and listens on several ports of 127.0.0.1: each port is its own origin, so a poller's
per-host politeness limit (digest's `fetch.per_host`, default 2) applies as it would across
many real sites, not as if 1,000 feeds lived on one host.

What the feeds hold is a `Source`: synthetic RSS of N entries per feed, or the real feeds'
files, feed i serving file i mod N as bytes untouched, with the media type of its format and
no charset (the body's own declaration counts, as it would from a static file server).

Two modes, switched through a control URL between phases:
- "etag": 200 with ETag and Last-Modified, 304 to a matching conditional request;
- "noetag": the same bytes on every request, with no validators and conditional headers
  ignored, so only a poller's own body comparison can save it work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from aiohttp import web

MODES = ("etag", "noetag")
SYNTHETIC_TYPE = "application/rss+xml; charset=utf-8"
# Beside the project: the real feeds are third-party content, read in place, never copied.
# DIGEST_REAL_FEEDS names another folder (as for bench.realfeeds_check).
REAL_FEEDS = Path(
    os.environ.get("DIGEST_REAL_FEEDS") or Path(__file__).resolve().parents[2] / "shared/realfeeds"
)
NOT_FEEDS = {"MANIFEST.tsv", "README.md"}
REAL_TYPES = {
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".rdf": "application/rdf+xml",
    ".json": "application/feed+json",
}
LAST_MODIFIED = "Fri, 28 Mar 2025 12:00:00 GMT"
_NEWEST = datetime(2025, 3, 28, 12, 0, tzinfo=UTC)

_WORD_TEXT = (
    "access account address agency algorithm analysis archive article audit backdoor bandwidth "
    "battery benchmark border browser budget bug cable camera campaign carbon censorship chip "
    "citizen climate cloud code community compiler conference contract court crypto customer "
    "data database debate decade device digital disclosure distro domain driver election "
    "email emissions encryption energy engineer exploit export farmer federal filter firmware "
    "forecast foundation freedom funding gemini government grid hardware health hospital "
    "identity incident industry internet investigation journalist kernel laptop lawsuit leak "
    "license linux market measure memory minister mirror model monopoly network newsroom "
    "office openness operator outage packet parliament patch patent platform policy privacy "
    "protocol publisher rainfall recall regulator release report research river router "
    "satellite scanner school science security sensor server service software source speech "
    "standard startup storage student study subsidy supply surveillance system telescope "
    "terminal tracker treaty update upstream vendor vote vulnerability warning website worker"
)
_WORDS = _WORD_TEXT.split()
SENTENCES = 7  # per description: about 57 KB per feed of 50 entries


def feed_body(index: int, entries: int) -> bytes:
    """RSS 2.0 for feed `index`: the same bytes every time (about 57 KB at 50 entries)."""
    rng = random.Random(index)
    site = f"https://blog{index}.example.com"
    items = [
        _item(rng, site, index * 100_000 + 1_000 - n, _NEWEST - timedelta(hours=5 * n))
        for n in range(entries)
    ]
    channel = "\n".join(items)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:atom="http://www.w3.org/2005/Atom">\n<channel>\n'
        f"<title>Bench blog {index}</title>\n<link>{site}/</link>\n"
        f'<atom:link href="{site}/feed/" rel="self" type="application/rss+xml"/>\n'
        f"<description>{_sentence(rng, 8)}</description>\n<language>en-GB</language>\n"
        f"<lastBuildDate>{format_datetime(_NEWEST)}</lastBuildDate>\n"
        f"{channel}\n</channel>\n</rss>\n"
    ).encode()


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _item(rng: random.Random, site: str, post: int, published: datetime) -> str:
    title = _sentence(rng, rng.randint(6, 12)).rstrip(".")
    slug = "-".join(title.lower().split()[:6])
    link = f"{site}/{published:%Y/%m/%d}/{slug}/"
    # One paragraph of escaped HTML, as most blogs send their description.
    blurb = " ".join(_sentence(rng, rng.randint(10, 17)) for _ in range(SENTENCES))
    return (
        f"<item>\n<title>{escape(title)}</title>\n<link>{link}</link>\n"
        f'<guid isPermaLink="false">{site}/?p={post}</guid>\n'
        f"<pubDate>{format_datetime(published)}</pubDate>\n"
        f"<description>{escape(f'<p>{blurb}</p>')}</description>\n</item>"
    )


@dataclass(frozen=True)
class RealFeed:
    name: str
    body: bytes
    content_type: str


def real_feeds(folder: Path = REAL_FEEDS) -> list[RealFeed]:
    """The real feeds in `folder`, by file name; exits with a message if there are none."""
    found = folder.iterdir() if folder.is_dir() else []
    paths = sorted(path for path in found if path.is_file() and path.name not in NOT_FEEDS)
    if not paths:
        raise SystemExit(
            f"no real feeds in {folder} ({'empty' if folder.is_dir() else 'missing'}): the "
            "real-feeds benchmark reads ../shared/realfeeds beside the project (see its "
            "README.md); point --real-feeds or DIGEST_REAL_FEEDS at another folder, or run "
            "--phase synthetic"
        )
    return [
        RealFeed(path.name, body := path.read_bytes(), _real_type(path, body)) for path in paths
    ]


def _real_type(path: Path, body: bytes) -> str:
    kind = REAL_TYPES.get(path.suffix, "application/xml")  # digest sniffs the body
    if kind == "application/feed+json":
        try:
            version = json.loads(body).get("version")
        except (ValueError, AttributeError):  # not JSON, or not an object: let the poller say
            version = None
        if not (isinstance(version, str) and "jsonfeed.org/version" in version):
            return "application/json"  # JSON, but not JSON Feed (e.g. Scripting News' RSS as JSON)
    return kind


@dataclass(frozen=True)
class Source:
    """What the feeds serve: synthetic RSS of `entries` items each, or with `real` set, the
    real feeds of that folder cycled (feed i serves file i mod N). Picklable: the server
    process builds the bodies."""

    entries: int = 50
    real: Path | None = None

    def bodies(self, feeds: int) -> list[tuple[bytes, str]]:
        """(body, Content-Type) of each feed."""
        if self.real is None:
            return [(feed_body(index, self.entries), SYNTHETIC_TYPE) for index in range(feeds)]
        files = [(feed.body, feed.content_type) for feed in real_feeds(self.real)]
        return [files[index % len(files)] for index in range(feeds)]


@dataclass(frozen=True)
class ServerInfo:
    """Where the feeds are; picklable, so each benchmarked process gets a copy."""

    ports: tuple[int, ...]
    feeds: int

    def feed_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index % len(self.ports)]}/feed/{index}.xml"

    @property
    def feed_urls(self) -> list[str]:
        return [self.feed_url(index) for index in range(self.feeds)]

    def _control(self, path: str, data: bytes | None = None) -> bytes:
        # No proxy handler: a proxy in the environment must not see benchmark traffic.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{self.ports[0]}/control/{path}"
        with opener.open(urllib.request.Request(url, data=data), timeout=10) as response:
            body: bytes = response.read()
            return body

    def set_mode(self, mode: str) -> None:
        """Switch what every feed URL answers, and zero the response counts."""
        self._control(f"mode?set={mode}", data=b"")

    def counts(self) -> dict[str, int]:
        """Responses sent since the last set_mode, by status."""
        counts: dict[str, int] = json.loads(self._control("counts"))
        return counts


class _Feeds:
    def __init__(self, feeds: int, source: Source) -> None:
        served = source.bodies(feeds)
        self.bodies = [body for body, _kind in served]
        self.kinds = [{"Content-Type": kind} for _body, kind in served]
        self.etags = [f'"{hashlib.sha1(body).hexdigest()[:20]}"' for body in self.bodies]
        self.mode = "etag"
        self.counts: dict[str, int] = {}

    def _count(self, status: int) -> None:
        self.counts[str(status)] = self.counts.get(str(status), 0) + 1

    async def feed(self, request: web.Request) -> web.Response:
        try:
            index = int(request.match_info["index"])
            body = self.bodies[index]
        except (ValueError, IndexError):
            self._count(404)
            raise web.HTTPNotFound() from None
        kind = self.kinds[index]
        if self.mode == "noetag":
            self._count(200)
            return web.Response(body=body, headers=kind)
        validators = {"ETag": self.etags[index], "Last-Modified": LAST_MODIFIED}
        if request.headers.get("If-None-Match") == self.etags[index] or (
            "If-None-Match" not in request.headers
            and request.headers.get("If-Modified-Since") == LAST_MODIFIED
        ):
            self._count(304)
            return web.Response(status=304, headers=validators)
        self._count(200)
        return web.Response(body=body, headers=kind | validators)

    async def set_mode(self, request: web.Request) -> web.Response:
        mode = request.query.get("set", "")
        if mode not in MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {MODES}")
        self.mode = mode
        self.counts = {}
        return web.Response(text=mode)

    async def get_counts(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts)


async def _serve(feeds: int, source: Source, ports: int, conn: Connection) -> None:
    state = _Feeds(feeds, source)
    app = web.Application()
    app.add_routes(
        [
            web.get("/feed/{index}.xml", state.feed),
            web.post("/control/mode", state.set_mode),
            web.get("/control/counts", state.get_counts),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for _ in range(ports):
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    conn.send(tuple(port for _host, port, *_ in runner.addresses))
    conn.close()
    await asyncio.Event().wait()  # until the benchmark terminates this process


def _serve_forever(feeds: int, source: Source, ports: int, conn: Connection) -> None:
    asyncio.run(_serve(feeds, source, ports, conn))


class FeedServer:
    """Runs the server process for the length of a `with` block."""

    def __init__(self, feeds: int, source: Source, ports: int) -> None:
        self._args = (feeds, source, ports)
        self._process: multiprocessing.process.BaseProcess | None = None
        self.info: ServerInfo | None = None

    def __enter__(self) -> ServerInfo:
        feeds, source, ports = self._args
        receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
        process = multiprocessing.get_context("spawn").Process(
            target=_serve_forever, args=(feeds, source, ports, send), daemon=True
        )
        process.start()
        self._process = process
        send.close()
        if not receive.poll(120):
            self._stop()
            raise RuntimeError("the feed server did not start within 120 s")
        self.info = ServerInfo(ports=receive.recv(), feeds=feeds)
        return self.info

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)
            self._process = None
