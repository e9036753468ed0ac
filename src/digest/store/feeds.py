"""Feeds: the rows feeds.yaml makes, who polls each one when, and how each poll went.

Syncing with feeds.yaml, claiming due feeds under a lease (so several pollers share the work
without taking the same feed), writing each poll's result, and the health `digest feeds` shows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Dialect, Executable, bindparam, func, literal_column, select, text, update
from sqlalchemy.orm import Session

from digest.config import FeedSettings
from digest.store.advisory import FEED_SYNC_LOCK, xact_lock_sql
from digest.store.driver import DriverStatement
from digest.store.models import Base, EntryRow, FeedRow

_FEEDS = Base.metadata.tables[FeedRow.__tablename__]


def sync_feeds(session: Session, feeds: Sequence[FeedSettings], now: datetime) -> None:
    """Make the feeds table match feeds.yaml: new feeds due at once, dropped ones inactive."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(xact_lock_sql(FEED_SYNC_LOCK)))
    rows = {row.config_url: row for row in session.scalars(select(FeedRow))}
    for feed in feeds:
        row = rows.pop(feed.url, None)
        if row is None:
            row = FeedRow(config_url=feed.url, url=feed.url, next_poll_at=now, failures=0)
            session.add(row)
        row.name = feed.display_name
        row.stream = feed.stream
        row.section = feed.section
        row.own = feed.own
        row.weight = feed.weight
        row.interval_seconds = int(feed.interval.total_seconds())
        row.active = True
    for row in rows.values():
        row.active = False


@dataclass(frozen=True)
class ScheduledFeed:
    id: int
    name: str
    interval: timedelta
    next_poll_at: datetime


def feeds_scheduled_after(session: Session, moment: datetime) -> list[ScheduledFeed]:
    """Active feeds whose next poll is later than `moment`."""
    rows = session.execute(
        select(FeedRow.id, FeedRow.name, FeedRow.interval_seconds, FeedRow.next_poll_at).where(
            FeedRow.active, FeedRow.next_poll_at > moment
        )
    )
    return [
        ScheduledFeed(feed_id, name, timedelta(seconds=seconds), next_poll_at)
        for feed_id, name, seconds, next_poll_at in rows
        if next_poll_at is not None  # never, by the WHERE; for the type
    ]


def reschedule(session: Session, feed_ids: Sequence[int], when: datetime) -> None:
    """Set these feeds' next poll to `when`."""
    if feed_ids:
        session.execute(update(FeedRow).where(FeedRow.id.in_(feed_ids)).values(next_poll_at=when))


@dataclass(frozen=True)
class ClaimedFeed:
    """What a poller needs of a feed it claimed: where to fetch and what it had last time."""

    id: int
    name: str
    url: str
    interval_seconds: int
    failures: int
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    body_error: str | None
    body_error_by: str | None


def claim_feeds(
    session: Session,
    now: datetime,
    *,
    worker: str,
    lease: timedelta,
    limit: int,
    due_by: datetime | None = None,
    polled_before: datetime | None = None,
) -> list[ClaimedFeed]:
    """Claim up to `limit` due feeds for `worker` until now + lease.

    Due: the next poll time is `due_by` (default: now) or earlier; with `polled_before`, not
    polled since then. A poll passes its start as `due_by`, so a feed that falls due again
    during a long poll waits for the next one, and every poll ends.
    A feed another worker holds a live lease on is skipped. On PostgreSQL the pick is
    FOR UPDATE SKIP LOCKED, so concurrent claimers never wait on or take the same rows; on
    SQLite the caller's BEGIN IMMEDIATE serializes claimers and this is one UPDATE.
    """
    statement = _claim_statement(session.get_bind().dialect.name, polled_before is not None)
    rows = session.execute(
        statement,
        {
            "now": now,
            "due_by": now if due_by is None else due_by,
            "worker": worker,
            "lease_until": now + lease,
            "limit": limit,
            "polled_before": polled_before,
        },
    )
    return sorted((ClaimedFeed(*row) for row in rows), key=lambda feed: feed.id)


