"""Store stage: the database behind every other stage.

Feeds as configured and their health, entries stored once per feed (upserts that run the
same on SQLite and PostgreSQL), and the canonical URL that tells copies of a story apart.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import (
    Column,
    Connection,
    Dialect,
    Executable,
    bindparam,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from digest.config import FeedSettings
from digest.parse import ParsedEntry
from digest.store.db import Store, make_engine, upgrade_database
from digest.store.entries import StoredEntry, UnknownFeed, recent_entries
from digest.store.models import Base, EditionItemRow, EditionRow, EntryRow, FeedRow, WorkerRow

__all__ = [
    "Base",
    "ClaimedFeed",
    "EditionItemRow",
    "EditionRow",
    "EntryChanges",
    "EntryRow",
    "FeedHealth",
    "FeedRow",
    "FeedUpdate",
    "Store",
    "StoredEntry",
    "UnknownFeed",
    "WorkerRow",
    "WorkerStatus",
    "apply_feed_update",
    "apply_feed_updates",
    "canonical_url",
    "claim_feeds",
    "feed_health",
    "heartbeat",
    "live_workers",
    "make_engine",
    "plan_entry_changes",
    "recent_entries",
    "release_claims",
    "renew_leases",
    "store_entries",
    "sync_feeds",
    "upgrade_database",
]

_FEEDS = Base.metadata.tables[FeedRow.__tablename__]
MAX_KEY_LENGTH = 600  # longer ids are hashed: they must fit a unique index on every engine

# Query parameters that only say where a reader came from, not what they read.
_TRACKING_PARAMS = frozenset(
    {"fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "igshid", "yclid", "ref_src"}
)


# A URL that is already plain (http(s), a bare host name, no port, query or fragment) needs
# none of urlsplit's work: most feed links look like this, and the full path cost about 15% of
# storing a feed. Anything else, or anything odd, takes the full path below.
_PLAIN_URL = re.compile(r"https?://([A-Za-z0-9._-]+)(/[!-\x7e]*)?", re.ASCII)


def canonical_url(url: str | None) -> str | None:
    """The same story under another spelling of its URL maps to the same string."""
    if not url:
        return None
    url = url.strip()
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None and "?" not in url and "#" not in url:
        host = plain[1].lower().removeprefix("www.")
        if host:  # "www." alone leaves no host, where urlunsplit reads the path differently
            return "https://" + host + (plain[2] or "").rstrip("/")
    return _canonical_url_full(url)


def _canonical_url_full(url: str) -> str:
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("http", "https") else parts.scheme
    host = (parts.hostname or "").lower().removeprefix("www.")
    if parts.port and not (
        (parts.scheme == "http" and parts.port == 80)
        or (parts.scheme == "https" and parts.port == 443)
    ):
        host = f"{host}:{parts.port}"
    path = parts.path.rstrip("/") or ""
    query = urlencode(
        sorted(
            (key, value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if not key.lower().startswith("utm_") and key.lower() not in _TRACKING_PARAMS
        )
    )
    return urlunsplit((scheme, host, path, query, ""))


def _entry_key(key: str) -> str:
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def sync_feeds(session: Session, feeds: Sequence[FeedSettings], now: datetime) -> None:
    """Make the feeds table match feeds.yaml: new feeds due at once, dropped ones inactive."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7317002)"))
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
class ClaimedFeed:
    id: int
    name: str
    url: str
    interval_seconds: int
    failures: int
    etag: str | None
    last_modified: str | None
    body_hash: str | None


def claim_feeds(
    session: Session,
    now: datetime,
    *,
    worker: str,
    lease: timedelta,
    limit: int,
    polled_before: datetime | None = None,
) -> list[ClaimedFeed]:
    """Claim up to `limit` due feeds for `worker` until now + lease.

    Due: the next poll time has come (or, with `polled_before`, not polled since then).
    A feed another worker holds a live lease on is skipped. On PostgreSQL the pick is
    FOR UPDATE SKIP LOCKED, so concurrent claimers never wait on or take the same rows; on
    SQLite the caller's BEGIN IMMEDIATE serializes claimers and this is one UPDATE.
    """
    statement = _claim_statement(session.get_bind().dialect.name, polled_before is not None)
    rows = session.execute(
        statement,
        {
            "now": now,
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
        else (feeds.next_poll_at.is_(None)) | (feeds.next_poll_at <= now)
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
        )
    )


def renew_leases(session: Session, worker: str, until: datetime) -> None:
    session.execute(update(FeedRow).where(FeedRow.claimed_by == worker).values(lease_until=until))


def release_claims(session: Session, worker: str) -> None:
    session.execute(
        update(FeedRow)
        .where(FeedRow.claimed_by == worker)
        .values(claimed_by=None, lease_until=None)
    )


