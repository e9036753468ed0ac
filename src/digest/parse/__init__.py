"""Parse stage: bytes of a feed -> normalized entries.

Plain-text titles and blurbs, sanitized HTML, absolute safe links, aware UTC times.
Knows nothing about the network or the database, so it runs in a worker process.
"""

from __future__ import annotations

import codecs
import contextlib
import email.utils
import functools
import hashlib
import html
import io
import json
import re
import signal
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import nh3
from feedparser.datetimes import _parse_date
from feedparser.encodings import convert_to_utf8
from feedparser.html import _cp1252
from feedparser.urls import _urljoin, make_safe_absolute_uri


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


SAFE_SCHEMES = frozenset({"http", "https", "gemini"})
BLURB_WORDS = 60
BLURB_CHARS = 500  # text without spaces (CJK) would otherwise be one endless "word"
TITLE_FALLBACK_WORDS = 12
TITLE_CHARS = 300
AUTHOR_CHARS = 200
MAX_KEY_CHARS = 500  # the store's key column holds 600; longer identities are hashed

JSON_TYPES = frozenset({"application/feed+json", "application/json"})

# urljoin resolves relative references only for schemes it knows; gemini URLs resolve like http.
for _known in (urllib.parse.uses_relative, urllib.parse.uses_netloc):
    if "gemini" not in _known:
        _known.append("gemini")


# --- plain text -------------------------------------------------------------------------------

_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# C0/C1 controls and lone surrogates (JSON escapes can carry them; they cannot be encoded).
_CONTROLS = (*range(0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000))
# Plain text loses the controls, the bidi controls and the invisible byte-order mark; the
# spacing controls (tab, newline, ...) are left for str.split to fold.
_DROP = {cp: None for cp in _CONTROLS if not chr(cp).isspace()} | {
    ord(c): None for c in _BIDI_CONTROLS + "\ufeff"
}
# In HTML tab, newline and carriage return are ordinary; other spacing controls become spaces.
# Bidi controls stay: right-to-left prose needs them, and a block of HTML bounds their reach.
_HTML_CONTROLS = {
    cp: " " if chr(cp).isspace() else None for cp in _CONTROLS if chr(cp) not in "\t\n\r"
}


class _Translation:
    """str.translate(table), without its cost on text that is not ASCII.

    There str.translate looks every character up in the dict, 60 ns each: more than nh3 takes
    to sanitize the same description. ASCII text goes through bytes.translate instead (three
    times as fast as str.translate's own ASCII path), any other text through a regex that stops
    only at characters in the table. Proven equal to str.translate in tests/test_parse.py.
    """

    def __init__(self, table: Mapping[int, str | None]) -> None:
        self.table = table
        # An ASCII character may become one ASCII character or none: maketrans refuses more.
        ascii_map = {cp: new for cp, new in table.items() if cp < 0x80}
        mapped = {cp: new for cp, new in ascii_map.items() if new is not None}
        self.ascii_table = bytes.maketrans(bytes(mapped), "".join(mapped.values()).encode())
        self.ascii_delete = bytes(cp for cp, new in ascii_map.items() if new is None)
        self.pattern = re.compile("[" + "".join(re.escape(chr(cp)) for cp in table) + "]")

    def __call__(self, text: str) -> str:
        if text.isascii():
            return text.encode().translate(self.ascii_table, self.ascii_delete).decode()
        return self.pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        return self.table[ord(match[0])] or ""


_drop = _Translation(_DROP)
_drop_html_controls = _Translation(_HTML_CONTROLS)
_ASCII_SPACES = "".join(c for c in map(chr, range(0x80)) if c.isspace())
_ASCII_SPACES_TO_SPACE = bytes.maketrans(_ASCII_SPACES.encode(), b" " * len(_ASCII_SPACES))


def clean_text(text: str) -> str:
    """Text safe for one line of any output: no control or bidi characters, single spaces."""
    if not text.isascii():
        return " ".join(_drop(text).split())
    # One bytes.translate drops the controls and makes every space a ' ': split and join are
    # then needed only where spaces run together, which they rarely do once stripped.
    text = text.encode().translate(_ASCII_SPACES_TO_SPACE, _drop.ascii_delete).decode()
    text = text.strip(" ")
    return text if "  " not in text else " ".join(text.split())


