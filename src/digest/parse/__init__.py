"""Parse stage: bytes of a feed -> normalized entries.

Plain-text titles and blurbs, absolute safe links, aware UTC times. Knows nothing about the
network or the database, so it runs in a worker process.

One module per format (rss, rdf, atom, jsonfeed, gemsub), each reading the format's own
elements; text.py, urls.py and dates.py hold the rules they share, xml.py the one hardened
read of an XML body, entry.py what every entry is made into. This module picks the format by
media type and by the body itself.

Why our own readers on lxml, and not feedparser or a fast library for everything (measured
on the 84 real feeds in ../shared/realfeeds, `python -m bench.parse`): feedparser took about
10 ms per feed, lets `media:title` and `<author><title>` overwrite an item's title
(kurtmckee/feedparser#53) and resolves relative links only with a second pass; fastfeedparser
was fast but gave mojibake on two feeds, unresolved relative links and no entries for one RDF
feed; feedparser-rs repeats feedparser's author-title mistake. Reading each format for what
it is with libxml2 costs a fraction of a millisecond per feed, and the rules that matter
(which element is the title, how a body is decoded) are ours and tested. feedparser stays,
through its public parse() only, for the broken documents lxml cannot make a feed of.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin

from digest import __version__
from digest.parse.atom import ATOM_NAMESPACES, read_atom
from digest.parse.dates import as_utc
from digest.parse.entry import ParsedEntry, ParsedFeed, ParseError
from digest.parse.fallback import read_with_feedparser
from digest.parse.gemsub import is_gemtext, read_gemsub
from digest.parse.jsonfeed import read_json_feed
from digest.parse.rdf import RDF, read_rdf
from digest.parse.rss import read_rss
from digest.parse.urls import absolute_url
from digest.parse.xml import local_name, namespace, read_xml

__all__ = [
    "ParseError",
    "ParseFailure",
    "ParsedEntry",
    "ParsedFeed",
    "parse_feed",
    "parse_many",
    "parse_or_error",
    "prepare_worker",
]

JSON_TYPES = frozenset({"application/feed+json", "application/json"})
_HTML_START = re.compile(rb"\s*(<!doctype html|<html)", re.IGNORECASE)


def parse_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> ParsedFeed:
    """Normalize one fetched body: RSS, RDF, Atom, JSON Feed or a gemsub page.

    Relative links resolve against Content-Location, else the URL it was fetched from. Raises
    ParseError for a body that is not a feed, or declares entities.
    """
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    now = datetime.now(UTC) if now is None else as_utc(now)
    media_type, charset = _media_type(lowered)
    if not body.strip():
        raise ParseError("not a feed: the body is empty")
    if is_gemtext(media_type, url):
        return read_gemsub(body, url=url, now=now)
    start = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start == b"{" or (media_type in JSON_TYPES and start != b"<"):
        return read_json_feed(body, url=url, now=now)
    base = url
    if "content-location" in lowered:
        # An unusable one (e.g. "http://[::1"), or one no link could be resolved against
        # (javascript:, data:), is ignored rather than failing the feed or its links.
        with contextlib.suppress(ValueError):
            base = absolute_url(urljoin(url, lowered["content-location"].strip()), url) or url
    return _parse_xml(body, charset, media_type=media_type, base=base, now=now)


def _parse_xml(
    body: bytes, charset: str | None, *, media_type: str, base: str, now: datetime
) -> ParsedFeed:
    document = read_xml(body, charset)
    root = document.root
    if root is not None:
        parsed = _read_root(root, base=base, now=now)
        # A document that is not well-formed is trusted only as far as recovery found entries.
        if parsed is not None and (document.error is None or parsed.entries):
            return parsed
    looks_html = media_type in ("text/html", "application/xhtml+xml") or bool(
        _HTML_START.match(body[:200]) or (root is not None and local_name(root).lower() == "html")
    )
    if not looks_html:
        parsed = read_with_feedparser(document.text, base=base, now=now)
        if parsed is not None:
            return parsed
    detail = document.error or "no RSS, RDF or Atom root element"
    raise ParseError(f"not a feed{' (an HTML page)' if looks_html else ''}: {detail}")


def _read_root(root: object, *, base: str, now: datetime) -> ParsedFeed | None:
    """The feed by its root element, or None when no reader of ours knows the root."""
    name, ns = local_name(root), namespace(root)
    if name == "rss":
        return read_rss(root, base=base, now=now)
    if name == "RDF" and ns == RDF:
        return read_rdf(root, base=base, now=now)
    if name == "feed" and ns in ATOM_NAMESPACES:
        assert ns is not None
        return read_atom(root, ns, base=base, now=now)
    return None


def _media_type(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """(type/subtype, charset) of the content-type header."""
    fields = headers.get("content-type", "").split(";")
    charset = next(
        (v.split("=", 1)[1].strip(" \"'") for v in fields[1:] if v.strip().startswith("charset=")),
        None,
    )
    return fields[0].strip().lower(), charset


# Which parser judged a body that did not parse (feeds.body_error_by): a feed keeps that
# verdict, and skips the same body's fetch and parse, only while the parser is the same, so
# that an upgrade that reads more feeds reads the bodies an older one refused. The number
# moves when the parse stage comes to read bodies differently between releases.
PARSER_REVISION = f"{__version__}/1"


@dataclass(frozen=True)
class ParseFailure:
    """Why a fetched body gave no feed, as a value: it crosses from a parser process."""

    reason: str
    # The parser judged the bytes, and the same bytes fail again; False when the parser was
    # stopped at its deadline or died (digest.parse.pool), which another try may not meet.
    lasting: bool = True


def parse_or_error(body: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed | ParseFailure:
    """parse_feed for a worker process: a failure comes back as a value, with its reason.

    It lives here, not in digest.poll, so that a parser worker unpickling it imports only
    the parse stage (lxml, nh3, feedparser), not the database and HTTP stacks.
    """
    try:
        return parse_feed(body, url=url, headers=headers)
    except ParseError as error:
        return ParseFailure(str(error))  # it says what it is: "not a feed: …", "refused: …"
    except Exception as error:  # a parser bug on one feed must not stop the others
        return ParseFailure(f"parse failed: {type(error).__name__}: {error}")


def parse_many(
    jobs: Sequence[tuple[bytes, str, Mapping[str, str]]],
) -> list[ParsedFeed | ParseFailure]:
    """parse_or_error for several feeds in one trip to a worker process (digest.parse.pool)."""
    return [parse_or_error(body, url, headers) for body, url, headers in jobs]


def prepare_worker() -> None:
    """Let SIGTERM end a parser process at once, even inside nh3's or libxml2's native code.

    pebble's own handler runs only when Python code runs again, so a worker stopped at its
    deadline in a long nh3 call held its slot three more seconds until pebble's SIGKILL.
    A parser holds nothing that needs a clean exit.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
