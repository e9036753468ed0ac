"""feedparser's own test corpus as a held-out check of the parse stage (issue 12).

    python -m bench.feedparser_corpus /path/to/feedparser-6.0.11/tests [--verbose]

The feedparser sdist carries about 2,200 small feed files under tests/, each with a comment
`Expect: <python expression over feedparser's result>`. No file was written for digest, so
they judge it on shapes the real feeds and tests/data/parse never show. Nothing here touches
the network: the folder is read from disk.

How a file is read. Each file is parsed by `digest.parse.parse_feed`, the poller's entry
point, as if fetched from http://127.0.0.1:8097/tests/<path> (where feedparser's runner serves
it), with the headers its `Header:` lines give (Content-Location among them). feedparser
6 is run on the same bytes and headers only to learn the type (text, HTML) of each expected
text, which decides how the expected value is made plain, and as a second opinion: where
feedparser itself now fails an expectation, that is shown.

Expectations. An Expect expression is split at its top-level `and`s; each part is one
expectation. A part is checked when every key it reads is one digest keeps, mapped so:

- feed['title'] -> the feed's title; feed['link'] -> its link.
- entries[i]['title'] -> the entry's title; ['link'] -> its link. (['title_detail']['value']
  and ['summary_detail']['value'] are the title and the summary, and read as they are.)
- entries[i]['summary'] / ['description'] -> its blurb; ['content'][0]['value'] -> the blurb
  too, when the entry has no summary of its own (feedparser then copies the content into
  summary, and digest reads the content the same way).
- entries[i]['id'] / ['guid'] -> its key.
- entries[i]['author'] -> its author.
- entries[i]['published_parsed'] / ['updated_parsed'] / ['created_parsed'] (and the
  `_parsed`-less names compared as moments when feedparser gives them parsed) -> its date.
- len(entries) -> how many entries digest keeps.

and only in these forms: `KEY == VALUE`, `KEY != VALUE`, `KEY in VALUES`, `ord(KEY) == N`,
where VALUE is a constant expression. How each side is compared respects what digest does on
purpose: the expected text is made plain the way digest's contract says (HTML by feedparser's
own type for it read with digest's html_to_text, plain text with clean_text), titles cut at
300 characters, blurbs at 60 words / 500 characters, an author's address cut to the name in it;
an expected time tuple is compared with digest's time as a UTC time tuple.

Skip rules (each skipped expectation is counted, under its rule):

- not-kept: it reads a key digest does not keep: bozo and its exception, encoding, version,
  namespaces, headers, status, *_detail (types, languages, bases), links lists, tags,
  enclosures, contributors, source, feed-level metadata but title and link (subtitle,
  tagline, copyright, info, image, textinput, generator, feed dates, ...), extension fields
  (itunes_*, media_*, georss, psc_chapters, ...). digest stores none of these.
- form: it reads kept keys in a form other than the four above (`'title' in entries[0]`,
  `entries[0]['title'].startswith(...)`, ...). Few; they are listed with --verbose.
- no-summary-content: ['content'][i]['value'] where the entry also has a summary (digest keeps
  one blurb, the summary), or i > 0.
- raw-date: a date as the text the feed wrote (entries[0]['updated'] == 'Thu, 01 ...') when
  feedparser did not parse it: digest keeps moments, not date text.
- updated-with-published: an updated date of an entry that also has a different published date:
  digest keeps one date per entry, the published one.
- SkipUnless lines (a codec or chardet available to feedparser's runner) are not honoured:
  digest does not depend on them, and what they guard is checked like the rest.

Deliberate differences (counted as disagreements, but listed apart with their reason, in
DELIBERATE below): see each entry's text.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urljoin, urlsplit

import feedparser

from digest.parse import ParsedEntry, ParsedFeed, ParseError, atom, fallback, parse_feed, rss
from digest.parse import entry as entry_module
from digest.parse.text import clean_text, html_to_text, shorten

_READERS = (atom, rss, fallback)
NOW = datetime(2025, 3, 28, 12, 0, tzinfo=UTC)
URL_PREFIX = "http://127.0.0.1:8097/tests/"
TITLE_CHARS = 300
BLURB_WORDS = 60
BLURB_CHARS = 500
SAFE_SCHEMES = ("http", "https", "gemini")

_DESCRIPTION = re.compile(r"Description:\s*(.*?)\s*Expect:\s*(.*?)\s*-->", re.S)
_HEADER = re.compile(r"^\s*Header:\s+([^:]+):(.+)$", re.M)
# Encodings tried, in order, to find the comment in a file that is not ASCII-compatible.
_COMMENT_CODECS = ("utf-8", "utf-32", "utf-16", "utf-32-be", "utf-32-le", "utf-16-be",
                   "utf-16-le", "cp037", "cp500", "cp875", "cp1140", "latin-1")  # fmt: skip

# The entry keys digest keeps, by feedparser's name, and the field of ParsedEntry they map to.
ENTRY_KEYS = {
    "title": "title",
    "link": "link",
    "summary": "summary",
    "description": "summary",
    "content": "summary",
    "id": "key",
    "guid": "key",
    "author": "author",
    "published_parsed": "date",
    "updated_parsed": "date",
    "created_parsed": "date",
    "published": "date",
    "updated": "date",
    "created": "date",
}
FEED_KEYS = {"title": "title", "link": "link"}

# Cause of a difference -> why digest differs on purpose. A cause not here is a bug to fix.
DELIBERATE: dict[str, str] = {
    "refused: entities": (
        "the document declares entities (<!ENTITY ...> in its DOCTYPE): digest refuses every "
        "such document, as a hardened parser must (billion laughs, external entities), where "
        "feedparser expands the safe ones"
    ),
    "link: unsafe scheme": (
        "a link whose scheme is not http, https or gemini (javascript:, mailto:, ftp:, "
        "magnet:, a URN): digest keeps no link a page must not carry"
    ),
    "link: relative in feedparser": (
        "feedparser, reading a file from disk, had no URL to resolve a relative link against; "
        "digest resolves it against the URL the feed was fetched from, as the poller does"
    ),
    "key: resolved": (
        "digest resolves a relative id against the xml:base in force, as RFC 4287 says of "
        "IRIs in Atom; feedparser keeps it as written. Keys are stored: the rule stays"
    ),
    "key: falls back to link": (
        "an entry without an id or guid is keyed by its link (else a hash of title and date): "
        "feedparser gives no id there, digest always gives a key"
    ),
    "author: inherited": (
        "an entry without an author takes its feed's author, which feedparser leaves on the "
        "feed only"
    ),
    "title: from blurb": (
        "an entry without a title is titled by the first words of its blurb (else its link): "
        "an edition lists every item by a headline"
    ),
    "entry dropped": (
        "an entry with no title, no text and no link holds nothing a reader could see or "
        "follow: digest drops it"
    ),
    "date: clamped": "a date in the future is clamped to the time of reading",
    "html: read as a browser reads it": (
        "escaped HTML is parsed as HTML5 parsers (browsers, html5ever in nh3) parse it: text "
        "after '<!--' with no '-->' is a comment to the end, '<!DOCTYPE' and '<![CDATA[' in a "
        "body are bogus markup, script content is never text; feedparser's sgmllib sanitizer "
        "tokenizes differently and keeps some of that as text"
    ),
    "html: iframe content is no text": (
        "what is inside an <iframe> (and <noembed>, <noframes>, <template>) is fallback markup "
        "no browser shows; feedparser drops the tag and keeps its content as text"
    ),
    "html5 entity table": (
        "&lang; and &rang; are decoded as HTML5 (and browsers) define them, U+27E8/U+27E9; "
        "feedparser uses HTML 4's U+2329/U+232A"
    ),
    "encoding: no codec": (
        "TCVN and VISCII (Vietnamese) have no Python codec, and feedparser fails them too: "
        "the body is read as Windows-1252, as an unknown label is everywhere else"
    ),
    "encoding: mojibake kept": (
        "text that was mis-decoded before it was written (UTF-8 bytes written as Latin-1 "
        "character references, or bytes valid in no encoding) is read as written; feedparser "
        "guesses a repair. No format rule says which text is mojibake: left alone"
    ),
    "atom: base64 text": (
        "an Atom text construct whose type is a binary media type (application/octet-stream) "
        "is base64 data, not text (RFC 4287 allows only text, html and xhtml in titles and "
        "summaries); digest shows no binary data as a title or blurb"
    ),
    "xml: names are case-sensitive": (
        "<TiTlE> is no RSS element: XML names are case-sensitive; feedparser folds case as "
        "iTunes is said to"
    ),
    "not a format digest reads": (
        "CDF (Microsoft's Channel Definition Format, 1997) is no RSS, RDF or Atom; no site "
        "publishes it any more"
    ),
    "rss: element outside RSS": (
        "<summary>, <body>, <fullitem> in no namespace and dc:author are elements of no "
        "vocabulary digest reads (the XHTML body is read in its namespace, xhtml:body); "
        "feedparser accepts them as aliases"
    ),
    "rss: extension is no stand-in": (
        "itunes:summary and media:title describe a podcast episode or a media object; rss.py "
        "never lets an extension that looks alike stand in for an item's title or blurb"
    ),
    "first of repeated elements": (
        "an entry with two <created> or <updated> elements: digest reads the first of each "
        "name (xml.first_children), feedparser the last"
    ),
    "key rule: not changed": (
        "the expectation concerns an entry's key, which decides what is new for feeds already "
        "stored: rdf:about is not read as an identity (rdf.py; an item without link is keyed "
        "by title and date), an Atom id is resolved like a URI (so its scheme is lower-cased), "
        "and dcterms:created is not read as a date (for an item without guid or link it "
        "would change the key). Left as they are; reported"
    ),
}

# (regular expression on the file's path in the corpus, cause): the files whose differences
# are the deliberate ones above. Anything else that differs is counted as undocumented.
DELIBERATE_FILES: tuple[tuple[str, str], ...] = (
    (r"sanitize/.*(_crazy|script_nested_cdata|xml_malicious_comment|"
     r"xml_declaration_unexpected_character)\.xml$|rss/item_description_not_a_doctype",
     "html: read as a browser reads it"),
    (r"sanitize/.*_iframe\.xml$", "html: iframe content is no text"),
    (r"entities/[lr]ang\.xml$", "html5 entity table"),
    (r"encoding/x80_(tcvn|viscii)", "encoding: no codec"),
    (r"encoding/(bozo_)?(double-encoded-html|linenoise)", "encoding: mojibake kept"),
    (r"atom10/.*_base64(_2)?\.xml$", "atom: base64 text"),
    (r"itunes_core_element_uppercase", "xml: names are case-sensitive"),
    (r"/cdf/", "not a format digest reads"),
    (r"sanitize/item_(body|fullitem)_|base/http_item_(body|fullitem)_|rss/item_fullitem|"
     r"rss/item_summary_and_description|rss/item_dc_author", "rss: element outside RSS"),
    (r"itunes/itunes_item_summary|media-rss/item_media_title", "rss: extension is no stand-in"),
    (r"_multiple_values\.xml$", "first of repeated elements"),
    (r"rdf_item_rdf_about|entry_id_no_normalization|item_dcterms_created", "key rule: not changed"),
)  # fmt: skip


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One corpus file: its bytes, the headers it is served with, and its expectations."""

    path: str  # relative to the tests folder
    body: bytes
    headers: dict[str, str]
    description: str
    expect: str

    @property
    def folder(self) -> str:
        parts = self.path.split("/")
        return "/".join(parts[:2]) if parts[0] == "wellformed" else parts[0]

    @property
    def url(self) -> str:
        return URL_PREFIX + self.path