# Tags that separate words: kept by the first pass only so they can become spaces.
_BREAK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul",
}  # fmt: skip
_TEXT_CLEANER = nh3.Cleaner(
    tags=_BREAK_TAGS,
    attributes={},
    clean_content_tags={"script", "style"},
    link_rel=None,
)
_TAG = re.compile(r"<[^>]*>")


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment, each entity decoded exactly once."""
    if "<" not in fragment and "&" not in fragment:
        return clean_text(fragment)  # no markup and no entity: what nh3 would give, faster
    # nh3 parses like a browser and escapes all text it outputs, so every '<' left is one of the
    # bare break tags, and the single unescape decodes what the author wrote, never twice.
    kept = _TEXT_CLEANER.clean(_drop_html_controls(fragment))
    return clean_text(html.unescape(_TAG.sub(" ", kept)))


# A tag as html5ever serializes it: attribute values are always double-quoted, with '"' escaped.
_SERIALIZED_TAG = re.compile(r'<(/?)([A-Za-z][^\s/>]*)(?:[^>"]|"[^"]*")*>')


def _tag_as_text(tag: re.Match[str]) -> str:
    return " " if tag.group(2).lower() in _BREAK_TAGS else ""


def text_of_clean_html(cleaned: str | None) -> str:
    """html_to_text of the fragment clean_html turned into `cleaned`, without parsing it again.

    clean_html's output is html5ever's serialization of the same parse the text cleaner
    makes, keeping every break tag and more: so break tags become spaces, the others vanish,
    and each entity is decoded once. Proven equal to html_to_text in tests/test_parse.py.
    """
    if not cleaned:
        return ""
    return clean_text(html.unescape(_SERIALIZED_TAG.sub(_tag_as_text, cleaned)))


def _shorten(text: str, words: int | None, chars: int) -> str:
    """The first words of text (at most chars long), ending with '…' when cut."""
    cut = text
    if words is not None and text.count(" ") >= words:  # more than `words` words
        cut = " ".join(text.split(" ", words)[:words])  # no need to split what is cut off
    if len(cut) > chars:
        cut = cut[:chars].rsplit(" ", 1)[0] if " " in cut[:chars] else cut[:chars]
    return text if cut == text else cut.rstrip(" ,;:") + "…"


# --- URLs and HTML ----------------------------------------------------------------------------

_URL_SPACE = re.compile(r"\s")
_URL_DROP = _DROP | {ord(c): None for c in "\t\n\r"}


def _visible_ascii_but(excluded: str) -> str:
    return (
        "[" + re.escape("".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in excluded)) + "]"
    )


# An absolute http(s) URL that urljoin gives back exactly as written, whatever the base:
# lower-case scheme, a plain host and port, and none of what urlparse would split off and put
# back otherwise (";" params, an empty query or fragment). Most feed links look like this, and
# urljoin cost more than any other step of reading an entry. Proven against urljoin in
# tests/test_parse.py.
_PLAIN_ABSOLUTE_URL = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?"
    rf"(?:/{_visible_ascii_but('?#;')}*)?"
    rf"(?:\?{_visible_ascii_but('#')}+)?"
    rf"(?:#{_visible_ascii_but('')}+)?",
    re.ASCII,
)


def absolute_url(raw: str | None, base: str) -> str | None:
    """raw resolved against base, or None unless it is an http, https or gemini URL."""
    if not raw:
        return None
    if _PLAIN_ABSOLUTE_URL.fullmatch(raw):
        return raw
    # As browsers do: trim, drop tabs and newlines, percent-encode any other space.
    cleaned = raw.translate(_URL_DROP).strip()
    if _URL_SPACE.search(cleaned):
        cleaned = _URL_SPACE.sub(lambda m: urllib.parse.quote(m.group()), cleaned)
    try:
        absolute = urljoin(base, cleaned)
        parts = urlsplit(absolute)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if parts.scheme.lower() not in SAFE_SCHEMES or not host:
        return None
    return absolute


# Every tag the plain text breaks words at stays in content too (see text_of_clean_html).
_CONTENT_TAGS = set(nh3.ALLOWED_TAGS) | _BREAK_TAGS
_CONTENT_ATTRIBUTES = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()} | {
    "*": {"lang", "title"}
}


def clean_html(fragment: str, base: str) -> str | None:
    """Sanitized HTML with absolute safe URLs, or None when nothing visible is left."""
    cleaned = _content_cleaner(base).clean(_drop_html_controls(fragment)).strip()
    return cleaned or None


@functools.lru_cache(maxsize=64)
def _content_cleaner(base: str) -> nh3.Cleaner:
    """A cleaner resolving URLs against base.

    Building one costs ten times as much as cleaning a fragment with it, and all entries of a
    feed usually share one base.
    """

    def resolve(url: str) -> str | None:
        return absolute_url(url, base)

    return nh3.Cleaner(
        tags=_CONTENT_TAGS,
        clean_content_tags={"script", "style"},
        attributes=_CONTENT_ATTRIBUTES,
        link_rel="noopener noreferrer nofollow",
        url_schemes=set(SAFE_SCHEMES),
        url_relative=resolve,
    )


# --- entities ---------------------------------------------------------------------------------

# A PI, comment or DOCTYPE (group 1), else the start of the root element.
_PROLOG_TOKEN = re.compile(r"<(\?|!--|!doctype)|<(?:[^\W\d]|:)", re.I)
_DOCTYPE_TOKEN = re.compile(
    r"\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z)|<!--.*?(?:-->|\Z)|<\?.*?(?:\?>|\Z)|[\[\]>]", re.S
)
_ENCODING_DECL = re.compile(rb"""^[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_SNIFF = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00", "utf-32-be"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\x00", "utf-16-be"),
    (b"\x4c\x6f\xa7\x94", "cp037"),  # '<?xm' in EBCDIC, which feedparser also reads
)


