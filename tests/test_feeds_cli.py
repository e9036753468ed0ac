"""`digest feeds`: what a user sees of each feed's health and next poll after a real poll."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.cli import cli
from digest.parse import PARSER_REVISION

DAY = 86400
RSS = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>Alpha</title>'
    "<link>https://example.net/</link><description>d</description>"
    "<item><title>One</title><link>https://example.net/1</link></item></channel></rss>"
)


def write_config(tmp_path: Path, urls: dict[str, str]) -> Path:
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
    return config


def feeds_after_poll(tmp_path: Path, urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    config = write_config(tmp_path, urls)
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


def test_a_next_poll_a_clock_ahead_left_is_reported_and_polled(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    """A run with the clock a year ahead used to leave every feed unpolled until that date."""
    httpserver.expect_request("/feed").respond_with_data(RSS, content_type="application/rss+xml")
    config = write_config(tmp_path, {"alpha": httpserver.url_for("/feed")})
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "poll"]).exit_code == 0
    year_ahead = datetime.now(UTC) + timedelta(days=365)
    database = sqlite3.connect(tmp_path / "digest.db")
    with database:  # what a poll with the clock a year ahead writes
        database.execute("UPDATE feeds SET next_poll_at = ?", (f"{year_ahead:%Y-%m-%d %H:%M:%S}",))
    database.close()

    status = runner.invoke(cli, ["--config", str(config), "status", "--json"])
    assert [feed["name"] for feed in json.loads(status.stdout)["next_poll_out_of_reach"]] == [
        "alpha"
    ]
    polled = runner.invoke(cli, ["--config", str(config), "poll"])

    assert polled.exit_code == 0, polled.output
    assert "polled 1 feeds" in polled.stdout
    assert "alpha: its next poll was set for" in polled.stderr
    assert "(was the clock ahead?)" in polled.stderr
    listed = runner.invoke(cli, ["--config", str(config), "feeds", "--json"])
    next_poll = datetime.fromisoformat(json.loads(listed.stdout)[0]["next_poll"])
    assert next_poll < datetime.now(UTC) + timedelta(hours=2)  # its 1 h interval again
    status = runner.invoke(cli, ["--config", str(config), "status", "--json"])
    assert json.loads(status.stdout)["next_poll_out_of_reach"] == []


@pytest.mark.parametrize("validators", [True, False], ids=["etag", "same-bytes"])
def test_an_unchanged_body_that_is_no_feed_costs_a_304_and_keeps_its_error(
    tmp_path: Path, httpserver: HTTPServer, validators: bool
) -> None:
    """A body that did not parse keeps its validators (or its hash): the same body again is
    its error again, without a parse, and its failures stay; the user still sees it all."""
    served = {"body": "<html><body>Moved to our new blog</body></html>"}
    status = [200]
    answered: list[int] = []
    asked_if_changed: list[bool] = []

    def handler(request: Request) -> Response:
        asked_if_changed.append("If-None-Match" in request.headers)
        etag = f'"{len(served["body"])}"'
        if status[0] != 200:
            response = Response("", status=status[0])
        elif validators and request.headers.get("If-None-Match") == etag:
            response = Response(status=304, headers={"ETag": etag})
        else:
            headers = {"ETag": etag} if validators else {}
            response = Response(served["body"], content_type="text/html", headers=headers)
        answered.append(response.status_code)
        return response

    httpserver.expect_request("/page").respond_with_handler(handler)
    config = write_config(tmp_path, {"page": httpserver.url_for("/page")})
    runner = CliRunner()

    def poll() -> tuple[str, dict[str, Any]]:
        polled = runner.invoke(cli, ["--config", str(config), "poll", "--all"])
        listed = runner.invoke(cli, ["--config", str(config), "feeds", "--json"])
        return polled.stderr if polled.exit_code == 1 else "", json.loads(listed.stdout)[0]

    stderr, first = poll()
    assert first["last_error"].startswith("not a feed (an HTML page)"), first
    assert first["failures"] == 1 and "page <" in stderr and first["last_error"] in stderr
    stderr, again = poll()
    assert answered == [200, 304 if validators else 200]
    assert again["last_status"] == ("304" if validators else "200")
    # Still failing, and said so on every poll, but with the same count: no backoff growth.
    assert (again["last_error"], again["failures"]) == (first["last_error"], 1)
    assert first["last_error"] in stderr

    # digest upgraded since: another parser's verdict is not trusted, and the body comes
    # whole (no validators) to be parsed anew, by this parser, whose verdict is kept.
    with sqlite3.connect(tmp_path / "digest.db") as db:
        db.execute("UPDATE feeds SET body_error_by = '0.0.1/1'")
    stderr, judged = poll()
    assert (answered[-1], asked_if_changed[-1]) == (200, False)
    assert (judged["last_error"], judged["failures"]) == (first["last_error"], 2)
    with sqlite3.connect(tmp_path / "digest.db") as db:
        assert db.execute("SELECT body_error_by FROM feeds").fetchall() == [(PARSER_REVISION,)]
    _stderr, again = poll()
    assert answered[-1] == (304 if validators else 200) and again["failures"] == 2

    status[0] = 500  # another failure between: counted, then the body's error again
    _stderr, failed = poll()
    assert (failed["last_error"], failed["failures"]) == ("HTTP 500 Internal Server Error", 3)
    status[0] = 200
    _stderr, back = poll()
    assert (back["last_error"], back["failures"], back["last_ok"]) == (first["last_error"], 3, None)

    served["body"] = RSS  # a new body: parsed, and the feed is well again
    stderr, well = poll()
    assert stderr == "" and (well["last_error"], well["failures"]) == (None, 0)
    assert well["entries"] == 1 and well["last_status"] == "200"
    assert answered[-1] == 200