def _comment(body: bytes) -> str | None:
    for name in _COMMENT_CODECS:
        try:
            text = body.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
        if "Expect:" in text:
            return text
    return None


def load_cases(folder: Path) -> tuple[list[Case], list[str]]:
    """Every *.xml under folder with an Expect comment; and the files without one."""
    cases, unread = [], []
    for path in sorted(folder.rglob("*.xml")):
        rel = path.relative_to(folder).as_posix()
        body = path.read_bytes()
        text = _comment(body)
        match = _DESCRIPTION.search(text) if text else None
        if text is None or match is None:
            unread.append(rel)
            continue
        # feedparser's runner sends the Header lines of files it serves over HTTP (all those
        # whose path says http); a local file is read without headers.
        headers = {}
        if "http" in rel:
            headers = {k.strip(): v.strip() for k, v in _HEADER.findall(text)}
            headers.setdefault("Content-type", "application/xml")
        cases.append(Case(rel, body, headers, match[1].strip(), match[2].strip()))
    return cases, unread


# --- expectations -------------------------------------------------------------------------------


def conjuncts(expression: str) -> list[ast.expr]:
    """The parts of an Expect expression joined by a top-level `and`."""
    node = ast.parse(expression, mode="eval").body
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return list(node.values)
    return [node]


