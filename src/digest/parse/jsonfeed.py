"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from digest.parse.dates import parse_date
from digest.parse.entry import ParsedEntry, ParsedFeed, ParseError, make_entry
from digest.parse.text import BLURB_CHARS, BLURB_WORDS, clean_text, html_blurb, shorten
from digest.parse.urls import absolute_url


def read_json_feed(body: bytes, *, url: str, now: datetime) -> ParsedFeed:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ParseError(f"not a feed: invalid JSON: {exc}") from exc
    version = document.get("version") if isinstance(document, dict) else None
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(version, str) or "jsonfeed.org/version/" not in version:
        raise ParseError("not a feed: JSON without a JSON Feed version")
    if not isinstance(items, list):
        raise ParseError("not a feed: JSON Feed without an items list")
    base = url
    for name in ("feed_url", "home_page_url"):
        if candidate := absolute_url(_string(document, name), url):
            base = candidate
            break
    feed_author = _author(document)
    entries = []
    for item in items:
        if isinstance(item, dict):
            entry = _read_item(item, base=base, feed_author=feed_author, now=now)
            if entry is not None:
                entries.append(entry)
    return ParsedFeed(
        title=clean_text(_string(document, "title") or "") or None,
        link=absolute_url(_string(document, "home_page_url"), url),
        entries=tuple(entries),
    )


def _read_item(
    item: Mapping[str, Any], *, base: str, feed_author: str | None, now: datetime
) -> ParsedEntry | None:
    plain = clean_text(_string(item, "summary") or "") or clean_text(
        _string(item, "content_text") or ""
    )
    if plain:
        summary = shorten(plain, BLURB_WORDS, BLURB_CHARS)
    else:
        summary = html_blurb(_string(item, "content_html") or "")
    link = absolute_url(_string(item, "url"), base) or absolute_url(
        _string(item, "external_url"), base
    )
    return make_entry(
        entry_id=_string(item, "id"),
        title=clean_text(_string(item, "title") or ""),
        link=link,
        summary=summary,
        author=_author(item) or feed_author,
        published=parse_date(_string(item, "date_published")),
        updated=parse_date(_string(item, "date_modified")),
        now=now,
    )


def _string(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and name == "id":
        value = str(value)  # ids should be strings, but numbers are common
    if not isinstance(value, str):
        return None
    # Lone surrogates (legal in JSON escapes) cannot be encoded: make them U+FFFD.
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _author(obj: Mapping[str, Any]) -> str | None:
    authors = obj.get("authors")  # 1.1; 1.0 had a single author
    candidates = authors if isinstance(authors, list) else [obj.get("author")]
    for author in candidates:
        if isinstance(author, dict):
            name = clean_text(_string(author, "name") or "")
            if name:
                return name
    return None
