"""Entries: each stored once per feed, and read back as they are kept.

Storing decides what is new (by the key the parse stage made) and what changed (by its
content hash); reading back is what `digest entries` lists, for people who want to see what
digest made of a feed, and for scripts that check it.

An entry an edition took keeps its identity (feed, key, dates, content hash: what decides
what is new) but gives up its text and URLs: the edition keeps its own copy of title, link
and blurb, which its pages and `digest entries` show, and the stream a fingerprint of its
canonical URL, against which later copies of the story are found already published
(digest.store.packed), so that a site's years of published entries are not stored twice.
Once its edition is packed, the entry itself gives way to a fingerprint of its key.
(SQLite gives the space back at `digest db prune --vacuum`.)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Dialect, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from digest.handles import handle_of
from digest.parse import ParsedEntry
from digest.parse.urls import canonical_url
from digest.store.driver import DriverStatement
from digest.store.models import Base, EditionItemRow, EntryRow, FeedRow
from digest.store.packed import retired_among
from digest.store.upsert import insert

_T = TypeVar("_T")

_ENTRIES = Base.metadata.tables[EntryRow.__tablename__]

_NEW_ENTRY_COLUMNS = (
    "feed_id", "key", "title", "link", "canonical_url", "summary", "author",
    "published_at", "first_seen_at", "updated_at", "content_hash",
)  # fmt: skip
# What a published entry no longer keeps (its edition's copy stands for it).
_PUBLISHED_TEXT = {"title": "", "summary": "", "link": None, "canonical_url": None, "author": None}


@dataclass(frozen=True)
class EntryChanges:
    """What storing a feed's entries did: the poller counts them, editions take the new."""

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
        key = entry.key
        if key in seen:
            continue
        seen.add(key)
        if key not in stored:
            changes.new.append(entry)
        elif stored[key] != entry.content_hash:
            changes.changed.append(entry)
    return changes


def store_entries(
    session: Session, feed_id: int, entries: Sequence[ParsedEntry], now: datetime
) -> EntryChanges:
    """Insert new entries and update changed ones; the same entries again change nothing.

    Keys are stored as the parse stage made them (digest.parse.entry.entry_key).
    """
    connection = session.connection()
    stored: dict[str, str] = {}
    for chunk in _chunks([entry.key for entry in entries], 500):
        query = _stored_hashes(connection.dialect, len(chunk))
        parameters = {"feed_id": feed_id} | {f"key{i}": key for i, key in enumerate(chunk)}
        stored.update(query.execute(connection, parameters))
    changes = plan_entry_changes(stored, entries)
    if changes.new:
        # An entry whose edition was packed is gone from `entries` but not new.
        retired = retired_among(session, feed_id, [entry.key for entry in changes.new])
        if retired:
            changes = replace(changes, new=[e for e in changes.new if e.key not in retired])
    if changes.new:
        insert = _new_entry_insert(connection.dialect)
        new_rows = [_entry_values(feed_id, entry, now) for entry in changes.new]
        for rows in _chunks(new_rows, 200):
            insert.execute_many(connection, rows)
    for entry in changes.changed:
        values = _entry_values(feed_id, entry, now)
        # first_seen_at stays, so the entry keeps its place; an undated entry keeps its date.
        del values["first_seen_at"], values["feed_id"], values["key"]
        if entry.published is None:
            del values["published_at"]
        for column in _PUBLISHED_TEXT:  # a published entry's text stays with its edition
            values[column] = case(
                (EntryRow.in_edition, getattr(EntryRow, column)), else_=values[column]
            )
        session.execute(
            update(EntryRow)
            .where(EntryRow.feed_id == feed_id, EntryRow.key == entry.key)
            .values(**values)
        )
    return changes


def mark_published(session: Session, entry_ids: Sequence[int]) -> None:
    """The entries an edition just took: retention keeps them as long as the edition, and
    their text from now on is the edition's copy."""
    for chunk in _chunks(entry_ids, 500):
        session.execute(
            update(EntryRow)
            .where(EntryRow.id.in_(chunk))
            .values(in_edition=True, **_PUBLISHED_TEXT)
        )


