"""A database digest cannot work on: damaged, emptied, read-only, on a full disk, or at a
schema revision this digest does not know. Each command that opens it says so in one line that
names the file and what to do, exits 1, and changes nothing.

Read-only needs a user the file modes apply to: we run as root, so that case runs in a forked
child as `nobody` (tests/test_faults.py). A full disk needs a small file system, which takes
root to mount; SQLite's `max_page_count` fails a write with the very error a full disk gives
(SQLITE_FULL), through the same rollback, so the test sets it on digest's connections.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event, make_url

# The forked child runs as `nobody`, who cannot read our sources: it needs these imported.
import digest.poll
import digest.publish
import digest.status
import digest.store.db
from digest.cli import cli
from tests.daemon_harness import FeedServer, Site
from tests.fault_harness import digest_in_child, file_feeds

# End to end: digest's commands on broken databases, some in forked children.
pytestmark = pytest.mark.slow

ALL_COMMANDS = [["status"], ["poll"], ["update"], ["build"], ["feeds"], ["db", "upgrade"]]


def run(site: Site, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(site.config), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def polled(site: Site) -> Site:
    """A site with one feed polled into its database."""
    feeds = FeedServer()
    feeds.add("alpha", 3)
    file_feeds(site, feeds, "alpha")
    code, out, err = run(site, "poll")
    assert code == 0, out + err
    return site


def entry_count(site: Site) -> int:
    return int(site.query("SELECT count(*) FROM entries")[0][0])


def integrity(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def checkpoint(site: Site) -> None:
    """Everything in the main file, no -wal or -shm beside it (as after a clean close)."""
    connection = sqlite3.connect(site.db)
    connection.execute("PRAGMA journal_mode = DELETE")
    connection.close()


@pytest.mark.parametrize("damage", ["truncated", "random"])
@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_a_damaged_database_is_one_line(polled: Site, damage: str, command: list[str]) -> None:
    site = polled
    checkpoint(site)
    data = site.db.read_bytes()
    damaged = data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data))
    site.db.write_bytes(damaged)

    code, out, err = run(site, *command)

    assert code == 1, out + err
    line = one_line(err)
    assert line.startswith(f"database {site.db} is damaged (")
    assert line.endswith(
        "restore it from a backup, or move it away and run again to start a new one "
        "(published pages are kept)"
    )
    assert site.db.read_bytes() == damaged  # not "repaired" into something else


def test_an_empty_database_file_is_a_new_database(site: Site) -> None:
    """0 bytes is a valid empty SQLite database: digest creates its tables, as in a new one."""
    feeds = FeedServer()
    feeds.add("alpha", 3)
    file_feeds(site, feeds, "alpha")
    site.db.write_bytes(b"")

    code, out, err = run(site, "poll")

    assert code == 0, out + err
    assert entry_count(site) == 3


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_a_database_from_a_newer_digest_is_left_alone(polled: Site, command: list[str]) -> None:
    site = polled
    connection = sqlite3.connect(site.db)
    connection.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    connection.commit()
    connection.close()

    code, out, err = run(site, *command)

    assert code == 1, out + err
    assert one_line(err) == (
        f"database {site.db} is at schema revision f00dfeedbeef, which this digest does not "
        "know (a newer digest made or upgraded it): run that newer digest, or restore a "
        "backup made by this version"
    )
    assert site.query("SELECT version_num FROM alembic_version") == [("f00dfeedbeef",)]
    assert entry_count(site) == 3


@pytest.mark.parametrize(
    "command", [["poll"], ["update"], ["status"], ["db", "upgrade"]], ids=" ".join
)
def test_a_read_only_database_is_one_line(world_site: Site, command: list[str]) -> None:
    site = world_site
    feeds = FeedServer()
    feeds.add("alpha", 3)
    file_feeds(site, feeds, "alpha")
    code, out, err = run(site, "poll")
    assert code == 0, out + err
    feeds.add("alpha", 2)
    file_feeds(site, feeds, "alpha")
    checkpoint(site)
    before = site.db.read_bytes()
    for path in site.root.iterdir():
        path.chmod(0o444 if path.is_file() else 0o555)
    site.root.chmod(0o555)  # SQLite cannot make its -wal and -shm files either

    code, out, err = digest_in_child(site, *command, as_nobody=True)

    assert code == 1, out + err
    assert one_line(err) == (
        f"database {site.db} is read-only for this user: make the file and its folder "
        "writable (SQLite writes beside it), then run again"
    )
    site.root.chmod(0o777)
    assert site.db.read_bytes() == before


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """digest's SQLite connections may not grow the database: SQLITE_FULL, as on a full disk."""
    make_engine = digest.store.db.make_engine

    def limited(url: str, *args: Any) -> Engine:
        engine = make_engine(url, *args)

        @event.listens_for(engine, "connect")
        def _no_growth(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")
            cursor.close()

        return engine

    monkeypatch.setattr(digest.store.db, "make_engine", limited)
    yield


def test_a_full_disk_says_so_and_loses_nothing(
    polled: Site, full_disk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = polled
    feeds = FeedServer()
    feeds.add("alpha", 3)
    feeds.add("beta", 400)  # far more than the free pages hold
    file_feeds(site, feeds, "alpha", "beta")
    before = entry_count(site)

    code, out, err = run(site, "update")

    assert code == 1, out + err
    assert one_line(err) == (
        f"disk full: cannot write database {site.db}; nothing was lost (the transaction was "
        "rolled back): free some space, then run again"
    )
    assert integrity(site.db) == "ok"
    assert entry_count(site) == before

    monkeypatch.undo()  # space freed: the next run does it all
    code, out, err = run(site, "update")
    assert code == 0, out + err
    assert entry_count(site) == before + 400


# PostgreSQL: the same promise, for a server that is down, a database that is missing or
# read-only, and a schema from a newer digest.


def on_postgresql(site: Site, url: str) -> Site:
    site.config.write_text(
        site.config.read_text().replace("database: sqlite:///digest.db", f"database: {url}")
    )
    return site


def pg_connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A plain psycopg connection to the database SQLAlchemy's `url` names."""
    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))


