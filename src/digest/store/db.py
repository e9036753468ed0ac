"""Engines, sessions and migrations.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
BEGIN IMMEDIATE so that a poll overlapping a build waits for the lock instead of failing
half-way with "database is locked" (reader#175). PostgreSQL needs none of this.

Inside one process, SQLite write transactions also queue on a Python lock: SQLite's busy
handler polls for the lock with sleeps of 1 to 100 ms, while a released Python lock wakes its
waiter at once. A poll's claims and writes run in two threads, and their waits in the busy
handler were a fifth of a warm poll's time (`make bench`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from digest.config import DEFAULT_BUSY_TIMEOUT
from digest.locks import file_lock
from digest.resources import resource_dir
from digest.store.advisory import MIGRATIONS_LOCK, xact_lock_sql


class Store:
    """One database: an engine and the two kinds of session the stages use.

    `busy_timeout`: seconds SQLite waits for a lock another program holds before giving up
    (site.busy_timeout).
    """

    def __init__(self, url: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )
        # SQLite takes one writer at a time anyway; PostgreSQL writers run side by side.
        self._write_turn = threading.Lock() if self.is_sqlite else None
        self._busy_timeout = busy_timeout  # as the engine's connections were given

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A short write transaction, committed on success and rolled back on error."""
        with self._my_turn(), self._write() as session, session.begin():
            yield session

    @contextmanager
    def _my_turn(self) -> Iterator[None]:
        # Waiting is bounded like SQLite's own wait: when another program holds the database,
        # each thread still gets its own "database is locked" in time, not one after another.
        turn = self._write_turn
        if turn is None or not turn.acquire(timeout=self._busy_timeout):
            yield
            return
        try:
            yield
        finally:
            turn.release()

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (run on every start)."""
        upgrade_database(self.engine, self._busy_timeout)

    def close(self) -> None:
        self.engine.dispose()


def make_engine(url: str, timeout: float = DEFAULT_BUSY_TIMEOUT) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": timeout})
    if engine.url.database and engine.url.database != ":memory:":
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's own transaction handling is off).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {round(timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def alembic_config() -> AlembicConfig:
    """Alembic's settings for the migrations shipped with the package."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(resource_dir("alembic")))
    return config


def upgrade_database(engine: Engine, wait: float = DEFAULT_BUSY_TIMEOUT) -> None:
    config = alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return  # the common case: a read, no write lock (works while others write)
    # Several runners may start at once on a new database: one migrates, the others wait.
    # PostgreSQL: an advisory lock for the one transaction of all migrations. SQLite: alembic
    # commits after each migration (its DDL counts as not transactional), so a runner waiting
    # for the database lock would slip in between, read a half-way revision and repeat the
    # rest; a file lock beside the database is held over the whole upgrade instead.
    with _sqlite_migration_lock(engine, wait):
        _migrate(engine, config)


@contextmanager
def _sqlite_migration_lock(engine: Engine, wait: float) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with file_lock(Path(f"{database}-migration.lock"), wait=wait):
        yield


def _migrate(engine: Engine, config: AlembicConfig) -> None:
    with engine.execution_options(sqlite_begin="IMMEDIATE").connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(xact_lock_sql(MIGRATIONS_LOCK))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
