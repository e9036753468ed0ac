"""Dates as feeds write them, read into aware UTC datetimes.

RSS writes RFC 822 (`Tue, 25 Mar 2025 10:00:00 GMT`, and every variant of it: no day name,
two-digit years, zone names, no seconds, `+01:00`); Atom, RDF (`dc:date`) and JSON Feed write
ISO 8601 / W3C-DTF (`2025-03-25T10:00:00Z`, `2025-03-25`, `2025-03`). Feeds mix the two up
often enough that every reader tries both. A time without a zone is read as UTC; a date that
cannot be read is None, never an error: the entry then counts from when it was first seen.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime, timedelta

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
# RFC 822 as nearly every RSS feed writes it: read directly, at a fraction of the general path.
_COMMON_RFC822 = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) ({'|'.join(_MONTH_NAMES)}) ([0-9]{{4}})"
    r" ([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:GMT|UTC|Z|([+-])([0-9]{2})([0-9]{2}))"
)
_COLON_ZONE = re.compile(r"([+-][0-9]{2}):([0-9]{2})$")
_YEAR_MONTH = re.compile(r"([0-9]{4})(?:-([0-9]{2}))?")
_ISO_START = re.compile(r"[0-9]{4}-?[0-9]{2}")
# 2025/3/27 14:33:00, written by some generators in the local time they do not name.
_SLASHED = re.compile(
    r"([0-9]{4})/([0-9]{1,2})/([0-9]{1,2})(?:[ T]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?)?"
)


def parse_date(value: str | None) -> datetime | None:
    """An RFC 822 or ISO 8601 date in aware UTC; None when it is missing or unreadable."""
    if not value:
        return None
    value = value.strip()
    common = _COMMON_RFC822.fullmatch(value)
    if common is not None:
        return _common_rfc822(common)
    if _ISO_START.match(value):
        moment = _iso8601(value)
    elif slashed := _SLASHED.fullmatch(value):
        moment = _slashed(slashed)
    else:
        moment = _rfc822(value)
    # Whole seconds, as the common path gives: finer than that is noise for a daily digest.
    return moment.replace(microsecond=0) if moment else None


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive time is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _common_rfc822(match: re.Match[str]) -> datetime | None:
    day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    try:
        stamp = datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
        if sign is not None:
            offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
            stamp = stamp + offset if sign == "-" else stamp - offset
    except (ValueError, OverflowError):  # 30 February, year 1 minus an hour
        return None
    return stamp


def _iso8601(value: str) -> datetime | None:
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        pass
    partial = _YEAR_MONTH.fullmatch(value)  # W3C-DTF allows a year, or a year and month
    try:
        if partial is not None:
            return datetime(int(partial[1]), int(partial[2] or 1), 1, tzinfo=UTC)
        # A space before the zone, a lower-case t or z: what fromisoformat refuses.
        return as_utc(datetime.fromisoformat(value.upper().replace(" +", "+").replace(" -", "-")))
    except (ValueError, OverflowError):
        return None


def _slashed(match: re.Match[str]) -> datetime | None:
    try:
        year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _rfc822(value: str) -> datetime | None:
    fields = email.utils.parsedate_tz(_COLON_ZONE.sub(r"\1\2", value))
    if fields is None:
        return None
    year, month, day, hour, minute, second, *_, offset = fields
    try:
        stamp = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        return stamp - timedelta(seconds=offset or 0)
    except (ValueError, OverflowError):
        return None
