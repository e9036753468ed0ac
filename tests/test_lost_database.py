"""A lost database never costs the published site: `digest update` on an empty or new database
keeps every edition page already in the output folder, byte for byte, numbers its new
editions after them, and the indexes and feeds go on listing them (issue 16, item 4)."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import cli
from tests.validators import check_gemtext, validate_atom

pytestmark = pytest.mark.slow  # whole `digest update` runs, end to end

CONFIG = """\
site:
  title: Kept Links
  base_url: https://example.org/
  gemini_base_url: gemini://example.org/
  output_dir: public
  database: sqlite:///digest.db
  state_dir: state
streams:
  links:
    title: "Links {date:%d/%m/%Y}: {headlines}"
    summary: Links for the day
feeds:
  - {url: "file:alpha.xml", name: Alpha, stream: links, section: Science, interval: 1s}
"""


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.public = root / "public"
        self.items: list[tuple[str, datetime]] = []
        (root / "feeds.yaml").write_text(CONFIG)

    def add(self, *titles: str) -> None:
        """New stories at the top of the feed, published a moment ago."""
        self.items += [(title, datetime.now(UTC) - timedelta(seconds=2)) for title in titles]
        slugs = [(re.sub(r"[^a-z0-9]", "-", title.lower()), title, at) for title, at in self.items]
        body = "".join(
            f"<item><guid>{slug}</guid>"
            f"<title>{title}</title><link>https://a.example/{slug}</link>"
            f"<pubDate>{format_datetime(at)}</pubDate><description>About {title}.</description>"
            "</item>"
            for slug, title, at in reversed(slugs)
        )
        (self.root / "alpha.xml").write_text(
            "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Alpha"
            f"</title><link>https://a.example/</link><description>d</description>{body}"
            "</channel></rss>"
        )
        time.sleep(1.1)  # the feed's 1 s interval: due again

    def update(self) -> Result:
        result = CliRunner().invoke(
            cli, ["--config", str(self.root / "feeds.yaml"), "update"], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result

    def edition_pages(self) -> dict[str, bytes]:
        return {
            str(path.relative_to(self.public)): path.read_bytes()
            for path in sorted(self.public.glob("links/*/*/*/*"))
        }

    def lose_database(self, how: str) -> None:
        for path in self.root.glob("digest.db-*"):  # -wal, -shm
            path.unlink()
        if how == "deleted":
            (self.root / "digest.db").unlink()
        else:
            (self.root / "digest.db").write_bytes(b"")


def closed(result: Result) -> list[str]:
    return re.findall(r"^closed (links/\S+):", result.output, re.MULTILINE)


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_database_keeps_the_published_editions(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    site = Site(tmp_path)
    site.add("First Story", "Second Story")
    first = closed(site.update())
    site.add("Third Story")
    second = closed(site.update())
    assert len(first) == len(second) == 1
    day = first[0].rsplit("/", 1)[0]
    assert (first, second) == ([f"{day}/1"], [f"{day}/2"])
    published = site.edition_pages()
    assert sorted(published) == [f"{day}/{n}.{ext}" for n in (1, 2) for ext in ("gmi", "html")]

    site.lose_database(how)
    site.add("Fourth Story")
    with caplog.at_level(logging.WARNING, logger="digest.publish"):
        third = closed(site.update())

    assert third == [f"{day}/3"]  # numbered after the pages, never over them
    pages = site.edition_pages()
    assert {name: pages[name] for name in published} == published  # byte for byte
    assert "Fourth Story" in (site.public / f"{day}/3.html").read_text()
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert f"no record of the published {day}/1, {day}/2" in warning
    assert "edition is number 3" in warning

    # The indexes and feeds still reach the kept editions, newest first, with their titles.
    stream_html = (site.public / "links/index.html").read_text()
    links = re.findall(r'href="\.\./(links/\d{4}/\d\d/\d\d/\d+)\.html"', stream_html)
    assert links == [f"{day}/3", f"{day}/2", f"{day}/1"]
    assert "Third Story" in stream_html and "First Story" in stream_html
    stream_gmi = (site.public / "links/index.gmi").read_text()
    edition_lines = r"^=> gemini://example.org/(\S+/\d+)\.gmi"
    assert re.findall(edition_lines, stream_gmi, re.MULTILINE) == [
        f"{day}/3",
        f"{day}/2",
        f"{day}/1",
    ]
    check_gemtext(stream_gmi)
    site_html = (site.public / "index.html").read_text()
    for n in (1, 2, 3):
        assert f"https://example.org/{day}/{n}.html" in site_html
    for feed in ("feed.xml", "links/feed.xml"):
        validate_atom(site.public / feed)
        text = (site.public / feed).read_text()
        for n in (1, 2, 3):
            assert f"<id>https://example.org/{day}/{n}.html</id>" in text, feed

    # The next runs go on numbering after everything, and leave what is unchanged alone.
    again = CliRunner().invoke(cli, ["--config", str(tmp_path / "feeds.yaml"), "render"])
    assert again.exit_code == 0 and "rendered 0 files" in again.output, again.output
    site.add("Fifth Story")
    assert closed(site.update()) == [f"{day}/4"]
    pages = site.edition_pages()
    assert {name: pages[name] for name in published} == published
    assert len(pages) == 8
