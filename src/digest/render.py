"""Render stage: site content -> HTML, gemtext and Atom files under the output folder.

Pages are made from templates (a user's folder in front of ours) filled with the views of
digest.views, in groups of files made from the same inputs; each group carries a fingerprint
of those inputs, so that a render told what was published (publish.py keeps it in the
database) makes only the groups whose inputs changed. Every file is written to a temporary
file and renamed into place; a file whose bytes did not change is left alone so web servers
and rsync see no change.
"""

from __future__ import annotations

import functools
import hashlib
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)

from digest import PROJECT_URL, __version__
from digest.archive import months, neighbours, years
from digest.editions import Edition
from digest.files import write_atomically
from digest.parse.text import clean_text
from digest.render_workers import PageMakers
from digest.resources import resource_dir
from digest.views import (
    ArchiveView,
    EditionView,
    FeedView,
    PostView,
    SiteContent,
    SiteView,
    StreamContent,
    StreamView,
    edition_view,
    edition_views,
    feed_entry,
    gemtext_line,
    month_label,
    month_link,
    newest,
    newest_first,
    post_view,
    stream_view,
    timestamp,
    year_link,
)

# Part of every page's fingerprint: a change to how pages are made that templates do not show.
RENDER_FORMAT = f"{__version__}/1"


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
    workers: int = 0  # worker processes started to make edition pages (digest.render_workers)


