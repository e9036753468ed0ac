"""The harness of the end-to-end tests: `digest` run as real processes on a site folder.

`FeedServer` serves RSS feeds that a test edits (on a real aiohttp server on 127.0.0.1), `Site`
writes a config and starts `digest run` and the other commands on it, and `wait_for` waits for
a condition (a log line, a file, a row) instead of sleeping. A command whose process is not
what the test is about (a poll or a build that sets the scene, a `digest status` read, an
editor's choice) runs in the test's own process (`Site.cli`, `digest_here`): a `digest`
process costs 1.3 s of CPU in imports alone. The `server` and `site` fixtures
are registered for every test module by `pytest_plugins` in conftest.py.

Closings use the DIGEST_TEST_CLOSE_EVERY hook (an interval instead of the stream's cron
schedule), and a killed daemon's claims lapse after DIGEST_TEST_LEASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from aiohttp import web
from click.testing import CliRunner

from digest.cli import cli
from digest.files import is_temporary_file
from tests.validators import check_gemtext, validate_atom

DIGEST = str(Path(sys.executable).parent / "digest")
LINK_BASE = "https://news.example.net/"


# --- a feed server whose feeds the test edits -------------------------------------------


@dataclass
class Item:
    guid: str
    title: str
    published: datetime

    @property
    def link(self) -> str:
        return LINK_BASE + self.guid


@dataclass
class FeedServer:
    """RSS feeds at /feeds/<name>, plus /slow/<n> that answers after 30 s and /gone (404)."""

    feeds: dict[str, list[Item]] = field(default_factory=dict)
    slow_in_flight: int = 0
    base: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, name: str) -> str:
        return f"{self.base}/feeds/{name}"

    def add(self, name: str, count: int, *, published: datetime | None = None) -> list[Item]:
        """Add `count` new items at the top of feed `name` (made when missing)."""
        with self._lock:
            items = self.feeds.setdefault(name, [])
            new = [
                Item(
                    f"{name}-{len(items) + i}",
                    f"Story {len(items) + i} of {name}",
                    published or datetime.now(UTC) - timedelta(seconds=5),
                )
                for i in range(count)
            ]
            self.feeds[name] = new[::-1] + items
            return new

    def served_links(self) -> set[str]:
        with self._lock:
            return {item.link for items in self.feeds.values() for item in items}

    def rss(self, name: str) -> bytes:
        with self._lock:
            items = list(self.feeds.get(name, []))
        body = "".join(
            f"<item><guid isPermaLink='false'>{item.guid}</guid><title>{escape(item.title)}</title>"
            f"<link>{item.link}</link><pubDate>{format_datetime(item.published)}</pubDate>"
            f"<description>About {escape(item.title)}.</description></item>"
            for item in items
        )
        return (
            "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>{name}</title><link>{LINK_BASE}</link><description>d</description>"
            f"{body}</channel></rss>"
        ).encode()

    async def _feed(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.feeds:
            return web.Response(status=404)
        return web.Response(body=self.rss(name), content_type="application/rss+xml")

    async def _slow(self, request: web.Request) -> web.Response:
        self.slow_in_flight += 1
        try:
            await asyncio.sleep(30)
        finally:
            self.slow_in_flight -= 1
        return web.Response(body=self.rss("slow"), content_type="application/rss+xml")


@pytest.fixture
def server() -> Iterator[FeedServer]:
    feeds = FeedServer()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner: web.AppRunner | None = None

    async def start() -> None:
        nonlocal runner
        app = web.Application()
        app.router.add_get("/feeds/{name}", feeds._feed)
        app.router.add_get("/slow/{n}", feeds._slow)
        runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        feeds.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    assert started.is_set()
    yield feeds
    assert runner is not None
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


# --- a site folder and the digest processes that work on it -----------------------------


@dataclass
class Site:
    root: Path
    feeds: list[dict[str, Any]]
    schedule: str = "0 0 1 1 *"  # once a year: only the test hook or a make-up closes
    extra_site: str = ""
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "feeds.yaml"

    @property
    def db(self) -> Path:
        return self.root / "digest.db"

    @property
    def public(self) -> Path:
        return self.root / "public"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write_config(self, *, extra_site: str | None = None) -> None:
        feeds = "\n".join(
            "  - {" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in feed.items()) + "}"
            for feed in self.feeds
        )
        self.config.write_text(
            "site:\n"
            "  title: Test Links\n"
            "  base_url: https://links.example.org/\n"
            "  gemini_base_url: gemini://links.example.org/\n"
            "  timezone: UTC\n"
            "  output_dir: public\n"
            "  database: sqlite:///digest.db\n"
            "  state_dir: state\n"
            f"{self.extra_site if extra_site is None else extra_site}"
            "streams:\n"
            "  links:\n"
            '    title: "Links {date:%d/%m/%Y}: {headlines}"\n'
            "    summary: Links for the day\n"
            f"    schedule: {json.dumps(self.schedule)}\n"
            "    lookback: 36500d\n"
            "fetch: {allow_private_networks: true, timeout: 60, concurrency: 100, per_host: 100}\n"
            f"feeds:\n{feeds}\n"
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        return env | extra

    def start(
        self, *, close_every: str | None = None, log_level: str | None = None, **env: str
    ) -> subprocess.Popen[str]:
        if close_every:
            env["DIGEST_TEST_CLOSE_EVERY"] = close_every
        options = ["--log-level", log_level] if log_level else []
        log = (self.root / f"daemon-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            [DIGEST, "--config", str(self.config), "run", *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env(**env),
            start_new_session=True,  # its parser processes form a group the test can clean up
        )
        log.close()
        self.processes.append(process)
        return process

    def log(self, process: subprocess.Popen[str]) -> str:
        return (self.root / f"daemon-{self.processes.index(process)}.log").read_text()

    def wait_for_log(
        self, process: subprocess.Popen[str], text: str, count: int = 1, timeout: float = 45.0
    ) -> None:
        """Wait until `text` is in the daemon's log `count` times; fail if it exits first."""

        def logged() -> bool:
            if self.log(process).count(text) >= count:
                return True
            if process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited before logging {text!r}:\n{self.log(process)}"
                )
            return False

        wait_for(logged, f"{text!r} in the daemon's log", timeout)

    def digest(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DIGEST, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env(**env),
            timeout=120,
            check=False,
        )

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """What `digest` (above) gives, from a run of the command in this process."""
        return digest_here(self.config, args, env)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        connection = sqlite3.connect(self.db, timeout=30)
        try:
            return connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise
        finally:
            connection.close()

    def stored_links(self) -> list[str]:
        # An entry an edition took keeps its link in the edition's copy (digest.store.entries).
        return [
            link
            for (link,) in self.query(
                "SELECT coalesce(i.link, e.link) FROM entries e"
                " LEFT JOIN edition_items i ON i.entry_id = e.id"
            )
        ]

    def editions(self) -> list[tuple[str, str, int]]:
        return [
            (stream, day, number)
            for stream, day, number in self.query(
                "SELECT stream, date, number FROM editions ORDER BY id"
            )
        ]

    def unclosed(self) -> int:
        rows = self.query(
            "SELECT count(*) FROM entries WHERE id NOT IN (SELECT entry_id FROM edition_items)"
        )
        return int(rows[0][0]) if rows else 0

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            # Whatever it started (the forkserver, parser processes) goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path, feeds=[])
    yield made
    made.cleanup()


