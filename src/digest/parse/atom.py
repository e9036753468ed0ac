"""Atom 1.0 (RFC 4287), and the Atom 0.3 that some old generators still write.

An entry is read from its own Atom elements: `id`, `title`, the `alternate` link (the one of
an HTML type when there are several; any type when there is no other, so an entry that links
only to a PDF keeps that link), `summary` (else `content`), `author/name`, `published` and
`updated`. An `<author>` may hold elements of other vocabularies (`<title>` among them): only
its Atom `<name>` is read, and nothing inside an author stands in for the entry's title.

Atom says whether a text is plain (`type="text"`), escaped HTML (`html`) or inline XHTML
(`xhtml`); each is read as what it says it is. Every link and id is resolved against the
xml:base in force where it appears.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from digest.parse.dates import parse_date
from digest.parse.entry import ParsedEntry, ParsedFeed, make_entry
from digest.parse.media import media_blurb
from digest.parse.text import (
    BLURB_CHARS,
    BLURB_WORDS,
    clean_text,
    html_blurb,
    html_to_text,
    shorten,
)
from digest.parse.urls import absolute_url, resolve
from digest.parse.xml import base_of, first_children, inner_markup, inner_text

ATOM_NAMESPACES = frozenset({"http://www.w3.org/2005/Atom", "http://purl.org/atom/ns#"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "html", "xhtml"})


class _Tags:
    """Atom's element names in the namespace of its version."""

    def __init__(self, ns: str) -> None:
        prefix = f"{{{ns}}}"
        self.entry = prefix + "entry"
        self.id = prefix + "id"
        self.title = prefix + "title"
        self.link = prefix + "link"
        self.summary = prefix + "summary"
        self.content = prefix + "content"
        self.author = prefix + "author"
        self.name = prefix + "name"
        # Atom 0.3 names the two dates issued and modified (created is rarely there alone).
        self.published = (prefix + "published", prefix + "issued", prefix + "created")
        self.updated = (prefix + "updated", prefix + "modified")


def read_atom(root: Any, ns: str, *, base: str, now: datetime) -> ParsedFeed:
    """A `<feed>` document in one of the two Atom namespaces."""
    tags = _Tags(ns)
    base = base_of(root, base)
    fields = first_children(root)
    feed_author = _author(fields, tags)
    entries = []
    for element in root.iterchildren(tags.entry):
        entry = _read_entry(element, tags, base=base, feed_author=feed_author, now=now)
        if entry is not None:
            entries.append(entry)
    title = fields.get(tags.title)
    return ParsedFeed(
        title=(_text(title) if title is not None else "") or None,
        link=_alternate(root, tags, base),
        entries=tuple(entries),
    )


def _read_entry(
    element: Any, tags: _Tags, *, base: str, feed_author: str | None, now: datetime
) -> ParsedEntry | None:
    base = base_of(element, base)
    fields = first_children(element)
    id_element = fields.get(tags.id)
    entry_id = inner_text(id_element).strip() if id_element is not None else ""
    if entry_id:
        entry_id = resolve(entry_id, base_of(id_element, base))
    title = fields.get(tags.title)
    return make_entry(
        entry_id=entry_id or None,
        title=_text(title) if title is not None else "",
        link=_alternate(element, tags, base),
        summary=_summary(fields, tags) or media_blurb(element),
        author=_author(fields, tags) or feed_author,
        published=_date(fields, tags.published),
        updated=_date(fields, tags.updated),
        now=now,
    )


def _alternate(element: Any, tags: _Tags, base: str) -> str | None:
    """The link to the page itself: the first alternate of an HTML type, else of any type."""
    fallback = None
    for link in element.iterchildren(tags.link):
        if link.get("rel", "alternate").strip().lower() != "alternate":
            continue
        href = absolute_url((link.get("href") or "").strip(), base_of(link, base))
        if href is None:
            continue
        kind = (link.get("type") or "text/html").strip().lower()
        if kind in _HTML_TYPES:
            return href
        fallback = fallback or href
    return fallback


def _construct(element: Any) -> tuple[str, str] | None:
    """A text construct as ('text', plain text) or ('html', markup); None when it holds
    nothing to read here (binary content, or content out of line in `src`)."""
    if element.get("src"):
        return None
    kind = (element.get("type") or "text").strip().lower()
    mode = element.get("mode")  # Atom 0.3: escaped (the default), xml or base64
    if mode == "base64":
        try:
            value = base64.b64decode(inner_text(element)).decode("utf-8", "replace")
        except ValueError:
            return None
    elif (
        mode == "xml"
        or kind in ("xhtml", "application/xhtml+xml")
        or kind.endswith(("+xml", "/xml"))
    ):
        return "html", inner_markup(element)
    else:
        value = inner_text(element)
    if kind in ("html", "text/html"):
        return "html", value
    if kind in ("text", "text/plain") or kind.startswith("text/"):
        return "text", value
    return None


def _text(element: Any) -> str:
    construct = _construct(element)
    if construct is None:
        return ""
    kind, value = construct
    return clean_text(value) if kind == "text" else html_to_text(value)


def _summary(fields: dict[str, Any], tags: _Tags) -> str:
    for tag in (tags.summary, tags.content):
        element = fields.get(tag)
        construct = None if element is None else _construct(element)
        if construct is None:
            continue
        kind, value = construct
        if kind == "text":
            summary = shorten(clean_text(value), BLURB_WORDS, BLURB_CHARS)
        else:
            summary = html_blurb(value)
        if summary:
            return summary
    return ""


def _author(fields: dict[str, Any], tags: _Tags) -> str | None:
    author = fields.get(tags.author)
    if author is None:
        return None
    name = next(author.iterchildren(tags.name), None)
    return (clean_text(inner_text(name)) or None) if name is not None else None


def _date(fields: dict[str, Any], names: tuple[str, ...]) -> datetime | None:
    for name in names:
        element = fields.get(name)
        if element is not None:
            return parse_date(inner_text(element))
    return None
