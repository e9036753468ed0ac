"""Parse stage: bytes of a feed -> normalized entries.

Plain-text titles and blurbs, sanitized HTML, absolute safe links, aware UTC times.
Knows nothing about the network or the database, so it runs in a worker process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


class ParseError(Exception):
    """The body is not a feed we can read (or is refused, e.g. it declares entities)."""


@dataclass(frozen=True)
class ParsedEntry:
    key: str  # identity within the feed: id/guid, else link, else hash of title and date
    title: str
    link: str | None
    summary: str  # plain-text blurb, about 60 words
    content_html: str | None  # sanitized with nh3
    author: str | None
    published: datetime | None  # aware UTC, never in the future; None when the feed gives none
    content_hash: str  # over title, link, summary, content: no volatile fields


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    entries: tuple[ParsedEntry, ...]


def parse_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> ParsedFeed:
    raise NotImplementedError
