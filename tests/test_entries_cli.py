"""`digest entries`: what digest stored from real (local) feeds, newest first, on both engines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer
from sqlalchemy import select

from digest.cli import cli
from digest.store import EntryRow, Store

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>{title}</title><link>https://example.net/</link>
<description>d</description>{items}</channel></rss>"""

ITEM = (
    "<item><title>{title}</title><link>{link}</link><guid>{guid}</guid>"
    "<description>{summary}</description>{date}</item>"
)


def item(title: str, slug: str, date: str | None, summary: str = "") -> str:
    return ITEM.format(
        title=title,
        link=f"https://example.net/{slug}",
        guid=f"tag:example.net,2025:{slug}",
        summary=summary or f"About {title.lower()}.",
        date=f"<pubDate>{date}</pubDate>" if date else "",
    )


ALPHA = RSS.format(
    title="Alpha",
    items=item("Alpha three", "a3", "Fri, 28 Mar 2025 11:30:00 +0100", "Third, an hour ahead.")
    + item("Alpha two", "a2", "Thu, 27 Mar 2025 09:00:00 GMT")
    + item("Alpha one", "a1", "Wed, 26 Mar 2025 09:00:00 GMT"),
)
BETA = RSS.format(
    title="Beta",
    items=item("Beta undated", "b-undated", None)
    + item("Beta [/] brackets [bold]stay[/bold]", "b2", "Fri, 28 Mar 2025 08:00:00 GMT")
    # the same time as "Alpha two": the one stored later comes first
    + item("Beta twin", "b1", "Thu, 27 Mar 2025 09:00:00 GMT"),
)


def write_config(path: Path, database_url: str, feeds: list[tuple[str, str]]) -> Path:
    path.write_text(
        "site:\n"
        "  title: Test Links\n"
        "  base_url: https://links.example.org/\n"
        f"  database: {json.dumps(database_url)}\n"
        "  output_dir: public\n"
        "  state_dir: state\n"
        "streams:\n"
        "  links: {summary: Links for the day}\n"
        "fetch: {allow_private_networks: true}\n"
        "feeds:\n"
        + "".join(
            f"  - {{url: {json.dumps(url)}, name: {json.dumps(name)}, stream: links}}\n"
            for name, url in feeds
        )
    )
    return path


def digest(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def listed(config: Path, *args: str) -> list[dict[str, Any]]:
    result = digest(config, "entries", "--json", *args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document) == ["entries"]
    entries: list[dict[str, Any]] = document["entries"]
    return entries


@pytest.fixture
def polled(
    tmp_path: Path, database_url: str, httpserver: HTTPServer
) -> tuple[Path, datetime, datetime]:
    """Alpha and Beta polled into the database (Beta through a permanent redirect); returns
    the config and the times just before and after the poll."""
    httpserver.expect_request("/alpha").respond_with_data(ALPHA, content_type="application/rss+xml")
    httpserver.expect_request("/beta-old").respond_with_data(
        "", status=308, headers={"Location": "/beta"}
    )
    httpserver.expect_request("/beta").respond_with_data(BETA, content_type="application/rss+xml")
    alpha = ("Alpha News", httpserver.url_for("/alpha"))
    beta = ("Beta Blog", httpserver.url_for("/beta-old"))
    before = datetime.now(UTC)
    # Alpha first, then Beta: entries of the same time are listed the later stored first,
    # and one poll of both would store them in whichever order the fetches finish.
    for feeds in ([alpha], [alpha, beta]):
        config = write_config(tmp_path / "feeds.yaml", database_url, feeds)
        result = digest(config, "poll", "--all")
        assert result.exit_code == 0, result.output
        assert f"polled {len(feeds)} feeds" in result.output
    after = datetime.now(UTC)
    return config, before, after


def test_entries_are_listed_newest_first_with_every_field(
    polled: tuple[Path, datetime, datetime],
) -> None:
    config, before, after = polled
    entries = listed(config)
    assert [(entry["feed"], entry["title"]) for entry in entries] == [
        ("Beta Blog", "Beta undated"),  # no date: the time digest first saw it
        ("Alpha News", "Alpha three"),
        ("Beta Blog", "Beta [/] brackets [bold]stay[/bold]"),
        ("Beta Blog", "Beta twin"),
        ("Alpha News", "Alpha two"),
        ("Alpha News", "Alpha one"),
    ]
    assert all(
        set(entry) == {"handle", "feed", "title", "link", "published", "summary", "key"}
        for entry in entries
    )
    undated, three = entries[0], entries[1]
    assert three.pop("handle") != undated["handle"]  # see test_desk for what a handle names
    assert three == {
        "feed": "Alpha News",
        "title": "Alpha three",
        "link": "https://example.net/a3",
        "published": "2025-03-28T10:30:00+00:00",  # 11:30 +0100, in UTC
        "summary": "Third, an hour ahead.",
        "key": "tag:example.net,2025:a3",
    }
    seen = datetime.fromisoformat(undated["published"])
    assert seen.utcoffset() == timedelta(0)
    assert before <= seen <= after
    assert undated["key"] == "tag:example.net,2025:b-undated"
    assert undated["summary"] == "About beta undated."


def test_entries_an_edition_took_are_listed_as_it_published_them_and_stored_once(
    polled: tuple[Path, datetime, datetime], database_url: str, httpserver: HTTPServer
) -> None:
    """The edition keeps its own copy of each item; the entry keeps its identity only."""
    config, _, _ = polled
    before = listed(config)
    result = digest(config, "build", "--at", "2025-03-28 12:00")
    assert result.exit_code == 0, result.output
    assert listed(config) == before
    # The feed corrects a published item: the entry counts as updated, and stays as its
    # edition published it (editions never change; `digest amend` is the editor's way).
    corrected = ALPHA.replace("<title>Alpha three</title>", "<title>Alpha three, fixed</title>")
    httpserver.clear()
    httpserver.expect_request("/alpha").respond_with_data(
        corrected, content_type="application/rss+xml"
    )
    httpserver.expect_request("/beta").respond_with_data(BETA, content_type="application/rss+xml")
    result = digest(config, "poll", "--all")
    assert result.exit_code == 0 and "1 updated" in result.output, result.output
    assert listed(config) == before
    store = Store(database_url)
    try:
        with store.reading() as session:
            texts = dict(session.execute(select(EntryRow.key, EntryRow.title)).all())
    finally:
        store.close()
    published = {"a3", "a2", "b2", "b1"}  # within the stream's two days before 12:00
    assert {key.rsplit(":", 1)[1] for key, title in texts.items() if not title} == published


def test_feed_picks_one_feed_by_name_or_url_and_limit_cuts_the_list(
    polled: tuple[Path, datetime, datetime], httpserver: HTTPServer
) -> None:
    config, _, _ = polled
    alpha = ["Alpha three", "Alpha two", "Alpha one"]
    assert [entry["title"] for entry in listed(config, "--feed", "Alpha News")] == alpha
    by_url = listed(config, "--feed", httpserver.url_for("/alpha"))
    assert [entry["title"] for entry in by_url] == alpha
    # Beta moved (308): its URL in feeds.yaml and the one it is fetched from now both work.
    for url in (httpserver.url_for("/beta-old"), httpserver.url_for("/beta")):
        beta = listed(config, "--feed", url)
        assert [entry["feed"] for entry in beta] == ["Beta Blog"] * 3, url
    assert [entry["title"] for entry in listed(config, "--limit", "2")] == [
        "Beta undated",
        "Alpha three",
    ]
    assert [entry["title"] for entry in listed(config, "--limit", "1", "--feed", "Alpha News")] == [
        "Alpha three"
    ]
    assert len(listed(config, "--limit", "1000")) == 6


def test_the_table_shows_every_entry_and_feed_text_is_not_markup(
    polled: tuple[Path, datetime, datetime],
) -> None:
    config, _, _ = polled
    result = digest(config, "entries")  # stdout is not a terminal here
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "published" in line)
    assert [word for word in header.split() if word.isalpha()] == [
        "handle",
        "published",
        "feed",
        "title",
        "link",
    ]
    row = next(line for line in lines if "brackets" in line)
    assert "Beta [/] brackets [bold]stay[/bold]" in row
    assert "2025-03-28" in row and "Beta Blog" in row and "https://example.net/b2" in row
    titles = ("Beta undated", "Alpha three", "Beta twin", "Alpha two", "Alpha one")
    positions = [result.stdout.index(title) for title in titles]
    assert positions == sorted(positions)


