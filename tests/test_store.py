"""Entries are stored once per identity; feeds are claimed, updated and kept healthy."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import StatementError

from digest.config import FeedSettings
from digest.parse.entry import entry_key
from digest.store import (
    EntryRow,
    FeedRow,
    FeedUpdate,
    Store,
    apply_feed_updates,
    claim_feeds,
    feed_health,
    plan_entry_changes,
    store_entries,
    sync_feeds,
)
from digest.store.models import UTCDateTime
from tests.conftest import add_feeds, examples, make_entry

NOW = datetime(2025, 3, 28, 12, 0, tzinfo=UTC)


def test_the_schema_head_is_alembics_head() -> None:
    """Start-up leaves alembic out when the database is at SCHEMA_HEAD: it must be the newest
    migration, the one alembic upgrades a database to."""
    from alembic.script import ScriptDirectory

    from digest.store.db import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_HEAD


def test_plan_entry_changes_is_a_pure_decision() -> None:
    old = make_entry("Old story")
    edited = make_entry("Edited story", link="https://example.net/edited")
    stored = {old.key: old.content_hash, edited.key: "stale-hash"}
    new = make_entry("New story")
    changes = plan_entry_changes(stored, [old, edited, new, new])
    assert changes.new == [new]
    assert changes.changed == [edited]


def feed_id(store: Store, url: str = "https://example.net/feed") -> int:
    return add_feeds(store, [FeedSettings(url=url, stream="links")], NOW)[url]


def count_entries(store: Store) -> int:
    with store.reading() as session:
        return session.scalar(select(func.count()).select_from(EntryRow)) or 0


def test_store_entries_once_and_updates_changed_ones(store: Store) -> None:
    fid = feed_id(store)
    first = [make_entry("A story"), make_entry("B story")]
    with store.writing() as session:
        changes = store_entries(session, fid, first, NOW)
    assert len(changes.new) == 2
    with store.writing() as session:
        changes = store_entries(session, fid, first, NOW + timedelta(hours=1))
    assert (changes.new, changes.changed) == ([], [])
    retitled = make_entry("A story, corrected", link=first[0].link, key=first[0].key)
    with store.writing() as session:
        changes = store_entries(session, fid, [retitled], NOW + timedelta(hours=2))
    assert changes.changed == [retitled]
    assert count_entries(store) == 2
    with store.reading() as session:
        row = session.scalars(select(EntryRow).where(EntryRow.key == first[0].key)).one()
    assert row.title == "A story, corrected"
    assert row.first_seen_at == NOW  # an update does not move the entry in time
    assert row.published_at == NOW  # no date in the feed: first-seen time


def test_writers_in_many_threads_of_one_process_all_commit(store: Store) -> None:
    """A poll writes from two threads and the daemon's publisher from a third."""
    fid = feed_id(store)

    def write(thread: int) -> None:
        for n in range(10):
            with store.writing() as session:
                store_entries(session, fid, [make_entry(f"Story {thread}-{n}")], NOW)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))  # re-raises any thread's error
    assert count_entries(store) == 80


def test_a_failed_write_gives_its_turn_to_the_next_writer(store: Store) -> None:
    fid = feed_id(store)
    with pytest.raises(ZeroDivisionError), store.writing() as session:
        store_entries(session, fid, [make_entry("Rolled back")], NOW)
        1 / 0  # noqa: B018

    def write() -> None:
        with store.writing() as session:
            store_entries(session, fid, [make_entry("Kept")], NOW)

    with ThreadPoolExecutor(1) as pool:
        # A turn never given back would hold the next writer for the whole busy timeout (30 s).
        pool.submit(write).result(timeout=10)
    assert count_entries(store) == 1


def test_each_row_keeps_its_own_times_and_naive_ones_are_refused(store: Store) -> None:
    """Datetime binds are remembered by identity: one `now` repeated, others still distinct."""
    fid = feed_id(store)
    dated = make_entry("Dated", published=NOW - timedelta(days=1))
    with store.writing() as session:
        store_entries(session, fid, [make_entry("Undated"), dated], NOW)
    # The ORM wraps the column type's ValueError in a StatementError; new entries go in with
    # the driver's executemany, where the same check raises it unwrapped.
    refused = pytest.raises((StatementError, ValueError), match="naive datetime")
    with refused, store.writing() as session:
        store_entries(session, fid, [make_entry("Naive")], NOW.replace(tzinfo=None))
    later = NOW + timedelta(minutes=5)
    with store.writing() as session:
        store_entries(session, fid, [make_entry("Later")], later)
    with store.reading() as session:
        rows = session.execute(select(EntryRow.title, EntryRow.published_at, EntryRow.updated_at))
        times = {title: (published, updated) for title, published, updated in rows}
    assert times == {
        "Undated": (NOW, NOW),
        "Dated": (NOW - timedelta(days=1), NOW),
        "Later": (later, later),
    }


