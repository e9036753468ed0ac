"""Archives (issue 15): month and year pages per stream that link to each other and to every
edition of their month; stream indexes and feeds of a bounded size."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import pytest
from lxml import html

from digest.archive import months, neighbours, years
from digest.config import FEED_CONTENT_KB, FEED_EDITIONS, INDEX_EDITIONS
from digest.editions import Edition, EditionSection
from digest.render import render_site
from digest.render_workers import PageMakers
from digest.views import (
    SiteContent,
    StreamContent,
)
from tests.site_content import BASE, GEMINI, item, utc
from tests.validators import check_gemtext, validate_atom

# Editions on both sides of a new year, in three months, one month (November) left empty.
DAYS = [
    date(2024, 10, 30),
    date(2024, 10, 31),
    date(2024, 12, 1),
    date(2024, 12, 31),
    date(2025, 1, 1),
    date(2025, 1, 15),
    date(2025, 1, 15),
]


def editions(days: list[date] = DAYS, items: int = 1) -> list[Edition]:
    """Newest first; two on one day are numbered 1 and 2."""
    made = []
    for index, day in enumerate(days):
        number = 1 + days[:index].count(day)
        at = utc(day.year, day.month, day.day, 10 + number)
        section = EditionSection(
            "Science",
            tuple(
                item("A", f"Story {index}.{n}", f"https://a.example/{index}/{n}", "Blurb " * 40, at)
                for n in range(items)
            ),
        )
        made.append(Edition("links", day, number, f"Links {day} #{number}", "s", at, (section,)))
    return made[::-1]


def content(
    listed: list[Edition],
    index_editions: int = INDEX_EDITIONS,
    feed_editions: int = FEED_EDITIONS,
    feed_content_bytes: int = FEED_CONTENT_KB * 1024,
) -> SiteContent:
    stream = StreamContent("links", "Links", "Links for the day", listed)
    return SiteContent(
        "T",
        BASE,
        GEMINI,
        "UTC",
        "A",
        [stream],
        [],
        utc(2025, 2, 1),
        index_editions=index_editions,
        feed_editions=feed_editions,
        feed_content_bytes=feed_content_bytes,
    )


def hrefs(page: Path) -> list[str]:
    """The page's links, resolved against its own place under the output folder."""
    tree = html.fromstring(page.read_bytes())
    folder = page.parent
    resolved = []
    for href in tree.xpath("//main//a/@href | //nav//a/@href"):
        target = (folder / href).resolve()
        resolved.append(str(target))
    return resolved


def test_month_and_year_pages_link_to_each_other_and_every_edition(tmp_path: Path) -> None:
    listed = editions()
    render_site(content(listed), tmp_path)
    root = tmp_path.resolve()

    def at(path: str) -> str:
        return str(root / path)

    for month, files in {
        "2024/10": ["2024/10/31/1", "2024/10/30/1"],
        "2024/12": ["2024/12/31/1", "2024/12/01/1"],
        "2025/01": ["2025/01/15/2", "2025/01/15/1", "2025/01/01/1"],
    }.items():
        page = tmp_path / f"links/{month}/index.html"
        links = hrefs(page)
        assert [link for link in links if re.search(r"/\d+\.html$", link)] == [
            at(f"links/{name}.html") for name in files
        ], month  # every edition of its month, newest first, and no other
        gmi = (tmp_path / f"links/{month}/index.gmi").read_text()
        lines = check_gemtext(gmi)
        assert [line.url for line in lines if line.url and re.search(r"/\d+\.gmi$", line.url)] == [
            f"{GEMINI}links/{name}.gmi" for name in files
        ]

    # Previous and next months skip the empty November; the year boundary is crossed.
    def pager(month: str) -> tuple[list[str], list[str]]:
        tree = html.fromstring((tmp_path / f"links/{month}/index.html").read_bytes())
        return tree.xpath("//a[@rel='prev']/@href"), tree.xpath("//a[@rel='next']/@href")

    assert pager("2024/10") == ([], ["../../../links/2024/12/index.html"])
    assert pager("2024/12") == (
        ["../../../links/2024/10/index.html"],
        ["../../../links/2025/01/index.html"],
    )
    assert pager("2025/01") == (["../../../links/2024/12/index.html"], [])
    gmi = (tmp_path / "links/2024/12/index.gmi").read_text()
    assert f"=> {GEMINI}links/2024/10/index.gmi Older: October 2024\n" in gmi
    assert f"=> {GEMINI}links/2025/01/index.gmi Newer: January 2025\n" in gmi

    # Year pages list their months (with counts) and link to the other years.
    year_2024 = hrefs(tmp_path / "links/2024/index.html")
    assert at("links/2024/12/index.html") in year_2024
    assert at("links/2024/10/index.html") in year_2024
    assert at("links/2025/index.html") in year_2024
    assert "December 2024</a> (2 editions)" in (tmp_path / "links/2024/index.html").read_text()
    assert (
        f"=> {GEMINI}links/2025/01/index.gmi January 2025 (3 editions)\n"
        in (tmp_path / "links/2025/index.gmi").read_text()
    )
    assert not (tmp_path / "links/2024/11").exists()

    # The stream index reaches the years; a month page leads back to its year and stream.
    index = hrefs(tmp_path / "links/index.html")
    assert at("links/2025/index.html") in index and at("links/2024/index.html") in index
    crumbs = html.fromstring((tmp_path / "links/2025/01/index.html").read_bytes())
    assert crumbs.xpath("//header//a/@href") == [
        "../../../index.html",
        "../../../links/index.html",
        "../../../links/2025/index.html",
    ]
    for page in tmp_path.rglob("*.gmi"):
        check_gemtext(page.read_text())


