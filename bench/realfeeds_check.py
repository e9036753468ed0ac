"""Real-feeds check (issue 12): digest's titles and links against what each real feed says.

    python -m bench.realfeeds_check [--folder ../shared/realfeeds] [--verbose] [--charset utf-8]

(The folder defaults to $DIGEST_REAL_FEEDS when set; tests/test_realfeeds.py reads the same.)

Every file of ../shared/realfeeds (MANIFEST.tsv names its format) is parsed by
`digest.parse.parse_feed` as if fetched from https://feeds.example/<file name>, and each entry
is compared with an independent reading of the document, written here with plain lxml XPath
and `json` (none of digest's readers):

- title: the item's own title element (RSS `<title>` in no namespace, RDF `<title>` in the RSS
  1.0 namespace, Atom `<atom:title>`, JSON Feed `title`), made plain text as digest's contract
  says (RSS and RDF text read as HTML; Atom by its type: text, html or xhtml; JSON as text) and
  cut at 300 characters. Compared only when the feed gives a non-empty title of its own:
  without one digest takes the first words of the blurb.
- link: RSS `<link>`, else a permalink `<guid>`; the Atom `<link>` with rel alternate (or no
  rel), resolved against the xml:base in force, an HTML type preferred; JSON Feed `url`.
  Resolved, and None when its scheme is not http, https or gemini.
- count: digest's entries against the feed's items (an item with no title, text or link may
  be dropped; that is reported as a note, not a difference).

Every difference is either listed in DELIBERATE with its reason or counted as undocumented:
the exit code is 1 when any is. As a second opinion, feedparser's `entry.title` and
`entry.link` are compared with the same reading (not for JSON, which feedparser 6.0 does not
read); where feedparser differs is listed with --verbose and counted in the last column. It
shows which side is right where the two disagree: here feedparser 6.0.14 agrees with the
reading on every title, and differs on one link (an Atom entry whose only alternate is a PDF,
which it drops and digest keeps).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
from lxml import etree
from rich.console import Console
from rich.table import Table

from digest.parse import ParseError, parse_feed
from digest.parse.text import clean_text, html_to_text, shorten

# ../shared/realfeeds beside the project; DIGEST_REAL_FEEDS names another folder of feeds.
REAL_FEEDS = Path(
    os.environ.get("DIGEST_REAL_FEEDS") or Path(__file__).resolve().parents[2] / "shared/realfeeds"
)
NOW = datetime(2025, 3, 28, 12, 0, tzinfo=UTC)
URL_PREFIX = "https://feeds.example/"
TITLE_CHARS = 300
SAFE_SCHEMES = ("http", "https", "gemini")

# The Content-Type a server would send for each MANIFEST format (no charset: the document's
# own declaration decides, as it does for most servers).
CONTENT_TYPES = {
    "rss2.0": "application/rss+xml",
    "rss2.0+podcast": "application/rss+xml",
    "rdf": "application/rdf+xml",
    "atom": "application/atom+xml",
    "jsonfeed": "application/feed+json",
    "rss-in-json": "application/json",
}
SUFFIX_TYPES = {
    ".rss": "application/rss+xml",
    ".rdf": "application/rdf+xml",
    ".atom": "application/atom+xml",
    ".json": "application/json",
}

ATOM = "http://www.w3.org/2005/Atom"
ATOM_03 = "http://purl.org/atom/ns#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS_10 = "http://purl.org/rss/1.0/"
RSS_090 = "http://my.netscape.com/rdf/simple/0.9/"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")
JSON_KINDS = ("json", "rss-in-json")

# (file, entry index in the feed or None for the whole file, field) -> why digest differs from
# what the feed says on purpose. Fields: "title", "link", "count", "feed" (digest refuses it).
_EMPTY_HREF = (
    'the entry\'s only alternate is <link rel="alternate" href="">: by RFC 3986 an empty '
    "reference resolves to the base in force (xml:base http://onefoottsunami.com/wp-atom.php, "
    "the feed document itself), which is no page of the entry; digest gives no link rather "
    "than one back to the feed"
)
DELIBERATE: dict[tuple[str, int | None, str], str] = {
    ("nnw__one-foot-tsunami.atom", 6, "link"): _EMPTY_HREF,
    ("nnw__one-foot-tsunami.atom", 7, "link"): _EMPTY_HREF,
    ("nnw__one-foot-tsunami.atom", 17, "link"): _EMPTY_HREF,
    ("nnw__scripting-news.json", None, "feed"): (
        'Dave Winer\'s "rss-in-json" (an RSS channel written as JSON, {"rss": {"channel": ...}}) '
        "is no JSON Feed and no format digest reads: refused as not a feed"
    ),
}


# --- the files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedFile:
    name: str
    format: str  # as MANIFEST.tsv says ("rss2.0", "atom", ...); "" when it is not listed
    body: bytes
    charset: str | None = None  # a charset parameter the server adds to the Content-Type

    @property
    def url(self) -> str:
        return URL_PREFIX + self.name

    @property
    def content_type(self) -> str:
        suffix = Path(self.name).suffix
        kind = CONTENT_TYPES.get(self.format) or SUFFIX_TYPES.get(suffix, "application/xml")
        return f"{kind}; charset={self.charset}" if self.charset else kind


def manifest(folder: Path = REAL_FEEDS) -> dict[str, str]:
    """File name -> format, from the folder's MANIFEST.tsv ({} without one)."""
    path = folder / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    lines = path.read_text("utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    formats = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=False))
        if row.get("file"):
            formats[row["file"]] = row.get("format", "")
    return formats


def feed_names(folder: Path = REAL_FEEDS) -> list[str]:
    """The feed files in folder: every file but the README and the MANIFEST, sorted."""
    if not folder.is_dir():
        return []
    skip = {"MANIFEST.tsv", "README.md"}
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in skip)