def test_entries_stored_in_bulk_compare_like_entries_stored_by_the_orm(store: Store) -> None:
    """New entries bypass the ORM; their times must still be stored in the ORM's own format,
    or comparisons and ordering in SQL (edition windows, recent posts) would go wrong."""
    fid = feed_id(store)
    published = datetime(2025, 3, 27, 9, 30, 15, 120, tzinfo=UTC)
    with store.writing() as session:
        store_entries(session, fid, [make_entry("Bulk", published=published)], NOW)
        session.add(
            EntryRow(
                feed_id=fid,
                key="orm-row",
                title="ORM",
                summary="",
                published_at=published,
                first_seen_at=NOW,
                updated_at=NOW,
                content_hash="x",
            )
        )
    with store.reading() as session:
        same_time = session.scalars(
            select(EntryRow.title).where(EntryRow.published_at == published)
        ).all()
        seen_now = session.scalars(
            select(EntryRow.title).where(EntryRow.first_seen_at == NOW).order_by(EntryRow.title)
        ).all()
        later = session.scalars(
            select(EntryRow.title).where(
                EntryRow.published_at > published - timedelta(microseconds=1)
            )
        ).all()
    assert sorted(same_time) == ["Bulk", "ORM"]
    assert seen_now == ["Bulk", "ORM"]
    assert sorted(later) == ["Bulk", "ORM"]


@given(st.datetimes(timezones=st.timezones()))
def test_sqlite_times_are_written_in_sqlalchemys_own_format(moment: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().bind_processor(dialect)
    theirs = sqlite.DATETIME().bind_processor(dialect)
    assert ours is not None and theirs is not None
    assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))


def test_very_long_ids_are_stored_as_the_hash_the_parse_stage_made(store: Store) -> None:
    fid = feed_id(store)
    key = entry_key("urn:" + "x" * 5000, None, "Long", None)
    entry = make_entry("Long", key=key)
    for _ in range(2):
        with store.writing() as session:
            store_entries(session, fid, [entry], NOW)
    with store.reading() as session:
        assert session.scalars(select(EntryRow.key)).all() == [key]


titles = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=20
)


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), titles), max_size=12))
def test_polling_the_same_content_twice_changes_nothing(
    store: Store, items: list[tuple[str, str]]
) -> None:
    fid = feed_id(store, f"https://example.net/{uuid.uuid4()}")
    entries = [
        make_entry(title, link=f"https://example.net/{key}", key=key) for key, title in items
    ]
    with store.writing() as session:
        store_entries(session, fid, entries, NOW)
    with store.reading() as session:
        before = sorted(
            session.execute(
                select(EntryRow.key, EntryRow.title, EntryRow.content_hash).where(
                    EntryRow.feed_id == fid
                )
            ).all()
        )
    with store.writing() as session:
        again = store_entries(session, fid, entries, NOW + timedelta(minutes=5))
    with store.reading() as session:
        after = sorted(
            session.execute(
                select(EntryRow.key, EntryRow.title, EntryRow.content_hash).where(
                    EntryRow.feed_id == fid
                )
            ).all()
        )
    assert (again.new, again.changed) == ([], [])
    assert before == after
    # one entry per identity, and the first copy in the feed wins
    assert [key for key, *_ in after] == sorted({key for key, _ in items})
    firsts = {key: title for key, title in reversed(items)}
    assert {key: title for key, title, _ in after} == firsts


def due(store: Store, now: datetime, *, every: bool = False) -> list[str]:
    """Names of the feeds a poller would claim now (the claim is rolled back)."""
    with store.reading() as session:
        claimed = claim_feeds(
            session,
            now,
            worker="test",
            lease=timedelta(minutes=1),
            limit=100,
            polled_before=now if every else None,
        )
        session.rollback()
    return [feed.name for feed in claimed]


def test_claims_skip_leased_feeds_until_the_lease_ends(store: Store) -> None:
    add_feeds(
        store,
        [FeedSettings(url=f"https://{n}.example/feed", stream="links", name=n) for n in "abc"],
        NOW,
    )
    with store.writing() as session:
        first = claim_feeds(session, NOW, worker="w1", lease=timedelta(minutes=5), limit=2)
    with store.writing() as session:
        second = claim_feeds(session, NOW, worker="w2", lease=timedelta(minutes=5), limit=10)
    assert [f.name for f in first] == ["a", "b"]
    assert [f.name for f in second] == ["c"]
    assert due(store, NOW + timedelta(minutes=1)) == []
    # w1 died: its lease runs out and its feeds go to the next claimer
    assert due(store, NOW + timedelta(minutes=6)) == ["a", "b", "c"]


