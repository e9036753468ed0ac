"""Parse stage: feed files in tests/data/parse/ next to the entries they must produce."""

from __future__ import annotations

import contextlib
import html
import json
import unicodedata
import xml.parsers.expat
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.parse import ParsedEntry, ParsedFeed, ParseError, dates, entry, parse_feed, text, urls
from digest.parse.text import BLURB_WORDS, clean_text, html_to_text
from digest.parse.xml import declares_entities
from tests.conftest import examples

DATA = Path(__file__).parent / "data" / "parse"
NOW = datetime(2025, 3, 28, 12, 0, tzinfo=UTC)
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
EXPECTED = sorted(p.name.removesuffix(".expected.json") for p in DATA.glob("*.expected.json"))


def parse_file(name: str) -> tuple[ParsedFeed, dict[str, Any]]:
    expected = json.loads((DATA / f"{name}.expected.json").read_text("utf-8"))
    body = (DATA / name).read_bytes()
    return parse_feed(body, url=expected["url"], headers=expected["headers"], now=NOW), expected


def rss(items: str, channel: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
        f"<link>https://example.org/</link>{channel}{items}</channel></rss>"
    ).encode()


def atom(entries: str, feed: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>T</title><id>urn:x</id>{feed}{entries}</feed>"
    ).encode()


def one(body: bytes, url: str = "https://example.org/feed", **kwargs: Any) -> ParsedEntry:
    (entry,) = parse_feed(body, url=url, now=kwargs.pop("now", NOW), **kwargs).entries
    return entry


def is_clean(text: str) -> bool:
    """One line with single spaces and no control, bidi or byte-order-mark character."""
    return (
        text == " ".join(text.split())
        and not any(unicodedata.category(c) in ("Cc", "Cs") for c in text)
        and not BIDI.intersection(text)
        and "\ufeff" not in text
    )


# --- data files -------------------------------------------------------------------------------


def test_every_feed_file_has_expectations() -> None:
    feeds = {p.name for p in DATA.iterdir() if not p.name.endswith(".expected.json")}
    assert feeds - set(EXPECTED) == {"entities.xml"}  # the refused one: tested below


@pytest.mark.parametrize("name", EXPECTED)
def test_feed_file_produces_expected_entries(name: str) -> None:
    parsed, expected = parse_file(name)

    assert {"title": parsed.title, "link": parsed.link} == expected["feed"]
    got = []
    for item, want in zip(parsed.entries, expected["entries"], strict=False):
        row = {
            "key": item.key,
            "title": item.title,
            "link": item.link,
            "published": item.published.isoformat() if item.published else None,
            "summary": item.summary,
            "author": item.author,
        }
        if want["key"] is None:  # identity by hash: its exact value is not the point
            assert item.key.startswith("sha256:") and len(item.key) == 71
            row["key"] = None
        got.append(row)
    assert got == expected["entries"]
    assert len(parsed.entries) == len(expected["entries"])


@pytest.mark.parametrize("name", EXPECTED)
def test_feed_file_entries_are_safe_and_distinct(name: str) -> None:
    parsed, _ = parse_file(name)

    assert len({e.key for e in parsed.entries}) == len(parsed.entries)
    for item in parsed.entries:
        assert is_clean(item.title) and item.title
        assert is_clean(item.summary)
        assert item.author is None or is_clean(item.author)
        assert item.link is None or item.link.split(":")[0] in ("http", "https", "gemini")
        assert item.published is None or (item.published.tzinfo == UTC and item.published <= NOW)
    # Parsing is deterministic: the store compares keys and hashes across runs.
    assert parse_file(name)[0] == parsed


def test_hostile_content_becomes_plain_text_without_its_scripts() -> None:
    parsed, _ = parse_file("hostile.xml")

    for item in parsed.entries:
        for field in (item.title, item.summary):
            lowered = field.lower()
            for bad in ("<script", "<iframe", "<img", "onerror=", "alert(", "display:none"):
                assert bad not in lowered
    assert "Click here" in parsed.entries[0].summary


def test_billion_laughs_is_refused_before_parsing() -> None:
    with pytest.raises(ParseError, match=r"^refused: the document declares XML entities$"):
        parse_feed((DATA / "entities.xml").read_bytes(), url="https://laughs.example/feed")


@pytest.mark.parametrize(
    "prolog",
    [
        '<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        '<!doctype rss [<!entity big "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">]>',
        # A '<tag' inside a comment, a PI or a quoted string must not end the prolog early.
        '<!-- <rss> --><!DOCTYPE rss [<!ENTITY a "b">]>',
        '<?pi <rss ?><!DOCTYPE rss [<!ENTITY a "b">]>',
        '<!DOCTYPE rss SYSTEM "<rss>" [<!-- ] > --><!ENTITY a "b">]>',
        '<!ENTITY a "b">',
    ],
)
def test_entity_declarations_are_refused_wherever_the_prolog_hides_them(prolog: str) -> None:
    body = f'<?xml version="1.0"?>{prolog}<rss version="2.0"><channel><title>&a;</title>'
    body += "<item><title>x</title></item></channel></rss>"

    with pytest.raises(ParseError, match="refused"):
        parse_feed(body.encode(), url="https://example.org/feed")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_entity_declarations_are_refused_in_wide_encodings(encoding: str) -> None:
    body = (DATA / "entities.xml").read_text("utf-8").replace('"utf-8"', f'"{encoding}"')

    with pytest.raises(ParseError, match="refused"):
        parse_feed(body.encode(encoding), url="https://example.org/feed")