def digest_here(
    config: Path, args: tuple[str, ...], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`digest --config CONFIG ARGS` run in this process, as a new `digest` process would run
    it: the environment without DIGEST_ variables but `env`, and logging as Python starts it
    (no handler: warnings and errors go to stderr), not pytest's capture. An exception that
    would print a traceback fails the test here. Its exit code, stdout and stderr."""
    unset: dict[str, str | None] = {name: None for name in os.environ if name.startswith("DIGEST_")}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    try:
        result = CliRunner().invoke(
            cli, ["--config", str(config), *args], env=unset | env, catch_exceptions=False
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess(
        ["digest", *args], result.exit_code, result.stdout, result.stderr
    )


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def terminate(process: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, float]:
    """SIGTERM; the exit code and how long it took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout)
    return code, time.monotonic() - started


def rss_feed(server: FeedServer, name: str, **extra: Any) -> dict[str, Any]:
    return {"url": server.url(name), "name": name.title(), "stream": "links", "interval": "1s"} | (
        extra
    )


def check_site_files(site: Site) -> None:
    """Every page whole and well-formed, every edition written, no temporary file left."""
    public = site.public
    leftovers = [p for p in public.rglob(".*") if is_temporary_file(p.name)]
    assert not leftovers, "temporary files left under public/"
    for path in public.rglob("*"):
        if path.suffix == ".xml":
            validate_atom(path)
        elif path.suffix == ".gmi":
            check_gemtext(path.read_text(encoding="utf-8"))
        elif path.suffix == ".html":
            text = path.read_text(encoding="utf-8")
            parser = HTMLParser()
            parser.feed(text)
            parser.close()
            if path.name != "recent.html":  # a fragment for embedding, not a page
                assert text.rstrip().endswith("</html>"), f"{path} is cut short"
    for stream, day, number in site.editions():
        for ext in ("html", "gmi"):
            page = public / stream / day.replace("-", "/") / f"{number}.{ext}"
            assert page.is_file(), f"{page} was never written"


def check_numbering(site: Site) -> None:
    by_day: dict[tuple[str, str], list[int]] = {}
    for stream, day, number in site.editions():
        by_day.setdefault((stream, day), []).append(number)
    for key, numbers in by_day.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), (key, numbers)
