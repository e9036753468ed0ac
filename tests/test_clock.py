"""Closing schedules across daylight saving time (issue 16, item 1).

A daily closing in the hour repeated when the clocks go back (`30 1 * * *` in Europe/London on
2026-10-25) used to send the search for missed closings into an endless loop. Every call that
could loop runs under a generous time guard, so a regression fails here instead of hanging
the run; nothing else depends on the machine's speed.

What a closing time is, in one rule (the `closings` oracle below): each wall-clock time the
schedule names fires once, at its first occurrence on the zone's clocks (fold 0). In the
repeated hour that is the first pass, as cron does; in the hour skipped when the clocks go
forward it is the time read with the offset before the change, where APScheduler fires it.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar, cast
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.clock import ClosingsRecord, close_trigger, last_fire_between
from digest.config import Timings
from tests.conftest import examples

T = TypeVar("T")

GUARD_SECONDS = 30.0  # the fixed code needs milliseconds; the old one never returned
ZONES = ["Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"]
YEAR = 2026
# Multi-hour schedules, some with times in (or next to) the hours the DST changes move.
MULTI_HOUR = ["0 12,23 * * *", "15 1,2,3 * * *", "30 0,2 * * *", "45 2,14 * * *", "0 0,1 * * *"]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def cron(schedule: str, zone: str) -> CronTrigger:
    """The stream trigger the daemon builds, never the test hook's interval."""
    trigger = close_trigger(schedule, ZoneInfo(zone))
    assert isinstance(trigger, CronTrigger)
    return trigger


def guarded(call: Callable[[], T]) -> T:
    """call(), failing the test if it has not returned within GUARD_SECONDS."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD_SECONDS)
    if thread.is_alive():
        pytest.fail(f"did not return within {GUARD_SECONDS:.0f} s (endless loop?)")
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


def closings(schedule: str, zone: str, first: date, last: date) -> list[datetime]:
    """Every closing of a daily "M H[,H…] * * *" schedule on the local dates first..last, in
    UTC: each named wall-clock time once, at fold 0."""
    minute, hours = schedule.split()[:2]
    tz = ZoneInfo(zone)
    instants = set()
    day = first
    while day <= last:
        for hour in hours.split(","):
            wall = datetime.combine(day, time(int(hour), int(minute)), tzinfo=tz)
            instants.add(wall.astimezone(UTC))
        day += timedelta(days=1)
    return sorted(instants)


def dst_changes(zone: str) -> list[date]:
    """The local dates in YEAR on which the zone's clocks change."""
    tz = ZoneInfo(zone)
    changes = []
    day = date(YEAR, 1, 1)
    before = datetime.combine(day, time(12), tzinfo=tz).utcoffset()
    while day.year == YEAR:
        offset = datetime.combine(day, time(12), tzinfo=tz).utcoffset()
        if offset != before:
            changes.append(day)
        before = offset
        day += timedelta(days=1)
    return changes


def scheduler_fires(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """The fire times in [start, end] as APScheduler's scheduler walks them, each next fire
    time asked for with the previous one."""
    fires: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire <= end:
        fires.append(fire.astimezone(UTC))
        assert len(fires) < 10_000, "the trigger does not advance"
        fire = trigger.get_next_fire_time(fire, fire)
    return fires


# --- the two reported cases, and the skipped hour -------------------------------------------


@pytest.mark.parametrize(
    ("zone", "schedule", "first_pass", "second_pass"),
    [
        # 01:30 BST, then 01:30 GMT an hour later
        ("Europe/London", "30 1 * * *", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)),
        # 01:00 EDT, then 01:00 EST an hour later
        ("America/New_York", "0 1 * * *", utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)),
    ],
)
def test_closing_in_the_repeated_hour_is_made_up_once(
    zone: str, schedule: str, first_pass: datetime, second_pass: datetime
) -> None:
    trigger = cron(schedule, zone)
    day_before = first_pass - timedelta(hours=12)
    later = first_pass + timedelta(hours=12)

    def missed(since: datetime, now: datetime) -> datetime | None:
        return guarded(lambda: last_fire_between(trigger, since, now))

    assert missed(day_before, later) == first_pass
    # Made up (the closings record now says first_pass): the second pass is no new closing.
    assert missed(first_pass, later) is None
    assert missed(first_pass, second_pass) is None
    # A restart during the second pass, or right after the first.
    assert missed(day_before, second_pass + timedelta(minutes=15)) == first_pass
    assert missed(day_before, first_pass) == first_pass
    assert missed(day_before, first_pass - timedelta(seconds=1)) is None
    # The running daemon's trigger fires once too, at the first pass, and then the next day.
    fires = guarded(lambda: scheduler_fires(trigger, day_before, later + timedelta(days=1)))
    assert fires == [first_pass, second_pass + timedelta(days=1)]


