"""The daemon: APScheduler decides when each stage runs; our tables hold every poll time.

One job polls whatever feeds are due; one cron job per stream closes an edition and renders
what changed. Jobs never overlap themselves and missed runs are coalesced; a closing missed
while the daemon was down is made up once at start. The config is re-read on SIGHUP and when
the file changes, and the site rendered again after it (SIGHUP also after fixing a template);
SIGTERM and SIGINT stop it cleanly: the poll in flight gets a few seconds
to finish, then is cancelled (its unfinished feeds stay due), and the process exits 0.

When streams close and how often polling runs is decided in digest.clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from digest.clock import CLOSINGS_FILE, ClosingsRecord, close_trigger, last_fire_between, poll_tick
from digest.config import Config, ConfigError, Settings, load_config
from digest.leader import PublisherRole
from digest.locks import LockBusy
from digest.mail import queue_deliveries
from digest.outreach import reach_out
from digest.poll import PULLED_BACK, Poller, PollSummary, run_async, worker_id
from digest.publish import close_stream, publishing, render
from digest.render import RenderError, TemplateProblem
from digest.retention import prune
from digest.store import EditionRow, Store, heartbeat, sync_feeds
from digest.store.db import database_problem

log = logging.getLogger("digest.daemon")

CONFIG_CHECK_SECONDS = 2.0
OUTREACH_SECONDS = 60.0  # how often a publisher retries WebSub pings and mail that wait
STOP_GRACE_SECONDS = 3.0  # for the poll in flight, before it is cancelled
PRUNE_AFTER_START = timedelta(minutes=10)
JOB_DEFAULTS = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}

ROLES = ("all", "poll", "publish")
# How often a publishing node checks that it holds the publisher role (or, as a standby,
# tries to take it): a standby takes over within this long of the holder's death.


class Daemon:
    """One node's jobs: polling (roles all, poll) and, while this node holds the publisher
    role, closing and rendering (roles all, publish)."""

    def __init__(self, store: Store, config: Config, role: str = "all") -> None:
        self.store = store
        self.config = config
        self.role = role
        self.polls = role in ("all", "poll")
        self.publisher = PublisherRole(store) if role in ("all", "publish") else None
        self.worker = worker_id()
        # Fixed for the process: a reload that moves them is logged, not followed.
        self.state_dir = config.settings.site.state_dir
        self.closings = ClosingsRecord(self.state_dir / CLOSINGS_FILE)
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._config_stamp = _stamp(config.path)
        self._poll_lock = threading.Lock()
        self._poll_task: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._poll_cancelled = False
        self._poll_idle = threading.Event()
        self._poll_idle.set()
        self._held_logged = 0  # feeds held by another poller, as the log last said
        # One poller for the daemon's life (one worker id in the workers table), keeping its
        # parser processes between polls; a reload that changes the fetch settings gets a new
        # one (see _current_poller).
        self._poller = self._new_poller(config)
        self.scheduler = BackgroundScheduler(
            timezone=config.settings.site.zone,
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults=JOB_DEFAULTS,
        )

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        settings = self.config.settings
        self._schedule(settings)
        if self.publisher is not None:
            self.scheduler.add_job(
                self._job(self._lead),
                IntervalTrigger(seconds=self.config.timings.leader_check.total_seconds()),
                id="lead",
                next_run_time=datetime.now(UTC),
            )
            self.scheduler.add_job(
                self._job(self._reach_out), IntervalTrigger(seconds=OUTREACH_SECONDS), id="outreach"
            )
            # Once a day, the first a little after start: a daemon restarted daily prunes too.
            self.scheduler.add_job(
                self._job(self._prune),
                IntervalTrigger(days=1),
                id="prune",
                next_run_time=datetime.now(UTC) + PRUNE_AFTER_START,
            )
        self.scheduler.start()
        log.info(
            "daemon started (pid %d, role %s): %d feeds, %s",
            os.getpid(),
            self.role,
            len(settings.feeds),
            ", ".join(self._describe_schedule()) or "no streams",
        )
        while not self.stopping.is_set():
            self._wake.wait(CONFIG_CHECK_SECONDS)
            self._wake.clear()
            if self.stopping.is_set():
                break
            stamp = _stamp(self.config.path)
            if self._reload_requested or stamp != self._config_stamp:
                self._reload_requested = False
                self._config_stamp = stamp
                try:
                    self.reload()
                except Exception as error:  # the README's promise: a bad edit never stops it
                    log.error("config not reloaded: keeping the running config: %r", error)
            else:
                log.debug("config file unchanged since it was read: %s", self.config.path)
        self._stop()

    def reload(self) -> None:
        """Re-read the config; keep the running one when the new one does not validate."""
        path = self.config.path
        try:
            config = load_config(path, self.config.timings)
        except ConfigError as error:
            for problem in error.problems:
                log.error("config not reloaded: %s", problem)
            log.error("config not reloaded: keeping the running config of %s", path)
            return
        old = self.config.settings.site
        new = config.settings.site
        for key, before, after in (
            ("database", old.database, new.database),
            ("state_dir", old.state_dir, new.state_dir),
        ):
            if before != after:
                log.warning("site.%s changed: restart the daemon to use it", key)
        try:  # what load_config cannot know: whether the daemon can follow each schedule
            for stream in config.settings.streams.values():
                close_trigger(stream.schedule, new.zone, config.timings.close_every)
        except ValueError as error:
            log.error("config not reloaded: %s: %s; keeping the running config", path, error)
            return
        try:
            with self.store.writing() as session:
                sync_feeds(session, config.settings.feeds, datetime.now(UTC))
        except DBAPIError as error:
            log.error("config not reloaded: %s", database_problem(error, self.store.url) or error)
            self._config_stamp = None  # try again at the next check
            return
        self.config = config
        self._schedule(config.settings)
        log.info(
            "config reloaded: %d feeds, %s",
            len(config.settings.feeds),
            ", ".join(self._describe_schedule()) or "no streams",
        )
        # The pages show the config (the site's title, author, links, templates): they follow
        # it now, not at the next closing. Rendering what did not change writes nothing.
        self.scheduler.add_job(
            self._job(self._publish), id="publish-after-reload", replace_existing=True
        )

    def _schedule(self, settings: Settings) -> None:
        """(Re)place the jobs; the poll job runs at once, so new feeds are polled now."""
        zone = settings.site.zone
        if self.polls:
            self.scheduler.add_job(
                self._job(self._poll),
                IntervalTrigger(seconds=poll_tick(settings).total_seconds(), timezone=zone),
                id="poll",
                replace_existing=True,
                next_run_time=datetime.now(zone),
            )
        if self.publisher is None:
            return
        wanted = {f"close:{name}" for name in settings.streams}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("close:") and job.id not in wanted:
                job.remove()
        for name, stream in settings.streams.items():
            self.scheduler.add_job(
                self._job(self._close, name),
                close_trigger(stream.schedule, zone, self.config.timings.close_every),
                id=f"close:{name}",
                replace_existing=True,
            )

    def _describe_schedule(self) -> list[str]:
        described = []
        for name in self.config.settings.streams:
            job = self.scheduler.get_job(f"close:{name}")
            when = job.next_run_time if job is not None else None
            described.append(f"{name} closes next at {when:%Y-%m-%d %H:%M %Z}" if when else name)
        return described

    def _lead(self) -> None:
        """Hold (or try to take) the publisher role; on taking it, catch up what is owed."""
        assert self.publisher is not None
        had = self.publisher.held
        holds = self.publisher.try_acquire()
        if holds and not had:
            log.info("publisher role taken: this node closes editions and renders")
            self._make_up_missed_closings(datetime.now(UTC))
            # Pages a killed run closed but never wrote, and its temporary files.
            self.scheduler.add_job(
                self._job(self._publish), id="publish-at-start", replace_existing=True
            )
        elif had and not holds:
            log.warning("publisher role lost: standing by")
        elif not holds and not had and self.role == "publish":
            log.debug("standing by: another node holds the publisher role")
        with self.store.writing() as session:
            heartbeat(session, self.worker, "publish" if holds else "standby", datetime.now(UTC))

    def _make_up_missed_closings(self, now: datetime) -> None:
        settings = self.config.settings
        with self.store.reading() as session:
            last_closed: dict[str, datetime] = dict(
                session.execute(
                    select(EditionRow.stream, func.max(EditionRow.closed_at)).group_by(
                        EditionRow.stream
                    )
                ).all()
            )
        for name, stream in settings.streams.items():
            known = [when for when in (self.closings.get(name), last_closed.get(name)) if when]
            if not known:
                self.closings.record(name, now)  # a first start: nothing was missed
                continue
            trigger = close_trigger(
                stream.schedule, settings.site.zone, self.config.timings.close_every
            )
            if not isinstance(trigger, CronTrigger):
                continue
            missed = last_fire_between(trigger, max(known), now)
            if missed is not None:
                log.info("stream %s: making up the closing missed at %s", name, missed.isoformat())
                self.scheduler.add_job(self._job(self._close, name, missed), id=f"make-up:{name}")

    def _job(self, action: Callable[..., None], *args: Any) -> Callable[[], None]:
        """The action as a job that logs its failure in one line and never kills the daemon."""

        def job() -> None:
            try:
                action(*args)
            except LockBusy as busy:
                if not self.stopping.is_set():
                    log.warning("skipped: %s", busy)
            except (RenderError, OSError) as error:
                log.error("cannot write the site: %s", error)
            except TemplateProblem as problem:  # the editions are closed; fixed, it renders
                log.error("cannot render the site: template %s", problem)
            except DBAPIError as error:
                message = database_problem(error, self.store.url)
                if message is None:
                    raise
                log.error("%s (trying again at the next run)", message)
            except Exception:
                log.exception("%s failed", getattr(action, "__name__", "job"))

        return job

    def _poll(self) -> None:
        self._poll_idle.clear()
        try:
            if self.stopping.is_set():
                return
            try:
                summary = run_async(self._cancellable_poll(self._current_poller()))
            except asyncio.CancelledError:
                log.info("poll cancelled: the feeds it had not finished stay due")
                return
            if summary is None:
                return
            # A tick that polled nothing says so only when the feeds held by another poller
            # change: after a kill -9, the dead run's feeds wait out its lease, once in the log.
            if summary.polled or summary.held.count != self._held_logged:
                log.info(summary.line())
            self._held_logged = summary.held.count
            for feed in summary.pulled_back:
                log.warning("%s: %s", feed.name, PULLED_BACK.format(when=feed.next_poll_at))
            for failure in summary.failures:
                log.warning("feed failed: %s <%s>: %s", failure.name, failure.url, failure.error)
        finally:
            with self._poll_lock:
                self._poll_task = None
            self._poll_idle.set()

    def _new_poller(self, config: Config) -> Poller:
        return Poller(
            self.store, config.settings.fetch, lease=config.timings.lease, keep_parsers=True
        )

    def _current_poller(self) -> Poller:
        """The poller for the fetch settings in force. A reload that changed them gets a new
        one here, in the poll job, the only one that polls: the old one, closed here, is not
        polling."""
        if self._poller.limits != self.config.settings.fetch:
            self._poller.close()
            self._poller = self._new_poller(self.config)
        return self._poller

    async def _cancellable_poll(self, poller: Poller) -> PollSummary | None:
        task = asyncio.current_task()
        assert task is not None
        with self._poll_lock:
            if self._poll_cancelled:
                return None
            self._poll_task = (asyncio.get_running_loop(), task)
        return await poller.poll()

    def _close(self, name: str, at: datetime | None = None) -> None:
        settings = self.config.settings
        if name not in settings.streams or self.stopping.is_set() or not self._publishes():
            return
        with publishing(settings, cancel=self.stopping):
            at = at or datetime.now(UTC)
            edition = close_stream(self.store, settings, name, at)
            self.closings.record(name, at)
            if edition is None:
                log.info("stream %s: nothing new to close", name)
            else:
                log.info("closed %s: %s", edition.path, edition.title)
                queue_deliveries(self.store, settings, [edition], datetime.now(UTC))
            self._render()
        self._reach_out()

    def _prune(self) -> None:
        """Retention, on the publishing node only (one node prunes), in small batches."""
        if not self._publishes() or self.stopping.is_set():
            return
        report = prune(self.store, self.config.settings, datetime.now(UTC))
        log.info(report.line())

    def _publishes(self) -> bool:
        return self.publisher is not None and self.publisher.held

    def _publish(self) -> None:
        if not self._publishes():
            return
        with publishing(self.config.settings, cancel=self.stopping):
            self._render()
        self._reach_out()

    def _render(self) -> None:
        report = render(self.store, self.config.settings)
        if report.written:
            log.info(
                "rendered %d files (%d unchanged) into %s",
                len(report.written),
                len(report.unchanged),
                self.config.settings.site.output_dir,
            )

    def _reach_out(self) -> None:
        """WebSub pings and mail due, outside the publish lock; what fails waits for a retry."""
        if not self._publishes() or self.stopping.is_set():
            return
        result = reach_out(
            self.store, self.config.settings, self.config.timings.lease, cancel=self.stopping
        )
        for line in result.problems:
            log.warning("%s", line)
        for line in result.done:
            log.info("%s", line)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            log.info("received %s: stopping", signal.Signals(signum).name)
        self.stopping.set()
        self._wake.set()

    def _on_reload_signal(self, _signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP: reloading %s", self.config.path)
        self._reload_requested = True
        self._wake.set()

    def _stop(self) -> None:
        self.scheduler.pause()  # no new runs; the ones in flight go on
        if not self._poll_idle.wait(STOP_GRACE_SECONDS):
            with self._poll_lock:
                self._poll_cancelled = True
                if self._poll_task is not None:
                    loop, task = self._poll_task
                    # RuntimeError: the loop has just finished on its own.
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(task.cancel)
        self.scheduler.shutdown(wait=True)
        self._poller.close()
        if self.publisher is not None:
            self.publisher.release()
        log.info("daemon stopped")


def run_daemon(store: Store, config: Config, role: str = "all") -> None:
    """Run until SIGTERM or SIGINT; the caller holds the daemon lock and closes the store."""
    Daemon(store, config, role).run()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)