def test_entity_text_inside_an_entry_is_not_a_declaration() -> None:
    body = rss(
        "<item><title>About XXE</title><link>https://example.org/xxe</link><description>"
        '<![CDATA[<pre><!ENTITY xxe SYSTEM "file:///etc/passwd"></pre>]]></description></item>'
    )

    entry = one(body)

    assert entry.title == "About XXE"
    assert entry.summary == ""  # the <!ENTITY ...> is markup to an HTML parser: nothing to show


def test_wide_encoded_feed_without_entities_parses() -> None:
    body = (DATA / "rss2.xml").read_text("utf-8").replace('"UTF-8"', '"UTF-16"')

    parsed = parse_feed(body.encode("utf-16"), url="https://example.net/feed/", now=NOW)

    assert [e.key for e in parsed.entries][:2] == [
        "https://example.net/?p=4711",
        "https://example.net/2025/03/27/23andme/",
    ]


def test_parse_runs_in_a_process_pool_and_errors_cross_back() -> None:
    body = (DATA / "atom10.xml").read_bytes()
    with ProcessPoolExecutor(max_workers=1) as pool:
        remote = pool.submit(parse_feed, body, url="https://notes.example/atom.xml", now=NOW)
        refused = pool.submit(
            parse_feed, (DATA / "entities.xml").read_bytes(), url="https://x.example/"
        )
        assert remote.result(timeout=120) == parse_feed(
            body, url="https://notes.example/atom.xml", now=NOW
        )
        with pytest.raises(ParseError, match="refused"):
            refused.result(timeout=120)


# --- not a feed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"", {}, "the body is empty"),
        (b"  \n ", {"content-type": "application/rss+xml"}, "the body is empty"),
        (b"hello, world\n", {"content-type": "text/plain"}, "not a feed: "),
        (b"<?xml version='1.0'?><note><to>you</to></note>", {}, "no RSS, RDF or Atom root"),
        (b'{"items": []}', {}, "JSON without a JSON Feed version"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}', {}, "items list"),
        (b"[1, 2, 3]", {"content-type": "application/json"}, "JSON without a JSON Feed version"),
        (b'{"version": ', {}, "invalid JSON"),
        (b"\xff\xfe{\x00", {"content-type": "application/json"}, "invalid JSON"),
    ],
)
def test_not_a_feed_is_a_parse_error(body: bytes, headers: dict[str, str], message: str) -> None:
    with pytest.raises(ParseError, match="not a feed") as caught:
        parse_feed(body, url="https://example.org/x", headers=headers)
    assert message in str(caught.value)


def test_html_page_is_a_parse_error_that_says_so() -> None:
    page = b"""<!DOCTYPE html>
<html><head><title>Example Net</title><link rel="alternate" href="/feed/"></head>
<body><h1>Welcome</h1><p>Latest posts<br><a href="/a">A</a></body></html>"""

    with pytest.raises(ParseError, match=r"not a feed \(an HTML page\): \S") as caught:
        parse_feed(page, url="https://example.net/", headers={"Content-Type": "text/html"})
    assert "tag mismatch: link line 2 and head" in str(caught.value)  # the parser's reason


def test_broken_feed_that_still_yields_entries_is_accepted() -> None:
    truncated = rss("<item><title>Kept</title><link>https://example.org/k</link></item>")[:-20]

    assert one(truncated).title == "Kept"


def test_valid_feed_without_entries_is_empty_not_an_error() -> None:
    parsed = parse_feed(rss(""), url="https://example.org/feed")

    assert parsed == ParsedFeed(title="T", link="https://example.org/", entries=())


# --- text -------------------------------------------------------------------------------------


def test_titles_are_plain_text_with_entities_decoded_once() -> None:
    body = rss(
        "<item><title>Tom &amp;amp;amp; Jerry &lt;b&gt;live&lt;/b&gt;&#160;now</title>"
        "<link>https://example.org/t</link></item>"
    )

    # XML decodes one level, HTML one more: the author wrote "Tom &amp; Jerry <b>live</b>".
    assert one(body).title == "Tom &amp; Jerry live now"


def test_plain_text_folds_whitespace_and_drops_controls() -> None:
    assert clean_text("  a\t\tb\r\n c\u00a0d\x0be\x1ff ") == "a b c d e f"
    assert clean_text("x\x00y\x07z\x7f\x81!\u202egnp.exe\u2066\u200f") == "xyz!gnp.exe"
    # C1 controls are Windows-1252 punctuation that went through a Latin-1 step.
    assert clean_text("\x93quoted\x94 \x96 \x85") == "“quoted” – …"
    assert html_to_text("<p>One</p><p>two<br>three</p><ul><li>four</li></ul>") == (
        "One two three four"
    )
    assert html_to_text("<b>bold</b>ly <script>alert(1)</script><style>p{}</style>go") == (
        "boldly go"
    )


def test_empty_title_uses_the_first_words_of_the_blurb_else_the_link() -> None:
    words = " ".join(f"w{i}" for i in range(30))
    body = rss(
        f"<item><title> </title><description>{words}</description>"
        "<link>https://example.org/a</link></item>"
        "<item><title>&lt;br&gt;</title><link>https://example.org/b</link></item>"
        "<item><description>&lt;p&gt;&lt;/p&gt;</description></item>"
    )

    entries = parse_feed(body, url="https://example.org/feed").entries

    assert [e.title for e in entries] == [
        "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11…",
        "https://example.org/b",
    ]  # the third has no title, text or link: nothing a reader could see or follow


