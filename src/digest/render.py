"""Render stage: site content -> HTML, gemtext and Atom files under the output folder.

Every file is written to a temporary file and renamed into place; a file whose bytes did
not change is left alone so web servers and rsync see no change.

Templates never see the raw content: they get the small view objects below (``SiteView``,
``EditionView``, ``StreamView``, ``PostView``, ``FeedView``, ``EntryView``) whose text is
already cleaned: control and bidi characters removed, folded to one line. Feed text is a plain
``str`` variable, so autoescape escapes it in HTML and XML and it is never compiled as a
template. Gemtext has no escaping of its own: text follows a fixed line prefix (``=> URL ``,
``# ``, ``> ``, ``* ``), and a bare text line goes through the ``gemtext`` filter, which puts
one leading space before text that a client would otherwise read as another line type.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)

from digest import PROJECT_URL, __version__
from digest.archive import Month, Year, months, neighbours, years
from digest.editions import Edition
from digest.files import write_atomically
from digest.parse.text import clean_text
from digest.parse.urls import safe_url
from digest.resources import resource_dir

# Defaults of site.index_editions, site.feed_editions and site.feed_content_kb.
INDEX_EDITIONS = 60
FEED_EDITIONS = 20
FEED_CONTENT_BYTES = 150 * 1024
# Part of every page's fingerprint: a change to how pages are made that templates do not show.
RENDER_FORMAT = f"{__version__}/1"


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
    feed_content_bytes: int = FEED_CONTENT_BYTES  # full editions go in while under this
    blogroll: bytes | None = None  # feeds.opml, the feeds the site follows (digest.opml)
    websub_hubs: Sequence[str] = ()  # named in every Atom feed (digest.websub)


class PageRecord(NamedTuple):
    """What a published file was made of and what it holds, as the database keeps them."""

    source: str  # fingerprint of its inputs: templates, settings, the editions it shows
    digest: str  # SHA-256 of its bytes


@dataclass
class RenderReport:
    """Files written (their bytes changed: what WebSub pings hook on), files rendered whose
    bytes were already published, and the record of every file rendered, to keep."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    records: dict[str, PageRecord] = field(default_factory=dict)


