"""Locks that let one daemon and any number of cron runs share a database and an output folder.

Two lock files live in `site.state_dir`, both taken with `fcntl.flock`, which the kernel
drops when the holder dies (even by kill -9), so a crash never leaves a stale lock behind:

- `publish.lock`: held while closing editions and rendering, so an edition is closed by one
  runner at a time (the unique keys on editions are the second line of defence).
- `daemon.pid`: held by the running daemon for its whole life; `digest status` says "running"
  only while it is held, so a pid file left by a killed daemon is never mistaken for a live one.

Each lock file holds its holder's pid, for the messages of whoever waits.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

PUBLISH_LOCK = "publish.lock"
DAEMON_LOCK = "daemon.pid"
_RETRY_SECONDS = 0.05  # between tries for a held lock


class LockBusy(Exception):
    """Another process holds the lock; `pid` is its process id when it wrote one."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"another digest process (pid {pid})" if pid else "another digest process"
        super().__init__(f"{holder} holds {path}")
        self.path = path
        self.pid = pid


@contextmanager
def file_lock(
    path: Path, *, wait: float = 0.0, cancel: threading.Event | None = None
) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created with its folders) for the `with` block.

    Waits up to `wait` seconds, or until `cancel` is set, then raises LockBusy. Locks are per
    open file, so a second `file_lock` on the same path blocks even in the same process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait
        while not _try_lock(fd, fcntl.LOCK_EX):
            left = deadline - time.monotonic()
            if left <= 0 or (cancel is not None and cancel.is_set()):
                raise LockBusy(path, _read_pid(fd))
            if cancel is not None:
                cancel.wait(min(_RETRY_SECONDS, left))
            else:
                time.sleep(min(_RETRY_SECONDS, left))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def publish_lock(
    state_dir: Path, *, wait: float, cancel: threading.Event | None = None
) -> AbstractContextManager[None]:
    """The lock around closing editions and rendering the site; a runner waits up to `wait`
    seconds (site.lock_wait: cron runs overlap a daemon's closing for seconds, not minutes)."""
    return file_lock(state_dir / PUBLISH_LOCK, wait=wait, cancel=cancel)


def daemon_lock(state_dir: Path) -> AbstractContextManager[None]:
    """Held by `digest run` for its whole life; LockBusy at once when a daemon already runs."""
    return file_lock(state_dir / DAEMON_LOCK)


def running_daemon(state_dir: Path) -> int | None:
    """The pid of the daemon holding the daemon lock, or None when no daemon runs."""
    try:
        fd = os.open(state_dir / DAEMON_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if _try_lock(fd, fcntl.LOCK_SH):
            return None  # nobody holds it: a pid in the file is a dead daemon's
        return _read_pid(fd) or 0
    finally:
        os.close(fd)


def try_file_lock(path: Path) -> int | None:
    """An open fd holding an exclusive flock on `path` (created), or None when another holds
    it. Closing the fd releases the lock; so does the holder's death."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if _try_lock(fd, fcntl.LOCK_EX):
        return fd
    os.close(fd)
    return None


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def locked_database(error: OperationalError, url: str) -> str | None:
    """A one-line message when `error` is SQLite giving up on a lock another program holds."""
    original = error.orig
    if isinstance(original, sqlite3.OperationalError) and "locked" in str(original):
        return f"database is locked by another program: {make_url(url).database}"
    return None