def test_blurb_is_cut_at_sixty_words_with_an_ellipsis() -> None:
    long = " ".join(f"word{i}" for i in range(100))
    exact = " ".join(f"word{i}" for i in range(BLURB_WORDS))
    body = rss(
        f"<item><guid>a</guid><title>a</title><description>{long}</description></item>"
        f"<item><guid>b</guid><title>b</title><description>{exact}</description></item>"
        f"<item><guid>c</guid><title>c</title><content:encoded xmlns:content="
        f'"http://purl.org/rss/1.0/modules/content/">&lt;p&gt;{long}&lt;/p&gt;</content:encoded>'
        "</item>"
    )

    cut, whole, from_content = parse_feed(body, url="https://example.org/feed").entries

    assert cut.summary == " ".join(f"word{i}" for i in range(60)) + "…"
    assert whole.summary == exact
    assert from_content.summary == cut.summary


def test_blurb_without_spaces_is_cut_by_length() -> None:
    body = rss(
        f"<item><guid>a</guid><title>CJK</title><description>{'字' * 3000}</description></item>"
    )

    summary = one(body).summary

    assert summary.endswith("…") and 100 < len(summary) <= 501


def test_author_is_plain_text() -> None:
    body = atom(
        "<entry><id>1</id><title>t</title><author><name>Ann\u202e &lt;b&gt;\n Lee</name>"
        "</author></entry><entry><id>2</id><title>u</title></entry>"
    )

    first, second = parse_feed(body, url="https://example.org/feed").entries

    assert first.author == "Ann <b> Lee"  # Atom names are text: the '<b>' is what was written
    assert second.author is None


# --- links ------------------------------------------------------------------------------------


def test_relative_rss_link_resolves_against_the_fetch_url() -> None:
    body = rss("<item><title>a</title><link>../posts/a b</link></item>")

    entry = one(body, url="https://example.org/blog/feed/rss.xml")

    assert entry.link == "https://example.org/blog/posts/a%20b"
    assert entry.key == entry.link


def test_relative_links_in_a_gemini_served_atom_feed_stay_gemini() -> None:
    body = atom('<entry><title>a</title><link href="posts/a.gmi"/></entry>')

    entry = one(body, url="gemini://capsule.example/log/atom.xml")

    assert entry.link == "gemini://capsule.example/log/posts/a.gmi"


def test_permalink_guid_resolves_but_an_opaque_one_is_kept_as_written() -> None:
    items = "<item><title>a</title><guid>posts/a</guid></item>"
    items += '<item><title>b</title><guid isPermaLink="false">1234</guid></item>'

    a, b = parse_feed(rss(items), url="https://example.org/blog/feed", now=NOW).entries

    assert (a.key, a.link) == ("https://example.org/blog/posts/a", a.key)
    assert (b.key, b.link) == ("1234", None)


TRICKY_URLS = [
    "https://example.org/a", "posts/b", "/c", "//other.example/d", "../e", "?page=2", "#top", "",
    "urn:uuid:1", "tag:example.org,2025:1", "1234", "https://example.org/a?", "http:///f",
    "https://example.org/p;x", "https://example.org/?a=1&amp;b=2", "HTTPS://EXAMPLE.ORG/G",
    "gemini://capsule.example/h", "javascript:x()", " https://example.org/i ", "https://[::1",
]  # fmt: skip


@settings(max_examples=examples(300), deadline=None)
@given(
    st.booleans(),
    st.lists(
        st.tuples(
            st.none() | st.sampled_from(TRICKY_URLS),
            st.none() | st.sampled_from(TRICKY_URLS),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["https://example.org/blog/feed", "gemini://capsule.example/atom.xml"]),
)
def test_links_and_ids_are_the_same_whether_or_not_the_server_names_the_feed_location(
    is_atom: bool, items: list[tuple[str | None, str | None, bool]], url: str
) -> None:
    # Content-Location names the base that relative links resolve against: here the same.
    def element(name: str, value: str | None, attributes: str = "") -> str:
        return "" if value is None else f"<{name}{attributes}>{html.escape(value)}</{name}>"

    if is_atom:
        body = atom(
            "".join(
                f"<entry><title>{n}</title>{element('id', id_)}"
                + ("" if link is None else f'<link href="{html.escape(link)}"/>')
                + "</entry>"
                for n, (link, id_, _) in enumerate(items)
            )
        )
    else:
        body = rss(
            "".join(
                f"<item><title>{n}</title>{element('link', link)}"
                + element("guid", id_, f' isPermaLink="{str(permalink).lower()}"')
                + "</item>"
                for n, (link, id_, permalink) in enumerate(items)
            )
        )

    named = parse_feed(body, url=url, headers={"Content-Location": url}, now=NOW)

    assert parse_feed(body, url=url, now=NOW) == named


def test_unusable_content_location_is_ignored() -> None:
    body = rss("<item><title>a</title><link>posts/a</link></item>")

    entry = one(
        body, url="https://example.org/blog/feed", headers={"Content-Location": "http://[::1"}
    )

    assert entry.link == "https://example.org/blog/posts/a"


def test_unsafe_schemes_drop_the_link() -> None:
    links = ["javascript:x()", "data:text/html,x", "mailto:a@b.example", "file:///etc/passwd"]
    links += ["ftp://files.example/x", "vbscript:x", "http://", "https://[::1"]
    items = "".join(
        f"<item><title>{i}</title><link>{html.escape(u)}</link></item>" for i, u in enumerate(links)
    )

    entries = parse_feed(rss(items), url="https://example.org/feed").entries

    assert [e.link for e in entries] == [None] * len(links)


# --- dates ------------------------------------------------------------------------------------


def test_future_date_is_clamped_to_now_and_keeps_its_key() -> None:
    body = rss("<item><title>Soon</title><pubDate>Tue, 01 Jan 2030 00:00:00 GMT</pubDate></item>")

    first = one(body, now=NOW)
    later = one(body, now=datetime(2025, 6, 1, tzinfo=UTC))

    assert first.published == NOW
    assert later.published == datetime(2025, 6, 1, tzinfo=UTC)
    assert first.key == later.key and first.key.startswith("sha256:")


def json_feed(date_published: str) -> bytes:
    item = {"id": "1", "title": "t", "date_published": date_published}
    return json.dumps({"version": "https://jsonfeed.org/version/1", "items": [item]}).encode()


TEN_AM = datetime(2025, 3, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (atom("<entry><id>1</id><title>t</title><published>2025-03-01T10:00:00</published></entry>"),
         TEN_AM),
        (rss("<item><title>t</title><pubDate>Sat, 01 Mar 2025 10:00:00</pubDate></item>"), TEN_AM),
        (json_feed("2025-03-01T10:00:00"), TEN_AM),
        (json_feed("2025-03-01T05:00:00-05:00"), TEN_AM),
        (json_feed("Sat, 01 Mar 2025 10:00:00 GMT"), TEN_AM),
    ],
)  # fmt: skip
def test_naive_dates_are_read_as_utc(body: bytes, expected: datetime) -> None:
    published = one(body).published

    assert published == expected and published is not None and published.tzinfo == UTC


