"""`digest run` as a real process: kill -9 at random moments, cron runs beside it, SIGTERM with
slow feeds in flight, config reloads, missed closings, `digest status`.

Feeds come from a real aiohttp server on 127.0.0.1 whose RSS changes between runs; closings
use the DIGEST_TEST_CLOSE_EVERY hook (an interval instead of the stream's cron schedule). The
harness (FeedServer, Site, the `server` and `site` fixtures) is tests/daemon_harness.py. No
test sleeps to let something happen: each waits for a log line, a file or a row that says it
did.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from digest.locks import publish_lock
from digest.store import FeedRow, Store, claim_feeds
from tests.daemon_harness import (
    DIGEST,
    FeedServer,
    Site,
    check_numbering,
    check_site_files,
    rss_feed,
    terminate,
    wait_for,
)

pytestmark = pytest.mark.slow


# --- the tests ----------------------------------------------------------------------------


# Where a kill -9 lands: in the migrations of a new database (alembic logs only when the
# database is not at the newest revision: the first run's), once the daemon runs, after a
# poll, after a closing, after a render. The kill comes a random moment (under 0.4 s) past the
# mark, so it falls inside whatever the daemon does next; the marks are log lines, so however
# slow the machine, each run is killed where it was meant to be.
MIGRATING = "alembic.runtime.migration"
KILL_MARKS = (
    "daemon started",
    "digest.daemon: polled ",
    "digest.daemon: closed links/",
    "digest.daemon: rendered ",
)


def test_kill_9_at_random_moments_loses_nothing(site: Site, server: FeedServer) -> None:
    seed = int(os.environ.get("DIGEST_TEST_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    names = ["alpha", "beta", "gamma"]
    for name in names:
        server.add(name, 2)
    site.feeds = [rss_feed(server, name) for name in names]
    site.write_config()

    # A killed daemon's claims on feeds lapse after the lease: short here, so the next run
    # takes them over at once.
    lease = {"DIGEST_TEST_LEASE": "2s"}
    # Eight runs: the first in its migrations, then every other mark once, in an order drawn
    # from the seed, then three drawn again.
    marks = [MIGRATING, *rng.sample(KILL_MARKS, len(KILL_MARKS)), *rng.sample(KILL_MARKS, 3)]
    for mark in marks:
        for name in names:
            server.add(name, rng.randint(1, 3))
        daemon = site.start(close_every="1s", **lease)
        site.wait_for_log(daemon, mark)
        time.sleep(rng.uniform(0.0, 0.4))  # the random moment past the mark, not a wait
        daemon.kill()
        assert daemon.wait(30) == -signal.SIGKILL, f"seed {seed}, mark {mark!r}"

    for name in names:
        server.add(name, 1)
    daemon = site.start(close_every="1s", **lease)
    served = server.served_links()
    wait_for(lambda: set(site.stored_links()) == served, "every served entry to be stored")
    wait_for(lambda: site.unclosed() == 0, "every entry to be closed into an edition")

    def rendered() -> bool:
        return all(
            (site.public / stream / day.replace("-", "/") / f"{number}.gmi").is_file()
            for stream, day, number in site.editions()
        )

    wait_for(rendered, "every edition to be rendered")
    code, _ = terminate(daemon)
    assert code == 0, site.log(daemon)

    stored = site.stored_links()
    assert sorted(stored) == sorted(served), f"seed {seed}"  # each exactly once
    in_editions = [entry for (entry,) in site.query("SELECT entry_id FROM edition_items")]
    assert len(in_editions) == len(set(in_editions)) == len(stored), f"seed {seed}"
    check_numbering(site)
    check_site_files(site)
    assert "Traceback" not in "".join(site.log(p) for p in site.processes)


def test_five_cron_updates_beside_the_daemon_close_one_edition(
    site: Site, server: FeedServer
) -> None:
    names = ["alpha", "beta", "gamma"]
    for name in names:
        server.add(name, 3)
    site.feeds = [rss_feed(server, name) for name in names]
    site.write_config()
    daemon = site.start()
    served = server.served_links()
    wait_for(lambda: set(site.stored_links()) == served, "the daemon's first poll")

    updates = [
        subprocess.Popen(
            [DIGEST, "--config", str(site.config), "update"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=site.env(),
        )
        for _ in range(5)
    ]
    results = [(u.wait(120), *u.communicate()) for u in updates]

    for code, out, errors in results:
        assert code == 0, out + errors
        assert "Traceback" not in errors
    closers = [out for _, out, _ in results if "closed links/" in out]
    assert len(closers) == 1, [out for _, out, _ in results]
    assert sum("no new editions" in out for _, out, _ in results) == 4
    assert len(site.editions()) == 1
    assert site.unclosed() == 0
    assert daemon.poll() is None, "the daemon died"
    code, _ = terminate(daemon)
    assert code == 0
    check_site_files(site)


def test_a_runner_that_cannot_get_the_lock_skips_with_a_message(
    site: Site, server: FeedServer
) -> None:
    server.add("alpha", 2)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    assert site.cli("poll").returncode == 0

    site.write_config(extra_site="  lock_wait: 1\n")
    with publish_lock(site.state, wait=0):
        started = time.monotonic()
        skipped = site.digest("build")
        waited = time.monotonic() - started
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped closing and rendering: another digest process " in skipped.stderr
    assert f"(pid {os.getpid()})" in skipped.stderr and "publish.lock" in skipped.stderr
    assert waited >= 1
    assert site.editions() == []

    done = site.cli("build")
    assert done.returncode == 0 and "closed links/" in done.stdout
    assert len(site.editions()) == 1


def test_sigterm_with_100_slow_feeds_in_flight_exits_0_quickly(
    site: Site, server: FeedServer
) -> None:
    server.add("fast", 2)
    site.feeds = [rss_feed(server, "fast")] + [
        {"url": f"{server.base}/slow/{n}", "name": f"Slow {n}", "stream": "links", "interval": "1h"}
        for n in range(100)
    ]
    site.write_config()
    daemon = site.start()
    wait_for(lambda: server.slow_in_flight >= 100, "100 slow fetches in flight")
    code, took = terminate(daemon, timeout=10)

    assert code == 0, site.log(daemon)
    assert took < 10
    log = site.log(daemon)
    assert "received SIGTERM: stopping" in log and "poll cancelled" in log
    assert "daemon stopped" in log and "Traceback" not in log
    # What finished is committed; the slow feeds were not polled, so they stay due.
    assert len(site.stored_links()) == 2
    unpolled = "SELECT count(*) FROM feeds WHERE url LIKE '%/slow/%' AND last_poll_at IS NULL"
    assert site.query(unpolled) == [(100,)]


UNCHANGED = "config file unchanged since it was read"


def test_config_edits_are_picked_up_and_a_broken_one_is_ignored(
    site: Site, server: FeedServer
) -> None:
    server.add("alpha", 2)
    server.add("beta", 2)
    server.add("gamma", 2)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    daemon = site.start(log_level="debug")  # for the checks of the file that find no change
    wait_for(lambda: len(site.stored_links()) == 2, "alpha to be polled")

    # Saved with a new feed and an author: polled without a restart or a signal, and the
    # pages follow the config without waiting for the next closing.
    site.feeds.append(rss_feed(server, "beta", interval="2s"))
    site.write_config(extra_site="  author: Jo Editor\n")
    wait_for(lambda: len(site.stored_links()) == 4, "beta, added to the file, to be polled")
    # Logged once the reload is done, which the poll of the new feed (another thread) may
    # beat: the feed is in the database before the line is written.
    site.wait_for_log(daemon, "config reloaded: 2 feeds")
    feed = site.public / "feed.xml"
    wait_for(lambda: feed.is_file() and "Jo Editor" in feed.read_text(), "the site to follow")

    # A broken edit is logged, problem by problem, and the running config stays.
    site.feeds.append(rss_feed(server, "gamma"))
    site.write_config(extra_site="  colour: blue\n")
    wait_for(lambda: "site.colour: unknown key" in site.log(daemon), "the problem to be logged")
    assert f"config not reloaded: {site.config}:9: site.colour: unknown key" in site.log(daemon)
    assert daemon.poll() is None
    server.add("alpha", 1)
    wait_for(lambda: len(site.stored_links()) == 5, "alpha to be polled on the old config")
    assert not site.query("SELECT 1 FROM feeds WHERE name = 'Gamma'")

    # Fixed, but with the file's size and time as before: only SIGHUP makes it re-read.
    broken = site.config.stat()
    site.write_config(extra_site="  #olour: blue\n")
    os.utime(site.config, ns=(broken.st_atime_ns, broken.st_mtime_ns))
    assert site.config.stat().st_size == broken.st_size
    # Each check of the file that finds it as it was is logged (at debug). The second one
    # logged after the write began after it: the daemon has looked, and kept its config.
    reloads = site.log(daemon).count("config reloaded")
    checked = site.log(daemon).count(UNCHANGED)
    site.wait_for_log(daemon, UNCHANGED, count=checked + 2)
    assert site.log(daemon).count("config reloaded") == reloads
    assert len(site.stored_links()) == 5
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: len(site.stored_links()) == 7, "gamma to be polled after SIGHUP")
    assert "received SIGHUP" in site.log(daemon)
    code, _ = terminate(daemon)
    assert code == 0, site.log(daemon)


def test_a_closing_missed_while_down_is_made_up_once(site: Site, server: FeedServer) -> None:
    now = datetime.now(UTC)
    year_start = datetime(now.year, 1, 1, tzinfo=UTC)
    server.add("alpha", 1, published=datetime(2019, 6, 1, tzinfo=UTC))
    server.add("alpha", 2, published=year_start - timedelta(days=100))
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()  # closes at midnight on 1 January
    assert site.cli("poll").returncode == 0
    first = site.cli("build", "--at", "2020-01-01 00:00")
    assert first.returncode == 0 and "closed links/2020/01/01/1" in first.stdout, first.stderr

    # Down at every 1 January since: at start the daemon makes up the latest one, as of then.
    daemon = site.start()
    wait_for(lambda: len(site.editions()) == 2, "the missed closing")
    assert site.editions()[1] == ("links", f"{now.year}-01-01", 1)
    assert site.unclosed() == 0
    wait_for(lambda: (site.public / f"links/{now.year}/01/01/1.html").is_file(), "its pages")
    assert terminate(daemon)[0] == 0
    assert "making up the closing missed at" in site.log(daemon)

    # Once only: a restart with new entries waiting does not close again.
    server.add("alpha", 1)
    again = site.start()
    wait_for(lambda: len(site.stored_links()) == 4, "the new entry to be polled")
    # The publisher's first heartbeat comes after its decision on missed closings (made, and
    # logged, on taking the role): once the row is there, the restart has decided.
    wait_for(
        lambda: site.query(
            "SELECT 1 FROM workers WHERE id LIKE ? AND role = 'publish'", f"%:{again.pid}:%"
        ),
        "the restarted daemon to take the publisher role and decide on missed closings",
    )
    assert terminate(again)[0] == 0
    log = site.log(again)
    assert "publisher role taken" in log and "daemon stopped" in log
    assert len(site.editions()) == 2
    assert "making up" not in log


def test_status_says_what_runs_and_what_fails(site: Site, server: FeedServer) -> None:
    server.add("alpha", 2)
    site.feeds = [rss_feed(server, "alpha"), rss_feed(server, "missing")]
    site.write_config()
    assert site.cli("status").stdout.startswith("daemon: not running\n")

    daemon = site.start(close_every="1s")
    wait_for(lambda: len(site.editions()) == 1, "an edition")
    wait_for(
        lambda: site.query("SELECT 1 FROM feeds WHERE name = 'Missing' AND failures > 0"),
        "the missing feed to fail",
    )
    report = json.loads(site.cli("status", "--json").stdout)
    assert report["daemon"] == {"running": True, "pid": daemon.pid}
    assert report["last_poll"] is not None
    assert [feed["name"] for feed in report["failing_feeds"]] == ["Missing"]
    assert report["failing_feeds"][0]["last_status"] == "404"
    links = report["streams"]["links"]
    assert links["last_edition"]["path"].startswith("links/") and links["next_closing"]
    text = site.cli("status").stdout
    assert f"daemon: running (pid {daemon.pid})" in text
    assert "Missing <" in text and "stream links ('0 0 1 1 *'):" in text

    # Killed, it leaves its pid file behind; the lock, not the file, says whether it runs.
    daemon.kill()
    daemon.wait(30)
    assert (site.state / "daemon.pid").read_text().strip() == str(daemon.pid)
    report = json.loads(site.cli("status", "--json").stdout)
    assert report["daemon"] == {"running": False, "pid": None}
    next_closing = datetime.fromisoformat(report["streams"]["links"]["next_closing"])
    assert (next_closing.month, next_closing.day, next_closing.hour) == (1, 1, 0)


def test_a_second_daemon_refuses_to_start(site: Site, server: FeedServer) -> None:
    server.add("alpha", 1)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    first = site.start()
    wait_for(lambda: site.stored_links(), "the first daemon to poll")
    second = site.digest("run")
    assert second.returncode == 1
    assert second.stderr.startswith(
        f"not started: a daemon is already running: another digest process (pid {first.pid})"
    )
    assert first.poll() is None
    assert terminate(first)[0] == 0


def test_json_logs_are_one_object_per_line(site: Site, server: FeedServer) -> None:
    server.add("alpha", 1)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    daemon = subprocess.Popen(
        [
            DIGEST,
            "--config",
            str(site.config),
            "run",
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=site.env(),
    )
    site.processes.append(daemon)
    wait_for(lambda: site.stored_links(), "a poll")
    assert terminate(daemon)[0] == 0
    assert daemon.stderr is not None
    events = [json.loads(line) for line in daemon.stderr.read().splitlines()]
    messages = [event["message"] for event in events]
    assert any(m.startswith("daemon started") for m in messages)
    assert any(m.startswith("polled 1 feeds: 1 fetched") for m in messages)
    assert {"time", "level", "logger", "message"} <= set(events[0])


def test_a_reload_with_a_bad_schedule_or_a_feed_listed_twice_keeps_the_daemon_running(
    site: Site, server: FeedServer
) -> None:
    """Issue 16, item 3: both edits passed the config check and killed the daemon."""
    server.add("alpha", 2)
    site.feeds = [rss_feed(server, "alpha", interval="2s")]
    site.write_config()
    daemon = site.start()
    wait_for(lambda: len(site.stored_links()) == 2, "alpha to be polled")

    site.schedule = "61 25 * * *"
    site.write_config()
    site.wait_for_log(daemon, "streams.links.schedule: not a valid cron schedule")
    assert f"config not reloaded: {site.config}:13: streams.links" in site.log(daemon)
    site.schedule = "0 0 1 1 *"
    site.feeds.append(rss_feed(server, "alpha"))
    site.write_config()
    site.wait_for_log(daemon, "the same URL as feeds[0]")
    assert f"config not reloaded: {site.config}:18: feeds[1].url: the same URL" in site.log(daemon)

    server.add("alpha", 1)  # still polling on the old config
    wait_for(lambda: len(site.stored_links()) == 3, "alpha to be polled on the old config")
    assert daemon.poll() is None
    assert "Traceback" not in site.log(daemon)
    code, _ = terminate(daemon)
    assert code == 0, site.log(daemon)


def test_feeds_held_by_a_killed_poller_are_logged_once_then_polled(
    site: Site, server: FeedServer
) -> None:
    """After a kill -9 of a poll, its feeds wait out its lease: the daemon's ticks that poll
    nothing used to say nothing at all; now the first says why, the rest keep quiet."""
    for name in ("alpha", "beta"):
        server.add(name, 1)
    site.feeds = [rss_feed(server, "alpha"), rss_feed(server, "beta")]
    site.write_config()
    assert site.cli("poll").returncode == 0
    lease = timedelta(seconds=5)
    store = Store(f"sqlite:///{site.db}")
    try:
        with store.writing() as session:
            now = datetime.now(UTC)
            session.execute(update(FeedRow).values(next_poll_at=now - timedelta(seconds=1)))
            claimed = claim_feeds(
                session, now, worker="elsewhere:4242:dead00", lease=lease, limit=2
            )
        assert len(claimed) == 2
    finally:
        store.close()

    daemon = site.start()
    site.wait_for_log(daemon, ", 2 held by another poller (lease until ")
    site.wait_for_log(daemon, "polled 2 feeds: ")  # the lease ended: polled at the next tick
    log = site.log(daemon)
    assert log.count("polled 0 feeds: ") == 1, log
    assert terminate(daemon)[0] == 0