Path_ = tuple[Any, ...]  # ("entries", 0, "title") or ("feed", "title") or ("len", "entries")


def key_path(node: ast.expr) -> Path_ | None:
    """The key a node reads (entries[0]['title'], feed.title, len(entries)), or None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "len"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "entries"
    ):
        return ("len", "entries")
    parts: list[Any] = []
    while True:
        if isinstance(node, ast.Subscript):
            index = node.slice
            if not isinstance(index, ast.Constant):
                return None
            parts.append(index.value)
            node = node.value
        elif isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            path = tuple(reversed(parts))
            # title_detail['value'] is the title itself (likewise summary_detail).
            if path[-2:] in (("title_detail", "value"), ("summary_detail", "value")):
                path = (*path[:-2], path[-2].removesuffix("_detail"))
            return path
        else:
            return None


def names_read(node: ast.expr) -> list[Path_]:
    """Every key path node reads (outermost first), and any bare name as a path of one."""
    found: list[Path_] = []

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.expr):
            path = key_path(n)
            if path is not None and (len(path) > 1 or path[0] not in ("len", "ord")):
                found.append(path)
                return
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return found


def kept(path: Path_) -> bool:
    """Whether digest keeps what path names."""
    if path == ("len", "entries"):
        return True
    if path[0] == "feed":
        return len(path) == 2 and str(path[1]) in FEED_KEYS
    if path[0] == "entries":
        if len(path) == 3 and isinstance(path[1], int) and path[2] in ENTRY_KEYS:
            return bool(path[2] != "content")
        return len(path) == 5 and isinstance(path[1], int) and path[2:] == ("content", 0, "value")
    return False


def constant(node: ast.expr) -> Any:
    """The value of an expression made of literals and operators only, else raise."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name | ast.Call | ast.Attribute | ast.Subscript | ast.Lambda):
            raise ValueError("not a constant expression")
    return eval(compile(ast.Expression(node), "<expect>", "eval"), {"__builtins__": {}}, {})


