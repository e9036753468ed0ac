"""Packed editions (issue 15): an edition older than `retention.published` keeps its items
compressed in its row and its entries give way to fingerprints, and nothing a reader, a feed
or an editor sees changes: the pages stay byte for byte, a feed that still lists a retired
entry brings nothing new, a later copy of a published story is still found published, and
the editor can still amend the edition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from digest.config import RetentionSettings
from digest.desk import amend, edition_items
from digest.editions import edition_path
from digest.parse import ParsedEntry
from digest.publish import build, render
from digest.retention import prune
from digest.store import EditionItemRow, EditionRow, EntryRow, Store, store_entries
from digest.store.models import RetiredEntryRow
from digest.store.packed import KeptItem, pack, published_among, unpack
from tests.conftest import add_feeds, insert_row, make_entry, migrate
from tests.test_history import FEEDS, OLD_EDITION, OLD_FEED, settings, tree

T0 = datetime(2025, 1, 20, 9, tzinfo=UTC)


def stories(day: int) -> list[ParsedEntry]:
    at = T0 + timedelta(days=day)
    return [
        make_entry(f"Story {day} {n}", summary=f"<p>Day {day}, item {n}.</p>", published=at)
        for n in range(3)
    ]


def three_days(store: Store, tmp_path: Path) -> tuple[dict[str, int], list[str]]:
    """Three daily editions of three of feed A's stories each, rendered."""
    config = settings(tmp_path)
    ids = add_feeds(store, list(FEEDS), T0)
    paths = []
    for day in range(3):
        at = T0 + timedelta(days=day)
        with store.writing() as session:
            store_entries(session, ids[FEEDS[0].url], stories(day), at)
        (edition,) = build(store, config, at=at + timedelta(hours=1))
        paths.append(edition_path(edition.stream, edition.date, edition.number))
        render(store, config)
    return ids, paths


def counts(store: Store) -> tuple[int, int, int, int]:
    """Item rows, packed editions, entries, retired entries."""
    with store.reading() as session:
        return (
            session.scalar(select(func.count()).select_from(EditionItemRow)) or 0,
            session.scalar(
                select(func.count()).select_from(EditionRow).where(EditionRow.packed.is_not(None))
            )
            or 0,
            session.scalar(select(func.count()).select_from(EntryRow)) or 0,
            session.scalar(select(func.count()).select_from(RetiredEntryRow)) or 0,
        )


def test_a_packed_edition_renders_byte_for_byte_and_its_entries_stay_known(
    store: Store, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    ids, _ = three_days(store, tmp_path)
    before = tree(tmp_path / "public")
    assert counts(store) == (9, 0, 9, 0)

    # Day 32: the first two editions are more than 30 days old, the third is not.
    report = prune(store, config, T0 + timedelta(days=31, hours=12))

    assert (report.editions, report.retired) == (2, 6)
    assert counts(store) == (3, 2, 3, 6)
    render(store, config, full=True)
    assert tree(tmp_path / "public") == before
    assert prune(store, config, T0 + timedelta(days=31, hours=12)).editions == 0  # once

    # Feed A still lists day 0's stories, and feed B carries one of them (a new copy of a
    # published story): neither is new to an edition.
    later = T0 + timedelta(days=33)
    with store.writing() as session:
        again = store_entries(session, ids[FEEDS[0].url], stories(0), later)
        copy = make_entry("Story 0 1, retold", link=stories(0)[1].link, published=later)
        fresh = make_entry("Fresh", published=later)
        store_entries(session, ids[FEEDS[1].url], [copy, fresh], later)
    assert again.new == [] and again.changed == []
    (edition,) = build(store, config, at=later + timedelta(hours=1))
    assert [i.title for s in edition.sections for i in s.items] == ["Fresh"]


def test_an_editor_amends_a_packed_edition(store: Store, tmp_path: Path) -> None:
    config = settings(tmp_path)
    _, paths = three_days(store, tmp_path)
    prune(store, config, T0 + timedelta(days=40))
    assert counts(store)[:2] == (0, 3)

    _, shown = edition_items(store, paths[0])
    assert [title for _, _, title in shown] == [f"A ☛ Story 0 {n}" for n in range(3)]
    handle = shown[1][0]
    amended = amend(store, config, paths[0], [handle], None, T0 + timedelta(days=40))

    assert amended.hidden == ["Story 0 1"]
    assert [t for _, _, t in edition_items(store, paths[0])[1]] == [
        "A ☛ Story 0 0",
        "A ☛ Story 0 2",
    ]
    render(store, config)
    page = (tmp_path / "public" / f"{paths[0]}.html").read_text()
    links = [str(entry.link) for entry in stories(0)]
    assert links[0] in page and links[1] not in page  # the title still names it: warned
    assert amended.warnings == ["the title still names 'Story 0 1': --title gives it new words"]


def test_never_packing_keeps_every_item_row(store: Store, tmp_path: Path) -> None:
    config = settings(tmp_path).model_copy(update={"retention": RetentionSettings(published=None)})
    three_days(store, tmp_path)
    assert prune(store, config, T0 + timedelta(days=400)).editions == 0
    assert counts(store) == (9, 0, 9, 0)


def test_packing_keeps_every_field_and_refuses_what_it_cannot_read() -> None:
    items = [
        KeptItem(7, "Science", "Ünïcode Feed", "Title «quoted»", None, "", T0),
        KeptItem(
            8, "S", "B", "T", "https://b.example/x?a=1&b=2", "<p>x</p>", T0.replace(microsecond=5)
        ),
    ]
    assert unpack(pack(items)) == items
    with pytest.raises(ValueError, match="unknown format"):
        unpack(b"\x09" + pack(items)[1:])


def test_the_migration_fingerprints_the_stories_already_published(tmp_path: Path) -> None:
    """A database of 0009 with an edition: after the upgrade its story is found published by
    its canonical URL; a downgrade brings the column back, and is refused once editions are
    packed (their entries are gone)."""
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    migrate(store, "upgrade", "0009")
    old = "2024-01-01 00:00:00.000000"
    with store.engine.begin() as connection:
        insert_row(connection, "feeds", **OLD_FEED)
        insert_row(
            connection, "entries", id=1, feed_id=1, key="k", title="", summary="",
            published_at=old, first_seen_at=old, updated_at=old, content_hash="h",
            in_edition=1,
        )  # fmt: skip
        insert_row(connection, "editions", **OLD_EDITION, closed_at=old)
        insert_row(
            connection, "edition_items", id=1, edition_id=1, position=1, entry_id=1,
            stream="links", section="S", source="A", title="T", link="https://x.example/a",
            canonical_url="https://x.example/a", blurb="", published_at=old,
        )  # fmt: skip
    store.upgrade()
    with store.reading() as session:
        urls = ["https://x.example/a", "https://x.example/b"]
        assert published_among(session, "links", urls) == {"https://x.example/a"}
        assert published_among(session, "tech", urls) == set()

    migrate(store, "downgrade", "0009")
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT canonical_url FROM edition_items")).all() == [
            ("https://x.example/a",)
        ]
    store.upgrade()
    assert prune(store, settings(tmp_path), T0).editions == 1
    with pytest.raises(RuntimeError, match="1 editions are packed"):
        migrate(store, "downgrade", "0009")
    store.close()
