"""Polling: fetch the due feeds, parse what changed, store the entries.

Wiring only: fetch, parse, due and store each own their rules. Fetching runs concurrently on
one event loop; parsing runs in a small process pool (digest.parse.pool) so both cores work;
writes are short transactions in batches, in a thread off the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from digest.config import FetchSettings
from digest.due import MAX_RETRY_AFTER, next_poll_time, out_of_reach
from digest.fetch import CacheState, Fetcher, FetchResult, Outcome
from digest.parse import PARSER_REVISION, ParsedFeed, ParseFailure
from digest.parse.pool import ParserPool
from digest.store import (
    ClaimedFeed,
    FeedUpdate,
    ScheduledFeed,
    Store,
    apply_feed_updates,
    claim_feeds,
    feeds_scheduled_after,
    heartbeat,
    release_claims,
    renew_leases,
    reschedule,
    store_entries,
)
from digest.store.feeds import HeldFeeds, feeds_held_elsewhere
from digest.store.hosts import known_hosts, offer_host, remember_host

WRITE_BATCH = 200  # feeds per write transaction, at most
# How long a short batch waits for more results before its write: each write transaction
# costs the poller about a millisecond besides its rows (a warm poll of 1,000 feeds made 35
# of 1 to 100 feeds, now about 12); the end of a poll waits for it once.
WRITE_GATHER = 0.02  # seconds
# A claim records the poller's heartbeat (digest status lists the workers seen within two
# minutes) unless it did so this recently: a claim's upsert of the heartbeat cost as much as
# the claim, and a warm poll of 1,000 feeds claims about ten times a second.
HEARTBEAT_EVERY = 30.0  # seconds
# What the server says of a body it sent before: the same one (a 304, or the same bytes).
_SAME_BODY = frozenset({Outcome.NOT_MODIFIED, Outcome.UNCHANGED})
PULLED_BACK = (
    "its next poll was set for {when:%Y-%m-%d %H:%M} UTC, further ahead than its interval "
    "and any backoff allow (was the clock ahead?): polled now"
)

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
    # Feeds whose next poll was further ahead than anything allows: polled now instead.
    pulled_back: list[ScheduledFeed] = field(default_factory=list)
    # Due feeds this poll skipped because another poller holds them (one killed with
    # `kill -9` holds its feeds until its lease ends): counted at the poll's end.
    held: HeldFeeds = field(default_factory=lambda: HeldFeeds(0, None))

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        line = (
            f"polled {self.polled} feeds: {self.fetched} fetched, "
            f"{self.not_modified} not modified, {self.new_entries} new entries, "
            f"{self.updated_entries} updated, {self.failed} failed"
        )
        if self.held.count:
            until = f" (lease until {self.held.until:%H:%M:%S} UTC)" if self.held.until else ""
            line += f", {self.held.count} held by another poller{until}"
        return line


class PollTerminated(Exception):
    """The poll was stopped by a signal; what it finished is stored, its claims given back."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(f"poll stopped by {signum.name}")
        self.signum = signum


@dataclass(frozen=True)
class _Due:
    id: int
    name: str
    url: str
    interval: timedelta
    failures: int
    cache: CacheState
    body_error: str | None  # the cache is of a body that did not parse, for this reason


