"""The publisher role: closing editions and rendering is done by one node at a time.

On PostgreSQL the role is a session advisory lock held on a connection of its own: when the
holder dies, its connection closes, the server drops the lock, and a standby that keeps
trying takes the role over. On SQLite (one machine by nature) it is an flock on a file beside
the database, which the kernel drops when the holder dies.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from digest.locks import try_file_lock
from digest.store import Store
from digest.store.advisory import PUBLISHER_LOCK

log = logging.getLogger("digest.leader")


class PublisherRole:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._connection: Connection | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None or self._fd is not None

    def try_acquire(self) -> bool:
        """Take the role if it is free; True while this node holds it (checked, not assumed)."""
        if self.store.is_sqlite:
            return self._try_file_lock()
        if self._connection is not None and self._alive(self._connection):
            return True
        self._drop_connection()
        connection = self.store.engine.connect()
        try:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": PUBLISHER_LOCK}
            ).scalar()
            connection.commit()
        except DBAPIError:
            connection.close()
            return False
        if got:
            self._connection = connection
            return True
        connection.close()
        return False

    def release(self) -> None:
        self._drop_connection()
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def _try_file_lock(self) -> bool:
        if self._fd is not None:
            return True
        database = self.store.engine.url.database or "digest.db"
        path = Path(f"{database}.publisher")
        self._fd = try_file_lock(path)
        return self._fd is not None

    def _alive(self, connection: Connection) -> bool:
        try:
            connection.execute(text("SELECT 1"))
            connection.commit()
        except DBAPIError:
            log.warning("lost the database connection that held the publisher role")
            return False
        return True

    def _drop_connection(self) -> None:
        if self._connection is not None:
            # Invalidate, not just close: a pooled connection would keep the session's lock.
            self._connection.invalidate()
            self._connection.close()
            self._connection = None