@dataclass(frozen=True)
class Check:
    """One checkable expectation: the key, how it is compared, and the expected values."""

    path: Path_
    op: str  # "==", "!=", "in", "ord=="
    values: tuple[Any, ...]  # one for == and !=; the members for in


def as_check(node: ast.expr) -> Check | None:
    """node as a Check, or None when it is in none of the forms handled."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return None
    left, op, right = node.left, node.ops[0], node.comparators[0]
    is_ord = (
        isinstance(left, ast.Call)
        and isinstance(left.func, ast.Name)
        and left.func.id == "ord"
        and len(left.args) == 1
    )
    path = key_path(left.args[0]) if is_ord and isinstance(left, ast.Call) else key_path(left)
    if path is None or not kept(path):
        return None
    try:
        value = constant(right)
    except Exception:
        return None
    if isinstance(op, ast.Eq):
        return Check(path, "ord==" if is_ord else "==", (value,))
    if isinstance(op, ast.NotEq) and not is_ord:
        return Check(path, "!=", (value,))
    if isinstance(op, ast.In) and not is_ord and isinstance(value, tuple | list | set):
        return Check(path, "in", tuple(value))
    return None


# --- comparing ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one expectation came out."""

    case: Case
    text: str  # the expectation as written
    status: str  # "agreed", "disagreed", "skipped"
    cause: str = ""  # the skip rule, or the cause of a difference
    detail: str = ""
    feedparser_fails: bool = False  # feedparser 6 itself no longer meets it


