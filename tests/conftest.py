"""Shared fixtures: a real database file, migrated to head, and entries built like the parser's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from digest.config import FeedSettings
from digest.parse import ParsedEntry
from digest.store import Store, sync_feeds


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    store.upgrade()
    yield store
    store.close()


def make_entry(
    title: str,
    link: str | None = None,
    *,
    published: datetime | None = None,
    key: str | None = None,
    summary: str = "",
) -> ParsedEntry:
    link = link if link is not None else f"https://example.net/{title.lower().replace(' ', '-')}"
    digest = hashlib.sha256(f"{title}\0{link}\0{summary}".encode()).hexdigest()
    return ParsedEntry(
        key=key or link or title,
        title=title,
        link=link,
        summary=summary,
        content_html=None,
        author=None,
        published=published,
        content_hash=digest,
    )


def add_feeds(store: Store, feeds: list[FeedSettings], now: datetime) -> dict[str, int]:
    """Sync feeds into the store; returns config URL -> feed id."""
    from sqlalchemy import select

    from digest.store import FeedRow

    with store.writing() as session:
        sync_feeds(session, feeds, now)
    with store.reading() as session:
        return dict(session.execute(select(FeedRow.config_url, FeedRow.id)).all())
