"""A throwaway PostgreSQL server for the test session, and a fresh database per test.

The store must run the same on PostgreSQL as on SQLite, so the store tests run on a real
server rather than trusting the dialect. The server lives in a temp folder with fsync off
(its data is thrown away) and listens on 127.0.0.1 only. initdb refuses to run as root, so
as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import psycopg
from psycopg import sql

from tests.gemini_servers import free_port
from tests.validators import tool_missing

SERVER_OPTIONS = (
    "-F -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
)


def postgres_program(name: str) -> str | None:
    """`name` from PATH, else from the newest /usr/lib/postgresql/*/bin (Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


class PostgresServer:
    """One initdb'd cluster in a temp folder; `url` is its base SQLAlchemy URL."""

    def __init__(self, initdb: str, pg_ctl: str) -> None:
        self.initdb = initdb
        self.pg_ctl = pg_ctl
        self.home = Path(tempfile.mkdtemp(prefix="digest-pg-"))
        self.data = self.home / "data"
        self.log = self.home / "server.log"
        self.port = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                tool_missing("a 'postgres' user to run PostgreSQL as (we run as root)")
            os.chown(self.home, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/"

    def _run(self, args: Sequence[str]) -> None:
        done = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{log}"
            )

    def start(self) -> None:
        self._run(
            [
                self.initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        # A free port can be taken between asking and binding: try a few.
        for attempt in range(5):
            self.port = free_port()
            options = (
                f"{SERVER_OPTIONS} -p {self.port} -c listen_addresses=127.0.0.1"
                f" -c unix_socket_directories={self.home}"
            )
            try:
                self._run(
                    [
                        self.pg_ctl,
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log),
                        "-w",
                        "-o",
                        options,
                        "start",
                    ]
                )
                return
            except RuntimeError:
                if attempt == 4:
                    raise

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    @contextmanager
    def database(self, template: str | None = None) -> Iterator[str]:
        """A new database for one test, empty or a copy of database `template`; yields its
        SQLAlchemy URL and drops it after."""
        name = f"t_{uuid.uuid4().hex}"
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self._admin() as admin:
            admin.execute(create)
        try:
            yield f"{self.url}{name}"
        finally:
            # FORCE: a poller the test killed may still hold a connection.
            with self._admin() as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@contextmanager
def postgres_server(
    missing: Callable[[str], NoReturn] = tool_missing,
) -> Iterator[PostgresServer]:
    """A running server for the session; without PostgreSQL, `missing` says so (the tests'
    default skips, and fails in CI)."""
    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL (initdb, pg_ctl)")
    server = PostgresServer(initdb, pg_ctl)
    try:
        server.start()
        yield server
    finally:
        server.stop()
