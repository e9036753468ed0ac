"""Reading stored entries back as they are kept: what `digest entries` lists.

For people who want to see what digest made of a feed, and for scripts that check it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from digest.store.models import EntryRow, FeedRow



@dataclass(frozen=True)
class StoredEntry:
    """One stored entry. `published` is the feed's date, or, for an entry the feed gave no
    date, the time digest first saw it (the store keeps no entry undated)."""

    feed: str  # the feed's name as configured (feeds.yaml `name`, else its host)
    title: str
    link: str | None
    published: datetime
    summary: str
    key: str  # its identity within the feed

    def as_json(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "title": self.title,
            "link": self.link,
            "published": self.published.astimezone(UTC).isoformat(),
            "summary": self.summary,
            "key": self.key,
        }


class UnknownFeed(LookupError):
    """No configured feed has that name or URL; `known` names the configured feeds."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown feed {name!r}")
        self.name = name
        self.known = tuple(known)


def recent_entries(
    session: Session, *, feed: str | None = None, limit: int
) -> list[StoredEntry]:
    """The newest `limit` stored entries of the configured feeds, newest first.

    Newest: by published time (undated entries were stored with the time they were first
    seen), then the latest stored first. `feed` is a feed's configured name, its URL in
    feeds.yaml or the URL it is fetched from now (after permanent redirects); every feed of
    that name counts. UnknownFeed if none matches. Feeds dropped from feeds.yaml are left
    out, as `digest feeds` leaves them out.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    query = (
        select(
            FeedRow.name,
            EntryRow.title,
            EntryRow.link,
            EntryRow.published_at,
            EntryRow.summary,
            EntryRow.key,
        )
        .join(FeedRow, FeedRow.id == EntryRow.feed_id)
        .where(FeedRow.active)
        .order_by(EntryRow.published_at.desc(), EntryRow.id.desc())
        .limit(limit)
    )
    if feed is not None:
        feed_ids = list(
            session.scalars(
                select(FeedRow.id).where(
                    FeedRow.active,
                    or_(FeedRow.name == feed, FeedRow.config_url == feed, FeedRow.url == feed),
                )
            )
        )
        if not feed_ids:
            known = session.scalars(select(FeedRow.name).where(FeedRow.active).order_by(FeedRow.id))
            raise UnknownFeed(feed, list(dict.fromkeys(known)))
        query = query.where(EntryRow.feed_id.in_(feed_ids))
    return [StoredEntry(*row) for row in session.execute(query)]
