"""Render stage: the files DESIGN.md lists, their structure, hostile feed text, Atom validity,
atomic and unchanged writes, incremental renders, template overrides and write errors."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from lxml import etree, html

from digest.config import FEED_EDITIONS
from digest.editions import Edition, EditionSection
from digest.parse.text import clean_text
from digest.parse.urls import safe_url
from digest.render import RenderError, render_site
from digest.views import SiteContent, StreamContent, gemtext_line
from tests.site_content import BASE, GEMINI, HOSTILE, LONG_WORD, item, sample_content, utc
from tests.validators import (
    check_gemtext,
    classify_gemtext,
    html_safety_problems,
    run_vnu,
    validate_atom,
)


def editions_of(content: SiteContent) -> list[Edition]:
    return [edition for stream in content.streams for edition in stream.editions]


EXPECTED_FILES = [
    "index.html",
    "index.gmi",
    "feed.xml",
    "recent.html",
    "style.css",
    "links/index.html",
    "links/index.gmi",
    "links/feed.xml",
    "links/2025/03/28/1.html",
    "links/2025/03/28/1.gmi",
    "links/2025/03/28/2.html",
    "links/2025/03/28/2.gmi",
    "links/2025/06/02/1.html",
    "links/2025/06/02/1.gmi",
    "gemini-links/index.html",
    "gemini-links/index.gmi",
    "gemini-links/feed.xml",
    "gemini-links/2025/03/28/1.html",
    "gemini-links/2025/03/28/1.gmi",
    # archives: a page per year and per month that has editions
    "links/2025/index.html",
    "links/2025/index.gmi",
    "links/2025/03/index.html",
    "links/2025/03/index.gmi",
    "links/2025/06/index.html",
    "links/2025/06/index.gmi",
    "gemini-links/2025/index.html",
    "gemini-links/2025/index.gmi",
    "gemini-links/2025/03/index.html",
    "gemini-links/2025/03/index.gmi",
]


@pytest.fixture
def content() -> SiteContent:
    return sample_content()


@pytest.fixture
def public(tmp_path: Path, content: SiteContent) -> Path:
    out = tmp_path / "public"
    render_site(content, out)
    return out


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- text helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("a\nb\r\nc\td", "a b c d"),
        ("  spaced   out \u2028 x ", "spaced out x"),
        ("ctrl\x00\x07\x1b[31m", "ctrl[31m"),
        ("bidi \u202etxt.exe\u2066 \u200f", "bidi txt.exe"),
        ("bad \ud800 \ufffe \U0010ffff", "bad"),
        ("emoji 👩\u200d🔬 kept", "emoji 👩\u200d🔬 kept"),
        ("caf\u00e9\u00a0ok", "caf\u00e9 ok"),  # one rule with the parse stage: all spaces fold
    ],
)
def test_clean_text_folds_to_one_safe_line(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ("=> gemini://evil/ x", " => gemini://evil/ x"),
        ("# Heading", " # Heading"),
        ("* x", " * x"),
        ("*x", " *x"),
        ("> y", " > y"),
        ("```", " ```"),
        ("\n=> hidden", " => hidden"),
        ("plain => text", "plain => text"),
    ],
)
def test_gemtext_line_defuses_line_markers(raw: str, line: str) -> None:
    assert gemtext_line(raw) == line
    assert [gl.kind for gl in classify_gemtext(line + "\n")] == ["text"]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://example.org/a?b=1&c=2", True),
        ("http://example.org/", True),
        ("gemini://capsule.example/x.gmi", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("/relative/path", False),
        ("https://example.org/a b", False),
        ("https://example.org/\nx", False),
        (" https://example.org/", False),
        ("https:///no-host", False),
        ("https://[broken/", False),
        (None, False),
    ],
)
def test_safe_url_keeps_only_absolute_web_and_gemini_links(url: str | None, kept: bool) -> None:
    assert safe_url(url) == (url if kept else None)


# --- layout -----------------------------------------------------------------------------


def test_files_are_where_design_says(public: Path) -> None:
    assert all_files(public) == sorted(EXPECTED_FILES)


def test_relative_links_resolve_inside_the_output_folder(public: Path) -> None:
    """Pages opened from disk work: every relative href/src points at a file we wrote."""
    for page in public.rglob("*.html"):
        tree = html.fromstring(page.read_bytes())
        for element in tree.xpath("//*[@href or @src]"):
            target = element.get("href") or element.get("src")
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = (page.parent / target.split("#")[0]).resolve()
            assert resolved.is_file(), f"{page}: {target} -> {resolved}"
            assert public.resolve() in resolved.parents


# --- HTML -------------------------------------------------------------------------------


def page_tree(path: Path) -> html.HtmlElement:
    return html.fromstring(path.read_bytes())


def test_edition_page_has_title_date_contents_and_sections(public: Path) -> None:
    tree = page_tree(public / "links/2025/03/28/1.html")
    assert tree.get("lang") == "en"
    assert tree.xpath("//meta/@charset") == ["utf-8"]
    assert "width=device-width" in tree.xpath("//meta[@name='viewport']/@content")[0]
    assert tree.xpath("//link[@rel='stylesheet']/@href") == ["../../../../style.css"]
    feed_links = tree.xpath("//link[@rel='alternate'][@type='application/atom+xml']/@href")
    assert feed_links == [BASE + "links/feed.xml"]

    assert tree.xpath("string(//h1)") == "Links 28/03/2025: Science <b>Wins</b>, Security Loses"
    (time,) = tree.xpath("//p[@class='meta']/time")
    assert time.get("datetime") == "2025-03-28T12:00:00+00:00"
    assert time.text == "28 March 2025, 12:00 GMT"

    contents = tree.xpath("//nav[@class='contents']//a")
    sections = tree.xpath("//section[@id]")
    assert [a.text for a in contents] == [
        "Science",
        "Security",
        "Censorship/Free Speech",
        "# Sec => gemini://evil.example/",
    ]
    assert [a.get("href") for a in contents] == ["#" + s.get("id") for s in sections]
    assert len({s.get("id") for s in sections}) == 4
    assert [s.xpath("string(h2)") for s in sections] == [a.text for a in contents]

    science = sections[0].xpath("div[@class='item']")
    first = science[0]
    assert first.xpath("string(p)") == "Example Net ☛ A Comet"
    assert first.xpath("p/span[@class='source']")[0].text == "Example Net"
    assert first.xpath("p/a/@href") == ["https://example.net/comet"]
    assert first.xpath("string(blockquote)").strip() == "It is bright."

    security = sections[1].xpath("div[@class='item']")
    assert [i.xpath("string(p/a)") for i in security] == [clean_text(h) for h in HOSTILE]
    assert [i.xpath("string(blockquote)").strip() for i in security] == [
        clean_text(h) for h in HOSTILE
    ]
    assert security[0].xpath("p/a/@href") == ["https://news.example/0?a=1&b=2"]

    no_link, bad_link = sections[2].xpath("div[@class='item']")
    assert no_link.xpath("string(p)") == "No Link Site ☛ No link here"
    assert no_link.xpath("a|p/a|blockquote") == []  # no link, and no empty quote
    assert bad_link.xpath("p/a") == []
    assert bad_link.xpath("string(p)") == "Bad Link ☛ Scripted link"


def test_index_pages_list_newest_first_with_summaries(public: Path) -> None:
    stream = page_tree(public / "links/index.html")
    assert [a.get("href") for a in stream.xpath("//ul[@class='posts']//a")] == [
        "../links/2025/06/02/1.html",
        "../links/2025/03/28/2.html",
        "../links/2025/03/28/1.html",
    ]
    assert stream.xpath("//ul[@class='posts']//time/text()") == [
        "2025-06-02",
        "2025-03-28",
        "2025-03-28",
    ]
    assert stream.xpath("//link[@rel='alternate']/@href") == [BASE + "links/feed.xml"]

    site = page_tree(public / "index.html")
    posts = site.xpath("//section[@class='recent']//li")
    assert [p.xpath("string(time)") for p in posts] == [
        "2025-06-02",  # local date of 23:30 UTC on 1 June
        "2025-03-29",
        "2025-03-29",
        "2025-03-28",
    ]
    assert [p.xpath("string(a)") for p in posts] == [
        "Links 02/06/2025: Summer",
        clean_text(HOSTILE[8]),
        "",  # its javascript: URL is dropped, the title stays as text
        "Links 28/03/2025: Science <b>Wins</b>, Security Loses",
    ]
    assert "<script>alert(1)</script>" in posts[2].text_content()
    assert [p.xpath("string(span[@class='summary'])") for p in posts] == [
        "Links for the day",
        clean_text(HOSTILE[3]),
        clean_text(HOSTILE[1]),
        "Links for the day",
    ]
    assert site.xpath("//link[@rel='alternate']/@href") == [BASE + "feed.xml"]
    fragment = html.fragment_fromstring((public / "recent.html").read_text(), create_parent=True)
    assert [a.get("href") for a in fragment.xpath("//a")] == [
        BASE + "links/2025/06/02/1.html",
        "https://links.example.org/own/1",
        BASE + "links/2025/03/28/1.html",
    ]


def test_html_has_no_script_vectors_and_escapes_feed_text(public: Path) -> None:
    pages = sorted(public.rglob("*.html"))
    for page in pages:
        text = page.read_text()
        assert html_safety_problems(text) == [], page
        assert "<script" not in text.lower()
        assert not re.search(r"<[^>]*\son\w+\s*=", text), page
        assert not re.search(r"(href|src)\s*=\s*[\"']?\s*javascript:", text, re.I), page
        assert "\x1b" not in text and "\u202e" not in text
    edition = (public / "links/2025/03/28/1.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in edition
    assert "&#34; onmouseover=&#34;x" in edition


@pytest.mark.slow  # the Nu checker: a Java program
def test_html_passes_the_nu_checker(public: Path) -> None:
    # recent.html is a fragment, not a document; index.html includes it and is checked.
    run_vnu(p for p in sorted(public.rglob("*.html")) if p.name != "recent.html")


def test_stylesheet_keeps_a_narrow_readable_column(public: Path) -> None:
    css = (public / "style.css").read_text()
    assert "max-width" in css and "overflow-wrap: anywhere" in css
    assert len(css) < 4096


# --- gemtext ----------------------------------------------------------------------------


def test_edition_gemtext_lines_are_only_the_ones_we_meant(public: Path) -> None:
    text = (public / "links/2025/03/28/1.gmi").read_text()
    hostile_links = [
        (f"https://news.example/{i}?a=1&b=2", f"Source {i} ☛ {clean_text(h)}")
        for i, h in enumerate(HOSTILE)
    ]
    lines = check_gemtext(
        text,
        [
            ("https://example.net/comet", "Example Net ☛ A Comet"),
            ("https://example.net/long", f"Long Words ☛ {LONG_WORD}"),
            *hostile_links,
            (GEMINI + "links/", "Links"),
            (GEMINI, "Example <Links>"),
        ],
        expected_headings=[
            "# Links 28/03/2025: Science <b>Wins</b>, Security Loses",
            "## Science",
            "## Security",
            "## Censorship/Free Speech",
            "## # Sec => gemini://evil.example/",
        ],
        expected_quotes=[
            "> It is bright.",
            f"> {LONG_WORD}",
            *(f"> {clean_text(h)}" for h in HOSTILE),
            "> Quoted.",
            "> B",
        ],
        expected_list=[
            "* Science",
            "* Security",
            "* Censorship/Free Speech",
            "* # Sec => gemini://evil.example/",
        ],
    )
    texts = [line.text for line in lines if line.kind == "text" and line.text]
    assert texts == [
        "28 March 2025, 12:00 GMT",
        "Links for the day",
        "No Link Site ☛ No link here",
        "Bad Link ☛ Scripted link",
        "S ☛ T",
    ]


def test_gemtext_indexes_are_gemsub_feeds(public: Path) -> None:
    stream = (public / "links/index.gmi").read_text()
    assert stream.startswith("# Links\n")
    check_gemtext(
        stream,
        [
            (GEMINI + "links/2025/06/02/1.gmi", "2025-06-02 Links 02/06/2025: Summer"),
            (GEMINI + "links/2025/03/28/2.gmi", "2025-03-28 Links 28/03/2025: Evening"),
            (
                GEMINI + "links/2025/03/28/1.gmi",
                "2025-03-28 Links 28/03/2025: Science <b>Wins</b>, Security Loses",
            ),
            (GEMINI + "links/2025/index.gmi", "2025 (3 editions)"),
            (GEMINI, "Example <Links>"),
        ],
        expected_headings=["# Links", "## Archive"],
        expected_quotes=[],
        expected_list=[],
    )
    site = (public / "index.gmi").read_text()
    lines = check_gemtext(
        site,
        [
            (GEMINI + "links/", "Links: Links for the day"),
            (GEMINI + "gemini-links/", "Gemini Links: Gemini Links for the day"),
            (GEMINI + "links/2025/06/02/1.gmi", "2025-06-02 Links 02/06/2025: Summer"),
            ("https://links.example.org/own/1", f"2025-03-29 {clean_text(HOSTILE[8])}"),
            (
                GEMINI + "links/2025/03/28/1.gmi",
                "2025-03-28 Links 28/03/2025: Science <b>Wins</b>, Security Loses",
            ),
        ],
        expected_headings=["# Example <Links>", "## Recent posts"],
        expected_quotes=[],
        expected_list=[],
    )
    texts = [line.text for line in lines if line.kind == "text" and line.text]
    assert texts == [
        "Links for the day",
        " => gemini://evil.example/ click me",  # a summary, defused
        "2025-03-29 <script>alert(1)</script>",  # no safe URL: listed as text
        '" onmouseover="x',
        "Links for the day",
    ]


def test_every_gemtext_file_passes_the_line_check(public: Path) -> None:
    for page in public.rglob("*.gmi"):
        check_gemtext(page.read_text())


# --- Atom -------------------------------------------------------------------------------

OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")


def test_stream_feed_is_valid_atom_with_full_editions(public: Path) -> None:
    raw = (public / "links/feed.xml").read_bytes()
    parsed = validate_atom(raw)
    assert parsed.feed.id == BASE + "links/feed.xml"
    assert parsed.feed.title == "Links"
    links = {link.rel: link.href for link in parsed.feed.links}
    assert links == {"self": BASE + "links/feed.xml", "alternate": BASE + "links/"}
    assert parsed.feed.author == "Example & Co"
    assert [e.id for e in parsed.entries] == [
        BASE + "links/2025/06/02/1.html",
        BASE + "links/2025/03/28/2.html",
        BASE + "links/2025/03/28/1.html",
    ]
    assert [e.link for e in parsed.entries] == [e.id for e in parsed.entries]
    assert parsed.entries[2].title == "Links 28/03/2025: Science <b>Wins</b>, Security Loses"

    doc = etree.fromstring(raw)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    updated = doc.xpath("/a:feed/a:updated/text() | //a:entry/a:updated/text()", namespaces=ns)
    assert all(OFFSET.fullmatch(u) for u in updated), updated
    assert updated[0] == "2025-06-02T00:30:00+01:00"  # newest edition, local time with offset

    contents = doc.xpath("//a:entry/a:content", namespaces=ns)
    assert [c.get("type") for c in contents] == ["html"] * 3
    body = html.fragment_fromstring(contents[2].text, create_parent=True)
    assert html_safety_problems(contents[2].text) == []
    assert body.xpath("//section/h2/text()")[:2] == ["Science", "Security"]
    assert body.xpath("//a[text()='A Comet']/@href") == ["https://example.net/comet"]
    # Anchors point at the page, since a feed reader shows the content elsewhere.
    assert body.xpath("//nav//a/@href")[0] == BASE + "links/2025/03/28/1.html#science"
    assert "&lt;script&gt;" in contents[2].text


def test_site_feed_lists_recent_posts_with_safe_links(public: Path) -> None:
    parsed = validate_atom(public / "feed.xml")
    assert parsed.feed.id == BASE + "feed.xml"
    assert parsed.feed.updated == "2025-06-02T00:30:00+01:00"
    assert [(e.id, e.title, e.summary) for e in parsed.entries] == [
        (BASE + "links/2025/06/02/1.html", "Links 02/06/2025: Summer", "Links for the day"),
        ("https://links.example.org/own/1", clean_text(HOSTILE[8]), clean_text(HOSTILE[3])),
        (
            BASE + "links/2025/03/28/1.html",
            "Links 28/03/2025: Science <b>Wins</b>, Security Loses",
            "Links for the day",
        ),
    ]


def test_stream_feed_is_capped_but_the_index_lists_everything(tmp_path: Path) -> None:
    t = utc(2025, 1, 1)
    editions = [
        Edition("links", date(2025, 1, day), 1, f"Links {day}", "s", utc(2025, 1, day, 12), ())
        for day in range(30, 0, -1)
    ]
    content = SiteContent(
        "T", BASE, GEMINI, "UTC", "A", [StreamContent("links", "L", "s", editions)], [], t
    )
    render_site(content, tmp_path)
    parsed = validate_atom(tmp_path / "links/feed.xml")
    assert [e.title for e in parsed.entries] == [
        f"Links {d}" for d in range(30, 30 - FEED_EDITIONS, -1)
    ]
    listed = re.findall(r"^=> (\S+/\d+\.gmi) ", (tmp_path / "links/index.gmi").read_text(), re.M)
    assert len(listed) == 30  # under site.index_editions: every one


def test_empty_site_renders_valid_pages(tmp_path: Path) -> None:
    content = SiteContent(
        "T", BASE, GEMINI, "UTC", "A", [StreamContent("links", "L", "s", [])], [], utc(2025, 1, 1)
    )
    render_site(content, tmp_path)
    validate_atom(tmp_path / "feed.xml")
    assert validate_atom(tmp_path / "links/feed.xml").feed.updated == "2025-01-01T00:00:00+00:00"
    check_gemtext((tmp_path / "index.gmi").read_text())
    assert "No editions yet." in (tmp_path / "links/index.html").read_text()


# --- writing ----------------------------------------------------------------------------


def test_second_render_writes_nothing_and_keeps_mtimes(public: Path, content: SiteContent) -> None:
    old = 1_000_000_000
    for path in public.rglob("*"):
        os.utime(path, (old, old))
    before = {p: p.read_bytes() for p in public.rglob("*") if p.is_file()}

    report = render_site(content, public)

    assert report.written == []
    assert sorted(report.unchanged) == sorted(before)
    for path, data in before.items():
        assert path.read_bytes() == data
        assert path.stat().st_mtime == old


def test_output_is_deterministic_and_not_private(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    report = render_site(sample_content(), first)
    render_site(sample_content(), second)
    assert sorted(report.written) == sorted(first / f for f in EXPECTED_FILES)
    assert all_files(first) == all_files(second)
    for name in all_files(first):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
        assert (first / name).stat().st_mode & 0o777 == 0o644


def test_a_render_from_the_records_makes_only_what_changed(
    public: Path, content: SiteContent
) -> None:
    """Given what it published, a render makes only the files whose inputs changed (a new
    edition's pages, the indexes, feed and archive pages that list it) and reads no file:
    a page deleted by hand stays deleted, as nothing it is made of changed."""
    first = render_site(content, public)
    old_page = public / "links/2025/03/28/2.html"
    old_page.unlink()
    new = Edition(
        "links",
        date(2025, 6, 2),
        2,
        "Links 02/06/2025: Later",
        "Links for the day",
        utc(2025, 6, 2, 11),
        (
            EditionSection(
                "Science", (item("A", "Moon", "https://a.example/m", "Q", utc(2025, 6, 2)),)
            ),
        ),
    )
    links, gemini = content.streams
    newer = replace(
        content,
        streams=[
            StreamContent("links", "Links", "Links for the day", [new, *links.editions]),
            gemini,
        ],
    )

    report = render_site(newer, public, published=first.records)

    assert not old_page.exists()
    assert sorted(p.relative_to(public).as_posix() for p in report.written) == [
        "links/2025/06/02/2.gmi",
        "links/2025/06/02/2.html",
        "links/2025/06/index.gmi",
        "links/2025/06/index.html",
        "links/2025/index.gmi",
        "links/2025/index.html",
        "links/feed.xml",
        "links/index.gmi",
        "links/index.html",
    ]
    assert report.unchanged == []  # nothing else was even made
    assert "Links 02/06/2025: Later" in (public / "links/index.html").read_text()
    validate_atom(public / "links/feed.xml")
    again = render_site(newer, public, published={**first.records, **report.records})
    assert again.written == again.unchanged == []


def test_a_changed_template_makes_every_page_but_writes_only_changed_bytes(
    tmp_path: Path, content: SiteContent
) -> None:
    public = tmp_path / "public"
    first = render_site(content, public)
    override = tmp_path / "mine"
    override.mkdir()
    (override / "archive.gmi").write_text("# {{ archive.title }}\n")

    report = render_site(content, public, published=first.records, templates_override=override)

    written = sorted(p.relative_to(public).as_posix() for p in report.written)
    archives = [f for f in EXPECTED_FILES if f.endswith("/index.gmi") and f.count("/") > 1]
    assert written == sorted(archives)
    assert len(report.unchanged) == len(EXPECTED_FILES) - len(written)


def test_override_folder_replaces_one_template(tmp_path: Path, content: SiteContent) -> None:
    override = tmp_path / "mine"
    override.mkdir()
    (override / "edition.html").write_text(
        '<!DOCTYPE html><html lang="en"><title>{{ edition.title }}</title>'
        "<p id=mine>{% for s in edition.sections %}{{ s.items[0].title }}|{% endfor %}</p></html>\n"
    )
    out = tmp_path / "public"
    render_site(content, out, templates_override=override)

    page = (out / "links/2025/03/28/1.html").read_text()
    assert page.startswith(
        '<!DOCTYPE html><html lang="en"><title>Links 28/03/2025: Science &lt;b&gt;'
    )
    assert "<p id=mine>A Comet|&lt;script&gt;alert(1)&lt;/script&gt;|" in page
    assert html_safety_problems(page) == []
    # Everything else is still ours.
    assert 'class="recent"' in (out / "index.html").read_text()
    assert (out / "links/2025/03/28/1.gmi").read_text().startswith("# Links 28/03/2025")
    assert (out / "style.css").read_bytes() == (
        Path(__file__).parents[1] / "templates/style.css"
    ).read_bytes()


def test_feed_text_is_never_compiled_as_a_template(tmp_path: Path) -> None:
    t = utc(2025, 1, 1)
    jinja = "{{ 7 * 7 }} {% raw %} {# c #}"
    edition = Edition(
        "links",
        date(2025, 1, 1),
        1,
        jinja,
        jinja,
        t,
        (EditionSection(jinja, (item(jinja, jinja, None, jinja, t),)),),
    )
    content = SiteContent(
        "T", BASE, GEMINI, "UTC", "A", [StreamContent("links", "L", "s", [edition])], [], t
    )
    render_site(content, tmp_path)
    page = (tmp_path / "links/2025/01/01/1.html").read_text()
    assert page.count(jinja) >= 4 and "49" not in page


def render_in_child(
    content: SiteContent, out: Path, *, drop_root: bool = False, max_file_size: int | None = None
) -> tuple[int, str]:
    """Render in a forked child (fork, not exec, keeps the imports) set up to fail for real:
    as `nobody` (root writes anywhere, so a read-only folder only stops an ordinary user), or
    with a file size limit, which fails a write half way like a full disk does."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code, message = 0, "rendered"
        try:
            if drop_root and os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            if max_file_size is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
                hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, hard))
            render_site(content, out)
        except RenderError as error:
            code, message = 3, f"RenderError {error.path} {error}"
        except BaseException as error:
            code, message = 4, repr(error)
        os.write(write_end, message.encode())
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        message = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), message