# 'jo@x (Jo)', 'Jo <jo@x>', and feedparser's own 'Jo (jo@x)' for an Atom name and email.
_ADDRESS_WITH_NAME = re.compile(r"(\S+@\S+)\s*\((.+)\)|(.+?)\s*(?:<\S+@\S+>|\(\S+@\S+\))")


def _name(value: str) -> str:
    """An author as digest keeps it: the name, without the address."""
    value = clean_text(value)
    match = _ADDRESS_WITH_NAME.fullmatch(value)
    return ((match[2] or match[3]).strip() or value) if match else value


def _is_html(kind: str | None) -> bool:
    return kind is not None and ("html" in kind or kind.endswith("xml"))


def _plain(value: str, kind: str | None) -> str:
    return html_to_text(value) if _is_html(kind) else clean_text(value)


def _detail_type(fp_holder: Any, key: str) -> str | None:
    """feedparser's type for the text at key: its *_detail, or, for a summary copied from
    the content (feedparser does that when there is no summary), the content's."""
    name = {"description": "summary"}.get(key, key)
    detail = dict.get(fp_holder, f"{name}_detail") if isinstance(fp_holder, dict) else None
    if detail:
        return str(detail.get("type") or "") or None
    if name in ("summary", "content") and isinstance(fp_holder, dict):
        contents = dict.get(fp_holder, "content") or [{}]
        return str(contents[0].get("type") or "") or None
    return None


def _field(path: Path_) -> str:
    """The ParsedFeed or ParsedEntry field a kept key maps to."""
    if path[0] == "len":
        return "len"
    if path[0] == "feed":
        return FEED_KEYS[path[1]]
    return ENTRY_KEYS[path[2]]


def _fp_value(fp: Any, path: Path_) -> Any:
    """What feedparser says at path; KeyError/IndexError when it says nothing."""
    if path == ("len", "entries"):
        return len(fp["entries"])
    value: Any = fp
    for part in path:
        # FeedParserDict maps description to summary, guid to id; but it would also map a
        # missing updated to published, which is no answer to a question about updated.
        plain = isinstance(value, dict) and str(part).startswith("updated")
        value = dict.__getitem__(value, part) if plain else value[part]
    return value


def _expected(check: Check, raw: Any, fp_holder: Any, now_key: str) -> Any:
    """An expected value made into what digest would keep for it, by its key."""
    key = check.path[2] if check.path[0] == "entries" else check.path[-1]
    if check.op == "ord==" or raw is None:
        return raw
    if now_key == "title" and isinstance(raw, str):
        return shorten(_plain(raw, _detail_type(fp_holder, "title")), None, TITLE_CHARS)
    if now_key == "summary" and isinstance(raw, str):
        kind = _detail_type(fp_holder, "content" if key == "content" else "summary")
        return shorten(_plain(raw, kind), BLURB_WORDS, BLURB_CHARS)
    if now_key == "author" and isinstance(raw, str):
        return _name(raw)
    if now_key == "key" and isinstance(raw, str):
        return clean_text(raw)
    if now_key == "date" and isinstance(raw, tuple | time.struct_time):
        return tuple(raw)[:6]
    return raw


