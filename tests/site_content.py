"""A site's content for render and publishing tests: two streams, three editions in one (two
on the same day, one across a DST change), hostile text everywhere a feed can put text."""

from __future__ import annotations

from datetime import UTC, date, datetime

from digest.editions import Edition, EditionItem, EditionSection
from digest.views import RecentPost, SiteContent, StreamContent

BASE = "https://links.example.org/"
GEMINI = "gemini://links.example.org/"

HOSTILE = [
    "<script>alert(1)</script>",
    '" onmouseover="x',
    "javascript:alert(1)",
    "=> gemini://evil.example/ click me",
    "# Heading",
    "```",
    "* x",
    "> y",
    "first line\n=> gemini://evil.example/ second line\r\n# third",
    "ctrl\x00\x07\x1b[31m red \u202etxt.exe\u2066 end\u2069",
]
LONG_WORD = "Unbreakable" + "x" * 180  # must wrap, not scroll, on a phone


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def item(source: str, title: str, link: str | None, blurb: str, when: datetime) -> EditionItem:
    return EditionItem(source=source, title=title, link=link, blurb=blurb, published=when)


def sample_content() -> SiteContent:
    """Two streams, three editions in one (two on the same day, one across a DST change),
    hostile text everywhere a feed can put text."""
    t = utc(2025, 3, 28, 9)
    hostile_items = tuple(
        item(f"Source {i}", text, f"https://news.example/{i}?a=1&b=2", text, t)
        for i, text in enumerate(HOSTILE)
    )
    e1 = Edition(
        stream="links",
        date=date(2025, 3, 28),
        number=1,
        title="Links 28/03/2025: Science <b>Wins</b>, Security Loses",
        summary="Links for the day",
        closed_at=utc(2025, 3, 28, 12),
        sections=(
            EditionSection(
                "Science",
                (
                    item("Example Net", "A Comet", "https://example.net/comet", "It is bright.", t),
                    item("Long Words", LONG_WORD, "https://example.net/long", LONG_WORD, t),
                ),
            ),
            EditionSection("Security", hostile_items),
            EditionSection(
                "Censorship/Free Speech",
                (
                    item("No Link Site", "No link here", None, "", t),
                    item("Bad Link", "Scripted link", "javascript:alert(1)", "Quoted.", t),
                ),
            ),
            EditionSection("# Sec\n=> gemini://evil.example/", (item("S", "T", None, "B", t),)),
        ),
    )
    e2 = Edition(
        stream="links",
        date=date(2025, 3, 28),
        number=2,
        title="Links 28/03/2025: Evening",
        summary="Links for the day",
        closed_at=utc(2025, 3, 28, 23),
        sections=(EditionSection("Leftovers", (item("A", "B", "https://a.example/", "C", t),)),),
    )
    # 23:30 UTC on 1 June is 00:30 on 2 June in London (BST).
    e3 = Edition(
        stream="links",
        date=date(2025, 6, 2),
        number=1,
        title="Links 02/06/2025: Summer",
        summary="Links for the day",
        closed_at=utc(2025, 6, 1, 23, 30),
        sections=(EditionSection("Science", (item("A", "Sun", "https://a.example/s", "", t),)),),
    )
    g1 = Edition(
        stream="gemini-links",
        date=date(2025, 3, 28),
        number=1,
        title="Gemini Links 28/03/2025: Rewatching The X-Files",
        summary="Gemini Links for the day",
        closed_at=utc(2025, 3, 28, 13),
        sections=(
            EditionSection(
                "Gemlogs",
                (item("A Capsule", "X-Files", "gemini://capsule.example/x.gmi", "Truth.", t),),
            ),
        ),
    )
    recent = [
        RecentPost(
            e3.title, e3.summary, BASE + e3.path + ".html", GEMINI + e3.path + ".gmi", e3.closed_at
        ),
        RecentPost(
            HOSTILE[8],
            HOSTILE[3],
            "https://links.example.org/own/1",
            "https://links.example.org/own/1",
            utc(2025, 3, 29, 8),
        ),
        RecentPost(
            HOSTILE[0],
            HOSTILE[1],
            "javascript:alert(1)",
            "javascript:alert(1)",
            utc(2025, 3, 29, 7),
        ),
        RecentPost(
            e1.title, e1.summary, BASE + e1.path + ".html", GEMINI + e1.path + ".gmi", e1.closed_at
        ),
    ]
    return SiteContent(
        title="Example <Links>",
        base_url=BASE,
        gemini_base_url=GEMINI,
        timezone="Europe/London",
        author="Example & Co",
        streams=[
            StreamContent("links", "Links", "Links for the day", [e3, e2, e1]),
            StreamContent("gemini-links", "Gemini Links", "Gemini Links for the day", [g1]),
        ],
        recent=recent,
        updated=utc(2025, 6, 1, 23, 30),
    )
