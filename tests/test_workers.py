"""Several `digest poll` processes on one database poll each due feed once, and a poller
killed mid-poll leaves its feeds to the others once its lease runs out (the other a poll in the
test's own process).

Real processes (the installed `digest` script), a real local HTTP server that counts every
GET, and a real database: PostgreSQL (claims by FOR UPDATE SKIP LOCKED) and SQLite (claims
inside BEGIN IMMEDIATE).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
import yaml
from aiohttp import web
from sqlalchemy import Select, func, select

from digest.config import load_config
from digest.store import EntryRow, FeedRow, Store, sync_feeds
from tests.daemon_harness import digest_here

DIGEST = Path(sys.executable).parent / "digest"
ENTRIES_PER_FEED = 3
POLLERS = 4
RUN_TIMEOUT = 180.0  # a hung poller fails the test instead of hanging the suite

pytestmark = pytest.mark.slow


class FeedServer:
    """Serves /feed/<n> (a small RSS feed) and counts GETs per (User-Agent, path).

    Responses wait for `open()`, so a test can hold pollers mid-poll, then a short delay
    so that the pollers' work overlaps.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.base_url = ""
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._gate = asyncio.Event()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, n: int) -> str:
        return f"{self.base_url}/feed/{n}"

    def open(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.set)

    def counts(self, user_agent: str) -> Counter[str]:
        with self._lock:
            return Counter(
                {path: n for (agent, path), n in self._counts.items() if agent == user_agent}
            )

    def agents(self) -> set[str]:
        with self._lock:
            return {agent for agent, _ in self._counts}

    async def _feed(self, request: web.Request) -> web.Response:
        with self._lock:
            self._counts[request.headers.get("User-Agent", ""), request.path] += 1
        await self._gate.wait()
        await asyncio.sleep(self.delay)
        return web.Response(
            body=rss(request.match_info["n"], self.base_url), content_type="application/rss+xml"
        )

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        app = web.Application()
        app.router.add_get("/feed/{n}", self._feed)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._stop = self._loop.create_future()
        self._ready.set()
        try:
            await self._stop
        finally:
            self._gate.set()  # let held handlers finish so cleanup does not wait on them
            await runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the feed server did not start")

    def stop(self) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set_result, None)
        self._thread.join(10)


def rss(n: str, base: str) -> bytes:
    items = "".join(
        f"<item><title>Story {i} of feed {n}</title><link>{base}/post/{n}/{i}</link>"
        f"<guid isPermaLink='false'>feed-{n}-item-{i}</guid>"
        f"<pubDate>Fri, 28 Mar 2025 0{i}:00:00 +0000</pubDate>"
        f"<description>Blurb {i} of feed {n}.</description></item>"
        for i in range(ENTRIES_PER_FEED)
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        f"<title>Feed {n}</title><link>{base}/</link><description>d</description>"
        f"{items}</channel></rss>"
    ).encode()