def test_updated_is_used_when_published_is_missing_and_none_without_either() -> None:
    body = atom(
        "<entry><id>1</id><title>a</title><updated>2025-03-02T00:00:00Z</updated></entry>"
        "<entry><id>2</id><title>b</title></entry>"
        "<entry><id>3</id><title>c</title><updated>not a date</updated></entry>"
    )

    dates = [e.published for e in parse_feed(body, url="https://example.org/feed").entries]

    assert dates == [datetime(2025, 3, 2, tzinfo=UTC), None, None]


# --- identity and change ----------------------------------------------------------------------


def test_key_is_id_else_link_else_a_deterministic_hash() -> None:
    long_id = "tag:example.org," + "x" * 600
    body = rss(
        '<item><guid isPermaLink="false"> id-1 </guid><title>a</title>'
        "<link>https://example.org/1</link></item>"
        "<item><guid></guid><title>b</title><link>https://example.org/2</link></item>"
        "<item><title>c</title><pubDate>Sat, 01 Mar 2025 10:00:00 GMT</pubDate></item>"
        "<item><title>d</title><pubDate>Sat, 01 Mar 2025 10:00:00 GMT</pubDate></item>"
        "<item><title>c</title><pubDate>Sun, 02 Mar 2025 10:00:00 GMT</pubDate></item>"
        f"<item><guid>{long_id}</guid><title>e</title></item>"
    )

    keys = [e.key for e in parse_feed(body, url="https://example.org/feed").entries]

    assert keys[:2] == ["id-1", "https://example.org/2"]
    assert all(k.startswith("sha256:") and len(k) <= 600 for k in keys[2:])
    assert len(set(keys)) == len(keys)
    assert keys == [e.key for e in parse_feed(body, url="https://example.org/feed").entries]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("ab", None), ("a", "b")),
        ((None, ""), ("", None)),
        (("1:a", "b"), ("1", "a:b")),
        (("", "", ""), ("", "")),
        (("-",), (None,)),
    ],
)
def test_content_hashes_of_different_parts_differ(
    a: tuple[str | None, ...], b: tuple[str | None, ...]
) -> None:
    assert entry._content_hash(*a) != entry._content_hash(*b)


def test_content_hash_ignores_timestamps_but_sees_real_changes() -> None:
    def entry(title: str, updated: str, build: str) -> ParsedEntry:
        return one(
            rss(
                f"<item><guid>1</guid><title>{title}</title><link>https://example.org/1</link>"
                "<description>Body</description><pubDate>Sat, 01 Mar 2025 10:00:00 GMT</pubDate>"
                f"<atom:updated xmlns:atom='http://www.w3.org/2005/Atom'>{updated}</atom:updated>"
                "</item>",
                channel=f"<lastBuildDate>{build}</lastBuildDate>",
            )
        )

    def atom_entry(updated: str, feed_updated: str) -> ParsedEntry:
        return one(
            atom(
                f"<entry><title>A</title><updated>{updated}</updated>"
                "<content type='html'>&lt;p&gt;Body&lt;/p&gt;</content></entry>",
                feed=f"<updated>{feed_updated}</updated>",
            )
        )

    base = entry("Title", "2025-03-01T10:00:00Z", "Sat, 01 Mar 2025 10:00:00 GMT")
    touched = entry("Title", "2025-03-05T10:00:00Z", "Wed, 05 Mar 2025 10:00:00 GMT")
    retitled = entry("New title", "2025-03-01T10:00:00Z", "Sat, 01 Mar 2025 10:00:00 GMT")

    assert touched.content_hash == base.content_hash
    assert retitled.content_hash != base.content_hash
    assert retitled.key == base.key
    first = atom_entry("2025-03-01T00:00:00Z", "2025-03-01T00:00:00Z")
    again = atom_entry("2025-03-09T00:00:00Z", "2025-03-10T00:00:00Z")
    assert (again.key, again.content_hash) == (first.key, first.content_hash)
    assert again.published == datetime(2025, 3, 9, tzinfo=UTC)