def _got(parsed: ParsedFeed, check: Check) -> tuple[Any, ParsedEntry | None]:
    """digest's value at the check's key (IndexError when it has no such entry)."""
    if check.path == ("len", "entries"):
        return len(parsed.entries), None
    if check.path[0] == "feed":
        return getattr(parsed, FEED_KEYS[check.path[1]]) or "", None  # no title: None
    entry = parsed.entries[check.path[1]]
    field_name = ENTRY_KEYS[check.path[2]]
    if field_name == "date":
        return (tuple(entry.published.utctimetuple())[:6] if entry.published else None), entry
    return getattr(entry, field_name), entry


def _matches(check: Check, got: Any, wanted: list[Any]) -> bool:
    if check.op == "ord==":
        return isinstance(got, str) and len(got) == 1 and ord(got) == wanted[0]
    if check.op == "!=":
        return bool(got != wanted[0])
    return any(got == value for value in wanted)


def _cause(check: Check, got: Any, wanted: list[Any], entry: ParsedEntry | None, case: Case) -> str:
    """Why digest's value differs from the expected one, as a short label."""
    base, path = case.url, case.path
    field_name = _field(check.path)
    if check.path[0] == "feed":
        field_name = "feed " + field_name
    for pattern, label in DELIBERATE_FILES:
        if re.search(pattern, path):
            return label
    first = wanted[0] if wanted else None
    if field_name in ("link", "feed link") and isinstance(first, str) and got is None:
        scheme = urlsplit(first).scheme.lower()
        if scheme and scheme not in SAFE_SCHEMES:
            return "link: unsafe scheme"
    if (
        field_name in ("link", "feed link")
        and isinstance(first, str)
        and first
        and not urlsplit(first).scheme
        and got == urljoin(base, first)
    ):
        return "link: relative in feedparser"
    if field_name == "key" and isinstance(first, str) and entry is not None:
        if (not first and got in (entry.link, None)) or got == entry.link:
            return "key: falls back to link"
        if got == urljoin(base, first):
            return "key: resolved"
    if field_name == "author" and first in (None, "") and got:
        return "author: inherited"
    if field_name == "title" and first in (None, "") and got:
        return "title: from blurb"
    return f"{field_name}: differs"


def evaluate(case: Case, parse: Callable[[Case], ParsedFeed] | None = None) -> list[Outcome]:
    """Every expectation of one file, checked, or skipped by a written rule."""
    outcomes: list[Outcome] = []
    try:
        parts = conjuncts(case.expect)
    except SyntaxError:
        return [Outcome(case, case.expect, "skipped", "form", "not a Python expression")]
    fp = feedparser.parse(io.BytesIO(case.body), response_headers=_fp_headers(case))
    parsed: ParsedFeed | None = None
    refusal = ""
    try:
        parsed = (parse or _parse)(case)
    except ParseError as error:
        refusal = str(error)
    probed: list[ParsedFeed] = []

    def probe() -> ParsedFeed:
        if not probed:
            probed.append(_keeping_every_entry(case))
        return probed[0]

    for node in parts:
        text = ast.unparse(node)
        paths = names_read(node)
        if not paths or not all(kept(p) for p in paths):
            unkept = next((p for p in paths if not kept(p)), ("(none)",))
            outcomes.append(Outcome(case, text, "skipped", "not-kept", _show(unkept)))
            continue
        check = as_check(node)
        if check is None:
            outcomes.append(Outcome(case, text, "skipped", "form"))
            continue
        outcomes.append(_compare(case, text, check, fp, (parsed, refusal), probe))
    return outcomes


