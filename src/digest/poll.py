"""Polling: fetch the due feeds, parse what changed, store the entries.

Wiring only: fetch, parse and store each own their rules. Fetching runs concurrently on
one event loop; parsing runs in a small process pool so both cores work (reader#261: parse
in a bounded pool, not in every fetch worker); writes are short transactions, one per feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from digest import PROJECT_URL, __version__
from digest.config import FetchSettings
from digest.fetch import CacheState, Fetcher, FetchLimits, FetchResult, Outcome
from digest.parse import ParsedFeed, parse_many, prepare_worker
from digest.store import (
    ClaimedFeed,
    FeedUpdate,
    Store,
    apply_feed_updates,
    claim_feeds,
    heartbeat,
    release_claims,
    renew_leases,
    store_entries,
)
from digest.store.hosts import known_hosts, offer_host, remember_host

MAX_BACKOFF = timedelta(days=1)
MAX_FRESHNESS = timedelta(days=1)
WRITE_BATCH = 200  # feeds per write transaction, at most
JITTER = 0.1  # up to 10% of the interval, so feeds added together drift apart

ProgressCallback = Callable[[int, int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class FeedFailure:
    name: str
    url: str
    error: str


@dataclass
class PollSummary:
    polled: int = 0
    done: int = 0
    fetched: int = 0
    not_modified: int = 0
    new_entries: int = 0
    updated_entries: int = 0
    failures: list[FeedFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        return (
            f"polled {self.polled} feeds: {self.fetched} fetched, "
            f"{self.not_modified} not modified, {self.new_entries} new entries, "
            f"{self.updated_entries} updated, {self.failed} failed"
        )


def fetch_limits(settings: FetchSettings) -> FetchLimits:
    return FetchLimits(
        timeout=settings.timeout,
        max_bytes=settings.max_bytes,
        allow_private_networks=settings.allow_private_networks,
        user_agent=settings.user_agent or f"digest/{__version__} (+{PROJECT_URL})",
        concurrency=settings.concurrency,
        per_host=settings.per_host,
    )


def next_poll_time(
    now: datetime,
    interval: timedelta,
    failures: int,
    *,
    retry_after: datetime | None = None,
    fresh_until: datetime | None = None,
    rng: random.Random | None = None,
) -> datetime:
    """When to poll a feed next, given how many polls in a row have failed (0: this one worked).

    Failures back off exponentially up to a day; a server's Retry-After and Cache-Control
    freshness are honoured as the earliest time (reader#376: be polite or be blocked).
    """
    wait = interval if failures == 0 else min(interval * (2 ** min(failures, 20)), MAX_BACKOFF)
    wait += wait * JITTER * (rng or random).random()
    earliest = now + wait
    for floor in (retry_after, fresh_until):
        if floor is not None:
            earliest = max(earliest, min(floor, now + MAX_FRESHNESS))
    return earliest


@dataclass(frozen=True)
class _Due:
    id: int
    name: str
    url: str
    interval: timedelta
    failures: int
    cache: CacheState


class Poller:
    """Polls a store's due feeds once; `run` is the whole job, for the CLI and the daemon.

    Feeds are claimed in batches with a lease, so any number of pollers (processes or
    machines on one PostgreSQL) poll each due feed once; a poller that dies loses its lease
    and its feeds go to the others.
    """

    def __init__(self, store: Store, fetch_settings: FetchSettings) -> None:
        self.store = store
        self.limits = fetch_limits(fetch_settings)
        self.worker = worker_id()
        self.lease = lease_length(fetch_settings.timeout)
        self.parse_timeout = fetch_settings.parse_timeout
        # Claimed per round: enough that the fetch slots never sit idle waiting for a claim.
        self.batch = max(4 * fetch_settings.concurrency, 50)

    def run(self, *, every: bool = False, progress: ProgressCallback | None = None) -> PollSummary:
        return run_async(self.poll(every=every, progress=progress))

    async def poll(
        self, *, every: bool = False, progress: ProgressCallback | None = None
    ) -> PollSummary:
        started = datetime.now(UTC)
        with self.store.reading() as session:
            known = known_hosts(session)
        summary = PollSummary()
        claimed = await asyncio.to_thread(self._claim, started, every, self.batch)
        if not claimed:
            return summary
        keeper = asyncio.create_task(self._keep_leases())
        try:
            await self._poll_claimed(claimed, started, every, summary, known, progress)
        finally:
            keeper.cancel()
            # Claims still held were not finished (cancelled, or a write failed): give them
            # back now rather than make other pollers wait out the lease.
            with self.store.writing() as session:
                release_claims(session, self.worker)
        return summary

    async def _poll_claimed(
        self,
        claimed: list[_Due],
        started: datetime,
        every: bool,
        summary: PollSummary,
        known: Mapping[str, str],
        progress: ProgressCallback | None,
    ) -> None:
        polled: asyncio.Queue[_Polled | None] = asyncio.Queue()
        with _parser_pool() as pool:
            parser = _ParseBatches(pool, self.parse_timeout)
            writer = asyncio.create_task(self._write_all(polled, summary, known, progress))
            async with Fetcher(self.limits, known) as fetcher:

                async def one(feed: _Due) -> None:
                    result = await fetcher.fetch(feed.url, feed.cache)
                    parsed = await parser.parse(result)
                    polled.put_nowait(_Polled(feed, result, parsed))

                pending: set[asyncio.Task[None]] = set()
                try:
                    while claimed or pending:
                        summary.polled += len(claimed)
                        pending |= {asyncio.create_task(one(feed)) for feed in claimed}
                        finished, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED
                        )
                        for task in finished:
                            task.result()  # a bug in our own code must not pass silently
                        if writer.done():
                            writer.result()  # a failed write stops the poll here
                        # Top up when half the batch is done: fewer claims, no idle gap.
                        room = self.batch - len(pending)
                        claimed = (
                            await asyncio.to_thread(self._claim, started, every, room)
                            if room >= self.batch // 2
                            else []
                        )
                finally:
                    for task in pending:
                        task.cancel()
            polled.put_nowait(None)
            await writer

    async def _keep_leases(self) -> None:
        """Extend this poller's leases while it works: a long queue on a slow host must not
        let another poller take feeds this one is still fetching."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            await asyncio.to_thread(self._renew)

    def _renew(self) -> None:
        now = datetime.now(UTC)
        with self.store.writing() as session:
            renew_leases(session, self.worker, now + self.lease)
            heartbeat(session, self.worker, "poll", now)

    async def _write_all(
        self,
        polled: asyncio.Queue[_Polled | None],
        summary: PollSummary,
        known: Mapping[str, str],
        progress: ProgressCallback | None,
    ) -> None:
        """Store results in batches, one transaction each, in a thread off the event loop.

        A transaction per feed cost more than the fetch of a 304; batching also lets fetching
        go on while SQLite writes. Whatever arrives during one write is the next batch.
        """
        while True:
            batch: list[_Polled] = []
            item = await polled.get()
            while item is not None:
                batch.append(item)
                if len(batch) >= WRITE_BATCH or polled.empty():
                    break
                item = polled.get_nowait()
            if batch:
                await asyncio.to_thread(self._write, batch, summary, known)
                if progress:
                    progress(summary.done, summary.polled)
            if item is None:
                return

    def _claim(self, started: datetime, every: bool, limit: int) -> list[_Due]:
        now = datetime.now(UTC)
        with self.store.writing() as session:
            rows = claim_feeds(
                session,
                now,
                worker=self.worker,
                lease=self.lease,
                limit=limit,
                polled_before=started if every else None,
            )
            heartbeat(session, self.worker, "poll", now)
        return [_due(row) for row in rows]

    def _write(self, batch: list[_Polled], summary: PollSummary, known: Mapping[str, str]) -> None:
        now = datetime.now(UTC)
        changes = [(item, _feed_update(item, now)) for item in batch]
        new = updated = 0
        with self.store.writing() as session:
            apply_feed_updates(session, [(item.feed.id, change) for item, change in changes])
            for item, _change in changes:
                result, parsed = item.result, item.parsed
                if result.tls_host and result.tls_fingerprint:
                    # Pin a first-seen key (or note the pinned one again); a changed key is
                    # only offered: the fetch already failed, and `digest trust` accepts it.
                    fingerprint = result.tls_fingerprint
                    if known.get(result.tls_host, fingerprint) == fingerprint:
                        remember_host(session, result.tls_host, fingerprint, now)
                    else:
                        offer_host(session, result.tls_host, fingerprint, now)
                if isinstance(parsed, ParsedFeed):
                    stored = store_entries(session, item.feed.id, parsed.entries, now)
                    new += len(stored.new)
                    updated += len(stored.changed)
        # Counted only once committed, so the summary never claims what a failed write lost.
        summary.new_entries += new
        summary.updated_entries += updated
        for item, change in changes:
            summary.done += 1
            if change.error is not None:
                summary.failures.append(FeedFailure(item.feed.name, item.feed.url, change.error))
            elif item.result.outcome is Outcome.OK:
                summary.fetched += 1
            else:
                summary.not_modified += 1


_ParseJob = tuple[bytes, str, dict[str, str]]  # body, URL it came from, response headers


class _ParseBatches:
    """Hands fetched bodies to the parser pool a few at a time (see parse.parse_many).

    A batch leaves when it is full or when its first body has waited WAIT, so a poll of
    a few feeds is not held up and the parsers never idle for long.

    Each trip has a deadline. A hostile body can make a parser work for hours (nh3 takes
    quadratic time over deeply nested blocks: 160 KB of `<ul><li>` cost 6 s), and a worker can
    die (the kernel's OOM killer, a crash in a C library): pebble then stops or replaces just
    that worker. The batch's feeds are parsed again one by one, so only the feed to blame
    fails, with the reason, and every other feed goes on.
    """

    SIZE = 8
    WAIT = 0.005  # seconds

    def __init__(self, pool: ProcessPool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._jobs: list[_ParseJob] = []
        self._waiting: list[asyncio.Future[ParsedFeed | str]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def parse(self, result: FetchResult) -> ParsedFeed | str | None:
        if result.outcome is not Outcome.OK or result.body is None:
            return None
        loop = asyncio.get_running_loop()
        parsed: asyncio.Future[ParsedFeed | str] = loop.create_future()
        self._jobs.append((result.body, result.final_url or result.url, dict(result.headers)))
        self._waiting.append(parsed)
        if len(self._jobs) >= self.SIZE:
            self._send()
        elif self._timer is None:
            self._timer = loop.call_later(self.WAIT, self._send)
        return await parsed

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        jobs, waiting = self._jobs, self._waiting
        self._jobs, self._waiting = [], []
        self._schedule(jobs, waiting)

    def _schedule(
        self, jobs: list[_ParseJob], waiting: list[asyncio.Future[ParsedFeed | str]]
    ) -> None:
        trip = asyncio.wrap_future(self._pool.schedule(parse_many, (jobs,), timeout=self._timeout))
        trip.add_done_callback(lambda done: self._settle(done, jobs, waiting))

    def _settle(
        self,
        trip: asyncio.Future[list[ParsedFeed | str]],
        jobs: list[_ParseJob],
        waiting: list[asyncio.Future[ParsedFeed | str]],
    ) -> None:
        """Give each feed of a parsed batch its own result, or try its feeds one by one."""
        if trip.cancelled():
            for parsed in waiting:
                parsed.cancel()
            return
        failure = trip.exception()
        lost = _lost_parse(failure, self._timeout) if failure is not None else None
        if lost is not None and len(jobs) > 1:
            for job, parsed in zip(jobs, waiting, strict=True):
                if not parsed.done():
                    self._schedule([job], [parsed])
            return
        for index, parsed in enumerate(waiting):
            if parsed.done():  # its poll was cancelled meanwhile
                continue
            if lost is not None:
                parsed.set_result(lost)
            elif failure is not None:
                parsed.set_exception(failure)  # a bug in our own code: the poll stops on it
            else:
                parsed.set_result(trip.result()[index])


def _lost_parse(failure: BaseException, timeout: float) -> str | None:
    """The feed's error when its parser was stopped or died; None for any other failure."""
    if isinstance(failure, TimeoutError):
        return f"parse stopped after {timeout:g}s (fetch.parse_timeout)"
    if isinstance(failure, ProcessExpired):
        code = failure.exitcode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if code == -signal.SIGKILL:
            how += "; out of memory?"  # what the kernel's OOM killer sends
        return f"parser process died while parsing ({how})"
    return None


@dataclass(frozen=True)
class _Polled:
    feed: _Due
    result: FetchResult
    parsed: ParsedFeed | str | None


def _feed_update(item: _Polled, now: datetime) -> FeedUpdate:
    feed, result, parsed = item.feed, item.result, item.parsed
    error = result.error if result.outcome in (Outcome.ERROR, Outcome.GONE) else None
    if isinstance(parsed, str):
        error = parsed
    failures = 0 if error is None else feed.failures + 1
    return FeedUpdate(
        polled_at=now,
        next_poll_at=next_poll_time(
            now,
            feed.interval,
            failures,
            retry_after=result.retry_after,
            fresh_until=result.fresh_until,
        ),
        status=str(result.status) if result.status else result.outcome.value,
        ok=error is None,
        error=error,
        url=result.permanent_url,
        etag=result.cache.etag,
        last_modified=result.cache.last_modified,
        body_hash=result.cache.body_hash,
        disabled_reason=(
            f"gone ({result.error}) since {now:%Y-%m-%d}"
            if result.outcome is Outcome.GONE
            else None
        ),
        title=parsed.title if isinstance(parsed, ParsedFeed) else None,
    )


def _due(row: ClaimedFeed) -> _Due:
    return _Due(
        id=row.id,
        name=row.name,
        url=row.url,
        interval=timedelta(seconds=row.interval_seconds),
        failures=row.failures,
        cache=CacheState(row.etag, row.last_modified, row.body_hash),
    )


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (not on Windows).

    A poll of feeds that answer 304 is little but the event loop and aiohttp's work per
    request, and uvloop cut its CPU per feed by about a quarter (`make bench`, warm).
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None  # the standard loop does the same work, slower
    return uvloop.new_event_loop


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_length(timeout: float) -> timedelta:
    """Long enough for one fetch and its parse; DIGEST_LEASE_SECONDS overrides it (tests)."""
    override = os.environ.get("DIGEST_LEASE_SECONDS")
    return timedelta(seconds=float(override) if override else 2 * timeout + 10)


@contextlib.contextmanager
def _parser_pool() -> Iterator[ProcessPool]:
    # forkserver: forking a process that runs an event loop and threads is unsafe. The fork
    # server imports the parse stage once, and every worker forked from it shares those pages.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["digest.parse"])
    pool = ProcessPool(max_workers=os.cpu_count() or 1, initializer=prepare_worker, context=context)
    try:
        yield pool
    finally:
        # Every parse of a finished poll is done; a cancelled poll's parses are not wanted.
        pool.stop()  # type: ignore[no-untyped-call]
        pool.join()