@functools.cache
def _claim_statement(dialect: str, every: bool) -> Executable:
    """claim_feeds' UPDATE, built once: on Core, not the ORM class, whose bulk-update
    machinery cost more than the database's own work on a hundred claimed rows."""
    feeds = _FEEDS.c
    now = bindparam("now", type_=feeds.next_poll_at.type)
    due = (
        (feeds.last_poll_at.is_(None))
        | (feeds.last_poll_at < bindparam("polled_before", type_=feeds.last_poll_at.type))
        if every
        else (feeds.next_poll_at.is_(None))
        | (feeds.next_poll_at <= bindparam("due_by", type_=feeds.next_poll_at.type))
    )
    pick = (
        select(feeds.id)
        .where(
            feeds.active,
            feeds.disabled_reason.is_(None),
            (feeds.lease_until.is_(None)) | (feeds.lease_until < now),
            due,
        )
        .order_by(feeds.next_poll_at, feeds.id)
        .limit(bindparam("limit"))
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(_FEEDS)
        .where(feeds.id.in_(pick.scalar_subquery()))
        .values(claimed_by=bindparam("worker"), lease_until=bindparam("lease_until"))
        .returning(
            feeds.id,
            feeds.name,
            feeds.url,
            feeds.interval_seconds,
            feeds.failures,
            feeds.etag,
            feeds.last_modified,
            feeds.body_hash,
            feeds.body_error,
            feeds.body_error_by,
        )
    )


@dataclass(frozen=True)
class HeldFeeds:
    """Due feeds another worker holds a live lease on: this poll skips them."""

    count: int
    until: datetime | None  # when the last of those leases ends


def feeds_held_elsewhere(
    session: Session,
    now: datetime,
    *,
    worker: str,
    due_by: datetime | None = None,
    polled_before: datetime | None = None,
) -> HeldFeeds:
    """How many feeds claim_feeds would take but for another worker's live lease.

    After a `kill -9` the dead run's leases stay until they end, and the next run would
    otherwise skip those feeds without a word. One COUNT, on the same terms as claim_feeds.
    """
    due = (
        (FeedRow.last_poll_at.is_(None)) | (FeedRow.last_poll_at < polled_before)
        if polled_before is not None
        else (FeedRow.next_poll_at.is_(None))
        | (FeedRow.next_poll_at <= (now if due_by is None else due_by))
    )
    count, until = session.execute(
        select(func.count(), func.max(FeedRow.lease_until)).where(
            FeedRow.active,
            FeedRow.disabled_reason.is_(None),
            FeedRow.lease_until >= now,
            FeedRow.claimed_by.is_not(None),
            FeedRow.claimed_by != worker,
            due,
        )
    ).one()
    return HeldFeeds(count, until if count else None)


def renew_leases(session: Session, worker: str, until: datetime) -> None:
    """Extend the leases `worker` holds, so a long poll keeps its feeds."""
    session.execute(update(FeedRow).where(FeedRow.claimed_by == worker).values(lease_until=until))


def release_claims(session: Session, worker: str) -> None:
    """Give back every feed `worker` holds, so others may poll them at once."""
    session.execute(
        update(FeedRow)
        .where(FeedRow.claimed_by == worker)
        .values(claimed_by=None, lease_until=None)
    )


@dataclass(frozen=True)
class FeedUpdate:
    """What one poll of a feed changes in its row; computed by the poller, applied here."""

    polled_at: datetime
    next_poll_at: datetime
    status: str  # "200", "304", "unchanged", "404", "error", ...
    ok: bool
    error: str | None = None
    url: str | None = None  # a new URL after permanent redirects
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    disabled_reason: str | None = None
    title: str | None = None
    # A body that did not parse: why. Its validators are kept with it, so that the same body
    # costs a 304 next time instead of a fetch and a parse; and the parser that judged it.
    body_error: str | None = None
    body_error_by: str | None = None
    # That body again (a 304, the same bytes): its error stands and the failures stay.
    repeated: bool = False


def apply_feed_updates(session: Session, changes: Sequence[tuple[int, FeedUpdate]]) -> None:
    """Apply many polls' results with one executemany per shape of change.

    Core, not the ORM: the ORM-enabled UPDATE rebuilt and re-coerced its statement for every
    feed (about a millisecond each), which capped a warm poll near 1,000 feeds per second.
    """
    shapes: dict[tuple[bool, tuple[str, ...]], list[dict[str, Any]]] = {}
    for feed_id, change in changes:
        row = _feed_values(change)
        # The keys come in an order fixed by which of them a change sets: the shape as is.
        failed = not (change.ok or change.repeated)
        shapes.setdefault((failed, tuple(row)), []).append(row)
        row["b_id"] = feed_id
    connection = session.connection()
    for (failed, keys), rows in shapes.items():
        _feed_update(connection.dialect, failed, keys).execute_many(connection, rows)