def _compare(
    case: Case,
    text: str,
    check: Check,
    fp: Any,
    reading: tuple[ParsedFeed | None, str],
    probe: Callable[[], ParsedFeed],
) -> Outcome:
    parsed, refusal = reading
    path = check.path
    fp_holder: Any = fp["feed"]
    if path[0] == "entries":
        fp_holder = fp["entries"][path[1]] if path[1] < len(fp["entries"]) else {}
        key = path[2]
        if key == "content" and (
            dict.get(fp_holder, "summary") != _content_value(fp_holder) or path[3] != 0
        ):
            return Outcome(case, text, "skipped", "no-summary-content")
        if key in ("published", "updated", "created"):
            if f"{key}_parsed" not in fp_holder or not dict.get(fp_holder, f"{key}_parsed"):
                return Outcome(case, text, "skipped", "raw-date")
            check = Check((*path[:2], f"{key}_parsed"), check.op, check.values)
            check = Check(
                check.path,
                check.op,
                tuple(dict.get(fp_holder, f"{key}_parsed") for _ in check.values),
            )
        if key.startswith("updated"):
            published = dict.get(fp_holder, "published_parsed")
            if published and published != dict.get(fp_holder, "updated_parsed"):
                return Outcome(case, text, "skipped", "updated-with-published")
    try:
        fp_ok = _matches(check, _fp_value(fp, check.path), list(check.values))
    except (KeyError, IndexError, TypeError):
        fp_ok = False
    field_name = _field(path)
    wanted = [_expected(check, v, fp_holder, field_name) for v in check.values]
    if parsed is None:
        cause = "refused: entities" if "entities" in refusal else "refused: " + refusal[:60]
        cause = next((c for p, c in DELIBERATE_FILES if re.search(p, case.path)), cause)
        return Outcome(case, text, "disagreed", cause, refusal, not fp_ok)
    note = ""
    try:
        got, entry = _got(parsed, check)
    except IndexError:
        if wanted == [""] and check.op == "==":  # nothing to keep, and nothing kept
            return Outcome(case, text, "agreed", "empty: entry dropped", "", not fp_ok)
        try:
            got, entry = _got(probe(), check)
        except IndexError:
            return Outcome(case, text, "disagreed", "entry dropped", "", not fp_ok)
        note = " (in an entry digest drops, read with the drop rule off)"
    if _matches(check, got, wanted):
        return Outcome(case, text, "agreed", note.strip(" ()"), feedparser_fails=not fp_ok)
    cause = _cause(check, got, wanted, entry, case)
    shown = wanted[0] if len(wanted) == 1 else wanted
    detail = f"digest {got!r}, expected {shown!r}{note}"
    return Outcome(case, text, "disagreed", cause, detail, not fp_ok)


def _content_value(fp_entry: Any) -> Any:
    contents = dict.get(fp_entry, "content") or [{}]
    return contents[0].get("value")


def _show(path: Path_) -> str:
    return str(path[0]) + "".join(f"[{p!r}]" for p in path[1:])


def _fp_headers(case: Case) -> dict[str, str]:
    headers = dict(case.headers)
    headers.setdefault("content-location", case.url)
    return headers


def _parse(case: Case) -> ParsedFeed:
    return parse_feed(case.body, url=case.url, headers=case.headers, now=NOW)