def _sniffed_codec(body: bytes) -> str:
    for prefix, name in _SNIFF:
        if body.startswith(prefix):
            return name
    if body[1:4] == b"\x00\x00\x00":
        return "utf-32-le"
    return "utf-16-le" if body[1:2] == b"\x00" else "latin-1"


def _candidate_texts(body: bytes, charset: str | None) -> list[str]:
    """The body decoded each way feedparser might decode it."""
    declared = _ENCODING_DECL.match(body[:200].replace(b"\x00", b""))
    texts: dict[str, str] = {}
    for name in (_sniffed_codec(body), charset, declared.group(1).decode() if declared else None):
        # Unknown names and bytes-to-bytes codecs (hex, zlib...) raise: feedparser cannot use
        # them either.
        with contextlib.suppress(LookupError, ValueError):
            codec = codecs.lookup(name or "").name
            if codec not in texts:
                texts[codec] = body.decode(codec, "replace")
    return list(texts.values())


def _prolog(text: str) -> str:
    """Everything before the root element.

    Comments, processing instructions and the DOCTYPE (with its internal subset) are skipped
    whole, so a '<a' hidden inside them cannot end the prolog early.
    """
    i = 0
    while token := _PROLOG_TOKEN.search(text, i):
        opener = token.group(1)
        if opener is None:
            return text[: token.start()]
        if opener.lower() == "!doctype":
            i = _doctype_end(text, token.end())
        else:
            closer = "?>" if opener == "?" else "-->"
            end = text.find(closer, token.end())
            i = len(text) if end < 0 else end + len(closer)
    return text


def _doctype_end(text: str, start: int) -> int:
    depth = 0
    for token in _DOCTYPE_TOKEN.finditer(text, start):
        if token.group() == "[":
            depth += 1
        elif token.group() == "]":
            depth -= 1
        elif token.group() == ">" and depth <= 0:
            return token.end()
    return len(text)


def declares_entities(body: bytes, charset: str | None = None) -> bool:
    """Whether the document declares XML entities before its root element."""
    return _declares_entities(_candidate_texts(body, charset))


def _declares_entities(texts: list[str]) -> bool:
    return any("<!entity" in _prolog(text).lower() for text in texts)


# --- shared entry assembly --------------------------------------------------------------------


