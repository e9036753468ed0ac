"""Polling end to end against a real local server: what a poll leaves in the database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from werkzeug import Request, Response

from digest.config import FeedSettings, FetchSettings
from digest.due import MAX_BACKOFF, next_poll_time
from digest.parse import ParsedFeed, ParseFailure
from digest.parse.pool import ParserPool
from digest.poll import POLL_GC_THRESHOLD, Poller, PollSummary
from digest.store import EntryRow, FeedRow, Store
from tests.conftest import add_feeds, sqlite_copy
from tests.daemon_harness import wait_for

RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
<link>https://example.net/</link><description>d</description>{items}</channel></rss>"""


def rss(*titles: str) -> str:
    return RSS.format(
        items="".join(
            f"<item><title>{t}</title><link>https://example.net/{t}</link>"
            f"<pubDate>Fri, 28 Mar 2025 10:00:00 GMT</pubDate></item>"
            for t in titles
        )
    )


@pytest.fixture
def db(tmp_path: Path, migrated_sqlite: Path) -> Iterator[Store]:
    store = Store(sqlite_copy(migrated_sqlite, tmp_path / "digest.db"))
    yield store
    store.close()


def poll(store: Store, *urls: str, parse_timeout: float = 30.0) -> PollSummary:
    add_feeds(store, [FeedSettings(url=url, stream="links") for url in urls], datetime.now(UTC))
    settings = FetchSettings(allow_private_networks=True, parse_timeout=parse_timeout)
    return Poller(store, settings).run(every=True)


def feed(store: Store, config_url: str) -> FeedRow:
    with store.reading() as session:
        return session.scalars(select(FeedRow).where(FeedRow.config_url == config_url)).one()


def entries(store: Store) -> int:
    with store.reading() as session:
        return session.scalar(select(func.count()).select_from(EntryRow)) or 0


def test_etag_round_trip_gives_304_and_no_parse(db: Store, httpserver: HTTPServer) -> None:
    seen: list[str | None] = []

    def handler(request: Request) -> Response:
        seen.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304)
        return Response(rss("a", "b"), headers={"ETag": '"v1"'}, content_type="application/rss+xml")

    httpserver.expect_request("/feed").respond_with_handler(handler)
    url = httpserver.url_for("/feed")
    poll(db, url)
    poll(db, url)
    assert seen == [None, '"v1"']
    row = feed(db, url)
    assert (row.last_status, row.etag, row.failures) == ("304", '"v1"', 0)
    assert entries(db) == 2


