"""Publishing: incremental renders after each closing write what a full render writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from digest.config import FeedSettings, Settings, SiteSettings, StreamSettings
from digest.publish import build, render
from digest.render import FEED_EDITIONS
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
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
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
        report = render(store, incremental, closed)
        # only the new edition's two pages plus indexes and feeds, never every old edition
        assert len(report.written) + len(report.unchanged) < 15
    full = settings(tmp_path / "full", tmp_path / "state")
    render(store, full)
    assert tree(tmp_path / "inc") == tree(tmp_path / "full")
    assert len(list((tmp_path / "full" / "links").rglob("*.html"))) == count + 1
