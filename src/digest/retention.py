"""Retention: what the database forgets, so that it does not grow forever.

Entries that never went into an edition are deleted once first seen longer ago than
`retention.unpublished` (default 90 days; never less than a stream's lookback, so that what
its next edition would take stays): no page shows them, and a feed that still lists one only
brings it back as a new entry too old for any edition. Entries an edition took are kept
as long as the edition (its pages are made from its own copy of them, which stays), and so
are the site's own posts, which the recent posts list, and entries an editor's choice still
names (a pin, a hide). Undated entries are kept too: their date is the time digest first saw
them, so one deleted while its feed still lists it would come back dated now, new enough for
an edition. Worker rows of processes gone for a day are deleted too.

Editions closed longer ago than `retention.published` (default 30 days) are packed
(digest.store.packed): their items, compressed, go into the edition row, and their entries
give way to a fingerprint of their key. What was published stays whole and renders byte for
byte as before; what goes is what only a young edition needs (its entries' rows, for the
desk and `digest entries`). An editor can still amend a packed edition.

Deleting goes in small batches, each its own short transaction, so that a poll or a closing
running meanwhile waits for one batch at most. The daemon prunes once a day; cron can run
`digest db prune`. SQLite gives the freed pages back to the file system at each prune when
the database uses incremental auto-vacuum (new databases do; `digest db prune --vacuum`
converts an older one with a VACUUM); PostgreSQL's own autovacuum reuses the space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from digest.config import Settings
from digest.store import EditionRow, EntryRow, FeedRow, Store, WorkerRow
from digest.store.models import ChoiceRow
from digest.store.packed import pack_edition

log = logging.getLogger("digest.retention")

BATCH = 500  # entries deleted per transaction
WORKERS_GONE = timedelta(days=1)  # a worker silent this long has stopped (heartbeats: seconds)


@dataclass(frozen=True)
class PruneReport:
    entries: int
    workers: int
    editions: int = 0  # packed
    retired: int = 0  # their entries, now fingerprints

    def line(self) -> str:
        return (
            f"pruned {self.entries} unpublished entries and {self.workers} gone workers;"
            f" packed {self.editions} editions ({self.retired} entries retired)"
        )


def prune(store: Store, settings: Settings, now: datetime, *, batch: int = BATCH) -> PruneReport:
    """Delete old unpublished entries and the rows of long-gone workers."""
    entries = 0
    keep_for = settings.retention.unpublished
    if keep_for is not None:
        # Never shorter than a stream's lookback: what its next edition would take stays.
        keep_for = max([keep_for, *(stream.lookback for stream in settings.streams.values())])
        entries = _prune_entries(store, now - keep_for, batch)
    editions = retired = 0
    if settings.retention.published is not None:
        editions, retired = _pack_editions(store, now - settings.retention.published)
    with store.writing() as session:
        gone = list(
            session.scalars(
                delete(WorkerRow)
                .where(WorkerRow.heartbeat_at < now - WORKERS_GONE)
                .returning(WorkerRow.id)
            )
        )
    workers = len(gone)
    if store.is_sqlite and (entries or editions):
        _sqlite_outside_transaction(store, "PRAGMA incremental_vacuum")  # else a no-op
    return PruneReport(entries, workers, editions, retired)


def _pack_editions(store: Store, before: datetime) -> tuple[int, int]:
    """Pack the editions closed before `before`, one per transaction, oldest first."""
    editions = retired = 0
    while True:
        with store.writing() as session:
            edition = session.scalars(
                select(EditionRow)
                .where(EditionRow.packed.is_(None), EditionRow.closed_at < before)
                .order_by(EditionRow.closed_at)
                .limit(1)
            ).first()
            if edition is None:
                return editions, retired
            retired += pack_edition(session, edition)
            editions += 1


def _prune_entries(store: Store, before: datetime, batch: int) -> int:
    with store.reading() as session:
        own = list(session.scalars(select(FeedRow.id).where(FeedRow.own)))
    # Through ix_entries_unpublished: only the entries to delete are read, however many
    # published ones years of history hold.
    # An editor's pending choice (a pin of an old story, a hide) names its entry: deleting
    # the entry would delete the choice with it (ON DELETE CASCADE), without a word.
    chosen = select(ChoiceRow.id).where(
        ChoiceRow.entry_id == EntryRow.id, ChoiceRow.spent_in.is_(None)
    )
    doomed = (
        select(EntryRow.id)
        .where(
            ~EntryRow.in_edition,
            EntryRow.first_seen_at < before,
            EntryRow.feed_id.not_in(own),
            ~chosen.exists(),
            # An undated entry is dated when first seen: deleted while its feed still lists
            # it, it would come back dated now, new enough for the next edition.
            EntryRow.published_at != EntryRow.first_seen_at,
        )
        .limit(batch)
    )
    total = 0
    while True:
        with store.writing() as session:
            ids = list(session.scalars(doomed))
            if ids:
                # Checked again as it deletes: on PostgreSQL an edition closing meanwhile may
                # have taken one of them (its items refer to the entry).
                deleted = session.scalars(
                    delete(EntryRow)
                    .where(EntryRow.id.in_(ids), ~EntryRow.in_edition)
                    .returning(EntryRow.id)
                )
                total += len(list(deleted))
        if len(ids) < batch:
            return total


def vacuum(store: Store) -> None:
    """Give the space of deleted rows back: SQLite rewrites the file (and switches to
    incremental auto-vacuum, so that later prunes give space back themselves); PostgreSQL
    runs VACUUM ANALYZE (its autovacuum does the same in time)."""
    if store.is_sqlite:
        # In WAL mode the rewritten pages go to the log first: the checkpoint shrinks the file.
        _sqlite_outside_transaction(
            store, "PRAGMA auto_vacuum = INCREMENTAL", "VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"
        )
        return
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")


def _sqlite_outside_transaction(store: Store, *statements: str) -> None:
    """Statements SQLite refuses inside a transaction, on a connection of the store's pool
    (pysqlite's own transaction handling is off there: no BEGIN unless we send one)."""
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        for statement in statements:
            cursor.execute(statement)
            cursor.fetchall()
        cursor.close()
    finally:
        connection.close()
