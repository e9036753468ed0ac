"""Faults a long-running site meets: an output folder it cannot write, a full disk, a render
killed half way, a database another program holds locked. Each is reported in one clear line,
the database keeps what was done, and the next run finishes the work.

We run as root, which writes anywhere, so the unwritable folder and the full disk are made
real in a forked child (fork, not exec, keeps the imports: `nobody` cannot run our Python):
as `nobody`, or with a file size limit that fails a write half way like a full disk does.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.publish import MARKER
from tests.daemon_harness import FeedServer, Site, check_site_files, wait_for
from tests.fault_harness import digest_in_child, file_feeds

pytestmark = pytest.mark.slow


def edition_page(site: Site, number: int, ext: str = "html") -> Path:
    return site.public / f"links/{datetime.now(UTC):%Y/%m/%d}/{number}.{ext}"


def test_unwritable_output_folder_keeps_the_edition_for_the_next_run(world_site: Site) -> None:
    site = world_site
    feeds = FeedServer()
    feeds.add("alpha", 3)
    file_feeds(site, feeds, "alpha")
    assert site.cli("poll").returncode == 0
    for path in site.root.glob("digest.db*"):
        path.chmod(0o666)
    site.public.mkdir()
    site.public.chmod(0o555)

    code, out, err = digest_in_child(site, "build", as_nobody=True)

    assert code == 1, out + err
    assert "closed links/" in out
    assert err == (
        f"cannot write the site: cannot write {site.public / 'style.css'}: Permission denied\n"
    )
    assert site.unclosed() == 0 and len(site.editions()) == 1  # the database kept it
    assert list(site.public.iterdir()) == []

    # Writable again (root writes anyway): the next cron run publishes what was closed.
    again = site.cli("update")
    assert again.returncode == 0, again.stderr
    assert "no new editions" in again.stdout
    assert edition_page(site, 1).is_file() and edition_page(site, 1, "gmi").is_file()
    assert "Story 2 of alpha" in (site.public / "index.html").read_text()
    check_site_files(site)


def test_a_full_disk_during_render_keeps_every_old_page(site: Site) -> None:
    feeds = FeedServer()
    feeds.add("alpha", 3)
    file_feeds(site, feeds, "alpha")
    assert site.cli("update").returncode == 0
    page = site.public / "links/feed.xml"
    before = page.read_bytes()
    assert len(before) > 1000  # so the limit below cuts the new feed half way
    site.write_config(extra_site="  author: Somebody Else\n")  # every feed changes

    # Keep the database's -wal and -shm files open, as a live site has them: SQLite would
    # otherwise create them in the child, past the file size limit.
    holder = sqlite3.connect(site.db)
    holder.execute("SELECT count(*) FROM entries").fetchall()
    try:
        code, out, err = digest_in_child(site, "render", max_file_size=1000)
    finally:
        holder.close()

    assert code == 1, out + err
    assert err.startswith("cannot write the site: cannot write ") and "File too large" in err
    assert "Traceback" not in err
    assert page.read_bytes() == before
    assert not list(site.public.rglob(".*"))

    again = site.cli("render")
    assert again.returncode == 0, again.stderr
    assert "<name>Somebody Else</name>" in page.read_text()
    check_site_files(site)


def test_the_next_run_finishes_what_a_killed_render_left(site: Site) -> None:
    feeds = FeedServer()
    feeds.add("alpha", 2)
    file_feeds(site, feeds, "alpha")
    assert site.cli("update").returncode == 0
    # What kill -9 in the middle of a render leaves: a temporary file beside the page it was
    # writing, the pages it had not reached yet, and no marker of a finished render (it is
    # removed before the first write: digest.publish.render).
    (site.public / MARKER).unlink()
    folder = edition_page(site, 1).parent
    stale = folder / ".1.gmi.k3j2_h1g.tmp"
    stale.write_text("# Links half wri")
    edition_page(site, 1, "gmi").unlink()
    keep = site.public / ".htaccess"  # a file of the site owner's: not ours to remove
    keep.write_text("Options -Indexes\n")

    result = site.cli("update")

    assert result.returncode == 0, result.stderr
    assert "no new editions" in result.stdout
    assert not stale.exists()
    assert edition_page(site, 1, "gmi").is_file()
    assert keep.read_text() == "Options -Indexes\n"
    keep.unlink()
    check_site_files(site)


LOCK_HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(300)
"""


@pytest.fixture
def lock_database(site: Site) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """Start another program holding BEGIN EXCLUSIVE on the site's database: call it."""
    holders: list[subprocess.Popen[str]] = []

    def hold() -> subprocess.Popen[str]:
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(site.db)], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        holders.append(holder)
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


def test_a_database_locked_by_another_program_is_a_clear_error(
    site: Site, lock_database: Callable[[], subprocess.Popen[str]]
) -> None:
    feeds = FeedServer()
    feeds.add("alpha", 2)
    file_feeds(site, feeds, "alpha")
    assert site.cli("poll").returncode == 0
    holder = lock_database()
    site.write_config(extra_site="  busy_timeout: 1\n")

    started = time.monotonic()
    result = site.cli("update")
    took = time.monotonic() - started

    assert result.returncode == 1
    assert result.stderr == f"database is locked by another program: {site.db}\n"
    assert took < 25  # the 1 s of site.busy_timeout, not the default 30 s
    status = site.cli("status")  # reading still works
    assert status.returncode == 0 and "daemon: not running" in status.stdout

    holder.kill()
    holder.wait()
    again = site.cli("update")
    assert again.returncode == 0, again.stderr
    assert "closed links/" in again.stdout and edition_page(site, 1).is_file()


def test_the_daemon_rides_out_a_locked_database(
    site: Site, lock_database: Callable[[], subprocess.Popen[str]]
) -> None:
    feeds = FeedServer()
    feeds.add("alpha", 2)
    site.extra_site = "  busy_timeout: 0.5\n"
    file_feeds(site, feeds, "alpha")
    daemon = site.start(close_every="1s")
    wait_for(lambda: len(site.editions()) == 1, "the first edition")

    holder = lock_database()
    feeds.add("alpha", 1)
    file_feeds(site, feeds, "alpha")
    wait_for(
        lambda: f"database is locked by another program: {site.db}" in site.log(daemon),
        "the daemon to report the lock",
    )
    assert daemon.poll() is None
    holder.kill()
    holder.wait()

    wait_for(lambda: len(site.editions()) == 2 and site.unclosed() == 0, "the held-up edition")
    wait_for(lambda: edition_page(site, 2).is_file(), "its page")
    assert daemon.poll() is None, site.log(daemon)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert "Traceback" not in site.log(daemon)
    check_site_files(site)