def load(name: str, folder: Path = REAL_FEEDS, charset: str | None = None) -> FeedFile:
    return FeedFile(name, manifest(folder).get(name, ""), (folder / name).read_bytes(), charset)


# --- what the feed says (the oracle) ------------------------------------------------------------


@dataclass(frozen=True)
class Said:
    """One item as the document says it: its own title (plain, cut; None when it has none or
    it is empty) and its own link (resolved; None when none or not http/https/gemini)."""

    title: str | None
    link: str | None
    raw_link: str | None  # as written, before resolution, for messages
    empty: bool  # no title, no text, no link: digest may drop it


@dataclass(frozen=True)
class Reading:
    kind: str  # "rss", "rdf", "atom", "json", "rss-in-json", or "unknown"
    items: list[Said]
    notes: list[str] = field(default_factory=list)


def _plain_title(text: str) -> str | None:
    return shorten(text, None, TITLE_CHARS) or None


def _safe(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in SAFE_SCHEMES and parts.netloc else None


def _resolve(base: str | None, raw: str) -> str | None:
    try:
        return _safe(urljoin(base or "", raw.strip()))
    except ValueError:
        return None


def _string(element: Any) -> str:
    return str(element.xpath("string(.)"))


def read_document(file: FeedFile) -> Reading:
    """What the document says, item by item, read with lxml and json alone."""
    start = file.body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start in (b"{", b"["):
        return _read_json(file)
    return _read_xml(file)


def _xml_root(file: FeedFile) -> tuple[Any, list[str]]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    notes = []
    body = file.body
    stripped = body.lstrip(b" \t\r\n")
    if stripped != body:
        notes.append("blank lines before the XML declaration (skipped)")
    try:
        return etree.fromstring(stripped, parser, base_url=file.url), notes
    except etree.XMLSyntaxError as error:
        notes.append(f"not well-formed ({error}); read as Windows-1252 text, in recover mode")
    text = stripped.decode("cp1252", "replace")
    text = text.split("?>", 1)[1] if text.startswith("<?xml") else text
    loose = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=True)
    return etree.fromstring(text.encode("utf-8"), loose, base_url=file.url), notes


def _read_xml(file: FeedFile) -> Reading:
    root, notes = _xml_root(file)
    if root is None:
        return Reading("unknown", [], [*notes, "no root element"])
    if root.tag == "rss":
        items = root.xpath("channel/item | item")
        return Reading("rss", [_rss_item(item, None) for item in items], notes)
    if root.tag == f"{{{RDF}}}RDF":
        namespaces = {"r": RSS_10 if root.xpath("r:*", namespaces={"r": RSS_10}) else RSS_090}
        items = root.xpath("r:item | r:channel/r:item", namespaces=namespaces)
        return Reading("rdf", [_rss_item(item, namespaces["r"]) for item in items], notes)
    if root.tag in (f"{{{ATOM}}}feed", f"{{{ATOM_03}}}feed"):
        ns = {"a": root.tag[1:].split("}")[0]}
        entries = root.xpath("a:entry", namespaces=ns)
        return Reading("atom", [_atom_entry(entry, ns) for entry in entries], notes)
    return Reading("unknown", [], [*notes, f"root element {root.tag}"])


