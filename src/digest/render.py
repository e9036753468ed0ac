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

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)

from digest import PROJECT_URL
from digest.editions import Edition
from digest.files import write_atomically
from digest.parse.text import clean_text
from digest.parse.urls import safe_url
from digest.resources import resource_dir


@dataclass(frozen=True)
class RecentPost:
    title: str
    summary: str  # one line
    url: str  # absolute http(s) URL
    gemini_url: str  # absolute URL for gemtext (gemini:// for our editions, else the web URL)
    published: datetime  # aware UTC


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
    blogroll: bytes | None = None  # feeds.opml, the feeds the site follows (digest.opml)
    websub_hubs: Sequence[str] = ()  # named in every Atom feed (digest.websub)


@dataclass
class RenderReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)


class RenderError(Exception):
    """A page could not be written; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


BLOGROLL = "feeds.opml"
# A feed carries every edition's full content, so it is capped; the index pages list them all.
FEED_EDITIONS = 20
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


@dataclass(frozen=True)
class StreamView:
    name: str
    title: str
    summary: str
    url: str
    gemini_url: str
    feed_url: str
    editions: tuple[EditionView, ...]


@dataclass(frozen=True)
class PostView:
    title: str
    summary: str
    url: str | None
    gemini_url: str | None
    date: str
    timestamp: str


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
    only: Collection[Edition] | None = None,
    templates_override: Path | None = None,
) -> RenderReport:
    """Write the indexes and the edition pages (all of them, or just `only`)."""
    env = make_environment(templates_override)
    report = RenderReport()
    for rel, data in _pages(env, content, only):
        path = output_dir / rel
        if _write_if_changed(path, data):
            report.written.append(path)
        else:
            report.unchanged.append(path)
    return report


def _pages(
    env: Environment, content: SiteContent, only: Collection[Edition] | None
) -> Iterator[tuple[str, bytes]]:
    """Every (relative path, bytes) to write, in a fixed order."""
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
    wanted = None if only is None else {edition.path for edition in only}
    streams = [_stream_view(stream, content, tz) for stream in content.streams]
    kept = {edition.path for stream in content.streams for edition in stream.kept}
    if wanted is not None:
        missing = wanted - {e.path for s in content.streams for e in s.editions}
        if missing:
            raise ValueError(f"editions not in the site content: {', '.join(sorted(missing))}")

    def page(name: str, **context: Any) -> bytes:
        return env.get_template(name).render(site=site, **context).encode("utf-8")

    def edition_html(edition: EditionView, page_url: str) -> str:
        return env.get_template("edition_content.html").render(edition=edition, page_url=page_url)

    yield "style.css", _static(env, "style.css")
    if content.blogroll is not None:
        yield BLOGROLL, content.blogroll
    for stream in streams:
        for edition in stream.editions:
            if edition.path in kept or (wanted is not None and edition.path not in wanted):
                continue
            edition_root = "../" * edition.path.count("/")
            # page_url "" keeps the contents anchors relative on the page itself.
            context = {"stream": stream, "edition": edition, "root": edition_root, "page_url": ""}
            yield edition.path + ".html", page("edition.html", **context)
            yield edition.path + ".gmi", page("edition.gmi", **context)
        yield f"{stream.name}/index.html", page("stream_index.html", stream=stream, root="../")
        yield f"{stream.name}/index.gmi", page("stream_index.gmi", stream=stream)
        entries = tuple(
            EntryView(
                id=edition.url,
                title=edition.title,
                url=edition.url,
                published=edition.timestamp,
                updated=edition.timestamp,
                summary=edition.summary,
                content_html=None if edition.path in kept else edition_html(edition, edition.url),
            )
            for edition in stream.editions[:FEED_EDITIONS]
        )
        feed = FeedView(
            id=stream.feed_url,
            title=stream.title,
            subtitle=stream.summary,
            self_url=stream.feed_url,
            alternate_url=stream.url,
            updated=entries[0].updated if entries else _timestamp(content.updated, tz),
            entries=entries,
        )
        yield f"{stream.name}/feed.xml", page("feed.xml", feed=feed)

    posts = tuple(_post_view(post, tz) for post in content.recent)
    yield "recent.html", page("recent_fragment.html", posts=posts)
    yield "index.html", page("site_index.html", posts=posts, streams=streams, root="")
    yield "index.gmi", page("site_index.gmi", posts=posts, streams=streams)
    site_feed = FeedView(
        id=site.feed_url,
        title=site.title,
        subtitle="Recent posts",
        self_url=site.feed_url,
        alternate_url=site.url,
        updated=_timestamp(content.updated, tz),
        entries=tuple(
            EntryView(
                id=post.url,
                title=post.title,
                url=post.url,
                published=post.timestamp,
                updated=post.timestamp,
                summary=post.summary,
                content_html=None,
            )
            # An entry needs a stable id and a link: a post without a safe URL has neither.
            for post in posts
            if post.url
        ),
    )
    yield "feed.xml", page("feed.xml", feed=site_feed)


def _static(env: Environment, name: str) -> bytes:
    """A file served as it is: read through the loaders (so it can be overridden), not rendered,
    because CSS like `a{#x}` would read as Jinja syntax."""
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    return source.encode("utf-8")


def _stream_view(stream: StreamContent, content: SiteContent, tz: ZoneInfo) -> StreamView:
    if not _SEGMENT.fullmatch(stream.name):
        raise ValueError(f"stream name {stream.name!r} is not a safe folder name")
    return StreamView(
        name=stream.name,
        title=clean_text(stream.title),
        summary=clean_text(stream.summary),
        url=f"{content.base_url}{stream.name}/",
        gemini_url=f"{content.gemini_base_url}{stream.name}/",
        feed_url=f"{content.base_url}{stream.name}/feed.xml",
        editions=tuple(
            edition_view(edition, content.base_url, content.gemini_base_url, tz)
            for edition in _newest_first(stream.editions, stream.kept)
        ),
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
        shown_time=f"{local.day} {local:%B %Y, %H:%M %Z}",
        timestamp=_timestamp(edition.closed_at, tz),
        url=f"{base_url}{edition.path}.html",
        gemini_url=f"{gemini_base_url}{edition.path}.gmi",
        sections=tuple(sections),
    )


def _post_view(post: RecentPost, tz: ZoneInfo) -> PostView:
    url = safe_url(post.url)
    return PostView(
        title=clean_text(post.title),
        summary=clean_text(post.summary),
        url=url,
        gemini_url=safe_url(post.gemini_url) or url,
        date=f"{_local(post.published, tz):%Y-%m-%d}",
        timestamp=_timestamp(post.published, tz),
    )


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    # A naive time would be read in the machine's zone and make the output depend on the host.
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: content times must be aware")
    return moment.astimezone(tz)


def _timestamp(moment: datetime, tz: ZoneInfo) -> str:
    return _local(moment, tz).isoformat(timespec="seconds")


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Replace `path` with `data` atomically; False when it already holds exactly those bytes."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as error:
        raise RenderError(path, error.strerror or str(error)) from error
    try:
        write_atomically(path, data)
    except OSError as error:
        raise RenderError(path, error.strerror or str(error)) from error
    return True