@functools.lru_cache(maxsize=64)  # one per chunk length: feeds list from a few to 500 entries
def _stored_hashes(dialect: Dialect, count: int) -> DriverStatement:
    """Key and content hash of those of `count` keys a feed already has."""
    names = [f"key{i}" for i in range(count)]
    statement = select(_ENTRIES.c.key, _ENTRIES.c.content_hash).where(
        _ENTRIES.c.feed_id == bindparam("feed_id"),
        _ENTRIES.c.key.in_([bindparam(name) for name in names]),
    )
    binds = {"feed_id": _ENTRIES.c.feed_id} | {name: _ENTRIES.c.key for name in names}
    return DriverStatement.compile(statement, dialect, binds)


@functools.cache
def _new_entry_insert(dialect: Dialect) -> DriverStatement:
    """The INSERT of new entries. Another poller may have stored the same entry meanwhile:
    then theirs stands."""
    statement = insert(dialect, _ENTRIES).on_conflict_do_nothing(
        index_elements=[_ENTRIES.c.feed_id, _ENTRIES.c.key]
    )
    return DriverStatement.compile(
        statement, dialect, {name: _ENTRIES.c[name] for name in _NEW_ENTRY_COLUMNS}
    )


def _entry_values(feed_id: int, entry: ParsedEntry, now: datetime) -> dict[str, Any]:
    """An entry's row; undated entries take the time they were first seen."""
    return {
        "feed_id": feed_id,
        "key": entry.key,
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


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class StoredEntry:
    """One stored entry. `published` is the feed's date, or, for an entry the feed gave no
    date, the time digest first saw it (the store keeps no entry undated)."""

    feed: str  # the feed's name as configured (feeds.yaml `name`, else its host)
    title: str
    link: str | None
    published: datetime
    summary: str
    key: str  # its identity within the feed
    entry_id: int  # what its handle names (digest.handles), for the editor's desk

    @property
    def handle(self) -> str:
        return handle_of(self.entry_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "handle": self.handle,
            "feed": self.feed,
            "title": self.title,
            "link": self.link,
            "published": self.published.astimezone(UTC).isoformat(),
            "summary": self.summary,
            "key": self.key,
        }


class UnknownFeed(LookupError):
    """No configured feed has that name or URL; `known` names the configured feeds."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown feed {name!r}")
        self.name = name
        self.known = tuple(known)


def recent_entries(session: Session, *, feed: str | None = None, limit: int) -> list[StoredEntry]:
    """The newest `limit` stored entries of the configured feeds, newest first.

    Newest: by published time (undated entries were stored with the time they were first
    seen), then the latest stored first. `feed` is a feed's configured name, its URL in
    feeds.yaml or the URL it is fetched from now (after permanent redirects); every feed of
    that name counts. UnknownFeed if none matches. Feeds dropped from feeds.yaml are left
    out, as `digest feeds` leaves them out.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    query = (
        select(
            FeedRow.name,
            func.coalesce(EditionItemRow.title, EntryRow.title),
            func.coalesce(EditionItemRow.link, EntryRow.link),
            EntryRow.published_at,
            func.coalesce(EditionItemRow.blurb, EntryRow.summary),
            EntryRow.key,
            EntryRow.id,
        )
        .join(FeedRow, FeedRow.id == EntryRow.feed_id)
        .outerjoin(EditionItemRow, EditionItemRow.entry_id == EntryRow.id)
        .where(FeedRow.active)
        .order_by(EntryRow.published_at.desc(), EntryRow.id.desc())
        .limit(limit)
    )
    if feed is not None:
        feed_ids = list(
            session.scalars(
                select(FeedRow.id).where(
                    FeedRow.active,
                    or_(FeedRow.name == feed, FeedRow.config_url == feed, FeedRow.url == feed),
                )
            )
        )
        if not feed_ids:
            known = session.scalars(select(FeedRow.name).where(FeedRow.active).order_by(FeedRow.id))
            raise UnknownFeed(feed, list(dict.fromkeys(known)))
        query = query.where(EntryRow.feed_id.in_(feed_ids))
    return [StoredEntry(*row) for row in session.execute(query)]
