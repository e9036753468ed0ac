"""`digest poll` says which due feeds it skipped because another poller holds them.

After a `kill -9` of a poll, the dead run's leases stay until they end; the next run used to
skip those feeds without a word ("polled 2 feeds" of 5).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from sqlalchemy import update

from digest.cli import cli
from digest.store import FeedRow, Store, claim_feeds
from tests.test_feeds_cli import RSS, write_config


def test_poll_reports_due_feeds_held_by_another_pollers_lease(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    urls = {}
    for n in range(5):
        httpserver.expect_request(f"/feed{n}").respond_with_data(
            RSS, content_type="application/rss+xml"
        )
        urls[f"feed{n}"] = httpserver.url_for(f"/feed{n}")
    config = write_config(tmp_path, urls)
    runner = CliRunner()
    first = runner.invoke(cli, ["--config", str(config), "poll"])
    assert first.exit_code == 0, first.output
    assert "held by another poller" not in first.output

    # What a poll killed with `kill -9` leaves: three due feeds under its live lease.
    now = datetime.now(UTC)
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    try:
        with store.writing() as session:
            session.execute(update(FeedRow).values(next_poll_at=now - timedelta(minutes=1)))
            dead = claim_feeds(
                session, now, worker="elsewhere:4242:dead00", lease=timedelta(minutes=5), limit=3
            )
        assert len(dead) == 3
    finally:
        store.close()

    polled = runner.invoke(cli, ["--config", str(config), "poll"])

    assert polled.exit_code == 0, polled.output
    assert polled.stdout.startswith("polled 2 feeds: ")  # 3 of the 5 due are held
    held = re.search(r", 3 held by another poller \(lease until (\S+) UTC\)$", polled.stdout, re.M)
    assert held, polled.stdout
    assert held[1] == f"{now + timedelta(minutes=5):%H:%M:%S}"