def test_a_poll_collects_garbage_seldom_and_gives_the_threshold_back(
    db: Store, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/feed").respond_with_data(rss("a"), content_type="text/xml")
    add_feeds(
        db, [FeedSettings(url=httpserver.url_for("/feed"), stream="links")], datetime.now(UTC)
    )
    before = gc.get_threshold()
    seen: list[int] = []
    poller = Poller(db, FetchSettings(allow_private_networks=True))
    poller.run(every=True, progress=lambda _done, _total: seen.append(gc.get_threshold()[0]))
    assert seen and set(seen) == {max(before[0], POLL_GC_THRESHOLD)}
    assert gc.get_threshold() == before


def test_same_bytes_without_etag_are_not_parsed_again(db: Store, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(rss("a"), content_type="text/xml")
    url = httpserver.url_for("/feed")
    poll(db, url)
    poll(db, url)
    assert feed(db, url).last_status == "200" and entries(db) == 1


def test_permanent_redirects_move_the_feed_and_temporary_ones_do_not(
    db: Store, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/old").respond_with_data(
        "", status=301, headers={"Location": "/older"}
    )
    httpserver.expect_request("/older").respond_with_data(
        "", status=308, headers={"Location": "/new"}
    )
    httpserver.expect_request("/new").respond_with_data(rss("a"), content_type="text/xml")
    httpserver.expect_request("/temp").respond_with_data(
        "", status=302, headers={"Location": "/new"}
    )
    moved, temporary = httpserver.url_for("/old"), httpserver.url_for("/temp")
    poll(db, moved, temporary)
    assert feed(db, moved).url == httpserver.url_for("/new")
    assert feed(db, temporary).url == temporary


def test_gone_disables_and_errors_back_off(db: Store, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/gone").respond_with_data("", status=410)
    httpserver.expect_request("/missing").respond_with_data("", status=404)
    gone, missing = httpserver.url_for("/gone"), httpserver.url_for("/missing")
    poll(db, gone, missing)
    assert feed(db, gone).disabled_reason is not None
    assert "410" in (feed(db, gone).disabled_reason or "")
    first = feed(db, missing)
    assert (first.failures, first.last_error) == (1, "HTTP 404 Not Found")
    poll(db, missing)
    second = feed(db, missing)
    assert second.failures == 2
    assert second.next_poll_at and second.last_poll_at
    # the wait doubles: 2 h then 4 h for a 1 h interval (plus up to 10 % jitter)
    assert second.next_poll_at - second.last_poll_at >= timedelta(hours=4)


def test_retry_after_is_honoured(db: Store, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/busy").respond_with_data(
        "", status=429, headers={"Retry-After": "7200"}
    )
    busy = httpserver.url_for("/busy")
    poll(db, busy)
    row = feed(db, busy)
    assert row.next_poll_at and row.last_poll_at
    assert row.next_poll_at - row.last_poll_at >= timedelta(seconds=7200)


def test_next_poll_time_rules() -> None:
    now = datetime(2025, 3, 28, tzinfo=UTC)
    rng = random.Random(0)
    hour = timedelta(hours=1)
    assert now + hour <= next_poll_time(now, hour, 0, rng=rng) <= now + hour * 1.1
    assert next_poll_time(now, hour, 3, rng=rng) >= now + 8 * hour
    assert next_poll_time(now, hour, 30, rng=rng) <= now + MAX_BACKOFF * 1.1
    later = now + timedelta(hours=5)
    assert next_poll_time(now, hour, 0, fresh_until=later, rng=rng) == later
    assert next_poll_time(now, hour, 1, retry_after=later, rng=rng) == later
    far = now + timedelta(days=30)
    # A server's word is honoured up to a cap: a day of freshness, a week of Retry-After.
    assert next_poll_time(now, hour, 0, fresh_until=far, rng=rng) == now + timedelta(days=1)
    assert next_poll_time(now, hour, 1, retry_after=far, rng=rng) == now + timedelta(days=7)
    five_days = now + timedelta(days=5)
    assert next_poll_time(now, hour, 1, retry_after=five_days, rng=rng) == five_days


@pytest.mark.slow  # waits out real deadlines or kills a parser process
def test_a_poll_polls_what_was_due_when_it_started_once(db: Store, httpserver: HTTPServer) -> None:
    """Feeds due again during a long poll wait for the next run, so `digest update` gets to
    build: with `interval: 1s` and slow servers a poll used to claim the fast feed again and
    again, and never ended while feeds kept falling due."""
    httpserver.expect_request("/fast").respond_with_data(rss("fast"))

    def slow(_request: Request) -> Response:
        time.sleep(1.5)  # the server answers one request at a time: these take turns
        return Response(rss("slow"), content_type="application/rss+xml")

    httpserver.expect_request("/slow-1").respond_with_handler(slow)
    httpserver.expect_request("/slow-2").respond_with_handler(slow)
    urls = [httpserver.url_for(path) for path in ("/fast", "/slow-1", "/slow-2")]
    every_second = timedelta(seconds=1)
    add_feeds(
        db,
        [FeedSettings(url=url, stream="links", interval=every_second) for url in urls],
        datetime.now(UTC),
    )

    poller = Poller(db, FetchSettings(allow_private_networks=True))
    finished: list[PollSummary] = []
    running = threading.Thread(target=lambda: finished.append(poller.run()), daemon=True)
    running.start()
    running.join(60)  # generous: the poll takes about 3 s; the bug made it endless
    assert finished, "the poll did not end"
    summary = finished[0]

    assert summary.polled == 3 and summary.fetched == 3, summary.line()
    asked = [request.path for request, _response in httpserver.log]
    assert sorted(asked) == ["/fast", "/slow-1", "/slow-2"]


def test_a_broken_feed_does_not_stop_the_others(db: Store, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/html").respond_with_data(
        "<html><body>hi</body></html>", content_type="text/html"
    )
    httpserver.expect_request("/ok").respond_with_data(rss("a", "b", "c"), content_type="text/xml")
    broken, ok = httpserver.url_for("/html"), httpserver.url_for("/ok")
    poll(db, broken, ok)
    assert (feed(db, broken).last_error or "").startswith("not a feed")
    assert feed(db, ok).last_error is None and entries(db) == 3


def test_each_feed_gets_its_own_parse_among_many(db: Store, httpserver: HTTPServer) -> None:
    """Bodies go to the parser processes several at a time: every feed must still get its
    own entries or its own error back, whatever batch it travelled in."""
    urls = []
    for n in range(21):  # more than two batches, and not a whole number of them
        path = f"/feed/{n}"
        if n % 5 == 3:
            httpserver.expect_request(path).respond_with_data(
                f"<html><body>page {n}</body></html>", content_type="text/html"
            )
        else:
            body = rss(*(f"feed{n}-story{k}" for k in range(n % 4 + 1)))
            httpserver.expect_request(path).respond_with_data(body, content_type="text/xml")
        urls.append(httpserver.url_for(path))
    poll(db, *urls)
    for n, url in enumerate(urls):
        row = feed(db, url)
        with db.reading() as session:
            titles = set(session.scalars(select(EntryRow.title).where(EntryRow.feed_id == row.id)))
        if n % 5 == 3:
            assert (row.last_error or "").startswith("not a feed"), url
            assert titles == set()
        else:
            assert row.last_error is None, url
            assert titles == {f"feed{n}-story{k}" for k in range(n % 4 + 1)}


class Versions:
    """A feed whose body changes when `bump` says: 304 to the current version's ETag."""

    def __init__(self) -> None:
        self.version = 1

    def bump(self) -> None:
        self.version += 1

    def handler(self, request: Request) -> Response:
        etag = f'"v{self.version}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304)
        body = rss(f"story{self.version}")
        return Response(body, headers={"ETag": etag}, content_type="application/rss+xml")


def parsers_gone() -> bool:
    """No parser process left (the fork server reaps a stopped one a moment later)."""
    deadline = time.monotonic() + 30
    while parser_processes():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_parser_processes_start_at_the_first_body_and_stop_with_the_poll(
    db: Store, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/feed").respond_with_handler(Versions().handler)
    httpserver.expect_request("/missing").respond_with_data("", status=404)
    poll(db, httpserver.url_for("/missing"))
    assert parser_processes() == []  # nothing to parse: none started
    poll(db, httpserver.url_for("/feed"))
    assert entries(db) == 1 and parsers_gone()


def kept_poller(db: Store, httpserver: HTTPServer) -> tuple[Poller, Versions]:
    """A poller that keeps its parsers (as the daemon's), of one local feed whose versions
    the test bumps."""
    feed_versions = Versions()
    httpserver.expect_request("/feed").respond_with_handler(feed_versions.handler)
    url = httpserver.url_for("/feed")
    add_feeds(db, [FeedSettings(url=url, stream="links")], datetime.now(UTC))
    return Poller(db, FetchSettings(allow_private_networks=True), keep_parsers=True), feed_versions


def test_kept_parser_processes_serve_every_poll_until_closed(
    db: Store, httpserver: HTTPServer
) -> None:
    """The daemon's way: a poll that finds a body among its 304s does not start parsers."""
    poller, feed_versions = kept_poller(db, httpserver)
    try:
        assert poller.run(every=True).fetched == 1
        started = sorted(parser_processes())
        assert started
        assert poller.run(every=True).not_modified == 1
        feed_versions.bump()
        assert poller.run(every=True).fetched == 1
        assert sorted(parser_processes()) == started
    finally:
        poller.close()
    assert entries(db) == 2 and parsers_gone()


class TripsNeverRun:
    """A parser pool that takes trips and never runs them, as pebble can lose one queued
    while its pool breaks."""

    active = True

    def __init__(self) -> None:
        self.sent: list[concurrent.futures.Future[object]] = []

    def schedule(self, *_args: object, **_kwargs: object) -> concurrent.futures.Future[object]:
        self.sent.append(concurrent.futures.Future())
        return self.sent[-1]

    def stop(self) -> None:
        pass

    def join(self) -> None:
        pass


def test_a_parse_that_never_runs_fails_at_its_own_deadline() -> None:
    """The poll goes on: each trip gives up once every trip ahead of it could have used its
    whole time, and its feeds fail (to be tried again by the next poll)."""
    lost = TripsNeverRun()

    async def parse_some() -> list[ParsedFeed | ParseFailure]:
        with ParserPool(timeout=0.2) as parser:
            parser.MARGIN = 0.1
            parser._pool = lost  # type: ignore[assignment]
            bodies = [rss(str(n)).encode() for n in range(ParserPool.SIZE + 1)]  # two trips
            return await asyncio.wait_for(
                asyncio.gather(
                    *(parser.parse(body, "https://example.net/", {}) for body in bodies)
                ),
                timeout=60,  # a hang fails here instead
            )

    parsed = asyncio.run(parse_some())
    assert len(lost.sent) == 2 and all(trip.cancelled() for trip in lost.sent)
    for failure in parsed:  # 0.3 s for the first two trips a core, then 0.2 s more a round
        assert isinstance(failure, ParseFailure) and not failure.lasting
        assert failure.reason.startswith("parse did not run within 0.")
        assert failure.reason.endswith("s (the parser processes were lost)")


def test_kept_parsers_killed_while_idle_are_replaced(db: Store, httpserver: HTTPServer) -> None:
    """A parser the OOM killer ends between polls breaks pebble's pool for good: the next
    poll's bodies go to a new one instead of failing the poll."""
    poller, feed_versions = kept_poller(db, httpserver)
    try:
        poller.run(every=True)
        killed = parser_processes()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        # pebble looks at its workers ten times a second: the next poll comes once it has seen
        # them die (the pool is then inactive), however long that takes on a busy machine.
        pool = poller._parser._pool
        assert pool is not None
        wait_for(lambda: not pool.active, "pebble to see its workers die")
        feed_versions.bump()
        summary = poller.run(every=True)
        assert (summary.fetched, summary.failed) == (1, 0), summary.failures
        assert parser_processes() and set(parser_processes()).isdisjoint(killed)
    finally:
        poller.close()
    assert entries(db) == 2


# nh3 takes quadratic time over nested blocks: this 2 MB description would take it many minutes
# (160 KB took 6 s here), on any machine far longer than the deadlines below.
ENDLESS_PARSE = RSS.format(
    items="<item><title>Deep</title><link>https://example.net/deep</link>"
    f"<description><![CDATA[{'<ul><li>' * 250_000}]]></description></item>"
)


def serve_good_feeds_and_one_endless(httpserver: HTTPServer) -> tuple[list[str], str]:
    good = []
    for n in range(6):
        httpserver.expect_request(f"/good/{n}").respond_with_data(
            rss(f"good{n}"), content_type="text/xml"
        )
        good.append(httpserver.url_for(f"/good/{n}"))
    httpserver.expect_request("/deep").respond_with_data(ENDLESS_PARSE, content_type="text/xml")
    return good, httpserver.url_for("/deep")


@pytest.mark.slow  # waits out real deadlines or kills a parser process
def test_a_parse_past_its_deadline_fails_that_feed_only(db: Store, httpserver: HTTPServer) -> None:
    good, deep = serve_good_feeds_and_one_endless(httpserver)
    summary = poll(db, *good, deep, parse_timeout=2)
    assert [failure.url for failure in summary.failures] == [deep]
    assert feed(db, deep).last_error == "parse stopped after 2s (fetch.parse_timeout)"
    assert feed(db, deep).failures == 1
    # Not judged from the bytes (a busy machine may be to blame): parsed again next time.
    assert (feed(db, deep).body_hash, feed(db, deep).body_error) == (None, None)
    assert all(feed(db, url).last_error is None for url in good)
    assert entries(db) == len(good)


@pytest.mark.slow  # waits out real deadlines or kills a parser process
def test_a_parser_process_killed_mid_parse_fails_that_feed_only(
    db: Store, httpserver: HTTPServer
) -> None:
    """As the kernel's OOM killer would: SIGKILL to whichever parser has worked a second."""
    good, deep = serve_good_feeds_and_one_endless(httpserver)
    done = threading.Event()
    killer = threading.Thread(target=kill_busy_parsers, args=(done,), daemon=True)
    killer.start()
    try:
        summary = poll(db, *good, deep)
    finally:
        done.set()
        killer.join()
    assert [failure.url for failure in summary.failures] == [deep]
    assert feed(db, deep).last_error == (
        "parser process died while parsing (killed by signal 9; out of memory?)"
    )
    assert all(feed(db, url).last_error is None for url in good)
    assert entries(db) == len(good)


def kill_busy_parsers(done: threading.Event) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    while not done.wait(0.1):
        for pid in parser_processes():
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            if (int(fields[11]) + int(fields[12])) / ticks > 1.0:  # utime + stime
                os.kill(pid, signal.SIGKILL)


def parser_processes() -> list[int]:
    """This process's grandchildren forked by a multiprocessing fork server."""
    found = []
    for child in children(os.getpid()):
        # Like the threads in `children`, a child can end between the listing and the look.
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{child}/cmdline", "rb") as line:
            if b"multiprocessing.forkserver" in line.read():
                found.extend(children(child))
    return found


def children(pid: int) -> list[int]:
    """The children of process `pid`, by each of its threads (which come and go meanwhile)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/{pid}/task/{task}/children") as listed,
            ):
                found.extend(int(child) for child in listed.read().split())
    return found


@pytest.mark.slow  # waits out real deadlines or kills a parser process
def test_one_endless_parse_in_a_batch_leaves_its_companions_parsed() -> None:
    """Bodies travel to the parsers together; only the one past the deadline fails."""

    async def parse_together() -> list[ParsedFeed | ParseFailure]:
        with ParserPool(timeout=2) as parser:
            bodies = [rss("first"), ENDLESS_PARSE, rss("second", "third")]
            return await asyncio.gather(
                *(
                    parser.parse(body.encode(), f"https://example.net/{n}", {})
                    for n, body in enumerate(bodies)
                )
            )

    first, deep, second = asyncio.run(parse_together())
    assert isinstance(first, ParsedFeed) and [e.title for e in first.entries] == ["first"]
    assert deep == ParseFailure("parse stopped after 2s (fetch.parse_timeout)", lasting=False)
    assert isinstance(second, ParsedFeed)
    assert [e.title for e in second.entries] == ["second", "third"]
