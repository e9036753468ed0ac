"""Publishing: incremental renders after each closing write what a full render writes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from digest.config import FEED_EDITIONS, FeedSettings, Settings, SiteSettings, StreamSettings
from digest.publish import MARKER, build, published_numbers, render, scan_kept_editions
from digest.store import Store, store_entries
from tests.conftest import add_feeds, make_entry

T0 = datetime(2025, 3, 1, 9, tzinfo=UTC)


def settings(output: Path, state: Path) -> Settings:
    return Settings(
        site=SiteSettings(
            title="T", base_url="https://example.org/", output_dir=output, state_dir=state
        ),
        streams={
            "links": StreamSettings(
                title="Links {date:%d/%m/%Y}: {headlines}", summary="Links for the day"
            )
        },
    )


def tree(root: Path) -> dict[str, bytes]:
    """The site's files (the marker's token differs from render to render)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def test_incremental_renders_match_a_full_render(store: Store, tmp_path: Path) -> None:
    feed = FeedSettings(url="https://a.example/feed", name="A", stream="links", section="S")
    feed_id = add_feeds(store, [feed], T0)[feed.url]
    incremental = settings(tmp_path / "inc", tmp_path / "state")
    count = FEED_EDITIONS + 5  # more than the feeds carry: older editions load bare
    for n in range(count):
        at = T0 + timedelta(hours=6 * n)
        with store.writing() as session:
            store_entries(session, feed_id, [make_entry(f"Story {n}", published=at)], at)
        closed = build(store, incremental, at=at + timedelta(minutes=1))
        assert len(closed) == 1
        report = render(store, incremental)
        # only the new edition's two pages plus indexes, feeds and archives, never every old
        # edition
        assert len(report.written) + len(report.unchanged) < 20
    full = settings(tmp_path / "full", tmp_path / "state")
    render(store, full)
    assert tree(tmp_path / "inc") == tree(tmp_path / "full")
    pages = list((tmp_path / "full" / "links").glob("*/*/*/*.html"))
    assert len(pages) == count


def test_kept_pages_are_read_back_or_named_by_their_path(tmp_path: Path) -> None:
    """Pages the database has no record of keep their title and time in the indexes; a page
    from a template without them still gets listed, by its path."""
    day = tmp_path / "links/2025/03/28"
    day.mkdir(parents=True)
    (day / "1.gmi").write_text("# Links 28/03/2025: A &amp; B\n\nbody\n")
    (day / "1.html").write_text(
        '<h1>Links 28/03/2025: A &amp; B</h1><time datetime="2025-03-28T12:00:00+00:00">x</time>'
    )
    (day / "2.html").write_text("<p>a page of someone's own template</p>")
    (day / ".3.html.abcd1234.tmp").write_text("half a page")
    (day / "4.html").write_text("<h1>Recorded</h1>")
    kept = scan_kept_editions(
        tmp_path, "links", "Links for the day", {"links/2025/03/28/4"}, ZoneInfo("Europe/London")
    )
    assert [(e.number, e.title, e.closed_at) for e in kept] == [
        (1, "Links 28/03/2025: A &amp; B", datetime(2025, 3, 28, 12, tzinfo=UTC)),
        (2, "links 2025-03-28 #2", datetime(2025, 3, 28, 0, 0, 2, tzinfo=UTC)),
    ]
    assert all(e.sections == () and e.summary == "Links for the day" for e in kept)
    assert published_numbers(tmp_path, "links", date(2025, 3, 28)) == {1, 2, 4}
    assert published_numbers(tmp_path, "links", date(2025, 3, 29)) == set()
