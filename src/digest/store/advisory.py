"""PostgreSQL advisory locks: every number digest takes, in one table.

The numbers name locks among all the database's advisory locks, so two uses must never share
one by accident; a new lock gets a new number here. SQLite needs none of them (its writers
queue on the database lock, the publisher on a file).
"""

from __future__ import annotations

from typing import Final

MIGRATIONS_LOCK: Final = 7317001  # transaction lock: one runner migrates, the others wait
FEED_SYNC_LOCK: Final = 7317002  # transaction lock: one feeds.yaml sync at a time
PUBLISHER_LOCK: Final = 7317010  # session lock: held by the node that closes and renders


def xact_lock_sql(key: int) -> str:
    """The statement that waits for lock `key` and holds it until the transaction ends."""
    return f"SELECT pg_advisory_xact_lock({key})"
