"""feedparser, through its public parse(), for the XML documents our format readers cannot.

That is a document that is not well-formed and that lxml's recover mode cannot make a feed
of, or one whose root element is no RSS, RDF or Atom: feedparser's loose parser reads some of
those. Its results are read from their plain fields only: feedparser lets `media:title` and
`<author><title>` overwrite an item's `title_detail` (kurtmckee/feedparser#53), so for the
rare broken feed that comes here, titles are as good as feedparser makes them.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import Any

from digest.parse.entry import ParsedEntry, ParsedFeed, make_entry
from digest.parse.text import clean_text, html_blurb, html_to_text
from digest.parse.urls import absolute_url


def read_with_feedparser(text: str, *, base: str, now: datetime) -> ParsedFeed | None:
    """The feed feedparser finds in text; None when it finds neither a format nor entries."""
    # Imported here, for the rare broken feed: every digest command imports the parse stage
    # (the store and the templates use its text and URL rules), and feedparser costs each 40 ms.
    import feedparser

    parsed = feedparser.parse(
        io.BytesIO(text.encode("utf-8")),
        # Our decoding stands: the text is handed over as UTF-8 and said to be so.
        response_headers={
            "content-type": "application/xml; charset=utf-8",
            "content-location": base,
        },
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    if not parsed.entries and not parsed.get("version"):
        return None
    feed_author = clean_text(str(parsed.feed.get("author") or "")) or None
    entries = []
    for item in parsed.entries:
        entry = _read_item(item, base=base, feed_author=feed_author, now=now)
        if entry is not None:
            entries.append(entry)
    return ParsedFeed(
        title=html_to_text(str(parsed.feed.get("title") or "")) or None,
        link=absolute_url(parsed.feed.get("link"), base),
        entries=tuple(entries),
    )


def _read_item(
    item: Any, *, base: str, feed_author: str | None, now: datetime
) -> ParsedEntry | None:
    contents = [str(c.get("value") or "") for c in item.get("content") or []]
    summary = html_blurb(str(item.get("summary") or "")) or next(
        (blurb for blurb in map(html_blurb, contents) if blurb), ""
    )
    return make_entry(
        entry_id=item.get("id"),
        title=html_to_text(str(item.get("title") or "")),
        link=absolute_url(item.get("link"), base),
        summary=summary,
        author=clean_text(str(item.get("author") or "")) or feed_author,
        published=_date(dict.get(item, "published_parsed")),
        updated=_date(dict.get(item, "updated_parsed")),
        now=now,
    )


def _date(value: time.struct_time | None) -> datetime | None:
    """feedparser's UTC time tuple as a datetime (dict.get: its own get() maps a missing
    updated to published, with a warning)."""
    if value is None:
        return None
    try:
        return datetime(*value[:6], tzinfo=UTC)
    except ValueError:  # year 0
        return None