def test_hashed_key_ignores_a_changing_updated_date() -> None:
    def entry(updated: str) -> ParsedEntry:
        return one(
            atom(f"<entry><title>No id, no link</title><updated>{updated}</updated></entry>")
        )

    assert entry("2025-03-01T00:00:00Z").key == entry("2025-03-02T00:00:00Z").key


# --- formats by detection ---------------------------------------------------------------------


def test_json_feed_is_detected_by_its_body_and_reads_the_1_0_author() -> None:
    body = b"""\xef\xbb\xbf {"version": "https://jsonfeed.org/version/1", "title": "J",
        "home_page_url": "https://j.example/blog/",
        "items": [{"id": "1", "url": "one", "title": "One", "author": {"name": "Solo"},
                   "content_text": "Line <one>\\u0000 & two\\ud800"}]}"""

    parsed = parse_feed(body, url="https://j.example/feed.json", headers={}, now=NOW)

    (item,) = parsed.entries
    assert (item.link, item.author, item.summary) == (
        "https://j.example/blog/one",
        "Solo",
        "Line <one> & two\ufffd",
    )


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("gemini://capsule.example/gemlog/", {}),
        ("gemini://capsule.example/gemlog/index.gmi", {}),
        ("gemini://capsule.example", {}),
        ("https://capsule.example/gemlog", {"Content-Type": "text/gemini"}),
    ],
)
def test_gemsub_is_detected_by_type_or_gemini_url(url: str, headers: dict[str, str]) -> None:
    body = b"# Log\n=> /a.gmi 2025-03-01 First\n"

    parsed = parse_feed(body, url=url, headers=headers, now=NOW)

    assert parsed.title == "Log"
    assert [(e.title, e.published) for e in parsed.entries] == [
        ("First", datetime(2025, 3, 1, 12, tzinfo=UTC))
    ]
    assert parsed.entries[0].link == url.split("://")[0] + "://capsule.example/a.gmi"


def test_gemsub_future_date_is_clamped_and_invalid_utf8_replaced() -> None:
    body = "# Log\n=> next.gmi 2099-01-01 — Café".encode() + b"\xff!\n"

    (item,) = parse_feed(body, url="gemini://c.example/", now=NOW).entries

    assert (item.title, item.published) == ("Café\ufffd!", NOW)


def test_gemini_url_with_another_type_is_not_gemsub() -> None:
    body = atom("<entry><id>1</id><title>From Atom</title></entry>")

    parsed = parse_feed(
        body, url="gemini://c.example/", headers={"content-type": "application/atom+xml"}
    )

    assert [e.title for e in parsed.entries] == ["From Atom"]


# --- properties -------------------------------------------------------------------------------


@given(st.text())
def test_clean_text_output_is_clean_and_idempotent(text: str) -> None:
    out = clean_text(text)

    assert is_clean(out)
    assert clean_text(out) == out


@given(st.text())
def test_html_to_text_output_is_clean_for_any_input(text: str) -> None:
    out = html_to_text(text)

    assert is_clean(out)
    assert clean_text(out) == out
    # Idempotent as text: its output, escaped back into HTML, comes out unchanged.
    assert html_to_text(html.escape(out)) == out


@given(st.text())
def test_escaped_text_round_trips_decoding_each_entity_once(text: str) -> None:
    assert html_to_text(html.escape(text)) == clean_text(text)


# Text that the character tables act on: every kind of space and control, C1, bidi controls,
# the byte-order mark, lone surrogates, cp1252's gaps, and pure ASCII for its own fast path.
TABLE_CHARACTERS = st.sampled_from(
    [chr(c) for c in (*range(0x21), *range(0x7E, 0xA2), 0xFF, 0x061C, 0x200E, 0x202E, 0x2066)]
    + ["\u2028", "\u3000", "\ud800", "\udfff", "\ufeff", "é", "’", "a", "b"]
)
TABLE_TEXTS = st.text(st.characters(max_codepoint=0x7F)) | st.lists(
    TABLE_CHARACTERS | st.characters(blacklist_categories=()), max_size=30
).map("".join)


@settings(max_examples=examples(500))
@given(TABLE_TEXTS)
def test_translations_are_what_str_translate_gives(value: str) -> None:
    for translation in (text.drop_controls, text._drop_html_controls):
        assert translation(value) == value.translate(translation.table)


@settings(max_examples=examples(500))
@given(TABLE_TEXTS)
def test_clean_text_folds_like_split_and_join(value: str) -> None:
    assert clean_text(value) == " ".join(value.translate(text._DROP).split())


@given(
    st.lists(st.sampled_from(["a", "bb", "ccc", " ", "  ", ",", ":", "字"]), max_size=20).map(
        "".join
    ),
    st.none() | st.integers(0, 8),
    st.integers(1, 12),
)
def test_shorten_cuts_whole_words_then_characters(
    value: str, words: int | None, chars: int
) -> None:
    # The plain way, which shorten does without splitting what it cuts off.
    parts = value.split(" ")
    cut = value if words is None or len(parts) <= words else " ".join(parts[:words])
    if len(cut) > chars:
        cut = cut[:chars].rsplit(" ", 1)[0] if " " in cut[:chars] else cut[:chars]

    assert text.shorten(value, words, chars) == (
        value if cut == value else cut.rstrip(" ,;:") + "…"
    )


