"""What the parse stage hands on, and the rules every format shares: identity, change, limits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from digest.parse.text import clean_text, shorten


class ParseError(Exception):
    """The body is not a feed we can read (or is refused, e.g. it declares entities)."""


@dataclass(frozen=True)
class ParsedEntry:
    key: str  # identity within the feed: id/guid, else link, else hash of title and date
    title: str
    link: str | None
    summary: str  # plain-text blurb, about 60 words
    author: str | None
    published: datetime | None  # aware UTC, never in the future; None when the feed gives none
    content_hash: str  # over what is stored and shown: no volatile fields


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    entries: tuple[ParsedEntry, ...]


TITLE_FALLBACK_WORDS = 12
TITLE_CHARS = 300
AUTHOR_CHARS = 200
# Longer identities are hashed: keys must fit the store's key column (600) and its unique
# index on every engine. The store stores keys as they are made here.
MAX_KEY_CHARS = 500


def _digest(*parts: str | None) -> str:
    """The hash in keys of entries without a usable id: stored, so it must never change."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _content_hash(*parts: str | None) -> str:
    """A hash that changes when any part does: each part is length-prefixed (or marked
    missing), so no two lists of parts hash alike."""
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            digest.update(b"-")
        else:
            data = part.encode()
            digest.update(b"%d:" % len(data))
            digest.update(data)
    return digest.hexdigest()


def make_entry(
    *,
    entry_id: str | None,
    title: str,
    link: str | None,
    summary: str,
    author: str | None,
    published: datetime | None,
    updated: datetime | None,
    now: datetime,
) -> ParsedEntry | None:
    """One normalized entry, or None when it has nothing a reader could see or follow.

    title and summary are plain text already; summary is already cut to a blurb, so its first
    words are the text's first words and can stand in for a missing title.
    """
    title = shorten(title, None, TITLE_CHARS) or shorten(summary, TITLE_FALLBACK_WORDS, TITLE_CHARS)
    title = title or link or ""
    if not title:
        return None
    key = entry_key(entry_id, link, title, published)
    when = published or updated
    author = shorten(author, None, AUTHOR_CHARS) if author else None
    return ParsedEntry(
        key=key,
        title=title,
        link=link,
        summary=summary,
        author=author,
        published=min(when, now) if when else None,
        content_hash=_content_hash(title, link, summary, author),
    )


def entry_key(
    entry_id: str | None, link: str | None, title: str, published: datetime | None
) -> str:
    """An entry's identity within its feed: its id, else its link, else a hash of its title
    and date; at most MAX_KEY_CHARS long. Stored keys decide what is new, so for any input
    this must give the same key forever (tests/test_identity.py pins examples)."""
    identity = clean_text(entry_id or "") or link
    if identity:
        return identity if len(identity) <= MAX_KEY_CHARS else "sha256:" + _digest(identity)
    # Only the published date, as given: an updated date or a clamped one would change from
    # run to run and turn one entry into many.
    return "sha256:" + _digest(title, published.isoformat() if published else None)
