"""Query plans (issue 15): no query that runs per poll, per closing, per render or per prune
walks a table that grows with history (entries, edition items, published stories, retired
entries), so their cost does not grow with years of
history. The statements are the real ones, caught as a poll's store, a closing, a render and
a prune run them, then explained: SQLite's EXPLAIN QUERY PLAN must SEARCH, never SCAN, those
tables; PostgreSQL's EXPLAIN, with sequential scans priced out, must not fall back to one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from digest.config import FeedSettings, Settings, SiteSettings, StreamSettings
from digest.publish import build, render
from digest.retention import prune
from digest.store import Store, store_entries
from tests.conftest import add_feeds, make_entry

T0 = datetime(2025, 3, 1, 9, tzinfo=UTC)
# The tables that grow with history (published_urls and retired_entries by a fingerprint a
# story: a closing and a poll look them up; a prune packs into them).
WATCHED = ("entries", "edition_items", "published_urls", "retired_entries")


@contextmanager
def statements(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT, UPDATE and DELETE the store runs that reads a watched table."""
    caught: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, sql: str, parameters: Any, _ctx: Any, many: bool) -> None:
        reads = re.search(rf"\b(FROM|JOIN|UPDATE)\s+({'|'.join(WATCHED)})\b", sql)
        if not many and reads and sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            caught.append((sql, parameters))

    event.listen(store.engine, "before_cursor_execute", catch)
    try:
        yield caught
    finally:
        event.remove(store.engine, "before_cursor_execute", catch)


def whole_table_walks(store: Store, sql: str, parameters: Any) -> list[str]:
    with store.engine.connect() as connection:
        if store.is_sqlite:
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters).all()
            lines = [row[-1] for row in plan]
            return [line for line in lines if re.match(rf"SCAN ({'|'.join(WATCHED)})\b", line)]
        connection.exec_driver_sql("SET enable_seqscan = off")
        plan = connection.exec_driver_sql("EXPLAIN " + sql, parameters).all()
        lines = [row[0] for row in plan]
        connection.rollback()
        return [line for line in lines if re.search(rf"Seq Scan on ({'|'.join(WATCHED)})\b", line)]


def test_per_poll_closing_render_and_prune_queries_use_indexes(
    store: Store, tmp_path: Path
) -> None:
    feeds = [
        FeedSettings(url="https://a.example/feed", name="A", stream="links", section="S"),
        FeedSettings(url="https://own.example/feed", name="Own", own=True),
    ]
    settings = Settings(
        site=SiteSettings(
            title="T",
            base_url="https://example.org/",
            output_dir=tmp_path / "public",
            state_dir=tmp_path / "state",
        ),
        streams={"links": StreamSettings()},
        feeds=tuple(feeds),
    )
    ids = add_feeds(store, feeds, T0)
    with statements(store) as caught:
        for day in range(3):
            at = T0 + timedelta(days=day)
            with store.writing() as session:
                store_entries(
                    session,
                    ids[feeds[0].url],
                    [make_entry(f"Story {day} {n}", published=at) for n in range(3)],
                    at,
                )
                store_entries(
                    session, ids[feeds[1].url], [make_entry(f"Own {day}", published=at)], at
                )
            assert build(store, settings, at=at + timedelta(hours=1))
            render(store, settings)
        prune(store, settings, T0 + timedelta(days=400))
    kinds = {re.sub(r"\s+", " ", sql)[:60] for sql, _ in caught}
    assert len(kinds) >= 6, kinds  # the store's lookup, candidates, carriers, items, prune...
    for table in ("published_urls", "retired_entries"):  # a closing's and a poll's, a pack's
        assert any(f"FROM {table}" in sql for sql, _ in caught), table
    walks = {
        sql: found
        for sql, parameters in caught
        if (found := whole_table_walks(store, sql, parameters))
    }
    assert walks == {}
