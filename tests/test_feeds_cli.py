"""`digest feeds`: what a user sees of each feed's health and next poll after a real poll."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from digest.cli import cli

DAY = 86400


def feeds_after_poll(tmp_path: Path, urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "site: {title: T, base_url: 'https://links.example.org/', "
        f"database: 'sqlite:///{tmp_path}/digest.db'}}\n"
        "streams: {links: {summary: Links}}\n"
        "fetch: {allow_private_networks: true}\n"
        "feeds:\n"
        + "".join(
            f"  - {{url: {json.dumps(url)}, name: {name}, stream: links, interval: 1h}}\n"
            for name, url in urls.items()
        )
    )
    runner = CliRunner()
    polled = runner.invoke(cli, ["--config", str(config), "poll"], catch_exceptions=False)
    assert polled.exit_code == 1, polled.output  # every feed here answers "not now"
    listed = runner.invoke(cli, ["--config", str(config), "feeds", "--json"])
    assert listed.exit_code == 0, listed.output
    return {feed["name"]: feed for feed in json.loads(listed.stdout)}


@pytest.mark.parametrize(
    ("retry_after", "expected_days"),
    [
        (str(5 * DAY), 5),  # honoured: the server asked for five days
        (str(30 * DAY), 7),  # capped at a week, so a bad header cannot silence a feed
    ],
)
def test_next_poll_follows_retry_after_up_to_a_week(
    tmp_path: Path, httpserver: HTTPServer, retry_after: str, expected_days: int
) -> None:
    httpserver.expect_request("/busy").respond_with_data(
        "", status=503, headers={"Retry-After": retry_after}
    )
    feed = feeds_after_poll(tmp_path, {"busy": httpserver.url_for("/busy")})["busy"]

    assert feed["last_status"] == "503"
    wait = datetime.fromisoformat(feed["next_poll"]) - datetime.fromisoformat(feed["last_poll"])
    # Counted from the response, a moment before the poll was recorded.
    assert abs(wait - timedelta(days=expected_days)) < timedelta(minutes=1)