URL_BASES = st.sampled_from(
    [
        "http://127.0.0.1:9000/feed/1.xml",
        "https://example.com/a/b/?q=1#top",
        "https://example.com",
        "http://[::1]:8080/x;p?q",
        "gemini://capsule.example/gemlog/",
        "file:///srv/feeds/a.xml",
    ]
)


# No deadline: a loaded machine (a full `make test`) makes a fast example slow now and then.
@settings(max_examples=examples(300), deadline=None)
@given(st.from_regex(urls.PLAIN_ABSOLUTE_URL, fullmatch=True), URL_BASES)
def test_plain_absolute_urls_are_what_urljoin_gives_back(url: str, base: str) -> None:
    """The fast paths in absolute_url and resolve skip urljoin only for URLs it would hand
    back unchanged, with a host: the slow path's own conditions."""
    assert urljoin(base, url) == url
    assert urlsplit(url).hostname
    assert urls.absolute_url(url, base) == url
    assert urls.resolve(url, base) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a?",  # urljoin drops an empty query...
        "http://example.com/a#",  # ...and an empty fragment
        "http://example.com/a;",  # ...and empty params
        "HTTP://example.com/a",  # urlsplit lowers the scheme
        "http://example.com/a b",  # spaces are percent-encoded by the slow path
        "http://exämple.com/",
        "http://[::1]/",
    ],
)
def test_urls_urljoin_would_change_take_the_slow_path(url: str) -> None:
    assert urls.PLAIN_ABSOLUTE_URL.fullmatch(url) is None


HTML_PIECES = st.one_of(
    st.sampled_from(
        [
            "<p>", "</p>", "<br>", "<br/>", "<b>", "</b>", "<i>", "</i>", "<div>", "</div>",
            "<li>", "<ul>", "</ul>", "<table>", "<tr>", "<td>", "</td>", "</table>", "<pre>\n",
            "</pre>", "<section>", "<address>", "<h2>", "<script>x<p>y</p>", "</script>",
            "<style>p{}", "</style>", "<textarea>", "</textarea>", "<xmp>", "</xmp>",
            "<svg><text>", "</svg>", "<math>", "<template>", "<noscript>", "<title>",
            "<!-- c -->", "<!--", "-->", "<![CDATA[c]]>", "<?pi?>", "<!doctype html>",
            '<a href="javascript:x()" title="a>b">', '<a href="/rel">', "</a>",
            "<img alt='a<b' src=x>", '<abbr title="&quot;>">', "<p class=\"x\">", "</br>",
            "&amp;", "&lt;", "&gt;", "&nbsp;", "&quot;", "&#39;", "&#x26;", "&#0;", "&#128;",
            "&#x110000;", "&amp", "&copy", "&notit;", "&unknown;", "&", "<", ">", "\"", "'",
            " ", "\n", "\t", "\r", "\x0b", "\x00", "\x85", "\u200f", "\u2028", "\ufeff",
        ]
    ),
    st.text(max_size=6),
)  # fmt: skip


WORDS = st.sampled_from(["word ", "two words ", "字字字", "long-" * 5, " ", "\n"])


@settings(max_examples=examples(1000), deadline=None)
@given(st.lists(HTML_PIECES | WORDS, max_size=60).map("".join), st.integers(1, 40))
def test_html_blurb_is_the_blurb_of_the_whole_text(fragment: str, first_slice: int) -> None:
    """html_blurb reads slices of an article; the blurb must be what the whole gives.

    The limits shrink so that short generated fragments exercise every cut the slices make.
    """
    with (
        mock.patch.object(text, "_BLURB_SLICE", first_slice),
        mock.patch.object(text, "BLURB_WORDS", 4),
        mock.patch.object(text, "BLURB_CHARS", 30),
    ):
        whole = text.shorten(html_to_text(fragment), 4, 30)
        assert text.html_blurb(fragment) == whole


TAG_NAMES = st.sampled_from(["b", "i", "p", "a", "script", "img", "div", "span", "svg", "x-y"])
CHUNKS = st.text(st.characters(blacklist_characters="<"), max_size=20)


@given(st.lists(st.tuples(TAG_NAMES, CHUNKS), min_size=1, max_size=8))
def test_html_to_text_strips_every_input_tag_and_keeps_the_text(
    parts: list[tuple[str, str]],
) -> None:
    fragment = "".join(
        f'<{tag} onclick="x()">{html.escape(chunk)}</{tag}>'
        if tag != "script"
        else "<script>1</script>"
        for tag, chunk in parts
    )

    out = html_to_text(fragment)

    assert not any(f"<{tag}" in out for tag, _ in parts)
    kept = "".join(chunk for tag, chunk in parts if tag != "script")
    assert "".join(out.split()) == "".join(clean_text(kept).split())


PROLOG_PIECES = st.sampled_from(
    [
        *("<!DOCTYPE r [", "]>", "<!ENTITY b 'c'>", "<!ENTITY", " ", '"', "'", "<!--", "-->"),
        *("<?pi ", "?>", "<r>", "<r/>", ">", "[", "]", "x", 'SYSTEM "<r>"'),
        '<!ATTLIST r a CDATA "<r>">',
    ]
)