@pytest.mark.parametrize(
    ("zone", "schedule", "day", "expected"),
    [
        # 01:30 does not exist on 2026-03-29 in London: 01:30 GMT = 02:30 BST
        ("Europe/London", "30 1 * * *", date(2026, 3, 29), utc(2026, 3, 29, 1, 30)),
        # 02:30 does not exist on 2026-03-08 in New York: 02:30 EST = 03:30 EDT
        ("America/New_York", "30 2 * * *", date(2026, 3, 8), utc(2026, 3, 8, 7, 30)),
        # 02:30 does not exist on 2026-10-04 in Sydney: 02:30 AEST = 03:30 AEDT
        ("Australia/Sydney", "30 2 * * *", date(2026, 10, 4), utc(2026, 10, 3, 16, 30)),
    ],
)
def test_closing_in_the_skipped_hour_is_made_up_once(
    zone: str, schedule: str, day: date, expected: datetime
) -> None:
    trigger = cron(schedule, zone)
    # APScheduler's own CronTrigger fires the skipped time at the same instant. (Compared in
    # UTC: a local time that is skipped or repeated never equals one in another zone.)
    plain = CronTrigger.from_crontab(schedule, timezone=ZoneInfo(zone))
    previous = plain.get_next_fire_time(None, expected - timedelta(days=1, hours=2))
    assert plain.get_next_fire_time(previous, previous).astimezone(UTC) == expected

    day_before = expected - timedelta(hours=12)
    later = expected + timedelta(hours=12)
    assert guarded(lambda: last_fire_between(trigger, day_before, later)) == expected
    assert guarded(lambda: last_fire_between(trigger, expected, later)) is None
    # Asked after the clocks went forward but before the closing: it is still found, once.
    change = expected - timedelta(minutes=20)
    assert guarded(lambda: last_fire_between(trigger, change, later)) == expected
    fires = guarded(lambda: scheduler_fires(trigger, day_before, later))
    assert fires == [expected]
    assert closings(schedule, zone, day, day) == [expected]


def test_the_daemon_makes_up_the_repeated_hour_closing_once(tmp_path: Any) -> None:
    """The daemon's start-up path: one make-up job, at the first pass, promptly."""
    from digest.daemon import Daemon

    zone = ZoneInfo("Europe/London")
    closings_record = ClosingsRecord(tmp_path / "closings.json")
    closings_record.record("links", utc(2026, 10, 24, 12))
    jobs: list[tuple[Any, ...]] = []
    session = SimpleNamespace(execute=lambda _query: SimpleNamespace(all=list))
    reading = mock.MagicMock()
    reading.return_value.__enter__.return_value = session
    daemon = SimpleNamespace(
        config=SimpleNamespace(
            settings=SimpleNamespace(
                streams={"links": SimpleNamespace(schedule="30 1 * * *")},
                site=SimpleNamespace(zone=zone),
            ),
            timings=Timings(),
        ),
        store=SimpleNamespace(reading=reading),
        closings=closings_record,
        scheduler=SimpleNamespace(add_job=lambda *args, **kwargs: jobs.append((*args, kwargs))),
        _job=lambda action, *args: (action, *args),
        _close=object(),
    )
    guarded(lambda: Daemon._make_up_missed_closings(cast(Any, daemon), utc(2026, 10, 25, 9)))
    assert len(jobs) == 1
    (_close, name, at), options = jobs[0][0], jobs[0][1]
    assert (name, at, options["id"]) == ("links", utc(2026, 10, 25, 0, 30), "make-up:links")


# --- properties over zones and schedules -------------------------------------------------------

zones = st.sampled_from(ZONES)
schedules = st.one_of(
    st.builds("{} {} * * *".format, st.integers(0, 59), st.integers(0, 23)),
    # the hours the changes move, in these zones
    st.builds("{} {} * * *".format, st.integers(0, 59), st.integers(0, 3)),
    st.sampled_from(MULTI_HOUR),
)