def psql(url: str, statement: str) -> None:
    with pg_connect(url) as connection:
        connection.autocommit = True
        connection.execute(statement)


def pg_entry_count(url: str) -> int:
    with pg_connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM entries").fetchone()
    assert row is not None
    return int(str(row[0]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_a_postgresql_server_that_does_not_answer_is_one_line(
    polled: Site, command: list[str]
) -> None:
    port = free_port()
    site = on_postgresql(polled, f"postgresql+psycopg://links:s3cret@127.0.0.1:{port}/links")

    code, out, err = run(site, *command)

    assert code == 1, out + err
    line = one_line(err)
    assert line.startswith(f"cannot use database postgresql+psycopg://links:***@127.0.0.1:{port}/")
    assert "Connection refused" in line
    assert line.endswith("check that the server runs and site.database is right, then run again")
    assert "s3cret" not in err  # the password never reaches a log or a cron mail


def test_a_missing_postgresql_database_is_one_line(polled: Site, pg_url: str) -> None:
    site = on_postgresql(polled, f"{pg_url}no_such_database")

    code, out, err = run(site, "update")

    assert code == 1, out + err
    line = one_line(err)
    assert line.startswith("cannot use database ")
    assert 'database "no_such_database" does not exist' in line


def test_a_read_only_postgresql_database_is_one_line(polled: Site, pg_database: str) -> None:
    site = on_postgresql(polled, pg_database)
    code, out, err = run(site, "poll")
    assert code == 0, out + err
    stored = pg_entry_count(pg_database)
    name = make_url(pg_database).database
    psql(pg_database, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    feeds = FeedServer()
    feeds.add("alpha", 5)
    file_feeds(site, feeds, "alpha")
    on_postgresql(site, pg_database)

    for command in (["poll"], ["update"]):
        code, out, err = run(site, *command)
        assert code == 1, out + err
        assert one_line(err) == (
            f"database {make_url(pg_database).render_as_string()} is read-only (a standby "
            "server?): point site.database at the primary, then run again"
        )
    assert pg_entry_count(pg_database) == stored


def test_a_postgresql_database_from_a_newer_digest_is_left_alone(
    polled: Site, pg_database: str
) -> None:
    site = on_postgresql(polled, pg_database)
    code, out, err = run(site, "poll")
    assert code == 0, out + err
    psql(pg_database, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")

    code, out, err = run(site, "update")

    assert code == 1, out + err
    assert "is at schema revision f00dfeedbeef, which this digest does not know" in one_line(err)
    assert pg_entry_count(pg_database) == 3
