"""The tests' throwaway PostgreSQL server, for benchmarks.

tests.pg skips through pytest when PostgreSQL is missing; outside pytest a benchmark should
say what is missing and stop instead, so the programs are looked up here first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.pg import PostgresServer, postgres_program


@contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A running server (fsync off, 127.0.0.1 only) for the length of the block."""
    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise SystemExit("PostgreSQL (initdb, pg_ctl) is not installed: run .ci/system-deps.sh")
    server = PostgresServer(initdb, pg_ctl)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def postmaster_pid(server: PostgresServer) -> int:
    """The server's main process: the root of every backend serving the pollers."""
    return int((server.data / "postmaster.pid").read_text(encoding="utf-8").split()[0])