def expat_declares_entities(document: str) -> bool:
    declared: list[object] = []
    parser = xml.parsers.expat.ParserCreate()
    parser.EntityDeclHandler = lambda *args: declared.append(args)
    # Declarations before a syntax error are reported all the same.
    with contextlib.suppress(xml.parsers.expat.ExpatError):
        parser.Parse(document, True)
    return bool(declared)


@settings(max_examples=examples(500))
@given(*(st.lists(PROLOG_PIECES, max_size=n) for n in (6, 4, 6)))
def test_every_entity_declaration_expat_sees_is_refused(
    before: list[str], inside: list[str], after: list[str]
) -> None:
    document = "".join(before) + "<!DOCTYPE r [" + "".join(inside) + '<!ENTITY a "b">]>'
    document += "".join(after) + "<r/>"

    if expat_declares_entities(document):
        assert declares_entities(document)


# --- the real web: encodings, broken XML, format variants ------------------------------------


def titled(title: bytes, declaration: bytes = b'<?xml version="1.0"?>') -> bytes:
    return (
        declaration
        + b'<rss version="2.0"><channel><title>T</title><item><title>'
        + title
        + b"</title><link>https://example.org/a</link></item></channel></rss>"
    )


@pytest.mark.parametrize(
    ("body", "headers", "title"),
    [
        # The XML declaration names the encoding; no HTTP charset.
        (titled("Привет".encode("cp1251"), b'<?xml version="1.0" encoding="windows-1251"?>'),
         {}, "Привет"),
        # The HTTP charset names it, the declaration does not.
        (titled("Grüße".encode("iso-8859-15")), {"Content-Type": "text/xml; charset=ISO-8859-15"},
         "Grüße"),
        # The server says UTF-8 but the bytes are not: the declaration says what they are.
        (titled("Grüße".encode("latin-1"), b'<?xml version="1.0" encoding="ISO-8859-1"?>'),
         {"Content-Type": "application/rss+xml; charset=utf-8"}, "Grüße"),
        # The server's default Latin-1 over a document that declares its own encoding.
        (titled("Цитата".encode("cp1251"), b'<?xml version="1.0" encoding="windows-1251"?>'),
         {"Content-Type": "text/xml; charset=ISO-8859-1"}, "Цитата"),
        # The server says Latin-1 but the bytes are valid UTF-8: no mojibake.
        (titled("naïve — ok".encode()), {"Content-Type": "application/rss+xml; charset=iso-8859-1"},
         "naïve — ok"),
        # The declaration says Latin-1, the bytes are UTF-8.
        (titled("naïve".encode(), b'<?xml version="1.0" encoding="ISO-8859-1"?>'), {}, "naïve"),
        # Windows-1252 punctuation in a document labelled Latin-1.
        (titled(b"\x93a\x94 \x96 b\x85", b'<?xml version="1.0" encoding="iso-8859-1"?>'), {},
         "“a” – b…"),
        # A BOM wins over a declaration that contradicts it.
        (b"\xef\xbb\xbf" + titled("café".encode(), b'<?xml version="1.0" encoding="latin-1"?>'),
         {}, "café"),
        # UTF-16 with a BOM, and without one.
        (titled("日本".encode()).decode().encode("utf-16"), {}, "日本"),
        (titled("日本".encode()).decode().encode("utf-16-be"), {}, "日本"),
        # Undeclared and invalid UTF-8: Windows-1252, as browsers read it.
        (titled(b"caf\xe9 \x80"), {}, "café €"),
        # UTF-8 with one stray byte stays UTF-8, the byte replaced.
        (titled("über".encode() + b" \xff"), {}, "über \ufffd"),
        # An unknown or non-text charset is ignored.
        (titled(b"ok", b'<?xml version="1.0" encoding="x-klingon"?>'),
         {"Content-Type": "text/xml; charset=hex"}, "ok"),
        # Blank lines before the declaration.
        (b"\n \r\n" + titled(b"fine", b'<?xml version="1.0" encoding="utf-8"?>'), {},
         "fine"),
    ],
)  # fmt: skip
def test_encodings_as_real_sites_send_them(
    body: bytes, headers: dict[str, str], title: str
) -> None:
    assert one(body, headers=headers).title == title


def test_html_entities_and_bare_ampersands_are_read_not_dropped() -> None:
    body = titled(b"Caf&eacute; &amp; Bar&nbsp;&mdash; AT&T &bogus; &#8217;")

    assert one(body).title == "Café & Bar — AT&T &bogus; ’"


def test_cdata_is_taken_as_written_when_the_document_is_repaired() -> None:
    body = rss(
        "<item><title>Fish &chips;</title><link>https://example.org/a</link><description>"
        "<![CDATA[<p>Tom &amp; Jerry &copy;</p>]]></description></item>"
    )

    entry = one(body)

    assert (entry.title, entry.summary) == ("Fish &chips;", "Tom & Jerry ©")


def test_a_document_lxml_cannot_root_goes_to_feedparser() -> None:
    body = b"garbage first " + rss(
        "<item><title>Saved</title><link>https://e.example/s</link></item>"
    )

    assert one(body).title == "Saved"


