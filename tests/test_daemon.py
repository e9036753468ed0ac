"""`digest run` as a real process: kill -9 at random moments, cron runs beside it, SIGTERM with
slow feeds in flight, config reloads, missed closings, `digest status`.

Feeds come from a real aiohttp server on 127.0.0.1 whose RSS changes between runs; closings
use the DIGEST_TEST_CLOSE_EVERY hook (an interval instead of the stream's cron schedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
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

from digest.locks import publish_lock
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

    def start(self, *, close_every: str | None = None, **env: str) -> subprocess.Popen[str]:
        if close_every:
            env["DIGEST_TEST_CLOSE_EVERY"] = close_every
        log = (self.root / f"daemon-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            [DIGEST, "--config", str(self.config), "run"],
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

    def digest(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DIGEST, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env(**env),
            timeout=120,
            check=False,
        )

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
        return [link for (link,) in self.query("SELECT link FROM entries")]

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
    assert not [p for p in public.rglob(".*")], "temporary files left under public/"
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


# --- the tests ----------------------------------------------------------------------------


def test_kill_9_at_random_moments_loses_nothing(site: Site, server: FeedServer) -> None:
    seed = int(os.environ.get("DIGEST_TEST_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    names = ["alpha", "beta", "gamma"]
    for name in names:
        server.add(name, 2)
    site.feeds = [rss_feed(server, name) for name in names]
    site.write_config()

    # A killed daemon's claims on feeds lapse after the lease: short here, so the next run
    # takes them over at once.
    lease = {"DIGEST_LEASE_SECONDS": "2"}
    for _ in range(8):
        for name in names:
            server.add(name, rng.randint(1, 3))
        daemon = site.start(close_every="1s", **lease)
        time.sleep(rng.uniform(0.2, 4.0))  # start-up, a poll, a closing or a render
        daemon.kill()
        assert daemon.wait(30) == -signal.SIGKILL

    for name in names:
        server.add(name, 1)
    daemon = site.start(close_every="1s", **lease)
    served = server.served_links()
    wait_for(lambda: set(site.stored_links()) == served, "every served entry to be stored")
    wait_for(lambda: site.unclosed() == 0, "every entry to be closed into an edition")

    def rendered() -> bool:
        return all(
            (site.public / stream / day.replace("-", "/") / f"{number}.gmi").is_file()
            for stream, day, number in site.editions()
        )

    wait_for(rendered, "every edition to be rendered")
    code, _ = terminate(daemon)
    assert code == 0, site.log(daemon)

    stored = site.stored_links()
    assert sorted(stored) == sorted(served), f"seed {seed}"  # each exactly once
    in_editions = [entry for (entry,) in site.query("SELECT entry_id FROM edition_items")]
    assert len(in_editions) == len(set(in_editions)) == len(stored), f"seed {seed}"
    check_numbering(site)
    check_site_files(site)
    assert "Traceback" not in "".join(site.log(p) for p in site.processes)


def test_five_cron_updates_beside_the_daemon_close_one_edition(
    site: Site, server: FeedServer
) -> None:
    names = ["alpha", "beta", "gamma"]
    for name in names:
        server.add(name, 3)
    site.feeds = [rss_feed(server, name) for name in names]
    site.write_config()
    daemon = site.start()
    served = server.served_links()
    wait_for(lambda: set(site.stored_links()) == served, "the daemon's first poll")

    updates = [
        subprocess.Popen(
            [DIGEST, "--config", str(site.config), "update"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=site.env(),
        )
        for _ in range(5)
    ]
    results = [(u.wait(120), *u.communicate()) for u in updates]

    for code, out, errors in results:
        assert code == 0, out + errors
        assert "Traceback" not in errors
    closers = [out for _, out, _ in results if "closed links/" in out]
    assert len(closers) == 1, [out for _, out, _ in results]
    assert sum("no new editions" in out for _, out, _ in results) == 4
    assert len(site.editions()) == 1
    assert site.unclosed() == 0
    assert daemon.poll() is None, "the daemon died"
    code, _ = terminate(daemon)
    assert code == 0
    check_site_files(site)


def test_a_runner_that_cannot_get_the_lock_skips_with_a_message(
    site: Site, server: FeedServer
) -> None:
    server.add("alpha", 2)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    assert site.digest("poll").returncode == 0

    with publish_lock(site.state, wait=0):
        started = time.monotonic()
        skipped = site.digest("build", DIGEST_LOCK_WAIT="1")
        waited = time.monotonic() - started
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped closing and rendering: another digest process " in skipped.stderr
    assert f"(pid {os.getpid()})" in skipped.stderr and "publish.lock" in skipped.stderr
    assert waited >= 1
    assert site.editions() == []

    done = site.digest("build")
    assert done.returncode == 0 and "closed links/" in done.stdout
    assert len(site.editions()) == 1


def test_sigterm_with_100_slow_feeds_in_flight_exits_0_quickly(
    site: Site, server: FeedServer
) -> None:
    server.add("fast", 2)
    site.feeds = [rss_feed(server, "fast")] + [
        {"url": f"{server.base}/slow/{n}", "name": f"Slow {n}", "stream": "links", "interval": "1h"}
        for n in range(100)
    ]
    site.write_config()
    daemon = site.start()
    wait_for(lambda: server.slow_in_flight >= 100, "100 slow fetches in flight")
    code, took = terminate(daemon, timeout=10)

    assert code == 0, site.log(daemon)
    assert took < 10
    log = site.log(daemon)
    assert "received SIGTERM: stopping" in log and "poll cancelled" in log
    assert "daemon stopped" in log and "Traceback" not in log
    # What finished is committed; the slow feeds were not polled, so they stay due.
    assert len(site.stored_links()) == 2
    unpolled = "SELECT count(*) FROM feeds WHERE url LIKE '%/slow/%' AND last_poll_at IS NULL"
    assert site.query(unpolled) == [(100,)]


def test_config_edits_are_picked_up_and_a_broken_one_is_ignored(
    site: Site, server: FeedServer
) -> None:
    server.add("alpha", 2)
    server.add("beta", 2)
    server.add("gamma", 2)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    daemon = site.start()
    wait_for(lambda: len(site.stored_links()) == 2, "alpha to be polled")

    # Saved with a new feed: polled without a restart or a signal.
    site.feeds.append(rss_feed(server, "beta", interval="2s"))
    site.write_config()
    wait_for(lambda: len(site.stored_links()) == 4, "beta, added to the file, to be polled")
    assert "config reloaded: 2 feeds" in site.log(daemon)

    # A broken edit is logged, problem by problem, and the running config stays.
    site.feeds.append(rss_feed(server, "gamma"))
    site.write_config(extra_site="  colour: blue\n")
    wait_for(lambda: "site.colour: unknown key" in site.log(daemon), "the problem to be logged")
    assert f"config not reloaded: {site.config}:9: site.colour: unknown key" in site.log(daemon)
    assert daemon.poll() is None
    server.add("alpha", 1)
    wait_for(lambda: len(site.stored_links()) == 5, "alpha to be polled on the old config")
    assert not site.query("SELECT 1 FROM feeds WHERE name = 'Gamma'")

    # Fixed, but with the file's size and time as before: only SIGHUP makes it re-read.
    broken = site.config.stat()
    site.write_config(extra_site="  #olour: blue\n")
    os.utime(site.config, ns=(broken.st_atime_ns, broken.st_mtime_ns))
    assert site.config.stat().st_size == broken.st_size
    time.sleep(3)  # longer than the daemon's check of the file
    assert len(site.stored_links()) == 5
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: len(site.stored_links()) == 7, "gamma to be polled after SIGHUP")
    assert "received SIGHUP" in site.log(daemon)
    code, _ = terminate(daemon)
    assert code == 0, site.log(daemon)


def test_a_closing_missed_while_down_is_made_up_once(site: Site, server: FeedServer) -> None:
    now = datetime.now(UTC)
    year_start = datetime(now.year, 1, 1, tzinfo=UTC)
    server.add("alpha", 1, published=datetime(2019, 6, 1, tzinfo=UTC))
    server.add("alpha", 2, published=year_start - timedelta(days=100))
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()  # closes at midnight on 1 January
    assert site.digest("poll").returncode == 0
    first = site.digest("build", "--at", "2020-01-01 00:00")
    assert first.returncode == 0 and "closed links/2020/01/01/1" in first.stdout, first.stderr

    # Down at every 1 January since: at start the daemon makes up the latest one, as of then.
    daemon = site.start()
    wait_for(lambda: len(site.editions()) == 2, "the missed closing")
    assert site.editions()[1] == ("links", f"{now.year}-01-01", 1)
    assert site.unclosed() == 0
    wait_for(lambda: (site.public / f"links/{now.year}/01/01/1.html").is_file(), "its pages")
    assert terminate(daemon)[0] == 0
    assert "making up the closing missed at" in site.log(daemon)

    # Once only: a restart with new entries waiting does not close again.
    server.add("alpha", 1)
    again = site.start()
    wait_for(lambda: len(site.stored_links()) == 4, "the new entry to be polled")
    time.sleep(2)
    assert terminate(again)[0] == 0
    assert len(site.editions()) == 2
    assert "making up" not in site.log(again)


def test_status_says_what_runs_and_what_fails(site: Site, server: FeedServer) -> None:
    server.add("alpha", 2)
    site.feeds = [rss_feed(server, "alpha"), rss_feed(server, "missing")]
    site.write_config()
    assert site.digest("status").stdout.startswith("daemon: not running\n")

    daemon = site.start(close_every="1s")
    wait_for(lambda: len(site.editions()) == 1, "an edition")
    wait_for(
        lambda: site.query("SELECT 1 FROM feeds WHERE name = 'Missing' AND failures > 0"),
        "the missing feed to fail",
    )
    report = json.loads(site.digest("status", "--json").stdout)
    assert report["daemon"] == {"running": True, "pid": daemon.pid}
    assert report["last_poll"] is not None
    assert [feed["name"] for feed in report["failing_feeds"]] == ["Missing"]
    assert report["failing_feeds"][0]["last_status"] == "404"
    links = report["streams"]["links"]
    assert links["last_edition"]["path"].startswith("links/") and links["next_closing"]
    text = site.digest("status").stdout
    assert f"daemon: running (pid {daemon.pid})" in text
    assert "Missing <" in text and "stream links ('0 0 1 1 *'):" in text

    # Killed, it leaves its pid file behind; the lock, not the file, says whether it runs.
    daemon.kill()
    daemon.wait(30)
    assert (site.state / "daemon.pid").read_text().strip() == str(daemon.pid)
    report = json.loads(site.digest("status", "--json").stdout)
    assert report["daemon"] == {"running": False, "pid": None}
    next_closing = datetime.fromisoformat(report["streams"]["links"]["next_closing"])
    assert (next_closing.month, next_closing.day, next_closing.hour) == (1, 1, 0)


def test_a_second_daemon_refuses_to_start(site: Site, server: FeedServer) -> None:
    server.add("alpha", 1)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    first = site.start()
    wait_for(lambda: site.stored_links(), "the first daemon to poll")
    second = site.digest("run")
    assert second.returncode == 1
    assert second.stderr.startswith(
        f"not started: a daemon is already running: another digest process (pid {first.pid})"
    )
    assert first.poll() is None
    assert terminate(first)[0] == 0


def test_json_logs_are_one_object_per_line(site: Site, server: FeedServer) -> None:
    server.add("alpha", 1)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    daemon = subprocess.Popen(
        [
            DIGEST,
            "--config",
            str(site.config),
            "run",
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=site.env(),
    )
    site.processes.append(daemon)
    wait_for(lambda: site.stored_links(), "a poll")
    assert terminate(daemon)[0] == 0
    assert daemon.stderr is not None
    events = [json.loads(line) for line in daemon.stderr.read().splitlines()]
    messages = [event["message"] for event in events]
    assert any(m.startswith("daemon started") for m in messages)
    assert any(m.startswith("polled 1 feeds: 1 fetched") for m in messages)
    assert {"time", "level", "logger", "message"} <= set(events[0])
