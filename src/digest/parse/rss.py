"""RSS 0.91-2.0 (and, through rdf.py, the items of RSS 0.90/1.0).

An item is read from its own elements only: `title` (else `dc:title`), `link` (else an Atom
alternate link, else a permalink `guid`), `guid`, `description` (else `dc:description`, else
`content:encoded`, else an XHTML `xhtml:body`), `author` (else
`dc:creator`, `itunes:author`), `pubDate` (else `dcterms:issued`) and `dc:date`. Extension
elements that look alike (`media:title`, `media:description`, `itunes:summary`, ...) never
stand in for them: a photo caption is not a headline.

Text in RSS carries no type. Titles and descriptions are read as HTML, since escaped markup
and entities in them are common and a stray '<' in a plain title is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from digest.parse.dates import parse_date
from digest.parse.entry import ParsedEntry, ParsedFeed, make_entry
from digest.parse.media import media_blurb
from digest.parse.text import clean_text, html_blurb, html_to_text
from digest.parse.urls import absolute_url, resolve
from digest.parse.xml import (
    base_of,
    first_children,
    inner_markup,
    inner_text,
    local_name,
    namespace,
)

ATOM = "http://www.w3.org/2005/Atom"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
DC = "http://purl.org/dc/elements/1.1/"
DCTERMS = "http://purl.org/dc/terms/"
ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
XHTML = "http://www.w3.org/1999/xhtml"

# Elements read from an item or channel, beside the format's own (named in its namespace).
_CONTENT_ENCODED = f"{{{CONTENT}}}encoded"
_ATOM_LINK = f"{{{ATOM}}}link"
_DC_CREATOR = f"{{{DC}}}creator"
_DC_DATE = f"{{{DC}}}date"
_DC_TITLE = f"{{{DC}}}title"
_DC_DESCRIPTION = f"{{{DC}}}description"
_XHTML_BODY = f"{{{XHTML}}}body"
_DCTERMS_ISSUED = f"{{{DCTERMS}}}issued"
_DCTERMS_MODIFIED = f"{{{DCTERMS}}}modified"
_ITUNES_AUTHOR = f"{{{ITUNES}}}author"
# Apple's own documentation and feeds long wrote the namespace with "DTDs": both are iTunes'.
_ITUNES_AUTHOR_DTDS = "{http://www.itunes.com/DTDs/Podcast-1.0.dtd}author"


def read_rss(root: Any, *, base: str, now: datetime) -> ParsedFeed:
    """An `<rss>` document: its channel, and the items in it (or, in old feeds, beside it)."""
    ns = namespace(root)
    channel = next((child for child in root if local_name(child) == "channel"), None)
    holders = [root] if channel is None else [channel, root]
    base = base_of(root, base)
    channel_base = base if channel is None else base_of(channel, base)
    items = (child for holder in holders for child in holder if local_name(child) == "item")
    return read_channel(channel, items, ns=ns, base=channel_base, now=now)


def read_channel(
    channel: Any | None, items: Iterable[Any], *, ns: str | None, base: str, now: datetime
) -> ParsedFeed:
    """The feed from its channel element, and its items: RSS and RDF alike."""
    tags = _Tags(ns)
    fields = first_children(channel) if channel is not None else {}
    feed_author = _author(fields, tags)
    entries = []
    for item in items:
        entry = _read_item(item, tags, base=base, feed_author=feed_author, now=now)
        if entry is not None:
            entries.append(entry)
    title = _title(fields, tags)
    return ParsedFeed(
        title=html_to_text(inner_text(title)) or None if title is not None else None,
        link=_link(fields, channel, tags, base) if channel is not None else None,
        entries=tuple(entries),
    )


class _Tags:
    """An RSS element's name in the namespace its feed uses (none, in RSS 2.0)."""

    def __init__(self, ns: str | None) -> None:
        prefix = f"{{{ns}}}" if ns else ""
        self.title = prefix + "title"
        self.link = prefix + "link"
        self.description = prefix + "description"
        self.guid = prefix + "guid"
        self.author = prefix + "author"
        self.pub_date = prefix + "pubDate"
        self.managing_editor = prefix + "managingEditor"


def _read_item(
    item: Any, tags: _Tags, *, base: str, feed_author: str | None, now: datetime
) -> ParsedEntry | None:
    base = base_of(item, base)
    fields = first_children(item)
    title = _title(fields, tags)
    guid = fields.get(tags.guid)
    entry_id = None
    if guid is not None:
        entry_id = inner_text(guid).strip()
        permalink = guid.get("isPermaLink", guid.get("ispermalink", "true")) == "true"
        if entry_id and permalink:
            entry_id = resolve(entry_id, base_of(guid, base))
    link = _link(fields, item, tags, base)
    if link is None and guid is not None and entry_id and permalink:
        link = absolute_url(entry_id, base)
    return make_entry(
        entry_id=entry_id,
        title=html_to_text(inner_text(title)) if title is not None else "",
        link=link,
        summary=_summary(item, fields, tags),
        author=_author(fields, tags) or feed_author,
        published=parse_date(_text(fields, tags.pub_date) or _text(fields, _DCTERMS_ISSUED)),
        updated=parse_date(_text(fields, _DC_DATE) or _text(fields, _DCTERMS_MODIFIED)),
        now=now,
    )


def _title(fields: dict[str, Any], tags: _Tags) -> Any | None:
    """The title element of an item or channel: its own, else Dublin Core's."""
    title = fields.get(tags.title)
    return fields.get(_DC_TITLE) if title is None else title


def _text(fields: dict[str, Any], tag: str) -> str | None:
    element = fields.get(tag)
    return None if element is None else inner_text(element)


def _link(fields: dict[str, Any], parent: Any, tags: _Tags, base: str) -> str | None:
    link = fields.get(tags.link)
    if link is not None:
        href = inner_text(link).strip()
        if href:
            return absolute_url(href, base_of(link, base))
    # No <link>: an Atom alternate link, which some generators write instead.
    for child in parent.iterchildren(_ATOM_LINK):
        if child.get("rel", "alternate") == "alternate" and child.get("href"):
            return absolute_url(child.get("href").strip(), base_of(child, base))
    return None


def _summary(item: Any, fields: dict[str, Any], tags: _Tags) -> str:
    for tag in (tags.description, _DC_DESCRIPTION, _CONTENT_ENCODED, _XHTML_BODY):
        element = fields.get(tag)
        if element is not None:
            summary = html_blurb(inner_markup(element))
            if summary:
                return summary
    return media_blurb(item)


def _author(fields: dict[str, Any], tags: _Tags) -> str | None:
    """The item's (or channel's) author by name: an address is cut down to the name in it."""
    for tag in (
        tags.author,
        tags.managing_editor,
        _DC_CREATOR,
        _ITUNES_AUTHOR,
        _ITUNES_AUTHOR_DTDS,
    ):
        element = fields.get(tag)
        if element is None:
            continue
        if len(element):  # <author><name>…</name><title>job title</title></author>
            element = next((c for c in element if local_name(c) == "name"), None)
            if element is None:
                continue
        name = _name_of_address(clean_text(inner_text(element)))
        if name:
            return name
    return None


_ADDRESS_WITH_NAME = re.compile(r"(\S+@\S+)\s*\((.+)\)|(.+?)\s*<(\S+@\S+)>")


def _name_of_address(value: str) -> str:
    """The name in 'jo@example.org (Jo Bloggs)' or 'Jo Bloggs <jo@example.org>', else all."""
    match = _ADDRESS_WITH_NAME.fullmatch(value)
    if match is None:
        return value
    return (match[2] or match[3]).strip() or value