def test_write_failing_half_way_keeps_the_old_page_and_no_temp_file(
    public: Path, content: SiteContent
) -> None:
    page = public / "links/2025/03/28/1.html"
    before = page.read_bytes()
    links, gemini = content.streams
    e3, e2, e1 = links.editions
    retitled = replace(e1, title="Links 28/03/2025: Corrected")
    changed = replace(content, streams=[replace(links, editions=[e3, e2, retitled]), gemini])
    assert len(before) > 2000  # so the limit below cuts the new page half way

    code, message = render_in_child(changed, public, max_file_size=2000)

    assert code == 3, message
    assert message.startswith(f"RenderError {page} cannot write {page}: File too large")
    assert page.read_bytes() == before
    assert list(public.rglob(".*")) == []


def test_target_that_is_a_folder_is_reported_by_path(public: Path, content: SiteContent) -> None:
    (public / "style.css").unlink()
    (public / "style.css").mkdir()
    with pytest.raises(RenderError) as caught:
        render_site(content, public)
    assert caught.value.path == public / "style.css"
    assert str(public / "style.css") in str(caught.value)
    assert (public / "style.css").is_dir()


def test_read_only_output_folder_raises_a_clear_error(content: SiteContent) -> None:
    # pytest's tmp_path is private to its owner, so the folder lives in a world-readable one.
    top = Path(tempfile.mkdtemp(prefix="digest-ro-"))
    out = top / "public"
    try:
        top.chmod(0o755)
        out.mkdir()
        out.chmod(0o555)
        code, message = render_in_child(content, out, drop_root=True)
        assert code == 3, message
        assert message.startswith(f"RenderError {out / 'style.css'} cannot write")
        assert "Permission denied" in message
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)
        shutil.rmtree(top)