class Poller:
    """Polls a store's due feeds; `run` is one whole poll, for the CLI and the daemon.

    Feeds are claimed in batches with a lease, so any number of pollers (processes or
    machines on one PostgreSQL) poll each due feed once; a poller that dies loses its lease
    and its feeds go to the others.

    Its parser processes start at the first body to parse. They stop at the end of each poll,
    or with `keep_parsers` serve every poll until `close`: for a caller that polls again and
    again (the daemon), which then pays for starting them once, not for each poll that finds
    a body to parse among its 304s.
    """

    def __init__(
        self,
        store: Store,
        fetch_settings: FetchSettings,
        *,
        lease: timedelta | None = None,
        keep_parsers: bool = False,
    ) -> None:
        """`lease`: how long this poller holds the feeds it claims (Timings.lease)."""
        self.store = store
        self.limits = fetch_settings
        self.worker = worker_id()
        self.lease = lease or lease_length(fetch_settings.timeout)
        # Claimed per round: enough that the fetch slots never sit idle waiting for a claim.
        self.batch = max(4 * fetch_settings.concurrency, 50)
        self._parser = ParserPool(fetch_settings.parse_timeout)
        self._keep_parsers = keep_parsers
        self._last_beat = -math.inf  # time.monotonic() of this poller's last heartbeat

    def close(self) -> None:
        """Stop the parser processes kept between polls (a later poll starts them again)."""
        self._parser.close()

    def run(self, *, every: bool = False, progress: ProgressCallback | None = None) -> PollSummary:
        """The whole poll, for the CLI; SIGTERM stops it cleanly (PollTerminated).

        Python's default for SIGTERM ends the process on the spot: the parser pool was never
        stopped, and multiprocessing's resource tracker warned of "leaked semaphore objects"
        (pebble's channel locks) in every cron mail. Here SIGTERM cancels the poll instead,
        like Ctrl-C: its claims are given back, the parser pool is stopped and joined, and the
        process exits through the interpreter's own shutdown, which unlinks the semaphores.
        """
        return run_async(self._stoppable(self.poll(every=every, progress=progress)))

    @staticmethod
    async def _stoppable(poll: Coroutine[Any, Any, PollSummary]) -> PollSummary:
        if threading.current_thread() is not threading.main_thread():
            return await poll  # signals reach only the main thread
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        terminated = False

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        previous = signal.getsignal(signal.SIGTERM)
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await poll
        except asyncio.CancelledError:
            if terminated:
                raise PollTerminated(signal.SIGTERM) from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, previous)

    async def poll(
        self, *, every: bool = False, progress: ProgressCallback | None = None
    ) -> PollSummary:
        with _fewer_collections():
            return await self._poll(every, progress)

    async def _poll(self, every: bool, progress: ProgressCallback | None) -> PollSummary:
        started = datetime.now(UTC)
        with self.store.reading() as session:
            known = known_hosts(session)
        summary = PollSummary()
        summary.pulled_back = await asyncio.to_thread(self._pull_back, started)
        claimed = await asyncio.to_thread(self._claim, started, every, self.batch)
        if claimed:
            keeper = asyncio.create_task(self._keep_leases())
            finished = False
            try:
                await self._poll_claimed(claimed, started, every, summary, known, progress)
                finished = True
            finally:
                keeper.cancel()
                # A cancelled or failed poll's parses are not wanted either way.
                if not (finished and self._keep_parsers):
                    self._parser.close()
                # Claims still held were not finished (cancelled, or a write failed): give
                # them back now rather than make other pollers wait out the lease.
                with self.store.writing() as session:
                    release_claims(session, self.worker)
        summary.held = await asyncio.to_thread(self._held, started, every)
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
        parser = self._parser
        writer = asyncio.create_task(self._write_all(polled, summary, known, progress))
        async with Fetcher(self.limits, known) as fetcher:

            async def one(feed: _Due) -> None:
                result = await fetcher.fetch(feed.url, feed.cache)
                parsed = None
                if result.outcome is Outcome.OK and result.body is not None:
                    url = result.final_url or result.url
                    parsed = await parser.parse(result.body, url, result.headers)
                polled.put_nowait(_Polled(feed, result, parsed))

            pending: set[asyncio.Task[None]] = set()
            drained = False  # the last claim found fewer due feeds than it asked for
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
                    # Top up when half the batch is done: fewer claims, no idle gap. Once
                    # the due feeds ran out, claim again (for feeds another poller gave
                    # back) only when the last fetches are done: in a poll's tail, every
                    # fetch that finished made a write transaction that claimed nothing.
                    room = self.batch - len(pending)
                    claimed = []
                    if room >= self.batch // 2 and not (drained and pending):
                        claimed = await asyncio.to_thread(self._claim, started, every, room)
                        drained = len(claimed) < room
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
            self._beat(session, now)

    async def _write_all(
        self,
        polled: asyncio.Queue[_Polled | None],
        summary: PollSummary,
        known: Mapping[str, str],
        progress: ProgressCallback | None,
    ) -> None:
        """Store results in batches, one transaction each, in a thread off the event loop.

        A transaction per feed cost more than the fetch of a 304; batching also lets fetching
        go on while SQLite writes. Whatever arrives during one write and WRITE_GATHER after
        it is the next batch.
        """
        while True:
            batch: list[_Polled] = []
            item = await polled.get()
            if item is not None and polled.qsize() < WRITE_BATCH:
                await asyncio.sleep(WRITE_GATHER)
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

    def _pull_back(self, now: datetime) -> list[ScheduledFeed]:
        """Make feeds due whose next poll a clock that ran ahead put out of reach.

        A read first: a write transaction on every poll would queue behind other writers for
        what is almost always nothing."""
        with self.store.reading() as session:
            wrong = out_of_reach(feeds_scheduled_after(session, now + MAX_RETRY_AFTER), now)
        if wrong:
            with self.store.writing() as session:
                reschedule(session, [feed.id for feed in wrong], now)
        return wrong

    def _claim(self, started: datetime, every: bool, limit: int) -> list[_Due]:
        now = datetime.now(UTC)
        with self.store.writing() as session:
            rows = claim_feeds(
                session,
                now,
                worker=self.worker,
                lease=self.lease,
                limit=limit,
                due_by=started,
                polled_before=started if every else None,
            )
            self._beat(session, now, at_most_every=HEARTBEAT_EVERY)
        return [_due(row) for row in rows]

    def _beat(self, session: Session, now: datetime, at_most_every: float = 0.0) -> None:
        if time.monotonic() - self._last_beat >= at_most_every:
            heartbeat(session, self.worker, "poll", now)
            self._last_beat = time.monotonic()

    def _held(self, started: datetime, every: bool) -> HeldFeeds:
        with self.store.reading() as session:
            return feeds_held_elsewhere(
                session,
                datetime.now(UTC),
                worker=self.worker,
                due_by=started,
                polled_before=started if every else None,
            )

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