def heartbeat(session: Session, worker: str, role: str, now: datetime) -> None:
    """Record that `worker` is alive (inserted on its first beat)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(WorkerRow).values(id=worker, role=role, started_at=now, heartbeat_at=now)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[WorkerRow.id], set_={"heartbeat_at": now, "role": role}
        )
    )


@dataclass(frozen=True)
class WorkerStatus:
    id: str
    role: str
    started_at: datetime
    heartbeat_at: datetime
    feeds_held: int


def live_workers(session: Session, now: datetime, within: timedelta) -> list[WorkerStatus]:
    """Workers seen within `within`, with how many feeds each holds a live lease on."""
    held = dict(
        session.execute(
            select(FeedRow.claimed_by, func.count())
            .where(FeedRow.claimed_by.is_not(None), FeedRow.lease_until >= now)
            .group_by(FeedRow.claimed_by)
        ).all()
    )
    rows = session.scalars(
        select(WorkerRow).where(WorkerRow.heartbeat_at >= now - within).order_by(WorkerRow.id)
    )
    return [
        WorkerStatus(row.id, row.role, row.started_at, row.heartbeat_at, held.get(row.id, 0))
        for row in rows
    ]


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


def apply_feed_update(session: Session, feed_id: int, change: FeedUpdate) -> None:
    apply_feed_updates(session, [(feed_id, change)])


def apply_feed_updates(session: Session, changes: Sequence[tuple[int, FeedUpdate]]) -> None:
    """Apply many polls' results with one executemany per shape of change.

    Core, not the ORM: the ORM-enabled UPDATE rebuilt and re-coerced its statement for every
    feed (about a millisecond each), which capped a warm poll near 1,000 feeds per second.
    """
    shapes: dict[tuple[bool, tuple[str, ...]], list[dict[str, Any]]] = {}
    for feed_id, change in changes:
        values = _feed_values(change)
        shape = (change.ok, tuple(sorted(values)))
        shapes.setdefault(shape, []).append(
            {"b_id": feed_id, **{f"b_{key}": value for key, value in values.items()}}
        )
    connection = session.connection()
    for (ok, keys), rows in shapes.items():
        _feed_update(connection.dialect, ok, keys).execute_many(connection, rows)


@functools.lru_cache(maxsize=64)  # a handful of shapes: failed or not, new URL, new title...
def _feed_update(dialect: Dialect, ok: bool, keys: tuple[str, ...]) -> _DriverStatement:
    statement = (
        update(_FEEDS)
        .where(_FEEDS.c.id == bindparam("b_id"))
        .values({key: bindparam(f"b_{key}") for key in keys})
    )
    if not ok:
        # A literal, not a bound 1: the driver gets only the rows' own parameters.
        statement = statement.values(failures=_FEEDS.c.failures + literal_column("1"))
    binds = {"b_id": _FEEDS.c.id} | {f"b_{key}": _FEEDS.c[key] for key in keys}
    return _DriverStatement.compile(statement, dialect, binds)


def _feed_values(change: FeedUpdate) -> dict[str, Any]:
    values: dict[str, Any] = {
        "last_poll_at": change.polled_at,
        "next_poll_at": change.next_poll_at,
        "last_status": change.status,
        "claimed_by": None,
        "lease_until": None,
    }
    if change.ok:
        values |= {
            "last_ok_at": change.polled_at,
            "last_error": None,
            "failures": 0,
            "etag": change.etag,
            "last_modified": change.last_modified,
            "body_hash": change.body_hash,
        }
        if change.url:
            values["url"] = change.url
        if change.title:
            values["title"] = change.title
    else:
        values["last_error"] = change.error
    if change.disabled_reason:
        values["disabled_reason"] = change.disabled_reason
    return values


@dataclass(frozen=True)
class EntryChanges:
    new: list[ParsedEntry] = field(default_factory=list)
    changed: list[ParsedEntry] = field(default_factory=list)


def plan_entry_changes(stored: Mapping[str, str], parsed: Iterable[ParsedEntry]) -> EntryChanges:
    """Which parsed entries are new and which changed, given stored key -> content hash.

    Pure, so the "what changed?" rule is tested without a database or a server. An entry
    repeated inside one feed counts once (the first copy wins, as feeds list newest first).
    """
    changes = EntryChanges()
    seen: set[str] = set()
    for entry in parsed:
        key = _entry_key(entry.key)
        if key in seen:
            continue
        seen.add(key)
        if key not in stored:
            changes.new.append(entry)
        elif stored[key] != entry.content_hash:
            changes.changed.append(entry)
    return changes


_ENTRIES = Base.metadata.tables[EntryRow.__tablename__]

_NEW_ENTRY_COLUMNS = (
    "feed_id", "key", "title", "link", "canonical_url", "summary", "author",
    "published_at", "first_seen_at", "updated_at", "content_hash",
)  # fmt: skip


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled once per dialect, run with the driver's own executemany.

    Polls write many rows per transaction (fifty entries per new feed, a row per polled
    feed); SQLAlchemy's per-row parameter handling in an executemany cost more than the
    database's work on them. The columns' own bind processors still convert each value, so
    what is stored is what the ORM would store.
    """

    sql: str
    positions: tuple[str, ...] | None  # parameter order for positional styles (qmark, format)
    processors: Mapping[str, Callable[[Any], Any]]

    @classmethod
    def compile(
        cls, statement: ClauseElement, dialect: Dialect, binds: Mapping[str, Column[Any]]
    ) -> _DriverStatement:
        """`binds` names each parameter and the column whose type converts its values."""
        compiled = statement.compile(dialect=dialect, column_keys=list(binds), for_executemany=True)
        assert isinstance(compiled, SQLCompiler)
        processors = {
            name: process
            for name, column in binds.items()
            if (process := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        positions = tuple(compiled.positiontup) if compiled.positiontup else None
        return cls(compiled.string, positions, processors)

    def execute(self, connection: Connection, row: dict[str, Any]) -> list[Any]:
        """Run once and return every row; the row dict is converted in place."""
        return list(connection.exec_driver_sql(self.sql, self._parameters(row)))

    def execute_many(self, connection: Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Run once per row; each row dict is converted in place."""
        parameters = [self._parameters(row) for row in rows]
        if parameters:
            connection.exec_driver_sql(self.sql, parameters)

    def _parameters(self, row: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        for name, process in self.processors.items():
            row[name] = process(row[name])
        return row if self.positions is None else tuple(map(row.__getitem__, self.positions))


@functools.lru_cache(maxsize=64)  # one per chunk length: feeds list from a few to 500 entries
def _stored_hashes(dialect: Dialect, count: int) -> _DriverStatement:
    """Key and content hash of those of `count` keys a feed already has."""
    names = [f"key{i}" for i in range(count)]
    statement = select(_ENTRIES.c.key, _ENTRIES.c.content_hash).where(
        _ENTRIES.c.feed_id == bindparam("feed_id"),
        _ENTRIES.c.key.in_([bindparam(name) for name in names]),
    )
    binds = {"feed_id": _ENTRIES.c.feed_id} | {name: _ENTRIES.c.key for name in names}
    return _DriverStatement.compile(statement, dialect, binds)


@functools.cache
def _new_entry_insert(dialect: Dialect) -> _DriverStatement:
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    # Another poller may have stored the same entry meanwhile: then theirs stands.
    statement = insert(_ENTRIES).on_conflict_do_nothing(
        index_elements=[_ENTRIES.c.feed_id, _ENTRIES.c.key]
    )
    return _DriverStatement.compile(
        statement, dialect, {name: _ENTRIES.c[name] for name in _NEW_ENTRY_COLUMNS}
    )


def store_entries(
    session: Session, feed_id: int, entries: Sequence[ParsedEntry], now: datetime
) -> EntryChanges:
    """Insert new entries and update changed ones; the same entries again change nothing."""
    connection = session.connection()
    keys = [_entry_key(entry.key) for entry in entries]
    stored: dict[str, str] = {}
    for chunk in _chunks(keys, 500):
        query = _stored_hashes(connection.dialect, len(chunk))
        parameters = {"feed_id": feed_id} | {f"key{i}": key for i, key in enumerate(chunk)}
        stored.update(query.execute(connection, parameters))
    changes = plan_entry_changes(stored, entries)
    if changes.new:
        insert = _new_entry_insert(connection.dialect)
        new_rows = [_entry_values(feed_id, entry, now) for entry in changes.new]
        for chunk in _chunks(new_rows, 200):
            insert.execute_many(connection, chunk)
    for entry in changes.changed:
        values = _entry_values(feed_id, entry, now)
        # first_seen_at stays, so the entry keeps its place; an undated entry keeps its date.
        del values["first_seen_at"], values["feed_id"], values["key"]
        if entry.published is None:
            del values["published_at"]
        session.execute(
            update(EntryRow)
            .where(EntryRow.feed_id == feed_id, EntryRow.key == _entry_key(entry.key))
            .values(**values)
        )
    return changes


def _entry_values(feed_id: int, entry: ParsedEntry, now: datetime) -> dict[str, Any]:
    return {
        "feed_id": feed_id,
        "key": _entry_key(entry.key),
        "title": entry.title,
        "link": entry.link,
        "canonical_url": canonical_url(entry.link),
        "summary": entry.summary,
        "author": entry.author,
        "published_at": entry.published or now,
        "first_seen_at": now,
        "updated_at": now,
        "content_hash": entry.content_hash,
    }


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class FeedHealth:
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
