"""Shared fixtures: a real database (an SQLite file, and a PostgreSQL database on a throwaway
server), at the newest schema, and entries built like the parser's; the end-to-end harness's
fixtures (tests/daemon_harness.py); and the order tests run in.

Under pytest-xdist (`make test` runs the tests in two workers per core and one more) each worker is
a process with its own PostgreSQL server (a session fixture), its own temporary folders and a
block of free ports of its own (tests/gemini_servers.py): no two tests share a port, a file or
a database.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from digest.config import FeedSettings
from digest.parse import ParsedEntry
from digest.store import Store, sync_feeds
from tests.pg import PostgresServer, postgres_server

# `make test-fast` tries a fifth of each property's examples: a quick check while working;
# `make test` (what CI runs) tries them all.
QUICK = os.environ.get("DIGEST_TEST_QUICK") == "1"


def examples(count: int) -> int:
    """How many examples a hypothesis property tries in this run."""
    return max(count // 5, 10) if QUICK else count


pytest_plugins = [
    "tests.daemon_harness",  # its `server` and `site` fixtures
    "tests.fault_harness",  # its `world_site` fixture
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long end-to-end tests (marked slow) first: each idle xdist worker takes the next
    test, so the long ones are spread over the workers from the start and none is left to
    the end while the others sit idle. A stable sort: the order is otherwise the files'."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> str:
    """The server's base URL: postgresql+psycopg://postgres@127.0.0.1:PORT/"""
    return pg_server.url


@pytest.fixture
def pg_database(pg_server: PostgresServer) -> Iterator[str]:
    """The URL of a new empty database, dropped after the test."""
    with pg_server.database() as url:
        yield url


# Alembic's upgrade of a new database (every migration, SQLite's as table copies) costs a
# tenth of a second of CPU; a store's database is a copy of one migrated once per worker.


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file at the newest schema, to copy with `sqlite_copy`."""
    path = tmp_path_factory.mktemp("migrated") / "digest.db"
    migrated = Store(f"sqlite:///{path}")
    migrated.upgrade()
    migrated.close()  # the last connection: the WAL is folded into the file
    return path


@pytest.fixture(scope="session")
def migrated_pg_template(pg_server: PostgresServer) -> Iterator[str]:
    """The name of a PostgreSQL database at the newest schema, for `store` to copy."""
    with pg_server.database() as url:
        migrated = Store(url)
        migrated.upgrade()
        migrated.close()  # CREATE DATABASE … TEMPLATE wants no one connected to it
        name = make_url(url).database
        assert name is not None
        yield name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend the store supports; PostgreSQL starts only when a test asks for it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'digest.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


def sqlite_copy(migrated: Path, path: Path) -> str:
    """A copy of the `migrated_sqlite` file at `path`; its SQLAlchemy URL."""
    shutil.copyfile(migrated, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store on each backend, its database new and at the newest schema."""
    with ExitStack() as dropped:
        if request.param == "sqlite":
            url = sqlite_copy(request.getfixturevalue("migrated_sqlite"), tmp_path / "digest.db")
        else:
            server: PostgresServer = request.getfixturevalue("pg_server")
            template = request.getfixturevalue("migrated_pg_template")
            url = dropped.enter_context(server.database(template=template))
        store = Store(url)
        store.upgrade()  # at the newest revision: the start-up check alone
        yield store
        store.close()


def make_entry(
    title: str,
    link: str | None = None,
    *,
    published: datetime | None = None,
    key: str | None = None,
    summary: str = "",
) -> ParsedEntry:
    link = link if link is not None else f"https://example.net/{title.lower().replace(' ', '-')}"
    digest = hashlib.sha256(f"{title}\0{link}\0{summary}".encode()).hexdigest()
    return ParsedEntry(
        key=key or link or title,
        title=title,
        link=link,
        summary=summary,
        author=None,
        published=published,
        content_hash=digest,
    )


def add_feeds(store: Store, feeds: list[FeedSettings], now: datetime) -> dict[str, int]:
    """Sync feeds into the store; returns config URL -> feed id."""
    from sqlalchemy import select

    from digest.store import FeedRow

    with store.writing() as session:
        sync_feeds(session, feeds, now)
    with store.reading() as session:
        return dict(session.execute(select(FeedRow.config_url, FeedRow.id)).all())


def migrate(store: Store, step: str, revision: str) -> None:
    """alembic's `step` ("upgrade" or "downgrade") to `revision`, on the store's database:
    the schema an older digest made, for the migration tests."""
    from alembic import command

    from digest.store.db import alembic_config

    config = alembic_config()
    with store.engine.connect() as connection:
        config.attributes["connection"] = connection
        getattr(command, step)(config, revision)
        connection.commit()


def insert_row(connection: Connection, table: str, **values: object) -> None:
    """A row as an older schema holds it, written without the models (which are newer)."""
    columns = ", ".join(values)
    names = ", ".join(f":{name}" for name in values)
    connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({names})"), values)