@st.composite
def near_changes(draw: st.DrawFn, zone: str) -> datetime:
    """An instant within two days of one of the zone's 2026 DST changes (in UTC), often in
    the first hours of the day of the change; or anywhere in the year."""
    days = dst_changes(zone)
    if not days or draw(st.integers(0, 4)) == 0:
        return draw(
            st.datetimes(
                min_value=datetime(YEAR, 1, 3),
                max_value=datetime(YEAR, 12, 28),
                timezones=st.just(UTC),
            )
        )
    midnight = datetime.combine(draw(st.sampled_from(days)), time(), tzinfo=ZoneInfo(zone))
    minutes = draw(st.one_of(st.integers(0, 4 * 60), st.integers(-2 * 24 * 60, 2 * 24 * 60)))
    return midnight.astimezone(UTC) + timedelta(minutes=minutes)


lengths = st.one_of(
    st.integers(0, 6 * 60).map(lambda minutes: timedelta(minutes=minutes)),
    st.integers(0, 3 * 24 * 60).map(lambda minutes: timedelta(minutes=minutes)),
    st.integers(0, 60).map(lambda days: timedelta(days=days)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=2)),
)


@settings(max_examples=examples(100), deadline=None)
@given(zone=zones, schedule=schedules, data=st.data(), length=lengths)
def test_the_last_closing_in_a_window_is_found(
    zone: str, schedule: str, data: st.DataObject, length: timedelta
) -> None:
    since = data.draw(near_changes(zone), label="since")
    now = since + length
    trigger = cron(schedule, zone)
    found = guarded(lambda: last_fire_between(trigger, since, now))
    local = ZoneInfo(zone)
    every = closings(
        schedule,
        zone,
        since.astimezone(local).date() - timedelta(days=1),
        now.astimezone(local).date() + timedelta(days=1),
    )
    inside = [fire for fire in every if since < fire <= now]
    assert found == (inside[-1] if inside else None)
    assert found is None or found.utcoffset() == timedelta(0)  # UTC, safe to compare


@settings(max_examples=examples(25), deadline=None)
@given(zone=zones, schedule=schedules)
def test_walking_day_by_day_through_the_year_closes_each_day_once(zone: str, schedule: str) -> None:
    trigger = cron(schedule, zone)
    local = ZoneInfo(zone)

    def walk() -> list[datetime | None]:
        found = []
        day = date(YEAR, 1, 1)
        while day.year == YEAR:
            since = datetime.combine(day, time(), tzinfo=local)
            now = datetime.combine(day + timedelta(days=1), time(), tzinfo=local)
            found.append(last_fire_between(trigger, since, now))
            day += timedelta(days=1)
        return found

    found = guarded(walk)
    every = closings(schedule, zone, date(YEAR, 1, 1), date(YEAR + 1, 1, 1))
    day = date(YEAR, 1, 1)
    for closing in found:
        now = datetime.combine(day + timedelta(days=1), time(), tzinfo=local)
        last = every[bisect_right(every, now) - 1]  # the day's last closing
        assert last > datetime.combine(day, time(), tzinfo=local), f"none on {day}"
        assert closing == last, day
        day += timedelta(days=1)
    made_up = [closing for closing in found if closing is not None]
    assert len(set(made_up)) == len(made_up) == 365
    if "," not in schedule:  # one closing a day: every one of them made up, once
        assert made_up == [fire for fire in every if made_up[0] <= fire <= made_up[-1]]


@settings(max_examples=examples(40), deadline=None)
@given(zone=zones, schedule=schedules, step=st.integers(10, 60))
def test_each_closing_around_the_dst_changes_is_made_up_exactly_once(
    zone: str, schedule: str, step: int
) -> None:
    """A daemon looking every `step` minutes (no schedule here fires twice within an hour)
    sees each closing once, and its running trigger fires at exactly those times."""
    trigger = cron(schedule, zone)
    local = ZoneInfo(zone)
    for day in dst_changes(zone) or [date(YEAR, 3, 29), date(YEAR, 10, 25)]:
        start = datetime.combine(day - timedelta(days=2), time(), tzinfo=local).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=2), time(), tzinfo=local).astimezone(UTC)

        def walk(start: datetime = start, end: datetime = end) -> list[datetime]:
            found = []
            since = start
            while since < end:
                now = min(since + timedelta(minutes=step), end)
                closing = last_fire_between(trigger, since, now)
                if closing is not None:
                    found.append(closing)
                since = now
            return found

        every = closings(schedule, zone, day - timedelta(days=3), day + timedelta(days=3))
        expected = [fire for fire in every if start < fire <= end]
        assert guarded(walk) == expected

        def fires(start: datetime = start, end: datetime = end) -> list[datetime]:
            return scheduler_fires(trigger, start, end)

        live = guarded(fires)
        assert [fire for fire in live if fire > start] == expected