def test_sync_feeds_tracks_the_config(store: Store) -> None:
    a = FeedSettings(url="https://a.example/feed", stream="links", name="A")
    b = FeedSettings(url="https://b.example/feed", stream="links", name="B", interval="2h")
    add_feeds(store, [a, b], NOW)
    assert due(store, NOW) == ["A", "B"]
    add_feeds(store, [b.model_copy(update={"name": "Bee"})], NOW)
    with store.reading() as session:
        rows = {row.config_url: row for row in session.scalars(select(FeedRow))}
        assert not rows[a.url].active and rows[b.url].name == "Bee"
        assert rows[b.url].interval_seconds == 7200
    assert due(store, NOW) == ["Bee"]


def test_one_batch_of_feed_updates_gives_each_feed_its_own(store: Store) -> None:
    """A poll writes its feeds' results together, one statement per shape of change: a
    failure among successes changes only its own feed, and each keeps its own values."""
    urls = [f"https://{name}.example/feed" for name in ("ok", "moved", "failed", "gone")]
    ids = add_feeds(store, [FeedSettings(url=url, stream="links") for url in urls], NOW)
    later = NOW + timedelta(hours=1)
    ok, moved, failed, gone = (ids[url] for url in urls)
    with store.writing() as session:
        apply_feed_updates(
            session,
            [(failed, FeedUpdate(NOW, NOW, "200", ok=True, etag='"f1"', body_hash="f"))],
        )
    changes = [
        (ok, FeedUpdate(later, later + timedelta(minutes=1), "304", ok=True, etag='"o"')),
        (failed, FeedUpdate(later, later + timedelta(hours=2), "500", ok=False, error="HTTP 500")),
        (
            moved,
            FeedUpdate(
                later, later, "200", ok=True, url="https://new.example/", title="T", etag='"m"'
            ),
        ),
        (gone, FeedUpdate(later, later, "410", ok=False, error="gone", disabled_reason="410")),
    ]
    with store.writing() as session:
        apply_feed_updates(session, changes)
    with store.reading() as session:
        rows = {row.id: row for row in session.scalars(select(FeedRow))}
    assert (rows[ok].etag, rows[ok].last_status, rows[ok].failures) == ('"o"', "304", 0)
    assert rows[ok].next_poll_at == later + timedelta(minutes=1)
    assert (rows[failed].failures, rows[failed].last_error) == (1, "HTTP 500")
    assert (rows[failed].etag, rows[failed].body_hash) == ('"f1"', "f")  # its cache is kept
    assert rows[failed].next_poll_at == later + timedelta(hours=2)
    assert (rows[moved].url, rows[moved].title, rows[moved].etag) == (
        "https://new.example/",
        "T",
        '"m"',
    )
    assert (rows[gone].disabled_reason, rows[gone].failures) == ("410", 1)
    assert all(row.claimed_by is None and row.last_poll_at == later for row in rows.values())
    assert rows[ok].url == urls[0] and rows[ok].disabled_reason is None


def test_feed_updates_track_health(store: Store) -> None:
    fid = feed_id(store)
    later = NOW + timedelta(hours=1)
    failed = FeedUpdate(
        polled_at=NOW,
        next_poll_at=later,
        status="500",
        ok=False,
        error="HTTP 500 Internal Server Error",
    )
    with store.writing() as session:
        apply_feed_updates(session, [(fid, failed)])
        apply_feed_updates(session, [(fid, failed)])
    with store.reading() as session:
        [health] = feed_health(session)
        assert (health.failures, health.last_error, health.last_ok) == (2, failed.error, None)
    assert due(store, NOW) == []
    assert due(store, later) == ["example.net"]
    ok = FeedUpdate(
        polled_at=later,
        next_poll_at=later,
        status="200",
        ok=True,
        etag='"v1"',
        url="https://example.net/moved",
    )
    with store.writing() as session:
        apply_feed_updates(session, [(fid, ok)])
        sync_feeds(session, [FeedSettings(url="https://example.net/feed", stream="links")], NOW)
    with store.reading() as session:
        [health] = feed_health(session)
        assert (health.failures, health.last_error, health.last_ok) == (0, None, later)
        assert health.url == "https://example.net/moved"  # survives a config sync
        assert health.config_url == "https://example.net/feed"
    gone = FeedUpdate(
        polled_at=later,
        next_poll_at=later,
        status="410",
        ok=False,
        error="HTTP 410 Gone",
        disabled_reason="gone (HTTP 410)",
    )
    with store.writing() as session:
        apply_feed_updates(session, [(fid, gone)])
    with store.reading() as session:
        [health] = feed_health(session)
        assert health.disabled and health.disabled_reason == "gone (HTTP 410)"
    assert due(store, later + timedelta(days=2), every=True) == []  # disabled, not just polled
