"""When a feed is due again: its interval, backoff after failures, and what its server asked for.

Pure decisions, no I/O (as reader's `Decider`): the fetch stage reports what the server said
(Retry-After, Cache-Control, Expires) as it said it, and the caps that keep a bad or hostile
header from silencing a feed for long are applied here, once (reader#376: be polite or be
blocked, but never be silenced for good).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

MAX_BACKOFF = timedelta(days=1)  # the longest wait after failures in a row
MAX_FRESHNESS = timedelta(days=1)  # a server's Cache-Control or Expires delays us this much at most
MAX_RETRY_AFTER = timedelta(days=7)  # a server's Retry-After (HTTP 429/503, Gemini 44), at most
JITTER = 0.1  # up to 10% of the wait, so feeds added together drift apart


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

    Failures back off exponentially up to MAX_BACKOFF; the server's Retry-After and freshness
    are honoured as the earliest time, each up to its own cap.
    """
    wait = interval if failures == 0 else min(interval * (2 ** min(failures, 20)), MAX_BACKOFF)
    wait += wait * JITTER * (rng or random).random()
    earliest = now + wait
    if retry_after is not None:
        earliest = max(earliest, min(retry_after, now + MAX_RETRY_AFTER))
    if fresh_until is not None:
        earliest = max(earliest, min(fresh_until, now + MAX_FRESHNESS))
    return earliest


def latest_next_poll(now: datetime, interval: timedelta) -> datetime:
    """The furthest ahead next_poll_time can put a feed's next poll.

    A next poll later than this was written by a clock that ran ahead (a wrong date, a VM
    restored from a snapshot); left alone, the feed would not be polled until that date.
    Never earlier than now + MAX_RETRY_AFTER, so only a few feeds are ever checked.
    """
    return now + max(interval * (1 + JITTER), MAX_BACKOFF * (1 + JITTER), MAX_RETRY_AFTER)


class Scheduled(Protocol):
    @property
    def next_poll_at(self) -> datetime: ...

    @property
    def interval(self) -> timedelta: ...


S = TypeVar("S", bound=Scheduled)


def out_of_reach(feeds: Iterable[S], now: datetime) -> list[S]:
    """The feeds whose next poll is later than latest_next_poll allows (look only among those
    scheduled after now + MAX_RETRY_AFTER: no other can be)."""
    return [feed for feed in feeds if feed.next_poll_at > latest_next_poll(now, feed.interval)]