class RenderError(Exception):
    """A page could not be written; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


TEMPLATE_SUFFIXES = (".html", ".gmi", ".xml", ".txt")  # what Jinja fills (CSS is copied)


class TemplateProblem(Exception):
    """A template (of the site's own folder, site.templates) cannot be read or filled: the
    message names the file and line, as a config error does, for the site to fix."""


def fill(env: Environment, name: str, **context: Any) -> str:
    """Template `name` filled in; TemplateProblem naming where it went wrong."""
    try:
        return env.get_template(name).render(**context)
    except TemplateSyntaxError as error:
        raise _syntax_problem(error, name) from error
    except TemplateError as error:
        raise TemplateProblem(f"{_template_line(error, name)}: {error}") from error
    except UnicodeDecodeError as error:
        raise TemplateProblem(f"{name} (or a template it uses) is not UTF-8: {error}") from error


def _syntax_problem(error: TemplateSyntaxError, name: str) -> TemplateProblem:
    return TemplateProblem(f"{error.filename or name}:{error.lineno}: {error.message}")


def _compile_templates(env: Environment) -> None:
    """Every template compiled (the environment keeps them) before the first page is made:
    one the site broke stops the render with nothing half-published. Not done by a render
    that makes nothing: a changed template changes every page's fingerprint anyway."""
    for name in env.list_templates():
        if Path(name).suffix in TEMPLATE_SUFFIXES:
            try:
                env.get_template(name)
            except TemplateSyntaxError as error:
                raise _syntax_problem(error, name) from error


def _template_line(error: Exception, name: str) -> str:
    """file:line of the template frame an error came from (Jinja writes template frames into
    the traceback with the template's file and line), else the template's name."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).suffix in TEMPLATE_SUFFIXES
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else name


BLOGROLL = "feeds.opml"


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
    worker_load: Callable[[Edition], Edition] | None = None,
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
    `worker_load`: the same as `load`, but picklable and for any process (it opens its own
    connection): given, many editions to make are made by worker processes (digest.render_workers).
    `before_write`: called once, before the first file is written.
    """
    env = _environment(templates_override, _folder_state(templates_override))
    report = RenderReport()
    todo = [
        pages
        for pages in _pages(env, content, load or (lambda edition: edition))
        if published is None
        or not all(
            (record := published.get(name)) is not None and record.source == pages.source
            for name in pages.files
        )
    ]
    if not todo:
        return report
    _compile_templates(env)
    pending = before_write
    with PageMakers(todo, templates_override, worker_load) as makers:
        report.workers = makers.started
        for pages, made in makers.made():
            for name, data in zip(pages.files, made, strict=True):
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
    # An edition's pages: the edition (bare) and what makes its pages once it is loaded, for
    # a worker process to do what `make` does (digest.render_workers).
    edition: tuple[Edition, EditionPages] | None = None


@dataclass(frozen=True)
class EditionPages:
    """Makes a stream's edition pages from a loaded edition: plain data, so that it pickles
    to a worker process (digest.render_workers)."""

    site: SiteView
    stream: StreamView
    base_url: str
    gemini_url: str
    timezone: str

    def make(self, env: Environment, edition: Edition) -> tuple[bytes, ...]:
        shown = edition_view(edition, self.base_url, self.gemini_url, ZoneInfo(self.timezone))
        # page_url "" keeps the contents anchors relative on the page itself.
        context = {
            "site": self.site,
            "stream": self.stream,
            "edition": shown,
            "root": "../" * shown.path.count("/"),
            "page_url": "",
        }
        return (
            fill(env, "edition.html", **context).encode("utf-8"),
            fill(env, "edition.gmi", **context).encode("utf-8"),
        )


def _fingerprint(*parts: object) -> str:
    """A hash of values whose repr is stable (strings, numbers, dates, frozen dataclasses)."""
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _templates_fingerprint(env: Environment) -> str:
    """Every template and static file the loaders would use: a changed one changes every page
    made from it (a full rebuild then compares bytes, so unchanged pages are not written).
    Read before any page is made, so a file that is not UTF-8 stops the render here."""
    assert env.loader is not None
    sources = []
    for name in env.list_templates():
        try:
            sources.append((name, env.loader.get_source(env, name)[0]))
        except UnicodeDecodeError as error:
            raise TemplateProblem(f"{name} is not UTF-8: {error}") from error
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
        return fill(env, name, site=site, **context).encode("utf-8")

    yield _Pages(("style.css",), base, lambda: (_static(env, "style.css"),))
    if (blogroll := content.blogroll) is not None:
        yield _Pages((BLOGROLL,), _fingerprint(blogroll), lambda: (blogroll,))
    streams = []
    for stream in content.streams:
        view = stream_view(stream, content)
        streams.append(view)
        yield from _stream_pages(
            env, page, site, content, stream, view, _fingerprint(base, view), load
        )

    posts = tuple(post_view(post, tz) for post in content.recent)
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
        updated=timestamp(content.updated, tz),
        entries=tuple(
            feed_entry(post.url, post.title, post.timestamp, post.updated, post.summary, None)
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
    site: SiteView,
    content: SiteContent,
    stream: StreamContent,
    view: StreamView,
    base: str,
    load: Callable[[Edition], Edition],
) -> Iterator[_Pages]:
    """A stream's edition pages, index, feed and archive pages."""
    tz = ZoneInfo(content.timezone)
    kept = {edition.path for edition in stream.kept}
    listed = newest_first(stream.editions, stream.kept)
    marks = {edition.path: edition_fingerprint(edition) for edition in listed}

    maker = EditionPages(site, view, content.base_url, content.gemini_base_url, content.timezone)
    for edition in stream.editions:
        if edition.path not in kept:
            yield _Pages(
                (edition.path + ".html", edition.path + ".gmi"),
                _fingerprint(base, marks[edition.path]),
                functools.partial(_load_and_make, env, maker, load, edition),
                (edition, maker),
            )

    all_months = months(listed)
    all_years = years(all_months)
    year_links = tuple(year_link(view, year) for year in all_years)
    latest = listed[: content.index_editions]

    def index_pages() -> tuple[bytes, ...]:
        shown = replace(
            view,
            editions=edition_views(latest, content, tz),
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
            title=f"{view.title}: {month_label(month)}",
            label=month_label(month),
            path=month.path(view.name),
            up=year_link(view, year, counted=False),
            older=month_link(view, older, counted=False) if older else None,
            newer=month_link(view, newer, counted=False) if newer else None,
            editions=(),
            parts=(),
        )
        yield _archive_pages(
            page,
            view,
            archive,
            [marks[e.path] for e in month.editions],
            base,
            functools.partial(edition_views, month.editions, content, tz),
        )
    for index, year in enumerate(all_years):
        older_year, newer_year = neighbours(all_years, index)
        archive = ArchiveView(
            title=f"{view.title}: {year.year}",
            label=str(year.year),
            path=year.path(view.name),
            up=None,
            older=year_link(view, older_year, counted=False) if older_year else None,
            newer=year_link(view, newer_year, counted=False) if newer_year else None,
            editions=(),
            parts=tuple(month_link(view, month) for month in year.months),
        )
        yield _archive_pages(page, view, archive, [], base, tuple)


def _load_and_make(
    env: Environment, maker: EditionPages, load: Callable[[Edition], Edition], edition: Edition
) -> tuple[bytes, ...]:
    return maker.make(env, load(edition))


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
            html = fill(env, "edition_content.html", edition=shown, page_url=shown.url)
            budget -= len(html.encode("utf-8"))
            if budget < 0:
                html = None
        else:
            shown = edition_view(edition, content.base_url, content.gemini_base_url, tz)
        entries.append(
            feed_entry(shown.url, shown.title, shown.timestamp, shown.updated, shown.summary, html)
        )
    feed = FeedView(
        id=stream.feed_url,
        title=stream.title,
        subtitle=stream.summary,
        self_url=stream.feed_url,
        alternate_url=stream.url,
        updated=newest(entry.updated for entry in entries) or timestamp(content.updated, tz),
        entries=tuple(entries),
    )
    return page("feed.xml", feed=feed)


def _static(env: Environment, name: str) -> bytes:
    """A file served as it is: read through the loaders (so it can be overridden), not rendered,
    because CSS like `a{#x}` would read as Jinja syntax."""
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    return source.encode("utf-8")


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
