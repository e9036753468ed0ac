"""Engines, sessions and migrations.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
BEGIN IMMEDIATE so that a poll overlapping a build waits for the lock instead of failing
half-way with "database is locked" (reader#175). PostgreSQL needs none of this.

Inside one process, SQLite write transactions also queue on a Python lock: SQLite's busy
handler polls for the lock with sleeps of 1 to 100 ms, while a released Python lock wakes its
waiter at once. A poll's claims and writes run in two threads, and their waits in the busy
handler were a fifth of a warm poll's time (`make bench`).

`database_problem` is the one place that recognizes a database digest cannot work on (locked,
read-only, damaged, on a full disk, unreachable, or at a schema revision this digest does not
know) and says so in one line; the CLI prints it and exits 1.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from digest.config import DEFAULT_BUSY_TIMEOUT
from digest.locks import file_lock, locked_database
from digest.resources import resource_dir
from digest.store.advisory import MIGRATIONS_LOCK, xact_lock_sql

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# The newest migration under alembic/ (test_store checks that it is alembic's head). Every
# command starts with the schema check: a database at this revision needs nothing of alembic,
# whose import (its script machinery, mako, every dialect's DDL) costs each start 0.2 s of CPU.
SCHEMA_HEAD = "0010"


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
        self.busy_timeout = busy_timeout  # as the engine's connections were given

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
        if turn is None or not turn.acquire(timeout=self.busy_timeout):
            yield
            return
        try:
            yield
        finally:
            turn.release()

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (run on every start)."""
        upgrade_database(self.engine, self.busy_timeout)

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
        # A new database gives the pages retention frees back to the file system (older
        # ones switch with `digest db prune --vacuum`). Set on a new one only: on an existing
        # database the pragma writes, which a read-only or full one refuses.
        if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
            cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
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
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(resource_dir("alembic")))
    return config


class UnknownSchema(Exception):
    """The database is at a schema revision this digest's migrations do not include: made or
    upgraded by a newer digest. Nothing is changed."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"unknown schema revision {revision!r}")
        self.revision = revision


def upgrade_database(engine: Engine, wait: float = DEFAULT_BUSY_TIMEOUT) -> None:
    with engine.connect() as connection:
        if _schema_revisions(connection) == [SCHEMA_HEAD]:
            return  # the common case: a read, no write lock (works while others write)
    # A new database, an older one, or one alembic must judge: its own reading decides.
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        if current == head:
            return  # another runner has just upgraded it
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise UnknownSchema(current)
    # Several runners may start at once on a new database: one migrates, the others wait.
    # PostgreSQL: an advisory lock for the one transaction of all migrations. SQLite: alembic
    # commits after each migration (its DDL counts as not transactional), so a runner waiting
    # for the database lock would slip in between, read a half-way revision and repeat the
    # rest; a file lock beside the database is held over the whole upgrade instead.
    with _sqlite_migration_lock(engine, wait):
        _migrate(engine, config)


def _schema_revisions(connection: Connection) -> list[str]:
    """The revisions in the database's alembic_version table (none for a new database)."""
    if not inspect(connection).has_table("alembic_version"):
        return []
    return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


@contextmanager
def _sqlite_migration_lock(engine: Engine, wait: float) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with file_lock(Path(f"{database}-migration.lock"), wait=wait):
        yield


def _migrate(engine: Engine, config: AlembicConfig) -> None:
    from alembic import command

    with engine.execution_options(sqlite_begin="IMMEDIATE").connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(xact_lock_sql(MIGRATIONS_LOCK))
        with _sqlite_foreign_keys_off(connection):
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite's batch migrations copy a table and drop the old one, which edition_items'
    foreign key to entries refuses once editions exist; off for the upgrade (the pragma only
    counts outside a transaction, so it goes to the driver before SQLAlchemy's BEGIN)."""
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        connection.rollback()  # nothing left open after the commit; in case of a failure
        driver.execute("PRAGMA foreign_keys = ON")


# SQLite's primary result codes (the low byte of an extended code) that say the database, not
# the query, is the problem.
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL = 3, 8, 10, 11, 13
_SQLITE_CANTOPEN, _SQLITE_NOTADB = 14, 26
# PostgreSQL SQLSTATEs of the same kind.
_PG_DISK_FULL, _PG_READ_ONLY = "53100", "25006"
_PG_CORRUPT = ("XX001", "XX002")


def database_name(url: str) -> str:
    """The database as a message names it: the SQLite file, else the URL without password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def database_problem(error: BaseException, url: str) -> str | None:
    """One line naming the database and what to do, when `error` (from SQLAlchemy, sqlite3,
    a PostgreSQL driver or the migrations) means digest cannot work on this database; None
    for any other error (a bug, to be shown in full)."""
    name = database_name(url)
    if isinstance(error, UnknownSchema):
        return (
            f"database {name} is at schema revision {error.revision}, which this digest does "
            "not know (a newer digest made or upgraded it): run that newer digest, or restore "
            "a backup made by this version"
        )
    original = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(error, OperationalError) and (locked := locked_database(error, url)):
        return locked
    if isinstance(original, sqlite3.Error):
        return _sqlite_problem(original, name)
    if isinstance(error, DBAPIError):
        return _server_problem(error, name)
    return None


def _sqlite_problem(error: sqlite3.Error, name: str) -> str | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    if primary in (_SQLITE_READONLY, _SQLITE_PERM):
        return (
            f"database {name} is read-only for this user: make the file and its folder "
            "writable (SQLite writes beside it), then run again"
        )
    if primary == _SQLITE_CANTOPEN:
        return (
            f"cannot open database {name}: check that its folder exists and this user may "
            "read and write both the file and the folder"
        )
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return (
            f"database {name} is damaged ({error}): restore it from a backup, or move it "
            "away and run again to start a new one (published pages are kept)"
        )
    if primary == _SQLITE_FULL:
        return (
            f"disk full: cannot write database {name}; nothing was lost (the transaction was "
            "rolled back): free some space, then run again"
        )
    if primary == _SQLITE_IOERR:
        return (
            f"disk I/O error on database {name} ({error}): check the disk (is it full or "
            "failing?), then run again"
        )
    return None


def _server_problem(error: DBAPIError, name: str) -> str | None:
    """PostgreSQL: a full disk, a read-only server or damaged data by SQLSTATE; a server that
    cannot be reached (an OperationalError without a statement)."""
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if state == _PG_DISK_FULL:
        return (
            f"disk full: cannot write database {name}; nothing was lost (the transaction was "
            "rolled back): free some space on the server, then run again"
        )
    if state == _PG_READ_ONLY:
        return (
            f"database {name} is read-only (a standby server?): point site.database at the "
            "primary, then run again"
        )
    if state in _PG_CORRUPT:
        return f"database {name} reports damaged data ({_first_line(error.orig)}): restore it"
    if isinstance(error, OperationalError) and state is None:  # no answer from the server
        return (
            f"cannot use database {name}: {_first_line(error.orig)}: check that the server "
            "runs and site.database is right, then run again"
        )
    return None


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