def test_a_stream_index_lists_at_most_its_configured_number(tmp_path: Path) -> None:
    days = [date(2025, 1, day) for day in range(1, 13)]
    render_site(content(editions(days), index_editions=5), tmp_path)
    listed = re.findall(
        r'href="\.\./links/2025/01/(\d\d)/1\.html"', (tmp_path / "links/index.html").read_text()
    )
    assert listed == ["12", "11", "10", "09", "08"]
    gmi = (tmp_path / "links/index.gmi").read_text()
    assert len(re.findall(r"^=> \S+/\d+\.gmi ", gmi, re.MULTILINE)) == 5
    # The rest is one click away, in the month's page.
    month = (tmp_path / "links/2025/01/index.gmi").read_text()
    assert len(re.findall(r"^=> \S+/\d+\.gmi ", month, re.MULTILINE)) == 12


def test_a_stream_feed_holds_its_number_and_full_text_within_its_budget(tmp_path: Path) -> None:
    days = [date(2025, 1, day) for day in range(1, 13)]
    one = tmp_path / "one"
    render_site(content(editions(days[:1], items=30)), one)
    size = len(validate_atom(one / "links/feed.xml").entries[0].content[0].value.encode())
    render_site(
        content(editions(days, items=30), feed_editions=8, feed_content_bytes=3 * size + size // 2),
        tmp_path,
    )
    parsed = validate_atom(tmp_path / "links/feed.xml")
    assert [entry.title for entry in parsed.entries] == [
        f"Links 2025-01-{d:02d} #1" for d in range(12, 4, -1)
    ]
    full = [bool(entry.get("content")) for entry in parsed.entries]
    assert full == [True, True, True] + [False] * 5  # the newest in full, while under budget
    assert all(entry.summary for entry in parsed.entries)


def test_archive_grouping_is_by_the_editions_local_date() -> None:
    listed = editions()
    grouped = months(listed)
    assert [(m.year, m.month, len(m.editions)) for m in grouped] == [
        (2025, 1, 3),
        (2024, 12, 2),
        (2024, 10, 2),
    ]
    assert [(y.year, y.count) for y in years(grouped)] == [(2025, 3), (2024, 4)]
    assert neighbours(grouped, 1) == (grouped[2], grouped[0])
    assert neighbours(grouped, 0) == (grouped[1], None)
    assert months([]) == [] and years([]) == []


def _die(edition: Edition) -> Edition:
    """A render worker's loader that dies as the OOM killer would end it."""
    os._exit(9)


def test_pages_a_dead_worker_left_are_made_by_the_render_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    listed = editions()
    render_site(content(listed), tmp_path / "one-process")
    monkeypatch.setattr(PageMakers, "PARALLEL_FROM", 1)

    report = render_site(content(listed), tmp_path / "workers", worker_load=_die)

    if (os.cpu_count() or 1) > 1:
        assert report.workers > 1
        assert "a render worker died" in caplog.text
    made = {
        p.relative_to(tmp_path / "workers"): p.read_bytes()
        for p in (tmp_path / "workers").rglob("*.*")
    }
    assert made == {
        p.relative_to(tmp_path / "one-process"): p.read_bytes()
        for p in (tmp_path / "one-process").rglob("*.*")
    }
    assert len(made) == len(report.written)