def _rss_item(item: Any, ns: str | None) -> Said:
    names = {"r": ns} if ns else None
    p = "r:" if ns else ""
    titles = item.xpath(f"{p}title", namespaces=names)
    title = _plain_title(html_to_text(_string(titles[0]))) if titles else None
    link = raw = None
    links = item.xpath(f"{p}link", namespaces=names)
    if links and _string(links[0]).strip():
        raw = _string(links[0]).strip()
        link = _resolve(links[0].base, raw)
    else:
        guids = item.xpath(f"{p}guid", namespaces=names)
        if guids and guids[0].get("isPermaLink", "true") == "true" and _string(guids[0]).strip():
            raw = _string(guids[0]).strip()
            link = _resolve(guids[0].base, raw)
    texts = item.xpath(f"{p}description | c:encoded", namespaces={**(names or {}), "c": CONTENT})
    has_text = any(html_to_text(_string(t)) for t in texts)
    return Said(title, link, raw, empty=not (title or raw or has_text))


def _atom_text(element: Any) -> str:
    kind = (element.get("type") or "text").strip().lower()
    if kind in ("xhtml", "application/xhtml+xml") or element.get("mode") == "xml":
        return clean_text(_string(element))
    if kind in ("html", "text/html"):
        return html_to_text(_string(element))
    return clean_text(_string(element))


def _atom_entry(entry: Any, ns: Mapping[str, str]) -> Said:
    titles = entry.xpath("a:title", namespaces=ns)
    title = _plain_title(_atom_text(titles[0])) if titles else None
    candidates = entry.xpath(
        "a:link[not(@rel) or normalize-space(@rel)='alternate']", namespaces=ns
    )
    preferred = [c for c in candidates if (c.get("type") or "text/html").lower() in HTML_TYPES]
    link = raw = None
    for candidate in (preferred or candidates)[:1]:
        raw = candidate.get("href")
        link = _resolve(candidate.base, raw or "")
    texts = entry.xpath("a:summary | a:content", namespaces=ns)
    has_text = any(_atom_text(t) for t in texts)
    return Said(title, link, raw, empty=not (title or raw or has_text))


def _read_json(file: FeedFile) -> Reading:
    document = json.loads(file.body)
    if isinstance(document, dict) and isinstance(document.get("rss"), dict):
        channel = document["rss"].get("channel") or {}
        items = channel.get("item") or []
        items = items if isinstance(items, list) else [items]
        said = [_json_item(i, file.url, rss=True) for i in items if isinstance(i, dict)]
        return Reading("rss-in-json", said, ["RSS written as JSON, no JSON Feed"])
    version = document.get("version") if isinstance(document, dict) else None
    if not isinstance(version, str) or "jsonfeed.org/version/" not in version:
        return Reading("unknown", [], ["JSON without a JSON Feed version"])
    items = document.get("items")
    items = items if isinstance(items, list) else []
    return Reading("json", [_json_item(i, file.url) for i in items if isinstance(i, dict)])


def _json_item(item: Mapping[str, Any], url: str, *, rss: bool = False) -> Said:
    """A JSON Feed item (title as text, `url`), or an rss-in-json one (RSS's names and rules)."""
    raw_title = item.get("title")
    text = html_to_text if rss else clean_text
    title = _plain_title(text(raw_title)) if isinstance(raw_title, str) else None
    raw = item.get("link" if rss else "url")
    raw = raw if isinstance(raw, str) else None
    link = _resolve(url, raw) if raw else None
    texts = [item.get(k) for k in ("content_html", "content_text", "summary", "description")]
    has_text = any(isinstance(t, str) and html_to_text(t) for t in texts)
    return Said(title, link, raw, empty=not (title or raw or has_text))


