"""Publishing: close editions and turn the database into site content for the renderer.

Wiring between editions, store and render: the renderer gets plain dataclasses and never
sees the database. Callers hold `publishing(settings)` around `build` and `render`, so a
daemon and cron runs close and write one at a time.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest.config import Settings
from digest.editions import Edition, close_edition, edition_paths, load_editions
from digest.files import remove_temporary_files
from digest.locks import publish_lock
from digest.render import (
    FEED_EDITIONS,
    RecentPost,
    RenderReport,
    SiteContent,
    StreamContent,
    render_site,
)
from digest.store import EntryRow, FeedRow, Store

log = logging.getLogger("digest.publish")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def publishing(
    settings: Settings, *, cancel: threading.Event | None = None
) -> AbstractContextManager[None]:
    """The publish lock of this site; raises digest.locks.LockBusy after a bounded wait."""
    return publish_lock(settings.site.state_dir, wait=settings.site.lock_wait, cancel=cancel)


def build(store: Store, settings: Settings, at: datetime | None = None) -> list[Edition]:
    """Close one edition per stream that has enough new entries; each in its own transaction."""
    at = at or datetime.now(UTC)
    closed = (close_stream(store, settings, name, at) for name in settings.streams)
    return [edition for edition in closed if edition is not None]


def close_stream(store: Store, settings: Settings, name: str, at: datetime) -> Edition | None:
    """Close the stream's next edition in a transaction of its own (None: nothing to close)."""
    try:
        with store.writing() as session:
            return close_edition(session, name, settings.streams[name], settings.site.zone, at)
    except IntegrityError:
        # Another node closed this edition (or took these entries) first: the unique keys
        # keep it exactly-once, and what it closed is theirs to publish.
        log.info("stream %s: another process closed this edition first", name)
        return None


def site_content(
    session: Session, settings: Settings, in_full: Collection[str] | None = None
) -> SiteContent:
    """The site as the renderer sees it: every edition in full, or (with `in_full`) only
    those, plus the newest that the feeds carry, in full, and the rest bare for the indexes."""
    site = settings.site
    editions = (
        load_editions(session)
        if in_full is None
        else load_editions(session, bare_after=FEED_EDITIONS, full_paths=in_full)
    )
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


def render(store: Store, settings: Settings, only: Sequence[Edition] | None = None) -> RenderReport:
    """Write the site: every page, or the indexes plus `only` and any edition without pages.

    Finishes what a run killed mid-render left: editions closed but never written get
    written, and its temporary files are removed.
    """
    output = Path(settings.site.output_dir)
    remove_temporary_files(output)
    with store.reading() as session:
        if only is None:
            return render_site(
                site_content(session, settings), output, templates_override=settings.site.templates
            )
        wanted = {edition.path for edition in only} | set(
            unwritten_editions(edition_paths(session), output)
        )
        content = site_content(session, settings, in_full=wanted)
    chosen = [edition for s in content.streams for edition in s.editions if edition.path in wanted]
    return render_site(content, output, only=chosen, templates_override=settings.site.templates)


def unwritten_editions(paths: Collection[str], output: Path) -> list[str]:
    """Editions a killed run closed but never wrote."""
    return [
        path
        for path in paths
        if not all((output / f"{path}{ext}").is_file() for ext in (".html", ".gmi"))
    ]


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
