"""Years of history (issue 15): a render knows what it published, rebuilds what it cannot
trust, and retention prunes old unpublished entries and nothing an edition shows."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from digest.cli import cli
from digest.config import FeedSettings, RetentionSettings, Settings, SiteSettings, StreamSettings
from digest.publish import MARKER, build, render
from digest.render_workers import PageMakers
from digest.retention import prune, vacuum
from digest.store import (
    EditionRow,
    EntryRow,
    Store,
    WorkerRow,
    heartbeat,
    recent_entries,
    store_entries,
)
from digest.store.choices import load_choices, set_hidden, set_pinned
from tests.conftest import add_feeds, insert_row, make_entry, migrate, sqlite_copy

T0 = datetime(2025, 1, 20, 9, tzinfo=UTC)
FEEDS = [
    FeedSettings(url="https://a.example/feed", name="A", stream="links", section="S"),
    FeedSettings(url="https://b.example/feed", name="B", stream="links", section="S"),
    FeedSettings(url="https://own.example/feed", name="Own", own=True),
]


# The rows of an older schema's site, for the migration tests (digest.store.models is newer).
OLD_FEED = dict(
    id=1, config_url="u", url="u", name="A", own=0, weight=0, interval_seconds=3600, active=1,
    failures=0,
)  # fmt: skip
OLD_EDITION = dict(id=1, stream="links", date="2024-01-01", number=1, title="T", summary="s")


def settings(root: Path, **site: object) -> Settings:
    return Settings(
        site=SiteSettings(
            title="T",
            base_url="https://example.org/",
            output_dir=root / "public",
            state_dir=root / "state",
            **site,
        ),
        streams={"links": StreamSettings(title="Links {date:%d/%m/%Y}: {headlines}")},
        feeds=tuple(FEEDS),
    )


def tree(public: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(public)): p.read_bytes()
        for p in sorted(public.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def publish_days(store: Store, config: Settings, days: int, start: datetime = T0) -> None:
    """A story a day from feed A, closed and rendered daily, across a month boundary."""
    ids = add_feeds(store, list(FEEDS), start)
    for day in range(days):
        at = start + timedelta(days=day)
        with store.writing() as session:
            store_entries(
                session, ids[FEEDS[0].url], [make_entry(f"Story {day}", published=at)], at
            )
        assert build(store, config, at=at + timedelta(hours=1))
        render(store, config)


def store_old(
    session: Session, feed_id: int, count: int, when: datetime, summary: str = ""
) -> None:
    """`count` entries "Old 0", "Old 1"... first seen at `when`, dated an hour before."""
    published = when - timedelta(hours=1)
    entries = [make_entry(f"Old {n}", published=published, summary=summary) for n in range(count)]
    store_entries(session, feed_id, entries, when)


@pytest.fixture
def sqlite_store(tmp_path: Path, migrated_sqlite: Path) -> Store:
    return Store(sqlite_copy(migrated_sqlite, tmp_path / "digest.db"))


def test_a_render_with_nothing_new_reads_no_page_and_writes_nothing(
    sqlite_store: Store, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    publish_days(sqlite_store, config, 15)
    public = tmp_path / "public"
    # Every page unreadable: a render that read one would fail (root reads anything: skip).
    if os.geteuid() == 0:
        pages = []
    else:
        pages = [p for p in public.rglob("*") if p.is_file() and p.name != MARKER]
        for page in pages:
            page.chmod(0)
    try:
        report = render(sqlite_store, config)
    finally:
        for page in pages:
            page.chmod(0o644)
    assert report.written == [] and report.unchanged == [] and report.records == {}


def test_a_deleted_output_folder_is_rebuilt_byte_for_byte(
    sqlite_store: Store, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    publish_days(sqlite_store, config, 15)
    public = tmp_path / "public"
    before = tree(public)
    assert "links/2025/02/index.html" in before and "links/2025/01/index.html" in before
    for path in sorted(public.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()

    report = render(sqlite_store, config)

    assert tree(public) == before
    assert len(report.written) == len(before)
    assert render(sqlite_store, config).written == []  # and it trusts its records again


def test_a_rebuild_of_many_editions_is_made_by_worker_processes_byte_for_byte(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = settings(tmp_path)
    publish_days(sqlite_store, config, 15)
    public = tmp_path / "public"
    before = tree(public)
    shutil.rmtree(public)
    monkeypatch.setattr(PageMakers, "PARALLEL_FROM", 5)  # a site of 15 editions is a big one

    report = render(sqlite_store, config)

    assert report.workers == min(os.cpu_count() or 1, PageMakers.MAX_WORKERS)
    assert tree(public) == before
    assert render(sqlite_store, config).written == []


def test_a_killed_render_leaves_the_folder_untrusted_until_a_full_one(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The marker goes before the first write and comes back after the records: a render
    killed between the two leaves none, and the next render compares every file."""
    config = settings(tmp_path)
    publish_days(sqlite_store, config, 3)
    public = tmp_path / "public"
    (public / MARKER).unlink()
    index = public / "links/index.html"
    index.write_text("half written by a killed run")
    report = render(sqlite_store, config)
    assert report.written == [index]  # found by comparing bytes, not from the records
    assert (public / MARKER).is_file()