@dataclass(frozen=True)
class _Polled:
    feed: _Due
    result: FetchResult
    parsed: ParsedFeed | ParseFailure | None  # None: nothing new to parse


def _feed_update(item: _Polled, now: datetime) -> FeedUpdate:
    feed, result, parsed = item.feed, item.result, item.parsed
    error = result.error if result.outcome in (Outcome.ERROR, Outcome.GONE) else None
    body_error = None
    repeated = False
    if isinstance(parsed, ParseFailure):
        error = parsed.reason
        body_error = error if parsed.lasting else None
    elif feed.body_error is not None and result.outcome in _SAME_BODY:
        # The body that did not parse, unchanged: its error again, without a parse, and its
        # failures as they were (also after another failure in between, such as a timeout).
        error = body_error = feed.body_error
        repeated = True
    failures = feed.failures if repeated else 0 if error is None else feed.failures + 1
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
        body_error=body_error,
        body_error_by=PARSER_REVISION if body_error is not None else None,
        repeated=repeated,
    )


def _due(row: ClaimedFeed) -> _Due:
    cache = CacheState(row.etag, row.last_modified, row.body_hash)
    body_error = row.body_error
    if body_error is not None and row.body_error_by != PARSER_REVISION:
        # A body another parser could not read (digest was upgraded since): fetched whole,
        # without validators, to be parsed anew.
        cache, body_error = CacheState(None, None, None), None
    return _Due(
        id=row.id,
        name=row.name,
        url=row.url,
        interval=timedelta(seconds=row.interval_seconds),
        failures=row.failures,
        cache=cache,
        body_error=body_error,
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


# Young objects the garbage collector lets pile up before it looks for cycles among them,
# during a poll. Python's default, 700, is a collection every few feeds: a poll holds its
# batch of fetches (their tasks, requests and responses) alive at once, each collection
# walked them, and the survivors made the full collections of the whole heap (the modules,
# SQLAlchemy's and aiohttp's own objects) that came every second or so. At 10,000 a poll
# collects next to never; whatever cycles it leaves are found later, and the most it can
# hold back is those 10,000 objects.
POLL_GC_THRESHOLD = 10_000
_collections_lock = threading.Lock()
_collections_held = 0
_collections_before: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """POLL_GC_THRESHOLD while any poll of this process runs (polls may share a process)."""
    global _collections_held, _collections_before
    with _collections_lock:
        if _collections_held == 0:
            _collections_before = gc.get_threshold()
            young, *older = _collections_before
            gc.set_threshold(max(young, POLL_GC_THRESHOLD), *older)
        _collections_held += 1
    try:
        yield
    finally:
        with _collections_lock:
            _collections_held -= 1
            if _collections_held == 0:
                gc.set_threshold(*_collections_before)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_length(timeout: float) -> timedelta:
    """Long enough for one fetch and its parse."""
    return timedelta(seconds=2 * timeout + 10)