def _digest(*parts: str | None) -> str:
    """The hash in keys of entries without a usable id: stored, so it must never change."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _content_hash(*parts: str | None) -> str:
    """A hash that changes when any part does: each part is length-prefixed (or marked
    missing), so no two lists of parts hash alike. A third of _digest's cost, which went
    into JSON escaping fifty contents per feed."""
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            digest.update(b"-")
        else:
            data = part.encode()
            digest.update(b"%d:" % len(data))
            digest.update(data)
    return digest.hexdigest()


def _entry(
    *,
    entry_id: str | None,
    title: str,
    link: str | None,
    text: str,
    content_html: str | None,
    author: str | None,
    published: datetime | None,
    updated: datetime | None,
    now: datetime,
) -> ParsedEntry | None:
    """One normalized entry, or None when it has nothing a reader could see or follow."""
    summary = _shorten(text, BLURB_WORDS, BLURB_CHARS)
    title = _shorten(title, None, TITLE_CHARS) or _shorten(text, TITLE_FALLBACK_WORDS, TITLE_CHARS)
    title = title or link or ""
    if not title:
        return None
    identity = clean_text(entry_id or "") or link
    if identity:
        key = identity if len(identity) <= MAX_KEY_CHARS else "sha256:" + _digest(identity)
    else:
        # Only the published date, as given: an updated date or a clamped one would change from
        # run to run and turn one entry into many.
        key = "sha256:" + _digest(title, published.isoformat() if published else None)
    when = published or updated
    return ParsedEntry(
        key=key,
        title=title,
        link=link,
        summary=summary,
        content_html=content_html,
        author=_shorten(author, None, AUTHOR_CHARS) if author else None,
        published=min(when, now) if when else None,
        content_hash=_content_hash(title, link, summary, content_html),
    )


def _media_type(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """(type/subtype, charset) of the content-type header."""
    fields = headers.get("content-type", "").split(";")
    charset = next(
        (v.split("=", 1)[1].strip(" \"'") for v in fields[1:] if v.strip().startswith("charset=")),
        None,
    )
    return fields[0].strip().lower(), charset


def parse_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> ParsedFeed:
    """Normalize one fetched body: RSS, RDF, Atom, JSON Feed or a gemsub page.

    Titles are read as HTML except where the format says they are text (Atom type="text",
    JSON Feed, gemtext). Raises ParseError for a body that is not a feed, or declares entities.
    """
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    now = datetime.now(UTC) if now is None else _as_utc(now)
    media_type, charset = _media_type(lowered)
    if not body.strip():
        raise ParseError("not a feed: the body is empty")
    if _is_gemtext(media_type, url):
        return _parse_gemsub(body, url=url, now=now)
    start = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start == b"{" or (media_type in JSON_TYPES and start != b"<"):
        return _parse_json(body, url=url, now=now)
    texts = _candidate_texts(body, charset)
    if _declares_entities(texts):
        raise ParseError("refused: the document declares XML entities")
    return _parse_xml(body, texts, url=url, headers=lowered, media_type=media_type, now=now)


def parse_or_error(body: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed | str:
    """parse_feed for a worker process: a failure comes back as its message.

    It lives here, not in digest.poll, so that a parser worker unpickling it imports only
    the parse stage (feedparser, nh3), not the database and HTTP stacks.
    """
    try:
        return parse_feed(body, url=url, headers=headers)
    except ParseError as error:
        return f"not a feed: {error}"
    except Exception as error:  # a parser bug on one feed must not stop the others
        return f"parse failed: {type(error).__name__}: {error}"


def parse_many(jobs: Sequence[tuple[bytes, str, Mapping[str, str]]]) -> list[ParsedFeed | str]:
    """parse_or_error for several feeds in one trip to a worker process.

    Each trip costs two pickles, two pipe transfers and a handful of thread wake-ups; one per
    feed cost the poller about as much CPU as storing the feed.
    """
    return [parse_or_error(body, url, headers) for body, url, headers in jobs]


def prepare_worker() -> None:
    """Let SIGTERM end a parser process at once, even inside nh3's or expat's native code.

    pebble's own handler runs only when Python code runs again, so a worker stopped at its
    deadline in a long nh3 call held its slot three more seconds until pebble's SIGKILL.
    A parser holds nothing that needs a clean exit.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive time is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- RSS, RDF and Atom through feedparser -----------------------------------------------------


# An attribute feedparser reads as a base URI (xml:base, or any named base), in lower case:
# re.IGNORECASE would be thirty times slower than lowering first.
_BASE_ATTRIBUTE = re.compile(r"base\s*=")


