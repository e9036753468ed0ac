"""Schedules and closings: when a stream closes, how often polling looks for due feeds, and
up to when each stream's schedule has been served. Pure decisions; the daemon acts on them.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.config import Settings
from digest.files import write_atomically

# The poll job only asks the database which feeds are due, so it can run often; it runs as
# often as the shortest feed interval, between these bounds.
POLL_TICK_MIN = timedelta(seconds=1)
POLL_TICK_MAX = timedelta(seconds=30)
CLOSINGS_FILE = "closings.json"


def close_trigger(
    schedule: str, zone: ZoneInfo, every: timedelta | None = None
) -> CronTrigger | IntervalTrigger:
    """The stream's cron schedule in the site's zone; with `every` (Timings.close_every, so
    tests need not wait for the minute), that interval instead."""
    if every is not None:
        return IntervalTrigger(seconds=every.total_seconds(), timezone=zone)
    return WallClockCronTrigger.from_crontab(schedule, timezone=zone)


class WallClockCronTrigger(CronTrigger):  # type: ignore[misc]  # apscheduler has no types
    """A CronTrigger whose times are wall-clock times of its zone, each fired once, also
    when daylight saving time begins or ends.

    APScheduler 3.11's CronTrigger fires a time in the hour that is repeated when the clocks go
    back twice (once per offset), and can step back into that hour when asked for the time
    after its second occurrence. This one fires at each wall-clock time the schedule names
    once: in the repeated hour at its first occurrence (as cron does); in the hour skipped when
    the clocks go forward at the time read with the offset before the change (01:30 in London
    on the spring-forward Sunday fires at 01:30 UTC, 02:30 BST, where APScheduler fires it).
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        start = now.astimezone(UTC)
        if previous_fire_time is not None:
            previous = previous_fire_time.astimezone(UTC)
            start = min(start, previous + _TICK)
            if start == previous:
                start += _TICK
        if self.start_date is not None:
            start = max(start, self.start_date.astimezone(UTC))
        fire = next_fire_time(self, start)
        if fire is None or (self.end_date is not None and fire > self.end_date):
            return None
        jittered: datetime = self._apply_jitter(fire.astimezone(self.timezone), self.jitter, now)
        return jittered


# The finest step between two instants: APScheduler rounds up to the next whole second.
_TICK = timedelta(microseconds=1)
# How far around an instant to look for the zone's offsets (a DST change moves a wall-clock
# time by at most a few hours), and how often to sample the offset in that stretch.
_OFFSET_SPAN = timedelta(days=1)
_OFFSET_STEP = timedelta(hours=6)
# Bounds on the loops below. The walk over wall-clock times takes one step per time the
# schedule names in a stretch as long as the zone's DST shift (so only a minutely schedule
# takes many, and only within a day of a change); the bisection's bound is explained there.
_MAX_WALL_STEPS = 10_000
_MAX_SEARCH_STEPS = 128


def next_fire_time(trigger: CronTrigger, start: datetime) -> datetime | None:
    """The earliest instant at or after `start` (UTC) at which the trigger fires, or None.

    The trigger's fields name wall-clock times; each one fires at the instant it first shows on
    the zone's clocks (fold 0: the first occurrence of a repeated time, the offset before the
    change for a skipped one). The same schedule evaluated in UTC, which has no DST, walks those
    wall-clock times in order; only near a DST change can a later wall-clock time fall at an
    earlier instant, so the walk goes on while a later one still could.
    """
    zone = trigger.timezone
    walls = _in_utc(trigger)
    start = start.astimezone(UTC)
    offsets = _offsets_around(zone, start)
    highest = max(offsets)
    best: datetime | None = None
    # A wall-clock time w fires at w - offset(w), so none before start + the lowest offset
    # fires at or after start, and none after best + the highest offset fires before best.
    probe = start.replace(tzinfo=None) + min(offsets)
    for _ in range(_MAX_WALL_STEPS):
        wall_fire = walls.get_next_fire_time(None, probe.replace(tzinfo=UTC))
        if wall_fire is None:
            break
        wall = wall_fire.replace(tzinfo=None)
        if best is not None and wall - highest >= best.replace(tzinfo=None):
            break
        fire = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if fire >= start and (best is None or fire < best):
            if best is None and fire - start > _OFFSET_SPAN:
                highest = max(highest, *_offsets_around(zone, fire))  # a change far ahead
            best = fire
        probe = wall + _TICK
    return best


def last_fire_between(trigger: CronTrigger, since: datetime, now: datetime) -> datetime | None:
    """The latest time in (since, now] the trigger fires at (in UTC), or None.

    In UTC, because a local time in a repeated or skipped hour never compares equal to one in
    another zone (PEP 495). A bisection over the window: a few dozen steps whether the schedule
    fires every minute or once a year and however long ago `since` was. Each time the schedule
    names is found once, also across a DST change (see next_fire_time).
    """
    since, now = since.astimezone(UTC), now.astimezone(UTC)
    if now <= since:
        return None
    latest = next_fire_time(trigger, since + _TICK)
    if latest is None or latest > now:
        return None
    bound = now
    # Invariant: latest is a fire time, bound >= latest, and the trigger does not fire in
    # (bound, now]; so the answer lies in [latest, bound]. Each step at least halves that
    # stretch, and a datetime range is under 2**64 microseconds: 128 steps always suffice.
    for _ in range(_MAX_SEARCH_STEPS):
        after = next_fire_time(trigger, latest + _TICK)
        if after is None or after > bound:
            break
        latest = after
        middle = latest + (bound - latest) / 2
        found = next_fire_time(trigger, middle)
        if found is not None and found <= bound:
            latest = found
        else:
            bound = middle
    return latest


def _in_utc(trigger: CronTrigger) -> CronTrigger:
    """The same fields in UTC, without start or end: its fire times are the wall-clock times
    the schedule names, in order, none repeated or skipped."""
    state = trigger.__getstate__()
    state.update(timezone=UTC, start_date=None, end_date=None, jitter=None)
    walls: CronTrigger = CronTrigger.__new__(CronTrigger)
    walls.__setstate__(state)
    return walls


def _offsets_around(zone: tzinfo, at: datetime) -> set[timedelta]:
    """The zone's UTC offsets within a day of `at`."""
    offsets = set()
    moment = at - _OFFSET_SPAN
    while moment <= at + _OFFSET_SPAN:
        offset = moment.astimezone(zone).utcoffset()
        assert offset is not None
        offsets.add(offset)
        moment += _OFFSET_STEP
    return offsets


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