@functools.lru_cache(maxsize=64)  # a handful of shapes: failed or not, new URL, new title...
def _feed_update(dialect: Dialect, failed: bool, keys: tuple[str, ...]) -> DriverStatement:
    """The UPDATE for one shape of change: which columns it sets, and whether it counts a
    failure."""
    columns = {key: _FEEDS.c[key.removeprefix("b_")] for key in keys}
    statement = (
        update(_FEEDS)
        .where(_FEEDS.c.id == bindparam("b_id"))
        .values({column: bindparam(key) for key, column in columns.items()})
    )
    if failed:
        # A literal, not a bound 1: the driver gets only the rows' own parameters.
        statement = statement.values(failures=_FEEDS.c.failures + literal_column("1"))
    return DriverStatement.compile(statement, dialect, {"b_id": _FEEDS.c.id} | columns)


def _feed_values(change: FeedUpdate) -> dict[str, Any]:
    """The columns one poll sets, by parameter name (b_ and the column's: a bound parameter
    named as its column clashes with SQLAlchemy's own), built at once in that form, as this
    runs for every polled feed. A success resets the failures; a failure keeps the cache, but
    for a body that did not parse, whose own validators come with its error."""
    values: dict[str, Any] = {
        "b_last_poll_at": change.polled_at,
        "b_next_poll_at": change.next_poll_at,
        "b_last_status": change.status,
        "b_claimed_by": None,
        "b_lease_until": None,
    }
    if change.ok:
        values |= {
            "b_last_ok_at": change.polled_at,
            "b_last_error": None,
            "b_failures": 0,
            "b_etag": change.etag,
            "b_last_modified": change.last_modified,
            "b_body_hash": change.body_hash,
            "b_body_error": None,
            "b_body_error_by": None,
        }
        if change.url:
            values["b_url"] = change.url
        if change.title:
            values["b_title"] = change.title
    else:
        values["b_last_error"] = change.error
        if change.body_error is not None:
            values |= {
                "b_etag": change.etag,
                "b_last_modified": change.last_modified,
                "b_body_hash": change.body_hash,
                "b_body_error": change.body_error,
                "b_body_error_by": change.body_error_by,
            }
    if change.disabled_reason:
        values["b_disabled_reason"] = change.disabled_reason
    return values


@dataclass(frozen=True)
class FeedHealth:
    """One configured feed and how its polls went, as `digest feeds` shows it."""

    name: str
    url: str
    config_url: str
    stream: str | None
    own: bool
    entries: int
    last_ok: datetime | None
    last_poll: datetime | None
    last_status: str | None
    last_error: str | None
    failures: int
    next_poll: datetime | None
    disabled: bool
    disabled_reason: str | None

    def as_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "name": self.name,
            "url": self.url,
            "config_url": self.config_url,
            "stream": self.stream,
            "own": self.own,
            "entries": self.entries,
            "last_ok": when(self.last_ok),
            "last_poll": when(self.last_poll),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "failures": self.failures,
            "next_poll": when(self.next_poll),
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason,
        }


def feed_health(session: Session) -> list[FeedHealth]:
    """Every feed in feeds.yaml, in the order it was added, with its entry count."""
    counts = dict(
        session.execute(select(EntryRow.feed_id, func.count()).group_by(EntryRow.feed_id)).all()
    )
    rows = session.scalars(select(FeedRow).where(FeedRow.active).order_by(FeedRow.id))
    return [
        FeedHealth(
            name=row.name,
            url=row.url,
            config_url=row.config_url,
            stream=row.stream,
            own=row.own,
            entries=counts.get(row.id, 0),
            last_ok=row.last_ok_at,
            last_poll=row.last_poll_at,
            last_status=row.last_status,
            last_error=row.last_error,
            failures=row.failures,
            next_poll=row.next_poll_at,
            disabled=row.disabled_reason is not None,
            disabled_reason=row.disabled_reason,
        )
        for row in rows
    ]


def disabled_feeds(session: Session) -> dict[str, str]:
    """Why each feed of feeds.yaml that digest stopped polling was stopped, by its URL there."""
    rows = session.execute(
        select(FeedRow.config_url, FeedRow.disabled_reason).where(
            FeedRow.active, FeedRow.disabled_reason.is_not(None)
        )
    )
    return {url: reason or "" for url, reason in rows}
