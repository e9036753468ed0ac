"""What the site is made of and what its templates see.

The render stage's input is `SiteContent` (streams with their editions, the recent posts),
which publish.py fills from the database. Templates never see it raw: they get the small
view objects below (`SiteView`, `EditionView`, `StreamView`, `ArchiveView`, `PostView`,
`FeedView`, `EntryView`) whose text is already cleaned: control and bidi characters removed,
folded to one line. Feed text is a plain `str` variable, so autoescape escapes it in HTML and
XML and it is never compiled as a template. Gemtext has no escaping of its own: text follows a
fixed line prefix (`=> URL `, `# `, `> `, `* `), and a bare text line goes through the
`gemtext` filter (gemtext_line), which puts one leading space before text that a client would
otherwise read as another line type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from digest.archive import Month, Year
from digest.config import FEED_CONTENT_KB, FEED_EDITIONS, INDEX_EDITIONS
from digest.editions import Edition
from digest.parse.text import clean_text
from digest.parse.urls import safe_url


@dataclass(frozen=True)
class RecentPost:
    title: str
    summary: str  # one line
    url: str  # absolute http(s) URL
    gemini_url: str  # absolute URL for gemtext (gemini:// for our editions, else the web URL)
    published: datetime  # aware UTC
    updated: datetime | None = None  # aware UTC: last corrected (an amended edition)


@dataclass(frozen=True)
class StreamContent:
    name: str  # folder name, e.g. "links"
    title: str  # e.g. "Links"
    summary: str  # e.g. "Links for the day"
    editions: Sequence[Edition]  # newest first
    # Published editions the database has no record of (bare, newest first): listed in the
    # indexes and feeds, never written, so their pages keep their bytes.
    kept: Sequence[Edition] = ()


@dataclass(frozen=True)
class SiteContent:
    title: str
    base_url: str  # ends with "/"
    gemini_base_url: str  # ends with "/"
    timezone: str  # IANA name
    author: str
    streams: Sequence[StreamContent]
    recent: Sequence[RecentPost]  # newest first, already cut to site.recent_count
    updated: datetime  # newest publication time, for index feeds
    index_editions: int = INDEX_EDITIONS  # editions a stream index lists
    feed_editions: int = FEED_EDITIONS  # editions a stream feed lists
    feed_content_bytes: int = FEED_CONTENT_KB * 1024  # full editions go in while under this
    blogroll: bytes | None = None  # feeds.opml, the feeds the site follows (digest.opml)
    websub_hubs: Sequence[str] = ()  # named in every Atom feed (digest.websub)


# Starts of a gemtext line that make it something other than a text line.
_GEMTEXT_MARKERS = ("=>", "#", "*", ">", "```")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def gemtext_line(text: str) -> str:
    """A gemtext text line for `text` that no client reads as a link, heading, list, quote or
    preformat toggle: one leading space defuses the marker (spaces are never line types)."""
    line = clean_text(text)
    return " " + line if line.startswith(_GEMTEXT_MARKERS) else line


@dataclass(frozen=True)
class SiteView:
    title: str
    author: str
    url: str
    gemini_url: str
    feed_url: str
    blogroll_url: str | None = None
    hubs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ItemView:
    source: str
    title: str
    link: str | None
    blurb: str


@dataclass(frozen=True)
class SectionView:
    name: str
    anchor: str
    items: tuple[ItemView, ...]


@dataclass(frozen=True)
class EditionView:
    path: str  # links/2025/03/28/1
    title: str
    summary: str
    date: str  # YYYY-MM-DD, local
    shown_time: str  # e.g. "28 March 2025, 12:00 GMT"
    timestamp: str  # RFC 3339 with the site's offset
    url: str
    gemini_url: str
    sections: tuple[SectionView, ...]
    updated: str  # RFC 3339: the closing time, or the last amendment's
    corrected: str | None = None  # when `digest amend` last changed it, shown like shown_time


@dataclass(frozen=True)
class StreamView:
    name: str
    title: str
    summary: str
    url: str
    gemini_url: str
    feed_url: str
    editions: tuple[EditionView, ...]  # what the page lists: on the index, the newest
    archive: tuple[ArchiveLink, ...] = ()  # on the index: its years, newest first


@dataclass(frozen=True)
class ArchiveLink:
    label: str  # "2025", "March 2025"
    path: str  # its page, without extension: links/2025/03/index
    # Editions in it; None in the links between archive pages, so that a month's page is not
    # made again each time a neighbour gains an edition.
    count: int | None
    gemini_url: str


@dataclass(frozen=True)
class ArchiveView:
    """A month's page (its editions) or a year's (its months)."""

    title: str  # "Links: March 2025"
    label: str  # "March 2025"
    path: str
    up: ArchiveLink | None  # a month's year
    older: ArchiveLink | None
    newer: ArchiveLink | None
    editions: tuple[EditionView, ...]  # a month's, newest first
    parts: tuple[ArchiveLink, ...]  # a year's months, newest first


@dataclass(frozen=True)
class PostView:
    title: str
    summary: str
    url: str | None
    gemini_url: str | None
    date: str
    timestamp: str
    updated: str  # RFC 3339: published, or last corrected


@dataclass(frozen=True)
class EntryView:
    id: str
    title: str
    url: str
    published: str
    updated: str
    summary: str
    content_html: str | None


@dataclass(frozen=True)
class FeedView:
    id: str
    title: str
    subtitle: str
    self_url: str
    alternate_url: str
    updated: str
    entries: tuple[EntryView, ...]


def edition_views(
    editions: Sequence[Edition], content: SiteContent, tz: ZoneInfo
) -> tuple[EditionView, ...]:
    return tuple(
        edition_view(edition, content.base_url, content.gemini_base_url, tz) for edition in editions
    )


def feed_entry(
    url: str, title: str, published: str, updated: str, summary: str, content_html: str | None
) -> EntryView:
    """A publication as an Atom entry: its URL is its id (a stable one: URLs never change)."""
    return EntryView(
        id=url,
        title=title,
        url=url,
        published=published,
        updated=updated,
        summary=summary,
        content_html=content_html,
    )


def month_label(month: Month) -> str:
    return f"{_MONTHS[month.month - 1]} {month.year}"


_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)  # fmt: skip  (English names whatever the machine's locale, as strftime would not be)


def month_link(stream: StreamView, month: Month, *, counted: bool = True) -> ArchiveLink:
    path = month.path(stream.name)
    count = len(month.editions) if counted else None
    return ArchiveLink(month_label(month), path, count, _gemini_url(stream, path))


def year_link(stream: StreamView, year: Year, *, counted: bool = True) -> ArchiveLink:
    path = year.path(stream.name)
    return ArchiveLink(
        str(year.year), path, year.count if counted else None, _gemini_url(stream, path)
    )


def _gemini_url(stream: StreamView, path: str) -> str:
    """The gemtext page of `path` (under the output folder), from the stream's own URL."""
    return stream.gemini_url + path.removeprefix(stream.name + "/") + ".gmi"