def test_rss_in_a_namespace_and_items_outside_the_channel() -> None:
    userland = (
        b'<rss version="2.0" xmlns="http://backend.userland.com/rss2"><channel><title>U</title>'
        b"<item><title>Namespaced</title><link>https://u.example/1</link></item></channel></rss>"
    )
    old = (
        b'<rss version="0.91"><channel><title>O</title></channel>'
        b"<item><title>Beside</title><link>https://o.example/1</link></item></rss>"
    )

    assert one(userland).title == "Namespaced"
    assert one(old).title == "Beside"


def test_rdf_items_inside_the_channel_are_read_too() -> None:
    body = (
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        b'xmlns="http://my.netscape.com/rdf/simple/0.9/"><channel><title>C</title>'
        b"<item><title>In</title><link>https://c.example/in</link></item></channel>"
        b"<item><title>Out</title><link>https://c.example/out</link></item></rdf:RDF>"
    )

    parsed = parse_feed(body, url="https://c.example/rdf", now=NOW)

    assert sorted(e.title for e in parsed.entries) == ["In", "Out"]


def test_atom_text_constructs_are_read_by_their_type() -> None:
    body = atom(
        '<entry><id>1</id><title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
        "A <b>bold</b> &amp; <i>brave</i> title</div></title>"
        '<summary type="text">&lt;p&gt; is a tag</summary></entry>'
        '<entry><id>2</id><title type="html">&lt;em&gt;Escaped&lt;/em&gt; &amp;amp; more</title>'
        '<content type="image/png">iVBORw0KGgo=</content></entry>'
        '<entry><id>3</id><title>Out of line</title><content src="https://e.example/x" '
        'type="text/html"/><summary type="html">&lt;p&gt;Said here&lt;/p&gt;</summary></entry>'
    )

    first, second, third = parse_feed(body, url="https://example.org/feed", now=NOW).entries

    assert (first.title, first.summary) == ("A bold & brave title", "<p> is a tag")
    assert (second.title, second.summary) == ("Escaped & more", "")
    assert third.summary == "Said here"


def test_deep_nesting_fails_that_feed_quickly_and_plainly() -> None:
    body = rss("<item><title>x</title>" + "<a>" * 100_000 + "</a>" * 100_000 + "</item>")

    try:
        entries = parse_feed(body, url="https://example.org/feed", now=NOW).entries
    except ParseError as error:
        assert "not a feed" in str(error)
    else:
        assert [e.title for e in entries] == ["x"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 25 Mar 2025 10:00:00 GMT", datetime(2025, 3, 25, 10, tzinfo=UTC)),
        ("Tue, 25 Mar 2025 10:00:00 +0100", datetime(2025, 3, 25, 9, tzinfo=UTC)),
        ("25 Mar 2025 10:00 EST", datetime(2025, 3, 25, 15, tzinfo=UTC)),
        ("Tue, 25 Mar 25 10:00:00 GMT", datetime(2025, 3, 25, 10, tzinfo=UTC)),
        ("Tue, 25 March 2025 10:00:00 +01:00", datetime(2025, 3, 25, 9, tzinfo=UTC)),
        ("2025-03-25T10:00:00Z", datetime(2025, 3, 25, 10, tzinfo=UTC)),
        ("2025-03-25T10:00:00.123456+02:00", datetime(2025, 3, 25, 8, tzinfo=UTC)),
        ("2025-03-25t10:00:00z", datetime(2025, 3, 25, 10, tzinfo=UTC)),
        ("2025-03-25 10:00:00 +0000", datetime(2025, 3, 25, 10, tzinfo=UTC)),
        ("2025-03-25", datetime(2025, 3, 25, tzinfo=UTC)),
        ("2025-03", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025/3/25 14:33:00", datetime(2025, 3, 25, 14, 33, tzinfo=UTC)),
        ("  Tue, 25 Mar 2025 10:00:00 GMT\n", datetime(2025, 3, 25, 10, tzinfo=UTC)),
        ("Tue, 30 Feb 2025 10:00:00 GMT", None),
        ("0000-01-01T00:00:00Z", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_dates_in_the_shapes_feeds_write_them(value: str, expected: datetime | None) -> None:
    assert dates.parse_date(value) == expected


# Around the RFC 822 shape that the common path reads itself: days that do not exist, times
# and zones out of range, the ends of datetime's range.
RFC822_FITTING = [
    ["Fri", "Sat", "Sun", "Mon", "Tue", "Wed", "Thu"],
    ["28", "01", "29", "30", "31", "00", "32", "99"],
    ["Mar", "Feb", "Dec", "Oct"],
    ["2025", "2024", "2100", "1899", "1000", "9999"],
    ["10:00:00", "23:59:59", "00:00:00", "24:00:00", "12:60:00", "12:00:60", "99:99:99"],
    ["GMT", "UTC", "Z", "+0000", "-1200", "+1400", "+0530", "-0060", "+9999", "-9999"],
]


@settings(max_examples=examples(500))
@given(st.tuples(*(st.sampled_from(choices) for choices in RFC822_FITTING)))
def test_the_common_rfc822_path_is_the_general_one(fields: tuple[str, ...]) -> None:
    value = f"{fields[0]}, " + " ".join(fields[1:])
    match = dates._COMMON_RFC822.fullmatch(value)

    assert match is not None
    assert dates._common_rfc822(match) == dates._rfc822(value)


def test_no_private_feedparser_name_is_used() -> None:
    source = Path(__file__).parents[1] / "src" / "digest"
    for path in source.rglob("*.py"):
        code = path.read_text("utf-8")
        assert "from feedparser." not in code and "feedparser._" not in code, path
