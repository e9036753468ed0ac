"""Parsing in worker processes: batches, deadlines, and a feed to blame when a parser dies.

Fetching runs on one event loop; parsing runs in a small process pool so that both cores work
(reader#261: parse in a bounded pool, not in every fetch worker), and so that a hostile body
cannot take the poller down with it. Not imported by `digest.parse` itself: the workers
import only the parse stage, never this module's asyncio and pebble.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping
from multiprocessing import forkserver, resource_tracker
from types import TracebackType

from pebble import ProcessExpired, ProcessPool

from digest.parse import ParsedFeed, ParseFailure, parse_many, prepare_worker

_Job = tuple[bytes, str, dict[str, str]]  # body, URL it came from, response headers


class ParserPool:
    """Hands fetched bodies to the parser processes a few at a time; a context manager.

    A batch leaves when it is full or when its first body has waited WAIT, so a poll of
    a few feeds is not held up and the parsers never idle for long. Each trip costs two
    pickles, two pipe transfers and a handful of thread wake-ups; one per feed cost the poller
    about as much CPU as storing the feed.

    Each trip has a deadline. A hostile body can make a parser work for hours (nh3 takes
    quadratic time over deeply nested blocks: 160 KB of `<ul><li>` cost 6 s), and a worker can
    die (the kernel's OOM killer, a crash in a C library): pebble then stops or replaces just
    that worker. The batch's feeds are parsed again one by one, so only the feed to blame
    fails, with the reason, and every other feed goes on.

    The processes start at the first body, so a poll of 304s starts none, and they serve every
    poll until `close`: a daemon's polls, or a poll of a handful of changed feeds among 304s,
    no longer pay for starting them and for stopping them (pebble's join waits out its 0.1 s
    tick, on the event loop) each time. Each poll may run on an event loop of its own.
    """

    SIZE = 8
    WAIT = 0.005  # seconds
    # Trips a worker makes before pebble replaces it (a fork of the fork server): what a
    # long-lived parser keeps of a big body (a heap that grew and fragmented) goes back to the
    # system now and then, as it did when every poll started its own workers.
    TRIPS_PER_WORKER = 200
    # Added to each trip's own deadline (see _schedule): time for pebble to start a worker.
    MARGIN = 10.0  # seconds

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._workers = os.cpu_count() or 1  # parser processes, and trips run side by side
        self._pool: ProcessPool | None = None
        self._jobs: list[_Job] = []
        self._waiting: list[asyncio.Future[ParsedFeed | ParseFailure]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._overdue: set[asyncio.TimerHandle] = set()  # one per trip on its way

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the parser processes and drop any parse not done; a later parse starts anew.

        For the end of the pool's use, and for a cancelled poll, whose parses are not wanted.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for overdue in self._overdue:
            overdue.cancel()
        self._overdue.clear()
        for parsed in self._waiting:
            parsed.cancel()
        self._jobs, self._waiting = [], []
        self._stop_pool()

    async def parse(
        self, body: bytes, url: str, headers: Mapping[str, str]
    ) -> ParsedFeed | ParseFailure:
        """The feed in `body`, fetched from `url` with those response headers."""
        loop = asyncio.get_running_loop()
        parsed: asyncio.Future[ParsedFeed | ParseFailure] = loop.create_future()
        self._jobs.append((body, url, dict(headers)))
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
        self, jobs: list[_Job], waiting: list[asyncio.Future[ParsedFeed | ParseFailure]]
    ) -> None:
        pool = self._running()
        sent = pool.schedule(parse_many, (jobs,), timeout=self._timeout)
        trip = asyncio.wrap_future(sent)
        # pebble stops a trip at its deadline once it runs, but a trip queued as the pool
        # breaks may never run, and its poll would wait for ever: each trip also has a
        # deadline of its own, from now, long enough for every trip ahead of it to use its
        # whole time first.
        rounds = len(self._overdue) // self._workers + 1
        deadline = self._timeout * rounds + self.MARGIN
        overdue = asyncio.get_running_loop().call_later(
            deadline, self._give_up, sent, waiting, deadline
        )
        self._overdue.add(overdue)

        def back(done: asyncio.Future[list[ParsedFeed | ParseFailure]]) -> None:
            overdue.cancel()
            self._overdue.discard(overdue)
            self._settle(done, jobs, waiting)

        trip.add_done_callback(back)

    def _give_up(
        self,
        sent: concurrent.futures.Future[list[ParsedFeed | ParseFailure]],
        waiting: list[asyncio.Future[ParsedFeed | ParseFailure]],
        deadline: float,
    ) -> None:
        """A trip past its own deadline: its feeds fail (the next poll tries them again)."""
        lost = ParseFailure(
            f"parse did not run within {deadline:g}s (the parser processes were lost)",
            lasting=False,
        )
        for parsed in waiting:
            if not parsed.done():
                parsed.set_result(lost)
        sent.cancel()

    def _running(self) -> ProcessPool:
        """The process pool, started at the first body, and again once pebble gave it up."""
        if self._pool is not None and not self._pool.active:
            # A worker that dies while no trip runs (the OOM killer may pick an idle parser
            # that a big body left large) breaks a pebble pool for good.
            self._stop_pool()
        if self._pool is None:
            # forkserver: forking a process that runs an event loop and threads is unsafe.
            # The fork server imports the parse stage once (with feedparser, which
            # digest.parse imports only when a feed falls back to it), and every worker forked
            # from it shares those pages. Both helpers start before pebble's semaphores
            # register and before its thread would start the fork server (no-ops once they run).
            _quietly(resource_tracker.ensure_running)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["digest.parse", "feedparser"])
            _quietly(forkserver.ensure_running)
            self._pool = ProcessPool(
                max_workers=self._workers,
                max_tasks=self.TRIPS_PER_WORKER,
                initializer=prepare_worker,
                context=context,
            )
        return self._pool

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.stop()  # type: ignore[no-untyped-call]
            self._pool.join()
            self._pool = None

    def _settle(
        self,
        trip: asyncio.Future[list[ParsedFeed | ParseFailure]],
        jobs: list[_Job],
        waiting: list[asyncio.Future[ParsedFeed | ParseFailure]],
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


def _quietly(start: Callable[[], None]) -> None:
    """Start one of multiprocessing's helper processes with its stderr on /dev/null.

    Both outlive a poller killed with `kill -9`, and both then wrote to the stderr they
    inherited, the poller's, which cron mails to the operator. The resource tracker unlinks
    the parser pool's semaphores, as it should, and said so ("There appear to be N leaked
    semaphore objects to clean up at shutdown"); a parser process the fork server was making
    at that moment found those semaphores gone and printed a traceback. Nothing else reaches
    them: a parse's failure comes back as its result, a dead parser process is reported by the
    pool. fd 2 points elsewhere for the few milliseconds of the spawn, so a line another
    thread writes then is lost. A no-op once the helper runs.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    try:
        os.dup2(devnull, 2)
        start()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _lost_parse(failure: BaseException, timeout: float) -> ParseFailure | None:
    """The feed's failure when its parser was stopped or died; None for any other failure."""
    if isinstance(failure, TimeoutError):
        return ParseFailure(
            f"parse stopped after {timeout:g}s (fetch.parse_timeout)", lasting=False
        )
    if isinstance(failure, ProcessExpired):
        code = failure.exitcode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if code == -signal.SIGKILL:
            how += "; out of memory?"  # what the kernel's OOM killer sends
        return ParseFailure(f"parser process died while parsing ({how})", lasting=False)
    return None