def _keeping_every_entry(case: Case) -> ParsedFeed:
    """parse_feed with the drop rule off: an entry with nothing to show is kept untitled.

    Most corpus entries hold one element (an author, a date) and nothing a reader could see,
    so digest drops them; this second reading judges what digest reads from them all the same,
    through the same readers. Only make_entry's final drop is bypassed.
    """

    def keep(**fields: Any) -> ParsedEntry:
        made = entry_module.make_entry(**fields)
        if made is not None:
            return made
        when = fields["published"] or fields["updated"]
        return ParsedEntry(
            key=entry_module.entry_key(fields["entry_id"], fields["link"], "", fields["published"]),
            title="",
            link=fields["link"],
            summary=fields["summary"],
            author=fields["author"],
            published=min(when, fields["now"]) if when else None,
            content_hash="",
        )

    with contextlib.ExitStack() as stack:
        for module in _READERS:
            stack.enter_context(mock.patch.object(module, "make_entry", keep))
        return _parse(case)


# --- report -------------------------------------------------------------------------------------


@dataclass
class Totals:
    files: int = 0
    counts: Counter[str] = field(default_factory=Counter)


def run(folder: Path) -> tuple[list[Case], list[str], list[Outcome]]:
    cases, unread = load_cases(folder)
    outcomes = [outcome for case in cases for outcome in evaluate(case)]
    return cases, unread, outcomes


def report(
    cases: list[Case], unread: list[str], outcomes: Iterable[Outcome], *, verbose: bool
) -> int:
    """Print the figures and the disagreements; 1 when a disagreement is not deliberate."""
    outcomes = list(outcomes)
    by_folder: dict[str, Totals] = defaultdict(Totals)
    for case in cases:
        by_folder[case.folder].files += 1
    for outcome in outcomes:
        by_folder[outcome.case.folder].counts[outcome.status] += 1
    print(f"{'folder':24} {'files':>6} {'checked':>8} {'agreed':>7} {'disagreed':>10} "
          f"{'skipped':>8}")  # fmt: skip
    total = Totals()
    for name in sorted(by_folder):
        t = by_folder[name]
        total.files += t.files
        total.counts.update(t.counts)
        _row(name, t)
    _row("all", total)
    if unread:
        print(f"\n{len(unread)} files without an Expect comment: {', '.join(unread[:5])} ...")
    skips = Counter(o.cause for o in outcomes if o.status == "skipped")
    print("\nskipped by rule: " + ", ".join(f"{rule} {n}" for rule, n in skips.most_common()))
    fp_fails = [o for o in outcomes if o.feedparser_fails and o.status != "skipped"]
    print(f"feedparser {feedparser.__version__} itself fails {len(fp_fails)} checked expectations")
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.status == "disagreed":
            groups[outcome.cause].append(outcome)
    undocumented = 0
    for cause in sorted(groups, key=lambda c: (c in DELIBERATE, -len(groups[c]))):
        items = groups[cause]
        why = DELIBERATE.get(cause)
        undocumented += 0 if why else len(items)
        print(f"\n== {cause}: {len(items)}" + (" (deliberate)" if why else ""))
        if why:
            print(f"   {why}")
        for outcome in items if (verbose or not why) else items[:3]:
            fp_note = " [feedparser fails it too]" if outcome.feedparser_fails else ""
            print(f"   {outcome.case.path}: {outcome.text}{fp_note}")
            if outcome.detail:
                print(f"      {outcome.detail[:300]}")
    if verbose:
        for outcome in outcomes:
            if outcome.cause == "form":
                print(f"   form: {outcome.case.path}: {outcome.text}")
    print(f"\n{undocumented} disagreements not documented as deliberate")
    return 1 if undocumented else 0


def _row(name: str, t: Totals) -> None:
    checked = t.counts["agreed"] + t.counts["disagreed"]
    print(f"{name:24} {t.files:>6} {checked:>8} {t.counts['agreed']:>7} "
          f"{t.counts['disagreed']:>10} {t.counts['skipped']:>8}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="feedparser's tests/ folder (sdist)")
    parser.add_argument("--verbose", action="store_true", help="list every disagreement")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    started = time.perf_counter()
    cases, unread, outcomes = run(args.folder)
    status = report(cases, unread, outcomes, verbose=args.verbose)
    print(f"({time.perf_counter() - started:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