def test_an_amended_edition_is_rendered_again(sqlite_store: Store, tmp_path: Path) -> None:
    """Issue 14 amends editions in place (title, updated time): any change to the edition's
    row makes its pages and the pages that list it again."""
    config = settings(tmp_path)
    publish_days(sqlite_store, config, 3)
    with sqlite_store.writing() as session:
        rows = list(session.scalars(select(EditionRow).order_by(EditionRow.closed_at)))
        rows[0].title = "Links: corrected"
        path, *others = [f"links/{row.date:%Y/%m/%d}/{row.number}" for row in rows]
    report = render(sqlite_store, config)
    written = sorted(str(p.relative_to(tmp_path / "public")) for p in report.written)
    assert f"{path}.html" in written and f"{path}.gmi" in written
    assert "links/index.html" in written and "links/2025/01/index.gmi" in written
    assert "Links: corrected" in (tmp_path / "public" / f"{path}.html").read_text()
    assert not any(name.startswith(tuple(others)) for name in written)  # nor other editions


def test_a_changed_template_rewrites_only_the_pages_it_changes(
    sqlite_store: Store, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    config = settings(tmp_path, templates=mine)
    publish_days(sqlite_store, config, 3)
    (mine / "archive.gmi").write_text("# {{ archive.title }}\n")
    report = render(sqlite_store, config)
    written = sorted(str(p.relative_to(tmp_path / "public")) for p in report.written)
    assert written == ["links/2025/01/index.gmi", "links/2025/index.gmi"]
    assert report.unchanged  # the others were made again and found the same


def test_prune_deletes_old_unpublished_entries_and_nothing_an_edition_shows(
    store: Store, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    ids = add_feeds(store, list(FEEDS), T0)
    old = T0 - timedelta(days=200)
    with store.writing() as session:
        # Old and never in an edition: to go (first seen long ago).
        store_old(session, ids[FEEDS[1].url], 7, old)
        # The site's own old posts stay: the recent posts list them.
        store_entries(session, ids[FEEDS[2].url], [make_entry("Own post", published=old)], old)
        store_entries(session, ids[FEEDS[0].url], [make_entry("Published", published=old)], old)
    assert build(store, config, at=old + timedelta(hours=1))  # takes all of feed A and B's
    with store.writing() as session:
        store_entries(
            session,
            ids[FEEDS[1].url],
            [make_entry(f"Unpublished {n}", published=old - timedelta(days=9)) for n in range(5)],
            old,
        )
        store_entries(session, ids[FEEDS[1].url], [make_entry("Recent", published=T0)], T0)
        heartbeat(session, "gone:1:x", "poll", T0 - timedelta(days=3))
        heartbeat(session, "alive:2:y", "poll", T0)
    render(store, config)
    before = tree(tmp_path / "public")

    report = prune(store, config, T0, batch=2)  # small batches: several transactions

    # The edition, 200 days old, is packed: its eight entries retired to fingerprints.
    assert (report.entries, report.workers, report.editions, report.retired) == (5, 1, 1, 8)
    with store.reading() as session:
        titles = {entry.title for entry in recent_entries(session, limit=100)}
        workers = set(session.scalars(select(WorkerRow.id)))
    assert titles == {"Own post", "Recent"}
    assert workers == {"alive:2:y"}
    render(store, config, full=True)
    assert tree(tmp_path / "public") == before  # byte-identical after the prune
    assert prune(store, config, T0) == type(report)(0, 0)
    kept = config.model_copy(update={"retention": RetentionSettings(unpublished=None)})
    with store.writing() as session:
        store_entries(session, ids[FEEDS[1].url], [make_entry("Another", published=old)], old)
    assert prune(store, kept, T0).entries == 0  # unpublished: null keeps them all


def test_prune_keeps_the_entries_an_editor_pinned_or_hid(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """A pin (of an old story) or a hide is a choice about a coming edition: pruning its
    entry would drop the choice with it (ON DELETE CASCADE), silently."""
    config = settings(tmp_path)
    ids = add_feeds(sqlite_store, list(FEEDS), T0)
    old = T0 - timedelta(days=200)
    with sqlite_store.writing() as session:
        store_old(session, ids[FEEDS[1].url], 3, old)
        by_title = {t: i for t, i in session.execute(select(EntryRow.title, EntryRow.id))}
        set_pinned(session, {by_title["Old 0"]: "links"}, {}, True, T0)
        set_hidden(session, {by_title["Old 1"]: "links"}, True, T0)

    assert prune(sqlite_store, config, T0).entries == 1  # only "Old 2", which no choice names

    with sqlite_store.reading() as session:
        assert set(session.scalars(select(EntryRow.title))) == {"Old 0", "Old 1"}
        assert load_choices(session, "links").pinned == {by_title["Old 0"]: None}
        assert load_choices(session, "links").hidden == {by_title["Old 1"]}
    edition = build(sqlite_store, config, at=T0)
    assert [item.title for s in edition[0].sections for item in s.items] == ["Old 0"]


def test_an_undated_entry_its_feed_still_lists_is_not_pruned_into_a_later_edition(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """An undated entry's published time is when digest first saw it: pruned, and seen
    again in its feed, it would come back dated now, new enough for the next edition."""
    config = settings(tmp_path)
    config = config.model_copy(
        update={"streams": {"links": config.streams["links"].model_copy(update={"min_items": 2})}}
    )
    ids = add_feeds(sqlite_store, list(FEEDS), T0)
    old = T0 - timedelta(days=200)
    undated = make_entry("Undated")
    with sqlite_store.writing() as session:
        store_entries(session, ids[FEEDS[1].url], [undated], old)
    assert build(sqlite_store, config, at=old + timedelta(hours=1)) == []  # one is too few

    prune(sqlite_store, config, T0)
    fresh = [make_entry(f"Fresh {n}", published=T0 - timedelta(hours=n)) for n in range(2)]
    with sqlite_store.writing() as session:  # the next poll: the feed still lists it
        store_entries(session, ids[FEEDS[1].url], [undated, *fresh], T0)
    edition = build(sqlite_store, config, at=T0 + timedelta(hours=1))

    titles = {item.title for s in edition[0].sections for item in s.items}
    assert titles == {"Fresh 0", "Fresh 1"}


def test_prune_keeps_what_a_stream_looks_back_on(sqlite_store: Store, tmp_path: Path) -> None:
    """A weekly stream looks back further than a short retention: what its next edition
    would take is not deleted first."""
    config = settings(tmp_path).model_copy(
        update={
            "streams": {"links": StreamSettings(lookback=timedelta(days=14))},
            "retention": RetentionSettings(unpublished=timedelta(days=7)),
        }
    )
    ids = add_feeds(sqlite_store, list(FEEDS), T0)
    with sqlite_store.writing() as session:
        store_old(session, ids[FEEDS[1].url], 1, T0 - timedelta(days=10))
        store_old(session, ids[FEEDS[0].url], 1, T0 - timedelta(days=20))

    assert prune(sqlite_store, config, T0).entries == 1  # only what no edition can take

    edition = build(sqlite_store, config, at=T0)
    assert [item.title for s in edition[0].sections for item in s.items] == ["Old 0"]


def test_prune_and_vacuum_give_sqlite_space_back(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    store.upgrade()
    config = settings(tmp_path)
    ids = add_feeds(store, list(FEEDS), T0)
    old = T0 - timedelta(days=200)
    with store.writing() as session:
        store_old(session, ids[FEEDS[1].url], 2000, old, summary="x" * 2000)
    with store.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        assert connection.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2  # incremental
    size = (tmp_path / "digest.db").stat().st_size
    assert prune(store, config, T0).entries == 2000
    vacuum(store)
    assert (tmp_path / "digest.db").stat().st_size < size / 4
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(EntryRow)) == 0


def test_db_prune_command(tmp_path: Path) -> None:
    (tmp_path / "feeds.yaml").write_text(
        "site: {title: T, base_url: 'https://example.org/', database: 'sqlite:///digest.db'}\n"
        "streams: {links: {}}\nretention: {unpublished: 30d}\n"
        "feeds: [{url: 'https://a.example/feed', stream: links}]\n"
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(tmp_path / "feeds.yaml"), "db", "prune"])
    assert result.exit_code == 0, result.output
    assert "pruned 0 unpublished entries and 0 gone workers" in result.output
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    with store.writing() as session:
        feed_id = session.scalar(select(func.min(EntryRow.feed_id)))  # none yet
        assert feed_id is None
        session.execute(update(EntryRow).values(in_edition=True))  # nothing to update
    store.close()
    result = runner.invoke(
        cli, ["--config", str(tmp_path / "feeds.yaml"), "db", "prune", "--vacuum"]
    )
    assert result.exit_code == 0 and "database vacuumed" in result.output, result.output
    (tmp_path / "bad.yaml").write_text(
        "site: {title: T, base_url: 'https://example.org/'}\nstreams: {links: {}}\n"
        "retention: {unpublished: soon}\n"
    )
    result = runner.invoke(cli, ["--config", str(tmp_path / "bad.yaml"), "db", "prune"])
    assert result.exit_code == 2
    assert "bad.yaml:3: retention.unpublished: expected a duration" in result.output


def test_the_daemon_prunes_only_while_it_publishes(sqlite_store: Store, tmp_path: Path) -> None:
    """One node prunes: the one holding the publisher role (a standby or a poller does not)."""
    from digest.config import Config
    from digest.daemon import Daemon

    config = settings(tmp_path)
    ids = add_feeds(sqlite_store, list(FEEDS), T0)
    with sqlite_store.writing() as session:
        store_old(session, ids[FEEDS[1].url], 3, datetime.now(UTC) - timedelta(days=200))
    path = tmp_path / "feeds.yaml"
    poller = Daemon(sqlite_store, Config(path, config), role="poll")
    publisher = Daemon(sqlite_store, Config(path, config), role="all")

    def count() -> int:
        with sqlite_store.reading() as session:
            return session.scalar(select(func.count()).select_from(EntryRow)) or 0

    poller._prune()
    publisher._prune()  # not yet holding the role
    assert count() == 3
    assert publisher.publisher is not None and publisher.publisher.try_acquire()
    try:
        publisher._prune()
    finally:
        publisher.publisher.release()
    assert count() == 0


def test_the_migration_marks_the_entries_editions_already_took(tmp_path: Path) -> None:
    """A database from before retention, with editions: it upgrades (SQLite's batch copies of
    `entries` drop a table that edition_items refers to), entries already in editions are
    marked and keep their text in the edition's copy only, and the first prune keeps them."""
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    migrate(store, "upgrade", "0003")
    old = "2024-01-01 00:00:00.000000"
    with store.engine.begin() as connection:
        insert_row(connection, "feeds", **OLD_FEED)
        for entry in (1, 2):
            insert_row(
                connection, "entries", id=entry, feed_id=1, key=str(entry),
                title=f"entry {entry}", summary="", published_at="2023-12-31 23:00:00.000000",
                first_seen_at=old, updated_at=old, content_hash="h",
            )  # fmt: skip
        insert_row(connection, "editions", **OLD_EDITION, closed_at=old)
        insert_row(
            connection, "edition_items", id=1, edition_id=1, position=1, entry_id=1,
            stream="links", section="S", source="A", title="entry 1", blurb="",
            published_at=old,
        )  # fmt: skip
    store.upgrade()

    def stored() -> dict[int, tuple[str, bool]]:
        with store.reading() as session:
            rows = session.execute(select(EntryRow.id, EntryRow.title, EntryRow.in_edition))
            return {entry_id: (title, marked) for entry_id, title, marked in rows}

    assert stored() == {1: ("", True), 2: ("entry 2", False)}
    with store.reading() as session:
        listed = {entry.entry_id: entry.title for entry in recent_entries(session, limit=10)}
    assert listed == {1: "entry 1", 2: "entry 2"}
    migrate(store, "downgrade", "0007")  # the text comes back from the edition's copy
    assert stored() == {1: ("entry 1", True), 2: ("entry 2", False)}
    store.upgrade()
    assert prune(store, settings(tmp_path), T0).entries == 1
    store.close()
