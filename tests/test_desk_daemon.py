"""The daemon (`digest run`) honours the editor's choices at its closings: those made before
it started and those made while it runs, without a restart."""

from __future__ import annotations

import json

import pytest

from tests.daemon_harness import FeedServer, Site, rss_feed, wait_for

pytestmark = pytest.mark.slow


def edition_rows(site: Site) -> list[tuple[int, str, list[str]]]:
    """(number, title, item titles) of each edition, oldest first."""
    return [
        (
            number,
            title,
            [
                t
                for (t,) in site.query(
                    "SELECT title FROM edition_items WHERE edition_id = ? ORDER BY position",
                    edition_id,
                )
            ],
        )
        for edition_id, number, title in site.query(
            "SELECT id, number, title FROM editions ORDER BY id"
        )
    ]


def test_the_daemon_closes_editions_as_the_editor_chose(site: Site, server: FeedServer) -> None:
    server.add("alpha", 3)
    site.feeds = [rss_feed(server, "alpha")]
    site.write_config()
    assert site.cli("poll").returncode == 0
    draft = json.loads(site.cli("draft", "--json").stdout)["streams"][0]
    handles = {item["title"]: item["handle"] for item in draft["items"]}
    hidden = handles["Story 1 of alpha"]
    assert site.cli("hide", hidden).returncode == 0
    assert (
        site.cli(
            "headline", "links", handles["Story 2 of alpha"], handles["Story 0 of alpha"]
        ).returncode
        == 0
    )

    daemon = site.start(close_every="1s")
    wait_for(lambda: len(site.editions()) == 1, "the first edition")
    ((_, title, items),) = edition_rows(site)
    assert title.endswith(": Story 2 of alpha and Story 0 of alpha")
    assert sorted(items) == ["Story 0 of alpha", "Story 2 of alpha"]

    # While it runs: words for the next edition's title, then the hidden story pinned in.
    assert site.cli("title", "links", "Second Words").returncode == 0
    assert site.cli("pin", hidden).returncode == 0
    wait_for(lambda: len(site.editions()) == 2, "the second edition")
    assert edition_rows(site)[1][1:] == (
        edition_rows(site)[1][1].split(":")[0] + ": Second Words",
        ["Story 1 of alpha"],
    )
    # Spent: the headlines, the title and the pin were used once; nothing is left.
    assert site.query("SELECT count(*) FROM choices WHERE spent_in IS NULL") == [(0,)]
    page = wait_for(lambda: next(site.public.glob("links/*/*/*/2.html"), None), "its page")
    text = page.read_text()
    assert "Second Words" in text and "Story 1 of alpha" in text
    daemon.terminate()
    assert daemon.wait(30) == 0