# --- the comparison -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    file: str
    index: int | None  # the item's position in the feed; None for the whole file
    field: str  # "title", "link", "count" or "feed"
    digest: str | None  # what digest gave
    feed: str | None  # what the feed says

    @property
    def key(self) -> tuple[str, int | None, str]:
        return (self.file, self.index, self.field)

    @property
    def deliberate(self) -> str | None:
        return DELIBERATE.get(self.key)

    def describe(self) -> str:
        where = f"entry {self.index}" if self.index is not None else "the feed"
        return (
            f"{self.file}, {where}, {self.field}: digest gives {self.digest!r}, "
            f"the feed says {self.feed!r}"
        )


@dataclass
class FileResult:
    name: str
    kind: str
    items: int  # in the feed
    entries: int | None  # from digest; None when digest refused the feed
    differences: list[Difference] = field(default_factory=list)
    second_opinion: list[Difference] = field(default_factory=list)  # feedparser's, not ours
    notes: list[str] = field(default_factory=list)

    @property
    def undocumented(self) -> list[Difference]:
        return [d for d in self.differences if d.deliberate is None]

    @property
    def deliberate(self) -> list[Difference]:
        return [d for d in self.differences if d.deliberate is not None]

    def count(self, name: str) -> int:
        return sum(1 for d in self.differences if d.field == name)


def _aligned(said: list[Said], got: int) -> list[int | None]:
    """Which item each of `got` entries stands for: all of them in order, or, when digest
    has fewer, the items that are not empty (those it may drop); [] when neither fits."""
    if got == len(said):
        return list(range(len(said)))
    kept = [index for index, item in enumerate(said) if not item.empty]
    return list(kept) if got == len(kept) else []


def compare_file(file: FeedFile, *, second_opinion: bool = True) -> FileResult:
    """digest's entries of one file against what the file says; feedparser's as well, unless
    second_opinion is False (feedparser takes most of the time)."""
    reading = read_document(file)
    result = FileResult(file.name, reading.kind, len(reading.items), None, notes=[*reading.notes])
    try:
        parsed = parse_feed(
            file.body, url=file.url, headers={"content-type": file.content_type}, now=NOW
        )
    except ParseError as error:
        result.differences.append(
            Difference(file.name, None, "feed", f"ParseError: {error}", f"{reading.kind} feed")
        )
    else:
        entries = parsed.entries
        result.entries = len(entries)
        order = _aligned(reading.items, len(entries))
        if len(entries) != len(reading.items):
            if order:
                dropped = sorted(set(range(len(reading.items))) - set(order))
                result.notes.append(f"items {dropped} have no title, text or link: dropped")
            else:
                result.differences.append(
                    Difference(file.name, None, "count", str(len(entries)), str(len(reading.items)))
                )
        pairs = (
            ((i, e.title, e.link) for i, e in zip(order, entries, strict=True))
            if order
            else ((i, e.title, e.link) for i, e in enumerate(entries))
        )
        result.differences += _differ(file.name, reading.items, pairs)
    if second_opinion and reading.kind not in JSON_KINDS:  # feedparser 6.0 reads no JSON
        result.second_opinion = _feedparser(file, reading)
    return result


def _differ(
    name: str, said: list[Said], got: Iterable[tuple[int | None, str, str | None]]
) -> list[Difference]:
    differences = []
    for index, title, link in got:
        if index is None or index >= len(said):
            continue
        item = said[index]
        if item.title is not None and title != item.title:
            differences.append(Difference(name, index, "title", title, item.title))
        if link != item.link:
            differences.append(Difference(name, index, "link", link, item.link))
    return differences


def _feedparser(file: FeedFile, reading: Reading) -> list[Difference]:
    """Where feedparser's entry.title and entry.link differ from what the feed says."""
    headers = {"content-type": file.content_type, "content-location": file.url}
    parsed = feedparser.parse(io.BytesIO(file.body), response_headers=headers)
    entries = list(parsed.entries)
    if len(entries) != len(reading.items):
        return [Difference(file.name, None, "count", str(len(entries)), str(len(reading.items)))]
    differences = []
    for index, (entry, item) in enumerate(zip(entries, reading.items, strict=True)):
        raw_title = entry.get("title")
        title = raw_title if isinstance(raw_title, str) else ""
        readings = {_plain_title(clean_text(title)), _plain_title(html_to_text(title))}
        if item.title is not None and item.title not in readings:
            shown = _plain_title(html_to_text(title))
            differences.append(Difference(file.name, index, "title", shown, item.title))
        link = entry.get("link")
        link = _safe(link) if isinstance(link, str) else None
        if link != item.link:
            differences.append(Difference(file.name, index, "link", link, item.link))
    return differences