def test_an_unknown_feed_is_a_usage_error_naming_the_known_ones(
    polled: tuple[Path, datetime, datetime],
) -> None:
    config, _, _ = polled
    result = CliRunner().invoke(cli, ["--config", str(config), "entries", "--feed", "Gamma"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "unknown feed 'Gamma' (known: Alpha News, Beta Blog)" in result.stderr
    lower = CliRunner().invoke(cli, ["--config", str(config), "entries", "--feed", "alpha news"])
    assert lower.exit_code == 2  # names match as written in feeds.yaml


def test_many_known_feeds_are_named_in_short(tmp_path: Path) -> None:
    feeds = [(f"Feed {n:02}", f"https://feed{n}.example.net/rss") for n in range(1, 14)]
    config = write_config(tmp_path / "feeds.yaml", f"sqlite:///{tmp_path / 'd.db'}", feeds)
    result = CliRunner().invoke(cli, ["--config", str(config), "entries", "--feed", "Feed 99"])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())  # click may wrap the line
    names = ", ".join(f"Feed {n:02}" for n in range(1, 11))
    assert f"unknown feed 'Feed 99' (known: {names}, … and 3 more)" in message


def test_limit_must_be_at_least_one(tmp_path: Path) -> None:
    config = write_config(tmp_path / "feeds.yaml", f"sqlite:///{tmp_path / 'd.db'}", [])
    for bad in ("0", "-3", "many"):
        result = CliRunner().invoke(cli, ["--config", str(config), "entries", "--limit", bad])
        assert result.exit_code == 2, bad
        assert "--limit" in result.stderr


def test_an_empty_database_lists_nothing(tmp_path: Path, database_url: str) -> None:
    config = write_config(
        tmp_path / "feeds.yaml", database_url, [("Alpha News", "https://alpha.example.net/rss")]
    )
    assert listed(config) == []
    assert listed(config, "--feed", "Alpha News") == []
    table = digest(config, "entries")
    assert table.exit_code == 0, table.output
    assert "published" in table.stdout and "example.net" not in table.stdout


def test_feeds_dropped_from_the_config_are_not_listed(
    polled: tuple[Path, datetime, datetime], httpserver: HTTPServer, database_url: str
) -> None:
    config, _, _ = polled
    write_config(config, database_url, [("Alpha News", httpserver.url_for("/alpha"))])
    assert {entry["feed"] for entry in listed(config)} == {"Alpha News"}
    result = CliRunner().invoke(cli, ["--config", str(config), "entries", "--feed", "Beta Blog"])
    assert result.exit_code == 2
    assert "(known: Alpha News)" in result.stderr
