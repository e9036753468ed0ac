"""Publishing: close editions and turn the database into site content for the renderer.

Wiring between editions, store and render: the renderer gets plain dataclasses and never
sees the database. Callers hold `publishing(settings)` around `build` and `render`, so a
daemon and cron runs close and write one at a time.

Published pages outlive the database. An edition page in the output folder that the database
has no record of (the database was lost, emptied, or replaced by a new or older one) is
*kept*: a new edition of that day is numbered after it, so its URL never gets other content,
and the indexes and feeds go on listing it, with the title and time read back from the page.
We number after what is on disk rather than refuse: a user who lost the database wants the
archive kept and the site to go on publishing, with nothing to do by hand. Only the output
folder is looked at: when it is a staging folder synced to the server (rsync) and was lost
too, digest cannot see the server's pages, so copy them back before the first run (see the
README); we keep no second record of what was published, because the output folder is it.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import secrets
import threading
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest.config import Settings
from digest.editions import (
    Edition,
    close_edition,
    edition_path,
    load_editions,
    with_sections,
)
from digest.files import remove_temporary_files, write_atomically
from digest.locks import publish_lock
from digest.opml import export_opml
from digest.render import PageRecord, RenderReport, render_site
from digest.rules import stream_rules
from digest.store import EditionRow, EntryRow, FeedRow, Store, disabled_feeds
from digest.store.pages import (
    KeptEdition,
    forget_pages,
    published_pages,
    record_pages,
    replace_kept_editions,
)
from digest.store.pages import kept_editions as stored_kept_editions
from digest.views import RecentPost, SiteContent, StreamContent
from digest.websub import record_pings

log = logging.getLogger("digest.publish")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An edition's page: <stream>/YYYY/MM/DD/<n>.html or .gmi (temporary files never match).
_EDITION_PAGE = re.compile(r"^([1-9][0-9]{0,8})\.(?:html|gmi)$")
_DAY_FOLDERS = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]"
_H1 = re.compile(r"<h1[^>]*>(.*?)</h1>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_TIME = re.compile(r"<time\b[^>]*\bdatetime=\"([^\"]+)\"")
_HEAD_BYTES = 64 * 1024
# In the output folder, the token of the render that last finished there (see `render`).
MARKER = ".digest-published"


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
    """Close the stream's next edition in a transaction of its own (None: nothing to close).

    Numbered after the day's edition pages in the output folder that the database has no
    record of (kept pages, see the module docstring), so it never takes a published URL.
    """
    day = at.astimezone(settings.site.zone).date()
    on_disk = published_numbers(Path(settings.site.output_dir), name, day)
    try:
        with store.writing() as session:
            recorded = set(
                session.scalars(
                    select(EditionRow.number).where(
                        EditionRow.stream == name, EditionRow.date == day
                    )
                )
            )
            kept = sorted(on_disk - recorded)
            edition = close_edition(
                session,
                name,
                settings.streams[name],
                settings.site.zone,
                at,
                after=max(kept, default=0),
                rules=stream_rules(settings, name),
            )
    except IntegrityError:
        # Another node closed this edition (or took these entries) first: the unique keys
        # keep it exactly-once, and what it closed is theirs to publish.
        log.info("stream %s: another process closed this edition first", name)
        return None
    if edition is not None and kept:
        log.warning(
            "%s: the database has no record of the published %s; they are kept, and this "
            "edition is number %d",
            name,
            ", ".join(edition_path(name, day, number) for number in kept),
            edition.number,
        )
    return edition


def published_numbers(output: Path, stream: str, day: date) -> set[int]:
    """The edition numbers of the stream's pages for `day` in the output folder."""
    try:
        names = [path.name for path in (output / stream / f"{day:%Y/%m/%d}").iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {int(match[1]) for name in names if (match := _EDITION_PAGE.match(name))}


def scan_kept_editions(
    output: Path, stream: str, summary: str, recorded: Collection[str], zone: ZoneInfo
) -> list[Edition]:
    """The stream's edition pages in the output folder that the database has no record of,
    as bare editions (no sections) for the indexes, newest first. Never written again."""
    found: set[tuple[date, int]] = set()
    for path in (output / stream).glob(f"{_DAY_FOLDERS}/*"):
        match = _EDITION_PAGE.match(path.name)
        if match is None:
            continue
        year, month, day = path.parent.relative_to(output / stream).parts
        try:
            found.add((date(int(year), int(month), int(day)), int(match[1])))
        except ValueError:
            continue
    kept = [
        _kept_edition(output, stream, summary, day, number, zone)
        for day, number in found
        if edition_path(stream, day, number) not in recorded
    ]
    return sorted(kept, key=lambda e: (e.closed_at, e.date, e.number), reverse=True)


def _kept_edition(
    output: Path, stream: str, summary: str, day: date, number: int, zone: ZoneInfo
) -> Edition:
    """A kept page's title and closing time as the page shows them (its gemtext heading or
    HTML <h1>; its <time>), else the path's: what the indexes listed before the loss."""
    path = edition_path(stream, day, number)
    gmi, page = _head(output / f"{path}.gmi"), _head(output / f"{path}.html")
    title = ""
    first = gmi.split("\n", 1)[0]
    if first.startswith("# "):
        title = first[2:].strip()
    elif found := _H1.search(page):
        title = " ".join(html.unescape(_TAG.sub("", found[1])).split())
    closed_at = None
    if found := _TIME.search(page):
        try:
            shown = datetime.fromisoformat(html.unescape(found[1]))
        except ValueError:
            shown = None
        if shown is not None and shown.tzinfo is not None:
            closed_at = shown.astimezone(UTC)
    if closed_at is None:  # the day's start, in number order
        start = datetime.combine(day, time(), zone).astimezone(UTC)
        closed_at = start + timedelta(seconds=number)
    return Edition(
        stream=stream,
        date=day,
        number=number,
        title=title or f"{stream} {day:%Y-%m-%d} #{number}",
        summary=summary,
        closed_at=closed_at,
        sections=(),
    )


def _head(path: Path) -> str:
    try:
        with path.open("rb") as file:
            return file.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def site_content(session: Session, settings: Settings) -> SiteContent:
    """The site as the renderer sees it: every edition bare (render loads one with its
    sections when it makes its pages), each stream's kept pages (published, not in the
    database: listed, never written) and the recent posts."""
    site = settings.site
    editions = load_editions(session, bare=True)
    kept = [_listed_kept(k, settings) for k in stored_kept_editions(session)]
    streams = [
        StreamContent(
            name=name,
            title=stream.display_label(name),
            summary=stream.summary,
            editions=[edition for edition in editions if edition.stream == name],
            kept=[edition for edition in kept if edition.stream == name],
        )
        for name, stream in settings.streams.items()
    ]
    recent = sorted(
        [
            _edition_post(edition, site.base_url, site.gemini_base_url)
            for edition in [*editions[: site.recent_count], *kept[: site.recent_count]]
        ]
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
        updated=max((post.updated or post.published for post in recent), default=EPOCH),
        index_editions=site.index_editions,
        feed_editions=site.feed_editions,
        feed_content_bytes=site.feed_content_kb * 1024,
        blogroll=export_opml(settings, disabled_feeds(session), public=True),
        websub_hubs=site.websub_hubs,
    )


def _listed_kept(kept: KeptEdition, settings: Settings) -> Edition:
    stream = settings.streams.get(kept.stream)
    return Edition(
        stream=kept.stream,
        date=kept.date,
        number=kept.number,
        title=kept.title,
        summary=stream.summary if stream else "",
        closed_at=kept.closed_at,
        sections=(),
    )


def render(store: Store, settings: Settings, *, full: bool = False) -> RenderReport:
    """Write what changed since the last render: the pages of new (or amended) editions and
    the indexes, feeds and archive pages that list them. With nothing new, it reads a few
    rows and one small file and writes nothing.

    The database records each file published (what it was made of, its bytes' hash) and a
    token that the output folder holds too (MARKER). When the two differ, the folder is not
    the one the records describe: it was deleted or restored, the database was lost or
    replaced, or a render was killed half-way (the marker is removed before the first write
    and put back after the records are committed). Then, or when `full` asks for it, the
    records are set aside, the folder is searched once for kept pages and temporary files,
    and every file is made and compared with the one on disk. Editions are loaded one at a
    time, so memory stays bounded.
    """
    output = Path(settings.site.output_dir)
    marker = output / MARKER
    with store.reading() as session:
        published = {path: PageRecord(*record) for path, record in published_pages(session).items()}
    token = published.pop(MARKER, None)
    trusted = not full and token is not None and _read_marker(marker) == token.digest
    if not trusted:
        remove_temporary_files(output)
        with store.writing() as session:
            recorded = {edition.path for edition in load_editions(session, bare=True)}
            replace_kept_editions(
                session,
                [
                    KeptEdition(e.stream, e.date, e.number, e.title, e.closed_at)
                    for name, stream in settings.streams.items()
                    for e in scan_kept_editions(
                        output, name, stream.summary, recorded, settings.site.zone
                    )
                ],
            )
            forget_pages(session)
    with store.reading() as session:
        report = render_site(
            site_content(session, settings),
            output,
            published=published if trusted else None,
            load=lambda edition: with_sections(session, edition),
            worker_load=EditionLoader(store.url, store.busy_timeout),
            templates_override=settings.site.templates,
            before_write=lambda: marker.unlink(missing_ok=True),
        )
    if trusted and not report.records:
        return report
    token_text = secrets.token_hex(16)
    with store.writing() as session:
        record_pages(session, {**report.records, MARKER: PageRecord("", token_text)})
        record_pings(session, settings, _changed(report, published, output), datetime.now(UTC))
    write_atomically(marker, token_text.encode("ascii"))
    return report


@dataclass(frozen=True)
class EditionLoader:
    """An edition's sections from the database, in a render worker (digest.render._Makers):
    picklable, it opens the worker's own connection at its first edition. Editions are
    never deleted, and an amendment changes the fingerprint a page is recorded with, so a
    worker that reads an edition amended since the render began makes a page that the next
    render makes again."""

    url: str
    busy_timeout: float

    def __call__(self, edition: Edition) -> Edition:
        with _worker_store(self.url, self.busy_timeout).reading() as session:
            return with_sections(session, edition)


@functools.cache
def _worker_store(url: str, busy_timeout: float) -> Store:
    return Store(url, busy_timeout)


def _changed(report: RenderReport, published: dict[str, PageRecord], output: Path) -> list[Path]:
    """The files whose bytes changed since the last recorded render: those written, and
    those a render killed before its records had written already (found unchanged on disk
    now, but not what the records say was published: their pings were never queued)."""
    written = set(report.written)
    return report.written + [
        path
        for name, record in report.records.items()
        if (old := published.get(name)) is not None
        and old.digest != record.digest
        and (path := output / name) not in written
    ]


def _read_marker(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("ascii", errors="replace")
    except OSError:
        return None


def _edition_post(edition: Edition, base_url: str, gemini_base_url: str) -> RecentPost:
    return RecentPost(
        title=edition.title,
        summary=edition.summary,
        url=f"{base_url}{edition.path}.html",
        gemini_url=f"{gemini_base_url or base_url}{edition.path}.gmi",
        published=edition.closed_at,
        updated=edition.updated_at,
    )


def _own_posts(session: Session, limit: int) -> list[RecentPost]:
    # The own feeds first, then their entries through ix_entries_feed_published: never a walk
    # back through every feed's entries to find a few own ones (or none).
    own = list(session.scalars(select(FeedRow.id).where(FeedRow.own, FeedRow.active)))
    if not own:
        return []
    rows = session.execute(
        select(EntryRow)
        .where(EntryRow.feed_id.in_(own), EntryRow.link.is_not(None))
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
