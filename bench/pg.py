"""The tests' throwaway PostgreSQL server, for benchmarks.

tests.pg skips through pytest when PostgreSQL is missing; outside pytest a benchmark should
say what is missing and stop instead.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import NoReturn

from tests.pg import PostgresServer, postgres_server


def _stop(what: str) -> NoReturn:
    raise SystemExit(f"{what} is not installed: run .ci/system-deps.sh")


def postgres() -> AbstractContextManager[PostgresServer]:
    """A running server (fsync off, 127.0.0.1 only) for the length of the block."""
    return postgres_server(missing=_stop)


def postmaster_pid(server: PostgresServer) -> int:
    """The server's main process: the root of every backend serving the pollers."""
    return int((server.data / "postmaster.pid").read_text(encoding="utf-8").split()[0])