def _parse_xml(
    body: bytes,
    texts: list[str],
    *,
    url: str,
    headers: dict[str, str],
    media_type: str,
    now: datetime,
) -> ParsedFeed:
    parsed = None
    if _base_is_unused(body, texts, url, headers):
        parsed = _plain_rss(body, headers) or _feedparser(body, headers)
        if not _resolved_alike(parsed, url):
            parsed = None
    if parsed is None:
        # feedparser resolves xml:base and relative links against content-location; an
        # unparsable one (e.g. "http://[::1") is ignored rather than failing the feed.
        location = url
        with contextlib.suppress(ValueError):
            location = urljoin(url, headers.get("content-location", url))
        parsed = _feedparser(body, headers | {"content-location": location})
    version = parsed.get("version") or ""
    if not parsed.entries and not version:
        reason = parsed.get("bozo_exception")
        # feedparser's mere warnings (no or a non-XML content type, ...) are not the reason.
        if reason is None or isinstance(reason, feedparser.ThingsNobodyCaresAboutButMe):
            detail = "no RSS, RDF or Atom root element"
        else:
            detail = str(reason).removeprefix("<unknown>:")
        looks_html = media_type in ("text/html", "application/xhtml+xml") or re.match(
            rb"\s*(<!doctype html|<html)", body[:200], re.I
        )
        raise ParseError(f"not a feed{' (an HTML page)' if looks_html else ''}: {detail}")
    # Atom declares whether a text is plain or HTML; in RSS feedparser only guesses, and titles
    # there carry escaped markup often enough that reading them as HTML is the safer choice.
    declared = version.startswith("atom")
    feed = parsed.feed
    feed_author = _fp_author(feed)
    entries = []
    for item in parsed.entries:
        entry = _fp_entry(item, url=url, declared=declared, feed_author=feed_author, now=now)
        if entry is not None:
            entries.append(entry)
    title = _fp_text(feed.get("title_detail"), declared)
    return ParsedFeed(
        title=title or None, link=absolute_url(feed.get("link"), url), entries=tuple(entries)
    )


def _feedparser(body: bytes, headers: dict[str, str]) -> Any:
    return feedparser.parse(
        io.BytesIO(body),
        response_headers=headers,
        sanitize_html=False,
        resolve_relative_uris=False,
    )


# --- plain RSS 2.0 without feedparser -----------------------------------------------------------

# Children that _plain_rss reads or that feedparser keeps where we never look. Anything else
# (author, source, image, extension elements...) is left to feedparser.
_RSS_CHANNEL = frozenset(
    {"title", "link", "description", "language", "copyright", "lastBuildDate", "pubDate",
     "generator", "docs", "ttl", "category"}
)  # fmt: skip
_RSS_ITEM = frozenset({"title", "link", "description", "guid", "pubDate", "category", "comments"})
_RSS_ATTRIBUTES = {"category": {"domain"}, "guid": {"isPermaLink"}}
_ATOM = "http://www.w3.org/2005/Atom"
_SELF_LINK = {"href", "rel", "type"}
# Namespaces declared by most blogs: feedparser reads nothing of them that we use, as long as
# no element in them appears but the self link. (Declaring Atom on the root makes feedparser
# take the feed for Atom only until <rss version="2.0"> sets it right.) Any other namespace
# may change how feedparser reads the feed, e.g. RSS 1.0's makes it keep "rss10".
_RSS_NAMESPACES = frozenset({"http://purl.org/dc/elements/1.1/", _ATOM})


def _plain_rss(body: bytes, headers: dict[str, str]) -> Any:
    """What feedparser gives for RSS 2.0 of the plain, common shape; None for anything else.

    On a 57 KB feed feedparser takes about 7 ms of CPU, this about 1 ms. Everything unusual
    (another encoding, a DOCTYPE, a malformed document, an element or attribute not listed
    above) goes to feedparser. Call it only where feedparser would have no base URI
    (_base_is_unused): links and ids are then taken as written.
    """
    if "content-encoding" in headers:
        return None
    status: dict[str, Any] = {}
    data = convert_to_utf8(dict(headers), body, status)
    if status.get("encoding") != "utf-8" or status.get("bozo") or b"<!DOCTYPE" in data:
        return None
    try:
        parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(("start-ns", "start"))
        parser.feed(data)
        root: ET.Element | None = None
        for event in parser.read_events():
            value = event[-1]
            if isinstance(value, tuple) and value[1] not in _RSS_NAMESPACES:
                return None
            if isinstance(value, ET.Element) and root is None:
                root = value
        parser.close()
    except ET.ParseError:
        return None  # feedparser's lenient parser reads more than ElementTree does
    if root is None or root.tag != "rss" or root.attrib != {"version": "2.0"} or len(root) != 1:
        return None
    channel = root[0]
    if (
        channel.tag != "channel"
        or channel.attrib
        or not (_only_space(root) and _only_space(channel))
    ):
        return None
    feed: dict[str, Any] = {}
    entries = []
    seen: set[str] = set()
    for child in channel:
        if child.tag == "item":
            entry = _plain_rss_item(child)
            if entry is None:
                return None
            entries.append(entry)
        elif child.tag == f"{{{_ATOM}}}link":
            # A self link: feedparser lists it among the feed's links but never as its link.
            attributes = child.attrib
            if attributes.get("rel") != "self" or "href" not in attributes or len(child):
                return None
            if not attributes.keys() <= _SELF_LINK:
                return None
        elif not _plain_leaf(child, _RSS_CHANNEL, seen):
            return None
        elif child.tag == "title":
            feed["title_detail"] = _fp_detail("text/plain", _fp_pop(child.text))
        elif child.tag == "link":
            feed["link"] = _repair_query(_fp_pop(child.text, uri=True))
    # Plain dicts inside: for the keys we read, FeedParserDict.get would answer the same.
    return feedparser.FeedParserDict(version="rss20", feed=feed, entries=entries)


