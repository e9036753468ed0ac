"""Schedules and closings: when a stream closes, how often polling looks for due feeds, and
up to when each stream's schedule has been served. Pure decisions; the daemon acts on them.

Test hook: DIGEST_TEST_CLOSE_EVERY (a duration such as `2s`) closes every stream on that
interval instead of its cron schedule, so tests need not wait for the minute.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.config import Settings, parse_duration
from digest.files import write_atomically

CLOSE_EVERY_ENV = "DIGEST_TEST_CLOSE_EVERY"
# The poll job only asks the database which feeds are due, so it can run often; it runs as
# often as the shortest feed interval, between these bounds.
POLL_TICK_MIN = timedelta(seconds=1)
POLL_TICK_MAX = timedelta(seconds=30)
CLOSINGS_FILE = "closings.json"


def close_trigger(schedule: str, zone: ZoneInfo) -> CronTrigger | IntervalTrigger:
    """The stream's cron schedule in the site's zone (or the test hook's interval)."""
    every = os.environ.get(CLOSE_EVERY_ENV)
    if every:
        return IntervalTrigger(seconds=parse_duration(every).total_seconds(), timezone=zone)
    return CronTrigger.from_crontab(schedule, timezone=zone)


def last_fire_between(trigger: CronTrigger, since: datetime, now: datetime) -> datetime | None:
    """The latest time in (since, now] the trigger fires at, or None.

    Searches backwards from now in growing windows, so a schedule that fires every minute
    costs a few steps however long ago `since` was.
    """
    window = timedelta(hours=1)
    while True:
        start = max(since, now - window)
        latest = None
        fire = trigger.get_next_fire_time(None, start + timedelta(microseconds=1))
        while fire is not None and fire <= now:
            latest = fire
            fire = trigger.get_next_fire_time(None, fire + timedelta(microseconds=1))
        if latest is not None or start == since:
            return latest
        window *= 8


def poll_tick(settings: Settings) -> timedelta:
    """How often to look for due feeds: no feed waits much past its interval, no idle spin."""
    shortest = min((feed.interval for feed in settings.feeds), default=POLL_TICK_MAX)
    return max(POLL_TICK_MIN, min(shortest, POLL_TICK_MAX))


class ClosingsRecord:
    """Per stream, the time up to which its schedule has been served (a JSON file in the state
    folder), so a restart can tell a closing it missed from one that found nothing new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self._times = {name: datetime.fromisoformat(when) for name, when in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            self._times = {}

    def get(self, stream: str) -> datetime | None:
        with self._lock:
            return self._times.get(stream)

    def record(self, stream: str, at: datetime) -> None:
        with self._lock:
            self._times[stream] = max(at, self._times.get(stream, at))
            text = json.dumps({name: when.isoformat() for name, when in self._times.items()})
            write_atomically(self.path, text.encode("utf-8"))
