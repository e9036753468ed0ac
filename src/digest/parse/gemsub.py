"""Gemini subscriptions: a gemtext page whose link lines start with a date is a feed.

`=> post.gmi 2025-03-27 - A Post` is an entry (gemini://geminiprotocol.net/docs/companion/
subscription.gmi); the page's first level-one heading is the feed's title.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

from digest.parse.entry import ParsedFeed, make_entry
from digest.parse.text import clean_text
from digest.parse.urls import absolute_url

_GEM_LINK = re.compile(r"=>[ \t]*(\S+)[ \t]+(\d{4}-\d{2}-\d{2})(?![0-9])(.*)")
# The separator between date and title must be followed by a space (or be a colon), so a title
# such as "-10 degrees" keeps its sign.
_GEM_SEPARATOR = re.compile(r"^[ \t]*(?:[-–—:|·~]+[ \t]+|:)?")


def is_gemtext(media_type: str, url: str) -> bool:
    """By its media type, else by its URL: a .gmi page, or a Gemini directory."""
    if media_type:
        return media_type == "text/gemini"
    parts = urlsplit(url)
    return parts.path.endswith(".gmi") or (
        parts.scheme.lower() == "gemini" and (parts.path == "" or parts.path.endswith("/"))
    )


def read_gemsub(body: bytes, *, url: str, now: datetime) -> ParsedFeed:
    title: str | None = None
    entries = []
    preformatted = False
    for line in body.decode("utf-8", errors="replace").splitlines():
        if line.startswith("```"):
            preformatted = not preformatted
            continue
        if preformatted:
            continue
        if title is None and line.startswith("#") and not line.startswith("##"):
            title = clean_text(line[1:]) or None
        match = _GEM_LINK.fullmatch(line)
        if not match:
            continue
        try:
            day = date.fromisoformat(match.group(2))
        except ValueError:
            continue
        link = absolute_url(match.group(1), url)
        if link is None:
            continue  # a gemsub entry is its link: without a safe one there is nothing to follow
        entry = make_entry(
            entry_id=None,
            title=clean_text(_GEM_SEPARATOR.sub("", match.group(3), count=1)),
            link=link,
            summary="",
            author=None,
            published=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
            updated=None,
            now=now,
        )
        if entry is not None:
            entries.append(entry)
    return ParsedFeed(title=title, link=absolute_url(url, url), entries=tuple(entries))