@contextmanager
def feed_server(delay: float = 0.02) -> Iterator[FeedServer]:
    server = FeedServer(delay)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_config(
    path: Path, database: str, server: FeedServer, feeds: int, *, concurrency: int, agent: str
) -> Path:
    config = {
        "site": {
            "title": "Workers",
            "base_url": "https://example.org/",
            "database": database,
            "output_dir": str(path.parent / "public"),
            "state_dir": str(path.parent / "state"),
        },
        "streams": {"links": {"title": "Links {date:%d/%m/%Y}: {headlines}"}},
        "fetch": {
            "allow_private_networks": True,
            # Long: a held response must not time out, and the lease (from the timeout) must
            # outlast a batch on a slow machine; only the killed poller gets a short lease.
            "timeout": 60,
            "concurrency": concurrency,
            "per_host": min(concurrency, 100),  # every feed is on one host here
            "user_agent": agent,
        },
        "feeds": [
            {"url": server.url(n), "name": f"Feed {n}", "stream": "links", "interval": "1h"}
            for n in range(feeds)
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def prepare(config: Path) -> Store:
    """Migrate and load the feeds once, as an operator's first run does."""
    settings = load_config(config).settings
    store = Store(settings.site.database)
    store.upgrade()
    with store.writing() as session:
        sync_feeds(session, settings.feeds, datetime.now(UTC))
    return store


@dataclass
class Poller:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def wait(self) -> tuple[int, str, str]:
        try:
            code = self.process.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.wait()
        return code, self.stdout.read_text(), self.stderr.read_text()

    def kill(self) -> None:
        """SIGKILL the poller and its parser pool (they are its process group)."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def polled(self) -> int:
        return feeds_polled(self.stdout.read_text())


def feeds_polled(stdout: str) -> int:
    """How many feeds a poller says it polled ("polled N feeds: ...")."""
    for line in stdout.splitlines():
        if line.startswith("polled "):
            return int(line.split()[1])
    raise AssertionError(f"no summary line in {stdout!r}")


def outcome(code: int, out: str, err: str) -> str:
    """A failed poller in a few lines: SQLAlchemy errors carry pages of SQL parameters."""
    errors = [line[:400] for line in err.splitlines() if "Error" in line or "DETAIL" in line]
    return f"exit {code}\nstdout: {out.strip()}\nerrors:\n" + "\n".join(errors or [err[-2000:]])


def start_poller(config: Path, folder: Path, name: str, lease: int | None = None) -> Poller:
    env = {k: v for k, v in os.environ.items() if k != "DIGEST_TEST_LEASE"}
    if lease is not None:
        env["DIGEST_TEST_LEASE"] = f"{lease}s"
    stdout, stderr = folder / f"{name}.out", folder / f"{name}.err"
    outputs: list[IO[bytes]] = [stdout.open("wb"), stderr.open("wb")]
    try:
        process = subprocess.Popen(
            [str(DIGEST), "--config", str(config), "poll"],
            stdout=outputs[0],
            stderr=outputs[1],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group, so a kill takes its pool too
        )
    finally:
        for output in outputs:
            output.close()
    return Poller(process, stdout, stderr)


@contextmanager
def running(pollers: list[Poller]) -> Iterator[list[Poller]]:
    """Whatever the test does, no poller outlives it."""
    try:
        yield pollers
    finally:
        for poller in pollers:
            if poller.process.poll() is None:
                poller.kill()
                poller.process.wait()


def scalar(store: Store, query: Select[tuple[int]] | Select[int]) -> int:
    with store.reading() as session:
        return session.scalar(query) or 0


def claimers(store: Store) -> int:
    return scalar(store, select(func.count(func.distinct(FeedRow.claimed_by))))


def unclaimed_unpolled(store: Store) -> int:
    return scalar(
        store,
        select(func.count()).where(FeedRow.claimed_by.is_(None), FeedRow.last_poll_at.is_(None)),
    )


def wait_until(condition: Callable[[], bool], timeout: float = 45.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_all_polled_once(store: Store, counts: Counter[str], feeds: int) -> None:
    expected = {f"/feed/{n}" for n in range(feeds)}
    missing = sorted(expected - set(counts))
    repeated = {path: n for path, n in counts.items() if n != 1}
    assert not missing and not repeated, f"not fetched: {missing[:10]}; fetched again: {repeated}"
    assert set(counts) == expected
    entries = scalar(store, select(func.count()).select_from(EntryRow))
    assert entries == feeds * ENTRIES_PER_FEED
    with store.reading() as session:
        rows = session.execute(
            select(FeedRow.last_poll_at, FeedRow.claimed_by, FeedRow.last_status)
        ).all()
    assert len(rows) == feeds
    assert all(row.last_poll_at is not None for row in rows)
    assert {row.claimed_by for row in rows} == {None}  # every claim was let go
    assert {row.last_status for row in rows} == {"200"}


def feeds_for(database_url: str) -> int:
    """2,000 feeds on PostgreSQL; SQLite serializes writers, so fewer keep the test short."""
    return 2000 if database_url.startswith("postgresql") else 300


def test_concurrent_pollers_poll_each_feed_once(database_url: str, tmp_path: Path) -> None:
    feeds = feeds_for(database_url)
    with feed_server() as server:
        config = write_config(
            tmp_path / "feeds.yaml", database_url, server, feeds, concurrency=50, agent="poller"
        )
        store = prepare(config)
        try:
            pollers = [start_poller(config, tmp_path, f"poller{i}") for i in range(POLLERS)]
            with running(pollers):
                # Hold every response until each poller holds a claim (or nothing is left to
                # claim), so the four really poll at the same time however fast one starts.
                # A poller that exits early opens the gate too (its exit code tells why), and
                # so does a long wait (the check below that the work was shared tells).
                wait_until(
                    lambda: (
                        claimers(store) == POLLERS
                        or unclaimed_unpolled(store) == 0
                        or any(poller.process.poll() is not None for poller in pollers)
                    )
                )
                server.open()
                results = [poller.wait() for poller in pollers]
            for code, out, err in results:
                assert code == 0, outcome(code, out, err)
            polled = [poller.polled() for poller in pollers]
            assert sum(polled) == feeds, polled
            assert sum(1 for n in polled if n) >= 2, f"one poller did all the work: {polled}"
            assert server.agents() == {"poller"}
            assert_all_polled_once(store, server.counts("poller"), feeds)
        finally:
            store.close()


def test_a_killed_poller_leaves_its_feeds_to_the_others(database_url: str, tmp_path: Path) -> None:
    feeds, lease = 120, 3
    with feed_server() as server:
        # The two configs differ only in the User-Agent, so the server tells whose GET it got.
        doomed = write_config(
            tmp_path / "doomed.yaml", database_url, server, feeds, concurrency=10, agent="doomed"
        )
        config = write_config(
            tmp_path / "feeds.yaml", database_url, server, feeds, concurrency=10, agent="survivor"
        )
        store = prepare(config)
        try:
            victim = start_poller(doomed, tmp_path, "doomed", lease=lease)
            with running([victim]):
                started = wait_until(
                    lambda: bool(server.counts("doomed")) or victim.process.poll() is not None
                )
                assert started and victim.process.poll() is None, victim.wait()
                victim.kill()
                assert victim.process.wait(RUN_TIMEOUT) == -signal.SIGKILL
            with store.reading() as session:
                held = session.execute(
                    select(FeedRow.id, FeedRow.lease_until).where(FeedRow.claimed_by.is_not(None))
                ).all()
                polled = session.scalar(
                    select(func.count()).where(FeedRow.last_poll_at.is_not(None))
                )
            assert held, "the killed poller held no claims"
            assert polled == 0  # it was killed before any response came back
            expiry = max(row.lease_until for row in held)
            server.open()
            # The survivor claims what no live lease holds: start it once the last has run out.
            assert wait_until(lambda: datetime.now(UTC) > expiry, timeout=3 * lease)
            # The survivor is any other poller: one in this process will do.
            survivor = digest_here(config, ("poll",), {})
            code, out, err = survivor.returncode, survivor.stdout, survivor.stderr
            assert code == 0, outcome(code, out, err)
            assert feeds_polled(out) == feeds
            assert_all_polled_once(store, server.counts("survivor"), feeds)
        finally:
            store.close()


def test_pollers_started_together_on_a_new_database(database_url: str, tmp_path: Path) -> None:
    """Cron on several machines, first run: each poller migrates the schema and loads the
    feeds at the same moment; all must succeed, and still poll each feed once."""
    feeds = 100
    with feed_server() as server:
        config = write_config(
            tmp_path / "feeds.yaml", database_url, server, feeds, concurrency=10, agent="first"
        )
        server.open()
        pollers = [start_poller(config, tmp_path, f"first{i}") for i in range(POLLERS)]
        with running(pollers):
            results = [poller.wait() for poller in pollers]
        failed = [outcome(*result) for result in results if result[0] != 0]
        assert not failed, "\n\n".join(failed)
        store = Store(database_url)
        try:
            assert_all_polled_once(store, server.counts("first"), feeds)
        finally:
            store.close()


def process_group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_poll_stopped_mid_parse_leaves_no_leaked_semaphore_warning(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGTERM mid-poll (cron's `timeout`, an operator's `kill`) stops the parser pool and
    exits 143. multiprocessing's resource tracker, which outlives the poller, used to warn of
    "leaked semaphore objects" into every cron mail after either signal; after kill -9 it
    still cleans them up, silently."""
    feeds = 300
    with feed_server(delay=0.05) as server:
        config = write_config(
            tmp_path / "feeds.yaml",
            f"sqlite:///{tmp_path / 'digest.db'}",
            server,
            feeds,
            concurrency=10,
            agent="stopped",
        )
        store = prepare(config)
        try:
            server.open()
            poller = start_poller(config, tmp_path, "stopped")
            with running([poller]):
                # Mid-poll, with parsed feeds stored: the parser pool's workers are up.
                assert wait_until(
                    lambda: (
                        scalar(store, select(func.count()).select_from(EntryRow)) > 0
                        or poller.process.poll() is not None
                    )
                )
                assert poller.process.poll() is None, poller.wait()
                os.kill(poller.process.pid, stop)  # the poller alone, not its group
                code, out, err = poller.wait()
                # The resource tracker writes its warning as it exits, after the poller.
                assert wait_until(lambda: process_group_gone(poller.process.pid), timeout=15)
            err = poller.stderr.read_text()
            assert "leaked semaphore" not in err
            assert "Traceback" not in err
            polled = scalar(store, select(func.count()).where(FeedRow.last_poll_at.is_not(None)))
            assert 0 < polled < feeds
            if stop == signal.SIGKILL:
                assert code == -signal.SIGKILL
                return
            assert code == 128 + signal.SIGTERM, outcome(code, out, err)
            assert "poll stopped by SIGTERM" in err
            assert claimers(store) == 0  # its claims were given back, not left to expire
        finally:
            store.close()