def _plain_rss_item(item: ET.Element) -> dict[str, Any] | None:
    if item.attrib or not _only_space(item):
        return None
    entry: dict[str, Any] = {}
    seen: set[str] = set()
    for child in item:
        if not _plain_leaf(child, _RSS_ITEM, seen):
            return None
        if child.tag == "title":
            entry["title_detail"] = _fp_detail("text/plain", _fp_pop(child.text))
        elif child.tag == "description":
            entry["summary_detail"] = _fp_detail("text/html", _fp_pop(child.text))
        elif child.tag == "link":
            entry["link"] = _repair_query(_fp_pop(child.text, uri=True).replace("&amp;", "&"))
        elif child.tag == "guid":
            # feedparser compares the value as written: "TRUE" is not a permalink.
            is_link = child.get("isPermaLink", "true") == "true"
            entry["id"] = _fp_pop(child.text, uri=is_link)
            if is_link:
                entry.setdefault("link", entry["id"])  # an earlier or later <link> wins
        elif child.tag == "pubDate":
            entry["published"] = _fp_pop(child.text)
            entry["published_parsed"] = _rss_date(entry["published"])
    return entry


# A date as nearly every RSS feed writes it: RFC 822 with a four-digit year and a numeric or
# GMT zone. feedparser first tries W3C-DTF, which cannot read a string opening with a day name
# and a comma, then RFC 822.
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_RFC822_DATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) ({'|'.join(_MONTH_NAMES)}) ([0-9]{{4}})"
    r" ([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:GMT|([+-])([0-9]{2})([0-9]{2}))"
)


def _rss_date(value: str) -> time.struct_time | None:
    """feedparser's _parse_date(value), computed directly for the common RFC 822 shape.

    This is what feedparser's RFC 822 reader computes for it (the day name is not checked), at
    less than half the cost of trying both readers. Proven equal in tests/test_parse.py.
    """
    match = _RFC822_DATE.fullmatch(value)
    if match is not None:
        day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
        try:
            stamp = datetime(
                int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second)
            )
            if sign is not None:  # GMT otherwise
                offset = timedelta(0, int(zone_hours) * 3600 + int(zone_minutes) * 60)
                stamp = stamp + offset if sign == "-" else stamp - offset
            return stamp.utctimetuple()
        except (ValueError, OverflowError):
            pass  # a date that does not exist (30 February): feedparser tries its other readers
    parsed: time.struct_time | None = _parse_date(value)
    return parsed


_QUERY_AMPERSAND = re.compile("&([A-Za-z0-9_]+);")


def _repair_query(link: str) -> str:
    """feedparser's repair of query strings it takes for unknown entities ("?a=1&b;=2")."""
    return _QUERY_AMPERSAND.sub(r"&\g<1>", link) if "&" in link else link


def _plain_leaf(element: ET.Element, names: frozenset[str], seen: set[str]) -> bool:
    """Whether element is one of names, holds only text and has only its expected attributes.

    Only categories may repeat: which of two titles feedparser keeps depends on its state.
    """
    tag = str(element.tag)
    if tag in seen and tag != "category":
        return False
    seen.add(tag)
    return (
        tag in names
        and not len(element)
        and element.attrib.keys() <= _RSS_ATTRIBUTES.get(tag, set())
    )


def _only_space(element: ET.Element) -> bool:
    """Whether element holds no text but the spaces around its children."""
    return not ((element.text or "") + "".join([c.tail or "" for c in element])).strip()


_cp1252_controls = _Translation(_cp1252)


