"""The daemon: APScheduler decides when each stage runs; our tables hold every poll time.

One job polls whatever feeds are due; one cron job per stream closes an edition and
renders what changed. Jobs never overlap themselves, and missed runs are coalesced.
"""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from digest.config import Config
from digest.editions import close_edition
from digest.poll import Poller
from digest.publish import render
from digest.store import Store

log = logging.getLogger("digest.daemon")

POLL_EVERY_SECONDS = 60


def run_daemon(store: Store, config: Config) -> None:
    settings = config.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    scheduler = BlockingScheduler(timezone=settings.site.zone)
    poller = Poller(store, settings.fetch)

    def poll_job() -> None:
        summary = poller.run()
        if summary.polled:
            log.info(summary.line())

    def close_job(name: str) -> None:
        with store.writing() as session:
            edition = close_edition(
                session, name, settings.streams[name], settings.site.zone, datetime.now(UTC)
            )
        if edition is None:
            log.info("stream %s: nothing new to close", name)
            return
        log.info("closed %s: %s", edition.path, edition.title)
        render(store, settings, [edition])

    job_options = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(
        poll_job, "interval", seconds=POLL_EVERY_SECONDS, next_run_time=datetime.now(UTC),
        id="poll", **job_options,
    )
    for name, stream in settings.streams.items():
        trigger = CronTrigger.from_crontab(stream.schedule, timezone=settings.site.zone)
        scheduler.add_job(close_job, trigger, args=[name], id=f"close:{name}", **job_options)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("digest daemon started with %d feeds", len(settings.feeds))
    scheduler.start()
