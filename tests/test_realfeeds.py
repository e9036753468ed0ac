"""Real feeds (issue 12): digest's titles and links against what each file of
../shared/realfeeds says, through bench.realfeeds_check.

The folder lives beside the project, not in it, so these tests skip (saying why) where it is
absent; the tests of the check's own reading below need no folder and always run.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from bench import realfeeds_check
from bench.realfeeds_check import (
    DELIBERATE,
    REAL_FEEDS,
    FeedFile,
    compare_file,
    feed_names,
    load,
    read_document,
)

from digest.parse import ParsedFeed, parse_feed

FILES = feed_names()
ABSENT = (
    f"no real feeds in {REAL_FEEDS}: they are kept beside the project (../shared), not in it"
    + (" (CI=true: a CI checkout has no ../shared)" if os.environ.get("CI") == "true" else "")
)
needs_folder = pytest.mark.skipif(not FILES, reason=ABSENT)


@pytest.mark.parametrize(
    "name", FILES or [pytest.param("(none)", marks=pytest.mark.skip(reason=ABSENT))]
)
def test_real_feed_titles_and_links(name: str) -> None:
    result = compare_file(load(name), second_opinion=False)
    problems = [d.describe() for d in result.undocumented]
    happened = {d.key for d in result.differences}
    stale = [key for key in DELIBERATE if key[0] == name and key not in happened]
    assert not problems, "differences neither fixed nor in DELIBERATE:\n" + "\n".join(problems)
    assert not stale, f"DELIBERATE lists differences that no longer happen: {stale}"


@needs_folder
def test_deliberate_names_only_files_that_are_there() -> None:
    missing = sorted({name for name, _, _ in DELIBERATE} - set(FILES))
    assert not missing, f"DELIBERATE names files not in {REAL_FEEDS}: {missing}"


def test_deliberate_entries_say_why() -> None:
    fields = {"title", "link", "count", "feed"}
    for (name, index, field), reason in DELIBERATE.items():
        assert field in fields and (index is None or index >= 0), (name, index, field)
        assert len(reason) > 40, f"{name}, {field}: say why, not just that"


# --- the check's own reading, on small documents: it must be able to see a wrong answer -----


def feed_file(name: str, body: str, kind: str = "") -> FeedFile:
    return FeedFile(name, kind, body.encode())


RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"
     xmlns:atom="http://www.w3.org/2005/Atom"><channel><title>T</title>
<item><media:title>Caption</media:title><title>Own &lt;b&gt;title&lt;/b&gt; &amp;amp; more</title>
  <link> /relative?a=1 </link><author><name>Jo</name><title>Job</title></author></item>
<item><title></title><guid>https://example.org/permalink</guid><description>Words.</description></item>
<item><title>No link</title><guid isPermaLink="false">tag:example.org,1</guid></item>
<item><title>Unsafe</title><link>javascript:alert(1)</link></item>
</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://example.org/blog/"><title>T</title>
<entry><title type="html">A &amp;lt;tag&amp;gt; &amp;amp; &lt;em&gt;markup&lt;/em&gt;</title>
  <author><name>Jo</name><title>Job</title></author>
  <link rel="related" href="https://other.example/"/>
  <link rel="alternate" type="application/pdf" href="paper.pdf"/>
  <link rel="alternate" type="text/html" href="post/" xml:base="2024/"/></entry>
<entry><title type="text">Plain &lt;b&gt; stays</title>
  <link href="thesis.pdf" type="application/pdf"/></entry>
<entry><title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">X<b>HT</b>ML</div></title>
  <link rel="alternate" href=""/></entry>
</feed>"""

JSON = """{"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": [
 {"id": "1", "title": " Spaced\\n  title ", "url": "https://example.org/1"},
 {"id": "2", "content_text": "No title here.", "url": "/2"}]}"""


def test_reading_rss_takes_the_items_own_elements() -> None:
    reading = read_document(feed_file("x.rss", RSS))
    assert reading.kind == "rss"
    assert [(s.title, s.link) for s in reading.items] == [
        ("Own title & more", "https://feeds.example/relative?a=1"),
        (None, "https://example.org/permalink"),
        ("No link", None),
        ("Unsafe", None),
    ]


def test_reading_atom_resolves_xml_base_and_prefers_html() -> None:
    reading = read_document(feed_file("x.atom", ATOM))
    assert reading.kind == "atom"
    assert [(s.title, s.link) for s in reading.items] == [
        ("A <tag> & markup", "https://example.org/blog/2024/post/"),
        ("Plain <b> stays", "https://example.org/blog/thesis.pdf"),
        # An empty href is the base, here the document's xml:base: what the spec says.
        ("XHTML", "https://example.org/blog/"),
    ]


def test_reading_json_feed() -> None:
    reading = read_document(feed_file("x.json", JSON, "jsonfeed"))
    assert [(s.title, s.link) for s in reading.items] == [
        ("Spaced title", "https://example.org/1"),
        (None, "https://feeds.example/2"),
    ]


def test_a_wrong_title_or_link_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is no formality: digest's answer, made wrong, is caught."""
    file = feed_file("x.rss", RSS, "rss2.0")
    assert compare_file(file).differences == []

    def wrong(*args: object, **kwargs: object) -> ParsedFeed:
        parsed = parse_feed(file.body, url=file.url, now=realfeeds_check.NOW)
        first, *rest = parsed.entries
        entries = (replace(first, title="Caption", link=None), *rest)
        return replace(parsed, entries=entries)

    monkeypatch.setattr(realfeeds_check, "parse_feed", wrong)
    result = compare_file(file)
    assert [(d.index, d.field, d.digest, d.feed) for d in result.undocumented] == [
        (0, "title", "Caption", "Own title & more"),
        (0, "link", None, "https://feeds.example/relative?a=1"),
    ]


def test_a_missing_entry_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    file = feed_file("x.atom", ATOM, "atom")

    def fewer(*args: object, **kwargs: object) -> ParsedFeed:
        parsed = parse_feed(file.body, url=file.url, now=realfeeds_check.NOW)
        return replace(parsed, entries=parsed.entries[1:])

    monkeypatch.setattr(realfeeds_check, "parse_feed", fewer)
    keys = [d.key for d in compare_file(file, second_opinion=False).undocumented]
    assert ("x.atom", None, "count") in keys


# --- a server's charset=utf-8 on a body that is not UTF-8 -----------------------------------


@needs_folder
def test_real_feeds_served_with_charset_utf8() -> None:
    """Servers often add charset=utf-8 whatever the document is: five of the real feeds are
    not UTF-8 (ISO-8859-1, windows-1251, gb2312, and undeclared Latin-1)."""
    problems = [
        d.describe()
        for name in FILES
        for d in compare_file(load(name, charset="utf-8"), second_opinion=False).undocumented
    ]
    assert not problems, f"{len(problems)} differences, the first: {problems[0]}"