def _fp_pop(text: str | None, *, uri: bool = False) -> str:
    """An element's text as feedparser's pop() leaves it, with no base URI."""
    value = (text or "").strip()
    if uri and value and not _PLAIN_ABSOLUTE_URL.fullmatch(value):
        value = _urljoin("", value)  # folds extra slashes after "scheme://", which plain URLs lack
    if value.isascii():
        return value  # the two repairs below change only other characters, and cost a copy each
    # feedparser undoes UTF-8 read as Latin-1, then maps C1 controls as cp1252.
    with contextlib.suppress(UnicodeError):
        value = value.encode("iso-8859-1").decode("utf-8")
    return _cp1252_controls(value)


def _fp_detail(kind: str, value: str) -> dict[str, Any]:
    return {"type": kind, "language": None, "base": "", "value": value}


def _base_is_unused(body: bytes, texts: list[str], url: str, headers: Mapping[str, str]) -> bool:
    """Whether feedparser may skip resolving against the fetch URL: a quarter of its run.

    Given a base, feedparser joins it to itself at every element; without one, links and ids
    come back as written. That is the same result when no element changes the base, the URL
    is its own base, and every link and id is already absolute (see _resolved_alike).
    """
    if "content-location" in headers or make_safe_absolute_uri(url, url) not in ("", url):
        return False
    # The body read as Latin-1 stands in for its bytes: lowered, it has the ASCII characters
    # bytes.lower gives, where it gives them, and \s matches more. It usually equals one of
    # texts (or all of them): each distinct text is lowered and searched once, not thrice.
    distinct: list[str] = []
    for text in (body.decode("latin-1"), *texts):
        if text not in distinct:
            distinct.append(text)
    return not any(_BASE_ATTRIBUTE.search(text.lower()) for text in distinct)


def _resolved_alike(parsed: Any, url: str) -> bool:
    """Whether resolving against url would leave every link and id we read as it is."""
    values = [parsed.feed.get("link")]
    for item in parsed.entries:
        values += (item.get("link"), item.get("id"))
    # An empty href resolves to the base itself.
    return all(_resolves_to_itself(value, url) for value in values if value is not None)


def _resolves_to_itself(value: str, base: str) -> bool:
    # feedparser also folds the slashes after "scheme://"; such a value takes the long way.
    try:
        return ":///" not in value and (
            _PLAIN_ABSOLUTE_URL.fullmatch(value) is not None or urljoin(base, value) == value
        )
    except ValueError:
        return False


def _fp_text(detail: Mapping[str, Any] | None, declared: bool) -> str:
    if not detail:
        return ""
    value = str(detail.get("value") or "")
    if declared and detail.get("type") == "text/plain":
        return clean_text(value)
    return html_to_text(value)


def _is_html(detail: Mapping[str, Any] | None) -> bool:
    return detail is not None and "html" in str(detail.get("type") or "text/html")


def _fp_html(detail: Mapping[str, Any], base: str) -> str | None:
    kind = str(detail.get("type") or "text/html")
    value = str(detail.get("value") or "")
    if not _is_html(detail) and not kind.startswith("text/"):
        return None  # an image, a base64 blob or an out-of-line src: nothing to show inline
    if not _is_html(detail):
        value = html.escape(value)
    return clean_html(value, _join_base(base, str(detail.get("base") or base)))


@functools.lru_cache(maxsize=256)
def _join_base(base: str, relative: str) -> str:
    """urljoin, remembered: all entries of a feed usually resolve the same pair."""
    return urljoin(base, relative)


def _fp_author(item: Mapping[str, Any]) -> str | None:
    detail = item.get("author_detail") or {}
    return clean_text(str(detail.get("name") or item.get("author") or "")) or None


def _fp_date(item: dict[str, Any], name: str) -> datetime | None:
    # dict.get: feedparser's own get() maps a missing updated to published, with a warning.
    value: time.struct_time | None = dict.get(item, f"{name}_parsed")
    if value is not None:
        # feedparser normalizes its *_parsed tuples to UTC and reads naive times as UTC.
        with contextlib.suppress(ValueError):  # e.g. year 0
            return datetime(*value[:6], tzinfo=UTC)
    # feedparser gives up on some dates, e.g. RFC 822 ones without a zone.
    return _text_date(dict.get(item, name))