class RenderError(Exception):
    """A page could not be written; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


BLOGROLL = "feeds.opml"
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


def make_environment(templates_override: Path | None = None) -> Environment:
    """Our templates, with a user's folder in front so it can replace them file by file."""
    loaders: list[BaseLoader] = [FileSystemLoader(resource_dir("templates"))]
    if templates_override is not None:
        loaders.insert(0, FileSystemLoader(templates_override))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(["html", "xml"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["gemtext"] = gemtext_line
    env.globals["project_url"] = PROJECT_URL
    return env


def render_site(
    content: SiteContent,
    output_dir: Path,
    *,
    published: Mapping[str, PageRecord] | None = None,
    load: Callable[[Edition], Edition] | None = None,
    templates_override: Path | None = None,
    before_write: Callable[[], None] | None = None,
) -> RenderReport:
    """Write the site's files whose inputs or bytes changed.

    `published`: what the output folder holds, as recorded (path -> PageRecord). A file made
    of the same inputs is not rendered again, and one rendered to the same bytes is not
    written, without reading the folder. None: the folder's content is not known, so every
    file is rendered and compared with the one on disk.
    `load`: an edition with its sections, given a bare one; the editions of `content` may come
    bare (no sections), and only those whose pages or feed entries are made are loaded, one
    at a time, so memory stays bounded however long the history.
    `before_write`: called once, before the first file is written.
    """
    env = _environment(templates_override, _folder_state(templates_override))
    report = RenderReport()
    pending = before_write
    for pages in _pages(env, content, load or (lambda edition: edition)):
        if published is not None and all(
            (record := published.get(name)) is not None and record.source == pages.source
            for name in pages.files
        ):
            continue
        for name, data in zip(pages.files, pages.make(), strict=True):
            path = output_dir / name
            digest = hashlib.sha256(data).hexdigest()
            known = published.get(name) if published is not None else None
            if published is None:
                changed = _differs(path, data)
            else:
                changed = known is None or known.digest != digest
            if changed:
                if pending is not None:
                    pending()
                    pending = None
                _write(path, data)
                report.written.append(path)
            else:
                report.unchanged.append(path)
            report.records[name] = PageRecord(pages.source, digest)
    return report


@functools.lru_cache(maxsize=8)
def _environment(templates_override: Path | None, _state: object) -> Environment:
    """One environment per state of the user's folder, so that a daemon's renders reuse the
    compiled templates: Jinja compiles a changed file again, but a file added to the folder
    would not replace ours in an environment that had already loaded ours."""
    return make_environment(templates_override)


def _folder_state(folder: Path | None) -> object:
    if folder is None:
        return None
    try:
        return tuple(sorted(path.name for path in folder.iterdir()))
    except OSError:
        return ()


@dataclass(frozen=True)
class _Pages:
    """Files made together from the same inputs (an edition's HTML and gemtext)."""

    files: tuple[str, ...]
    source: str  # fingerprint of the inputs
    make: Callable[[], tuple[bytes, ...]]


def _fingerprint(*parts: object) -> str:
    """A hash of values whose repr is stable (strings, numbers, dates, frozen dataclasses)."""
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _templates_fingerprint(env: Environment) -> str:
    """Every template and static file the loaders would use: a changed one changes every page
    made from it (a full rebuild then compares bytes, so unchanged pages are not written)."""
    assert env.loader is not None
    sources = [(name, env.loader.get_source(env, name)[0]) for name in env.list_templates()]
    return _fingerprint(RENDER_FORMAT, sources)


def edition_fingerprint(edition: Edition) -> str:
    """What an edition's pages are made of: its stored revision (every column of its row, so
    an amended edition is made again) and, for a full edition, its sections."""
    return _fingerprint(
        edition.path,
        edition.title,
        edition.summary,
        edition.closed_at,
        edition.revision,
        edition.sections,
    )


def _pages(
    env: Environment, content: SiteContent, load: Callable[[Edition], Edition]
) -> Iterator[_Pages]:
    """Every group of files of the site with the fingerprint of its inputs, in a fixed order;
    nothing is rendered (and no edition loaded) until a group's `make` is called."""
    tz = ZoneInfo(content.timezone)
    site = SiteView(
        title=clean_text(content.title),
        author=clean_text(content.author),
        url=content.base_url,
        gemini_url=content.gemini_base_url,
        feed_url=content.base_url + "feed.xml",
        blogroll_url=None if content.blogroll is None else content.base_url + BLOGROLL,
        hubs=tuple(content.websub_hubs),
    )
    base = _fingerprint(
        _templates_fingerprint(env),
        site,
        content.timezone,
        content.index_editions,
        content.feed_editions,
        content.feed_content_bytes,
    )

    def page(name: str, **context: Any) -> bytes:
        return env.get_template(name).render(site=site, **context).encode("utf-8")

    yield _Pages(("style.css",), base, lambda: (_static(env, "style.css"),))
    if (blogroll := content.blogroll) is not None:
        yield _Pages((BLOGROLL,), _fingerprint(blogroll), lambda: (blogroll,))
    streams = []
    for stream in content.streams:
        view = _stream_view(stream, content)
        streams.append(view)
        yield from _stream_pages(env, page, content, stream, view, _fingerprint(base, view), load)

    posts = tuple(_post_view(post, tz) for post in content.recent)
    source = _fingerprint(base, tuple(content.recent), tuple(streams), content.updated)
    yield _Pages(
        ("recent.html", "index.html", "index.gmi", "feed.xml"),
        source,
        lambda: _site_pages(page, site, content, tuple(streams), posts, tz),
    )


def _site_pages(
    page: Callable[..., bytes],
    site: SiteView,
    content: SiteContent,
    streams: tuple[StreamView, ...],
    posts: tuple[PostView, ...],
    tz: ZoneInfo,
) -> tuple[bytes, ...]:
    feed = FeedView(
        id=site.feed_url,
        title=site.title,
        subtitle="Recent posts",
        self_url=site.feed_url,
        alternate_url=site.url,
        updated=_timestamp(content.updated, tz),
        entries=tuple(
            _feed_entry(post.url, post.title, post.timestamp, post.updated, post.summary, None)
            # An entry needs a stable id and a link: a post without a safe URL has neither.
            for post in posts
            if post.url
        ),
    )
    return (
        page("recent_fragment.html", posts=posts),
        page("site_index.html", posts=posts, streams=streams, root=""),
        page("site_index.gmi", posts=posts, streams=streams),
        page("feed.xml", feed=feed),
    )


def _stream_pages(
    env: Environment,
    page: Callable[..., bytes],
    content: SiteContent,
    stream: StreamContent,
    view: StreamView,
    base: str,
    load: Callable[[Edition], Edition],
) -> Iterator[_Pages]:
    """A stream's edition pages, index, feed and archive pages."""
    tz = ZoneInfo(content.timezone)
    kept = {edition.path for edition in stream.kept}
    listed = _newest_first(stream.editions, stream.kept)
    marks = {edition.path: edition_fingerprint(edition) for edition in listed}

    def edition_pages(edition: Edition) -> tuple[bytes, ...]:
        shown = edition_view(load(edition), content.base_url, content.gemini_base_url, tz)
        # page_url "" keeps the contents anchors relative on the page itself.
        context = {
            "stream": view,
            "edition": shown,
            "root": "../" * shown.path.count("/"),
            "page_url": "",
        }
        return page("edition.html", **context), page("edition.gmi", **context)

    for edition in stream.editions:
        if edition.path not in kept:
            yield _Pages(
                (edition.path + ".html", edition.path + ".gmi"),
                _fingerprint(base, marks[edition.path]),
                functools.partial(edition_pages, edition),
            )

    all_months = months(listed)
    all_years = years(all_months)
    year_links = tuple(_year_link(view, year) for year in all_years)
    latest = listed[: content.index_editions]

    def index_pages() -> tuple[bytes, ...]:
        shown = replace(
            view,
            editions=_edition_views(latest, content, tz),
            archive=year_links,
        )
        return (
            page("stream_index.html", stream=shown, root="../"),
            page("stream_index.gmi", stream=shown),
        )

    yield _Pages(
        (f"{view.name}/index.html", f"{view.name}/index.gmi"),
        _fingerprint(base, [marks[e.path] for e in latest], year_links),
        index_pages,
    )
    in_feed = listed[: content.feed_editions]

    def feed_page() -> tuple[bytes, ...]:
        return (_stream_feed(env, page, content, view, in_feed, kept, load),)

    yield _Pages(
        (f"{view.name}/feed.xml",),
        _fingerprint(base, [marks[e.path] for e in in_feed]),
        feed_page,
    )
    for index, month in enumerate(all_months):
        older, newer = neighbours(all_months, index)
        year = next(y for y in all_years if y.year == month.year)
        archive = ArchiveView(
            title=f"{view.title}: {_month_label(month)}",
            label=_month_label(month),
            path=month.path(view.name),
            up=_year_link(view, year, counted=False),
            older=_month_link(view, older, counted=False) if older else None,
            newer=_month_link(view, newer, counted=False) if newer else None,
            editions=(),
            parts=(),
        )
        yield _archive_pages(
            page,
            view,
            archive,
            [marks[e.path] for e in month.editions],
            base,
            functools.partial(_edition_views, month.editions, content, tz),
        )
    for index, year in enumerate(all_years):
        older_year, newer_year = neighbours(all_years, index)
        archive = ArchiveView(
            title=f"{view.title}: {year.year}",
            label=str(year.year),
            path=year.path(view.name),
            up=None,
            older=_year_link(view, older_year, counted=False) if older_year else None,
            newer=_year_link(view, newer_year, counted=False) if newer_year else None,
            editions=(),
            parts=tuple(_month_link(view, month) for month in year.months),
        )
        yield _archive_pages(page, view, archive, [], base, tuple)


def _edition_views(
    editions: Sequence[Edition], content: SiteContent, tz: ZoneInfo
) -> tuple[EditionView, ...]:
    return tuple(
        edition_view(edition, content.base_url, content.gemini_base_url, tz) for edition in editions
    )


def _archive_pages(
    page: Callable[..., bytes],
    stream: StreamView,
    archive: ArchiveView,
    marks: list[str],
    base: str,
    editions: Callable[[], tuple[EditionView, ...]],
) -> _Pages:
    def make() -> tuple[bytes, ...]:
        shown = replace(archive, editions=editions())
        root = "../" * archive.path.count("/")
        return (
            page("archive.html", stream=stream, archive=shown, root=root),
            page("archive.gmi", stream=stream, archive=shown),
        )

    return _Pages(
        (archive.path + ".html", archive.path + ".gmi"), _fingerprint(base, archive, marks), make
    )


def _stream_feed(
    env: Environment,
    page: Callable[..., bytes],
    content: SiteContent,
    stream: StreamView,
    editions: Sequence[Edition],
    kept: Collection[str],
    load: Callable[[Edition], Edition],
) -> bytes:
    """The stream's Atom feed: its newest editions, the newest of them in full while the
    feed's content stays under the budget, the rest (and kept pages) by title and summary."""
    tz = ZoneInfo(content.timezone)
    budget = content.feed_content_bytes
    entries = []
    for edition in editions:
        html = None
        if budget > 0 and edition.path not in kept:
            shown = edition_view(load(edition), content.base_url, content.gemini_base_url, tz)
            html = env.get_template("edition_content.html").render(
                edition=shown, page_url=shown.url
            )
            budget -= len(html.encode("utf-8"))
            if budget < 0:
                html = None
        else:
            shown = edition_view(edition, content.base_url, content.gemini_base_url, tz)
        entries.append(
            _feed_entry(shown.url, shown.title, shown.timestamp, shown.updated, shown.summary, html)
        )
    feed = FeedView(
        id=stream.feed_url,
        title=stream.title,
        subtitle=stream.summary,
        self_url=stream.feed_url,
        alternate_url=stream.url,
        updated=_newest(entry.updated for entry in entries) or _timestamp(content.updated, tz),
        entries=tuple(entries),
    )
    return page("feed.xml", feed=feed)


def _feed_entry(
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


def _month_label(month: Month) -> str:
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


def _month_link(stream: StreamView, month: Month, *, counted: bool = True) -> ArchiveLink:
    path = month.path(stream.name)
    count = len(month.editions) if counted else None
    return ArchiveLink(_month_label(month), path, count, _gemini_url(stream, path))


def _year_link(stream: StreamView, year: Year, *, counted: bool = True) -> ArchiveLink:
    path = year.path(stream.name)
    return ArchiveLink(
        str(year.year), path, year.count if counted else None, _gemini_url(stream, path)
    )


def _gemini_url(stream: StreamView, path: str) -> str:
    """The gemtext page of `path` (under the output folder), from the stream's own URL."""
    return stream.gemini_url + path.removeprefix(stream.name + "/") + ".gmi"


def _static(env: Environment, name: str) -> bytes:
    """A file served as it is: read through the loaders (so it can be overridden), not rendered,
    because CSS like `a{#x}` would read as Jinja syntax."""
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    return source.encode("utf-8")


def _stream_view(stream: StreamContent, content: SiteContent) -> StreamView:
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


def _newest_first(editions: Sequence[Edition], kept: Sequence[Edition]) -> list[Edition]:
    """The stream's editions with its kept ones among them by closing time (the common case,
    nothing kept, keeps the given order untouched)."""
    if not kept:
        return list(editions)
    return sorted([*editions, *kept], key=lambda edition: edition.closed_at, reverse=True)


def edition_view(
    edition: Edition, base_url: str, gemini_base_url: str, tz: ZoneInfo
) -> EditionView:
    """An edition as its templates see it (pages here, mail in digest.mail)."""
    local = _local(edition.closed_at, tz)
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
        timestamp=_timestamp(edition.closed_at, tz),
        url=f"{base_url}{edition.path}.html",
        gemini_url=f"{gemini_base_url}{edition.path}.gmi",
        sections=tuple(sections),
        updated=_timestamp(edition.updated_at or edition.closed_at, tz),
        corrected=_shown_time(_local(edition.updated_at, tz)) if edition.updated_at else None,
    )


def _shown_time(local: datetime) -> str:
    return f"{local.day} {local:%B %Y, %H:%M %Z}"


def _post_view(post: RecentPost, tz: ZoneInfo) -> PostView:
    url = safe_url(post.url)
    return PostView(
        title=clean_text(post.title),
        summary=clean_text(post.summary),
        url=url,
        gemini_url=safe_url(post.gemini_url) or url,
        date=f"{_local(post.published, tz):%Y-%m-%d}",
        timestamp=_timestamp(post.published, tz),
        updated=_timestamp(post.updated or post.published, tz),
    )


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    # A naive time would be read in the machine's zone and make the output depend on the host.
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: content times must be aware")
    return moment.astimezone(tz)


def _newest(timestamps: Iterable[str]) -> str | None:
    """The latest of RFC 3339 timestamps (compared as times: offsets may differ)."""
    return max(timestamps, key=datetime.fromisoformat, default=None)


def _timestamp(moment: datetime, tz: ZoneInfo) -> str:
    return _local(moment, tz).isoformat(timespec="seconds")


def _differs(path: Path, data: bytes) -> bool:
    """Whether `path` does not hold exactly `data` (the folder's content is not known)."""
    try:
        return path.read_bytes() != data
    except FileNotFoundError:
        return True
    except OSError as error:
        raise RenderError(path, error.strerror or str(error)) from error


def _write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    try:
        write_atomically(path, data)
    except OSError as error:
        raise RenderError(path, error.strerror or str(error)) from error
