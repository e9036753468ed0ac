"""OPML in and out: the feed list as the blogroll readers and planet sites exchange.

`export_opml` writes the config's feeds as OPML 2.0, one outline per stream and section,
own and disabled feeds marked with attributes in our namespace (OPML 2.0 allows namespaced
attributes; readers ignore them). `read_opml` reads any reader's export (newsboat, Miniflux,
FreshRSS, planets) with the hardened XML parser of the parse stage; `plan_import` decides,
without I/O, where each feed goes and which are skipped; `add_feeds` appends them to
feeds.yaml with a round-trip YAML library, so the file keeps its comments, order, quoting
and indentation, and replaces it only once the result validates.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lxml import etree

from digest import PROJECT_URL
from digest.config import Config, ConfigError, FeedSettings, Settings, StreamSettings, load_config
from digest.files import write_atomically
from digest.parse.entry import ParseError
from digest.parse.text import clean_text
from digest.parse.xml import local_name, read_xml

OPML_NAMESPACE = f"{PROJECT_URL}#opml"
_NS = "{" + OPML_NAMESPACE + "}"
OWN_FOLDER = "Own posts"  # the outline holding the site's own feeds
LOCAL_FILE = "a local file: URL, not imported (add a local feed to feeds.yaml by hand)"


class OpmlError(Exception):
    """An OPML file that cannot be imported; the message is one line naming the file."""


# --- export -------------------------------------------------------------------------------


def export_opml(
    settings: Settings, disabled: Mapping[str, str] | None = None, *, public: bool = False
) -> bytes:
    """The feed list as OPML 2.0: a folder per stream, in it a folder per section (in the
    stream's order, then the others as feeds name them), own feeds in a folder of their own.

    `disabled` maps a feed's URL to why digest stopped polling it (from the database).
    `public` (the published blogroll): file: feeds are named without their URL, which would
    show the server's paths and means nothing to a reader.
    Deterministic: the same config and database give the same bytes (render publishes it).
    """
    disabled = disabled or {}
    site = settings.site
    root = etree.Element("opml", version="2.0", nsmap={"digest": OPML_NAMESPACE})
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = f"{clean_text(site.title)}: the feeds we follow"
    if site.author:
        etree.SubElement(head, "ownerName").text = clean_text(site.author)
    etree.SubElement(head, "ownerId").text = site.base_url
    etree.SubElement(head, "docs").text = "http://opml.org/spec2.opml"
    body = etree.SubElement(root, "body")
    for name, stream in settings.streams.items():
        feeds = [feed for feed in settings.feeds if feed.stream == name]
        if not feeds:
            continue
        folder = _folder(body, stream.display_label(name))
        folder.set(_NS + "stream", name)
        for section, members in _by_section(feeds, stream):
            parent = folder if section is None else _folder(folder, section)
            for feed in members:
                _feed_outline(parent, feed, disabled.get(feed.url), public)
    own = [feed for feed in settings.feeds if feed.own]
    if own:
        folder = _folder(body, OWN_FOLDER)
        for feed in own:
            _feed_outline(folder, feed, disabled.get(feed.url), public).set(_NS + "own", "true")
    text: str = etree.tostring(root, encoding="unicode", pretty_print=True)
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + text).encode("utf-8")


def _by_section(
    feeds: Sequence[FeedSettings], stream: StreamSettings
) -> list[tuple[str | None, list[FeedSettings]]]:
    """Feeds grouped by the section they name (None first: no section, the default one)."""
    groups: dict[str | None, list[FeedSettings]] = {None: []}
    groups.update({section: [] for section in stream.sections})
    for feed in feeds:
        groups.setdefault(feed.section or None, []).append(feed)
    return [(section, members) for section, members in groups.items() if members]


def _folder(parent: Any, text: str) -> Any:
    return etree.SubElement(parent, "outline", text=clean_text(text), title=clean_text(text))


def _feed_outline(parent: Any, feed: FeedSettings, disabled: str | None, public: bool) -> Any:
    name = clean_text(feed.display_name)
    if public and feed.url.startswith("file:"):
        # Unnamed, it would be named by its URL: the file's name, not its path.
        name = clean_text(feed.name) or PurePosixPath(urlsplit(feed.url).path).name or "local"
        outline = etree.SubElement(parent, "outline", text=name, title=name)
        outline.set(_NS + "local", "true")
    else:
        url = _without_credentials(feed.url) if public else feed.url
        outline = etree.SubElement(parent, "outline", type="rss", text=name, title=name, xmlUrl=url)
    if disabled is not None:
        outline.set(_NS + "disabled", clean_text(disabled) or "disabled")
    return outline


def _without_credentials(url: str) -> str:
    """`url` without the user and password it may carry (a private feed's login)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpmlFeed:
    """One feed outline of an OPML file, with the folders it sits in (outermost first)."""

    url: str
    name: str
    folders: tuple[str, ...] = ()
    stream: str | None = None  # digest:stream of the nearest folder that has one
    own: bool = False  # digest:own


def read_opml(body: bytes, source: str) -> list[OpmlFeed]:
    """The feed outlines of an OPML document (1.0 or 2.0), in document order.

    Raises OpmlError naming `source` for anything that is not well-formed OPML: strict, no
    repairs (an import should not guess at a damaged file), entities refused.
    """
    try:
        document = read_xml(body, None)
    except ParseError as error:
        raise OpmlError(f"{source}: {error}") from None
    if document.error is not None or document.root is None:
        raise OpmlError(f"{source}: not well-formed XML: {document.error or 'no root element'}")
    root = document.root
    if local_name(root) != "opml":
        raise OpmlError(f"{source}: not an OPML file (its root element is <{local_name(root)}>)")
    bodies = [child for child in root if local_name(child) == "body"]
    if len(bodies) != 1:
        raise OpmlError(f"{source}: not an OPML file (it has no <body>)")
    feeds: list[OpmlFeed] = []
    _walk(bodies[0], (), None, feeds)
    return feeds


def _walk(element: Any, folders: tuple[str, ...], stream: str | None, out: list[OpmlFeed]) -> None:
    for child in element:
        if not isinstance(child.tag, str) or local_name(child) != "outline":
            continue
        attrs = {str(key).lower(): str(value) for key, value in child.attrib.items()}
        text = clean_text(attrs.get("title") or attrs.get("text") or "")
        url = attrs.get("xmlurl", "").strip()
        if url:
            out.append(
                OpmlFeed(
                    url=url,
                    name=text,
                    folders=folders,
                    stream=stream,
                    own=attrs.get(f"{_NS}own".lower()) == "true",
                )
            )
        else:
            _walk(child, (*folders, text), attrs.get(f"{_NS}stream".lower()) or stream, out)


# --- deciding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    url: str
    reason: str


@dataclass(frozen=True)
class ImportPlan:
    added: tuple[dict[str, Any], ...]  # feeds.yaml entries, in the OPML's order
    skipped: tuple[Skipped, ...]


def plan_import(
    feeds: Iterable[OpmlFeed],
    settings: Settings,
    *,
    base: Path,
    stream: str | None = None,
    section: str | None = None,
) -> ImportPlan:
    """Where each feed of an OPML goes, and which are skipped (already in the config, twice
    in the file, a local file: URL, not a feed URL). Raises OpmlError when a feed has no
    stream to go to.

    A feed's stream: `stream`, else its own mark (digest:own), else the nearest folder named
    like a stream (its digest:stream, name or label), else the config's only stream. Its
    section: `section`, else the nearest folder named like one of that stream's sections.
    """
    if stream is not None and stream not in settings.streams:
        raise OpmlError(f"--stream: unknown stream {stream!r} (known: {_known(settings)})")
    if section is not None:
        _check_section(section, stream, settings)
    configured = {_url_key(feed.url, base) for feed in settings.feeds}
    taken = set(configured)
    added: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    homeless: list[str] = []
    for feed in feeds:
        key = _url_key(feed.url, base)
        if key in taken:
            reason = "already in feeds.yaml" if key in configured else "listed twice in the OPML"
            skipped.append(Skipped(feed.url, reason))
            continue
        if urlsplit(feed.url).scheme.lower() == "file":
            # Someone else's list must not have the server read (and publish) its files.
            skipped.append(Skipped(feed.url, LOCAL_FILE))
            continue
        try:
            FeedSettings(url=feed.url, own=True)
        except ValueError as error:
            message = str(error).split("\n")[-1].strip().removeprefix("Value error, ")
            skipped.append(Skipped(feed.url, f"not a feed URL digest can poll: {message}"))
            continue
        taken.add(key)
        entry: dict[str, Any] = {"url": feed.url}
        if feed.name and feed.name != urlsplit(feed.url).netloc:
            entry["name"] = feed.name
        target = stream or (None if feed.own else _stream_of(feed, settings))
        if target is None and not feed.own:
            homeless.append(feed.url)
            continue
        if target is None:
            entry["own"] = True
        else:
            entry["stream"] = target
            chosen = section or _section_of(feed, settings.streams[target])
            if chosen is not None:
                entry["section"] = chosen
        added.append(entry)
    if homeless:
        raise OpmlError(
            f"{len(homeless)} feeds are in no stream's folder (first: {homeless[0]}): "
            f"choose one with --stream NAME (known: {_known(settings)})"
        )
    return ImportPlan(tuple(added), tuple(skipped))


def _check_section(section: str, stream: str | None, settings: Settings) -> None:
    streams = [stream] if stream is not None else list(settings.streams)
    for name in streams:
        known = (*settings.streams[name].sections, settings.streams[name].default_section)
        if section not in known:
            raise OpmlError(
                f"--section: {section!r} is not a section of stream {name} "
                f"(sections: {', '.join(known)})"
            )


def _stream_of(feed: OpmlFeed, settings: Settings) -> str | None:
    names = {name.casefold(): name for name in settings.streams}
    labels = {s.display_label(n).casefold(): n for n, s in settings.streams.items()}
    if feed.stream and feed.stream in settings.streams:
        return feed.stream
    for folder in reversed(feed.folders):
        found = names.get(folder.casefold()) or labels.get(folder.casefold())
        if found:
            return found
    return next(iter(settings.streams)) if len(settings.streams) == 1 else None


def _section_of(feed: OpmlFeed, stream: StreamSettings) -> str | None:
    sections = {name.casefold(): name for name in (*stream.sections, stream.default_section)}
    for folder in reversed(feed.folders):
        if folder.casefold() in sections:
            return sections[folder.casefold()]
    return None


def _url_key(url: str, base: Path) -> str:
    """A URL as compared for duplicates: scheme and host folded to lower case, a relative
    file: URL resolved against the config's folder (as the config itself does)."""
    parts = urlsplit(url.strip())
    if parts.scheme == "file":
        path = url.removeprefix("file://") if url.startswith("file://") else url[5:]
        return (base / path).resolve().as_uri()
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()))


