"""Publishing: close editions and turn the database into site content for the renderer.

Wiring between editions, store and render: the renderer gets plain dataclasses and never
sees the database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from digest.config import Settings
from digest.editions import Edition, close_edition, load_editions
from digest.render import RecentPost, RenderReport, SiteContent, StreamContent, render_site
from digest.store import EntryRow, FeedRow, Store

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def build(store: Store, settings: Settings, at: datetime | None = None) -> list[Edition]:
    """Close one edition per stream that has enough new entries; each in its own transaction."""
    at = at or datetime.now(UTC)
    closed = []
    for name, stream in settings.streams.items():
        with store.writing() as session:
            edition = close_edition(session, name, stream, settings.site.zone, at)
        if edition is not None:
            closed.append(edition)
    return closed


def site_content(session: Session, settings: Settings) -> SiteContent:
    site = settings.site
    editions = load_editions(session)
    streams = [
        StreamContent(
            name=name,
            title=stream.display_label(name),
            summary=stream.summary,
            editions=[edition for edition in editions if edition.stream == name],
        )
        for name, stream in settings.streams.items()
    ]
    recent = sorted(
        [_edition_post(edition, site.base_url, site.gemini_base_url) for edition in editions]
        + _own_posts(session, site.recent_count),
        key=lambda post: post.published,
        reverse=True,
    )[: site.recent_count]
    return SiteContent(
        title=site.title,
        base_url=site.base_url,
        gemini_base_url=site.gemini_base_url or site.base_url,
        timezone=site.timezone,
        author=site.author or site.title,
        streams=streams,
        recent=recent,
        updated=recent[0].published if recent else EPOCH,
    )


def render(
    store: Store, settings: Settings, only: Sequence[Edition] | None = None
) -> RenderReport:
    with store.reading() as session:
        content = site_content(session, settings)
    return render_site(
        content,
        Path(settings.site.output_dir),
        only=only,
        templates_override=settings.site.templates,
    )


def _edition_post(edition: Edition, base_url: str, gemini_base_url: str) -> RecentPost:
    return RecentPost(
        title=edition.title,
        summary=edition.summary,
        url=f"{base_url}{edition.path}.html",
        gemini_url=f"{gemini_base_url or base_url}{edition.path}.gmi",
        published=edition.closed_at,
    )


def _own_posts(session: Session, limit: int) -> list[RecentPost]:
    rows = session.execute(
        select(EntryRow)
        .join(FeedRow, EntryRow.feed_id == FeedRow.id)
        .where(FeedRow.own, FeedRow.active, EntryRow.link.is_not(None))
        .order_by(EntryRow.published_at.desc())
        .limit(limit)
    ).scalars()
    return [
        RecentPost(
            title=row.title,
            summary=first_sentence(row.summary),
            url=row.link or "",
            gemini_url=row.link or "",
            published=row.published_at,
        )
        for row in rows
    ]


def first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0] if text else ""