def _fp_entry(
    item: dict[str, Any], *, url: str, declared: bool, feed_author: str | None, now: datetime
) -> ParsedEntry | None:
    summary_detail = item.get("summary_detail")
    contents = [c for c in item.get("content") or [] if c.get("value")]
    content = next((c for c in contents if "html" in str(c.get("type"))), None)
    content = content or (contents[0] if contents else summary_detail)
    content_html = _fp_html(content, url) if content else None
    if content and content is summary_detail and _is_html(content):
        text = text_of_clean_html(content_html)  # one description: nh3 parses it once
    else:
        text = _fp_text(summary_detail, declared) or _fp_text(content, declared)
    return _entry(
        entry_id=item.get("id"),
        title=_fp_text(item.get("title_detail"), declared),
        link=absolute_url(item.get("link"), url),
        text=text,
        content_html=content_html,
        author=_fp_author(item) or feed_author,
        published=_fp_date(item, "published"),
        updated=_fp_date(item, "updated"),
        now=now,
    )


# --- JSON Feed --------------------------------------------------------------------------------


def _json_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and name == "id":
        value = str(value)  # ids should be strings, but numbers are common
    if not isinstance(value, str):
        return None
    # Lone surrogates (legal in JSON escapes) cannot be encoded: make them U+FFFD.
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _text_date(value: str | None) -> datetime | None:
    """An ISO 8601 or RFC 822 date, naive read as UTC."""
    if not value:
        return None
    try:
        return _as_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        pass
    try:
        return _as_utc(email.utils.parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None


def _json_author(obj: Mapping[str, Any]) -> str | None:
    authors = obj.get("authors")
    candidates = authors if isinstance(authors, list) else [obj.get("author")]
    for author in candidates:
        if isinstance(author, dict):
            name = clean_text(_json_str(author, "name") or "")
            if name:
                return name
    return None


def _parse_json(body: bytes, *, url: str, now: datetime) -> ParsedFeed:
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
        if candidate := absolute_url(_json_str(document, name), url):
            base = candidate
            break
    feed_author = _json_author(document)
    entries = []
    for item in items:
        if isinstance(item, dict):
            entry = _json_entry(item, base=base, feed_author=feed_author, now=now)
            if entry is not None:
                entries.append(entry)
    return ParsedFeed(
        title=clean_text(_json_str(document, "title") or "") or None,
        link=absolute_url(_json_str(document, "home_page_url"), url),
        entries=tuple(entries),
    )


def _json_entry(
    item: Mapping[str, Any], *, base: str, feed_author: str | None, now: datetime
) -> ParsedEntry | None:
    content_html = _json_str(item, "content_html")
    content_text = _json_str(item, "content_text")
    if content_html:
        cleaned = clean_html(content_html, base)
    else:
        cleaned = clean_html(html.escape(content_text), base) if content_text else None
    text = (
        clean_text(_json_str(item, "summary") or "")
        or clean_text(content_text or "")
        or html_to_text(content_html or "")
    )
    link = absolute_url(_json_str(item, "url"), base) or absolute_url(
        _json_str(item, "external_url"), base
    )
    return _entry(
        entry_id=_json_str(item, "id"),
        title=clean_text(_json_str(item, "title") or ""),
        link=link,
        text=text,
        content_html=cleaned,
        author=_json_author(item) or feed_author,
        published=_text_date(_json_str(item, "date_published")),
        updated=_text_date(_json_str(item, "date_modified")),
        now=now,
    )


# --- gemsub (a gemtext page subscribed to as a feed) ------------------------------------------

_GEM_LINK = re.compile(r"=>[ \t]*(\S+)[ \t]+(\d{4}-\d{2}-\d{2})(?![0-9])(.*)")
# The separator between date and title must be followed by a space (or be a colon), so a title
# such as "-10 degrees" keeps its sign.
_GEM_SEPARATOR = re.compile(r"^[ \t]*(?:[-–—:|·~]+[ \t]+|:)?")


def _is_gemtext(media_type: str, url: str) -> bool:
    if media_type:
        return media_type == "text/gemini"
    parts = urlsplit(url)
    return parts.path.endswith(".gmi") or (
        parts.scheme.lower() == "gemini" and (parts.path == "" or parts.path.endswith("/"))
    )


def _parse_gemsub(body: bytes, *, url: str, now: datetime) -> ParsedFeed:
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
        entry = _entry(
            entry_id=None,
            title=clean_text(_GEM_SEPARATOR.sub("", match.group(3), count=1)),
            link=link,
            text="",
            content_html=None,
            author=None,
            published=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
            updated=None,
            now=now,
        )
        if entry is not None:
            entries.append(entry)
    return ParsedFeed(title=title, link=absolute_url(url, url), entries=tuple(entries))