def check(folder: Path = REAL_FEEDS, charset: str | None = None) -> list[FileResult]:
    formats = manifest(folder)
    return [
        compare_file(FeedFile(name, formats.get(name, ""), (folder / name).read_bytes(), charset))
        for name in feed_names(folder)
    ]


def stale(results: Iterable[FileResult], files: Iterable[str]) -> list[tuple[str, int | None, str]]:
    """DELIBERATE entries of these files that no longer happen (or name no file here)."""
    checked = set(files)
    seen = {d.key for result in results for d in result.differences}
    return [key for key in DELIBERATE if key[0] in checked and key not in seen]


# --- the report ---------------------------------------------------------------------------------


def report(console: Console, results: list[FileResult], verbose: bool) -> int:
    table = Table(title=f"Titles and links of {len(results)} real feeds: digest against the feed")
    for column in ("file", "kind", "items", "entries", "title ≠", "link ≠", "other ≠"):
        table.add_column(column, justify="left" if column in ("file", "kind") else "right")
    table.add_column("deliberate", justify="right")
    table.add_column("undocumented", justify="right")
    table.add_column("feedparser ≠", justify="right")
    for r in results:
        other = len(r.differences) - r.count("title") - r.count("link")
        table.add_row(
            r.name,
            r.kind,
            str(r.items),
            "refused" if r.entries is None else str(r.entries),
            str(r.count("title")),
            str(r.count("link")),
            str(other),
            str(len(r.deliberate)),
            f"[bold red]{len(r.undocumented)}[/]" if r.undocumented else "0",
            "n/a" if r.kind in JSON_KINDS else str(len(r.second_opinion)),
        )
    totals = [
        sum(r.items for r in results),
        sum(r.entries or 0 for r in results),
        sum(r.count("title") for r in results),
        sum(r.count("link") for r in results),
        sum(len(r.differences) - r.count("title") - r.count("link") for r in results),
        sum(len(r.deliberate) for r in results),
        sum(len(r.undocumented) for r in results),
        sum(len(r.second_opinion) for r in results),
    ]
    table.add_section()
    table.add_row("total", "", *map(str, totals), style="bold")
    console.print(table)
    for r in results:
        for note in r.notes:
            console.print(f"note: {r.name}: {note}", markup=False, highlight=False)
    for r in results:
        for d in r.deliberate:
            console.print(f"deliberate: {d.describe()}", markup=False, highlight=False)
            if verbose:
                console.print(f"    because {d.deliberate}", markup=False, highlight=False)
    undocumented = [d for r in results for d in r.undocumented]
    for d in undocumented:
        console.print(f"UNDOCUMENTED: {d.describe()}", markup=False, highlight=False)
    if verbose:
        for r in results:
            for d in r.second_opinion:
                line = f"feedparser: {d.describe().replace('digest gives', 'feedparser gives')}"
                console.print(line, markup=False, highlight=False)
    gone = stale(results, (r.name for r in results))
    for key in gone:
        console.print(f"STALE: DELIBERATE lists {key}, which no longer happens", markup=False)
    console.print(
        f"{len(results)} files, {totals[0]} items, {totals[1]} entries; "
        f"{len(undocumented)} undocumented and {totals[5]} deliberate differences; "
        f"feedparser {feedparser.__version__} differs from the feed {totals[7]} times "
        "(n/a: it reads no JSON)",
        highlight=False,
    )
    return 1 if undocumented or gone else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--folder", type=Path, default=REAL_FEEDS, help="the real feeds")
    parser.add_argument(
        "--verbose", action="store_true", help="give reasons, and feedparser's differences"
    )
    parser.add_argument(
        "--charset",
        help="serve every file with this charset in its Content-Type, as many servers do "
        "whatever the document says (utf-8: digest must still read a body that is not UTF-8 "
        "by its XML declaration; the reading here always follows the document)",
    )
    args = parser.parse_args(argv)
    if not feed_names(args.folder):
        print(f"no real feeds in {args.folder}", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.charset:
        console.print(f"Every file served with charset={args.charset}", highlight=False)
    return report(console, check(args.folder, args.charset), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