def stream_view(stream: StreamContent, content: SiteContent) -> StreamView:
    if not _SEGMENT.fullmatch(stream.name):
        raise ValueError(f"stream name {stream.name!r} is not a safe folder name")
    return StreamView(
        name=stream.name,
        title=clean_text(stream.title),
        summary=clean_text(stream.summary),
        url=f"{content.base_url}{stream.name}/",
        gemini_url=f"{content.gemini_base_url}{stream.name}/",
        feed_url=f"{content.base_url}{stream.name}/feed.xml",
        editions=(),
    )


def newest_first(editions: Sequence[Edition], kept: Sequence[Edition]) -> list[Edition]:
    """The stream's editions with its kept ones among them by closing time (the common case,
    nothing kept, keeps the given order untouched)."""
    if not kept:
        return list(editions)
    return sorted([*editions, *kept], key=lambda edition: edition.closed_at, reverse=True)


def edition_view(
    edition: Edition, base_url: str, gemini_base_url: str, tz: ZoneInfo
) -> EditionView:
    """An edition as its templates see it (pages here, mail in digest.mail)."""
    local = local_time(edition.closed_at, tz)
    anchors: set[str] = set()
    sections = []
    for index, section in enumerate(edition.sections, start=1):
        name = clean_text(section.name)
        anchor = re.sub(r"\W+", "-", name.casefold()).strip("-_") or f"section-{index}"
        if anchor in anchors:
            anchor = f"{anchor}-{index}"
        anchors.add(anchor)
        items = tuple(
            ItemView(
                source=clean_text(item.source),
                title=clean_text(item.title),
                link=safe_url(item.link),
                blurb=clean_text(item.blurb),
            )
            for item in section.items
        )
        sections.append(SectionView(name=name, anchor=anchor, items=items))
    return EditionView(
        path=edition.path,
        title=clean_text(edition.title),
        summary=clean_text(edition.summary),
        date=f"{edition.date:%Y-%m-%d}",
        shown_time=_shown_time(local),
        timestamp=timestamp(edition.closed_at, tz),
        url=f"{base_url}{edition.path}.html",
        gemini_url=f"{gemini_base_url}{edition.path}.gmi",
        sections=tuple(sections),
        updated=timestamp(edition.updated_at or edition.closed_at, tz),
        corrected=_shown_time(local_time(edition.updated_at, tz)) if edition.updated_at else None,
    )


def _shown_time(local: datetime) -> str:
    return f"{local.day} {local:%B %Y, %H:%M %Z}"


def post_view(post: RecentPost, tz: ZoneInfo) -> PostView:
    url = safe_url(post.url)
    return PostView(
        title=clean_text(post.title),
        summary=clean_text(post.summary),
        url=url,
        gemini_url=safe_url(post.gemini_url) or url,
        date=f"{local_time(post.published, tz):%Y-%m-%d}",
        timestamp=timestamp(post.published, tz),
        updated=timestamp(post.updated or post.published, tz),
    )


def local_time(moment: datetime, tz: ZoneInfo) -> datetime:
    # A naive time would be read in the machine's zone and make the output depend on the host.
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: content times must be aware")
    return moment.astimezone(tz)


def newest(timestamps: Iterable[str]) -> str | None:
    """The latest of RFC 3339 timestamps (compared as times: offsets may differ)."""
    return max(timestamps, key=datetime.fromisoformat, default=None)


def timestamp(moment: datetime, tz: ZoneInfo) -> str:
    return local_time(moment, tz).isoformat(timespec="seconds")