def _known(settings: Settings) -> str:
    return ", ".join(settings.streams) or "none"


# --- writing ------------------------------------------------------------------------------


def import_opml(
    config: Config, opml: Path, *, stream: str | None = None, section: str | None = None
) -> ImportPlan:
    """Add the feeds of the OPML file to the config file (`digest import`); feeds.yaml is
    rewritten only when something is added, and left untouched by any error."""
    try:
        body = opml.read_bytes()
    except OSError as error:
        raise OpmlError(f"{opml}: cannot read: {error.strerror or error}") from None
    plan = plan_import(
        read_opml(body, str(opml)),
        config.settings,
        base=config.path.parent.resolve(),
        stream=stream,
        section=section,
    )
    if plan.added:
        add_feeds(config.path, plan.added)
    return plan


_MAPPING_INDENT = re.compile(
    r"^[^\s#-][^:\n]*:[ \t]*(?:#.*)?\n(?:[ \t]*(?:#.*)?\n)*( +)[^\s#-]", re.M
)


def add_feeds(path: Path, added: Sequence[Mapping[str, Any]]) -> None:
    """Append `added` to the feeds of the config at `path`, keeping everything else as it was
    written; written atomically, and only if the result is a valid config (ConfigError
    otherwise, with the file untouched)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString
    from ruamel.yaml.util import load_yaml_guess_indent

    path = path.resolve()  # a symlinked config: its target is edited, the link kept
    text = path.read_text(encoding="utf-8-sig")
    yaml = YAML()  # round trip: comments, order, quotes and flow style kept
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line the file had on one
    try:
        _data, sequence_indent, dash_offset = load_yaml_guess_indent(text)
        data = yaml.load(text)
    except YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
    mapping = _MAPPING_INDENT.search(text)
    yaml.indent(
        mapping=len(mapping[1]) if mapping else 2,
        sequence=sequence_indent or 2,
        offset=dash_offset or 0,
    )
    feeds = data.get("feeds")
    if not isinstance(feeds, CommentedSeq) or not feeds:
        feeds = data["feeds"] = CommentedSeq()
    last = feeds[-1] if feeds else None
    flow = isinstance(last, CommentedMap) and last.fa.flow_style()
    url_style = type(last.get("url")) if isinstance(last, CommentedMap) else str
    for entry in added:
        item = CommentedMap(entry)
        for key, value in entry.items():
            if isinstance(value, str) and not _plain_as_string(value):
                item[key] = DoubleQuotedScalarString(value)
        if isinstance(entry["url"], str) and issubclass(url_style, str):
            item["url"] = url_style(entry["url"])  # quoted as the file quotes its URLs
        if flow:
            item.fa.set_flow_style()
        feeds.append(item)
    out = io.StringIO()
    yaml.dump(data, out)
    data = out.getvalue().encode("utf-8")
    write_atomically(path, data, path.stat().st_mode & 0o777, check=_valid_config(path))


def _plain_as_string(value: str) -> bool:
    """Whether `value` written plain reads back as itself where feeds.yaml is read (YAML 1.1,
    where yes, on and off are booleans; ruamel writes YAML 1.2 and would leave them plain)."""
    import yaml

    try:
        return bool(yaml.safe_load(value) == value)
    except yaml.YAMLError:
        return False


def _valid_config(path: Path) -> Callable[[Path], None]:
    """A check that a candidate for the config at `path` validates, its problems named
    as lines of `path`."""

    def check(candidate: Path) -> None:
        try:
            load_config(candidate)
        except ConfigError as error:
            raise ConfigError(
                [problem.replace(str(candidate), str(path)) for problem in error.problems]
            ) from None

    return check
