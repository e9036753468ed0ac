"""`digest amend`: a closed edition corrected in place: same ids, a new `updated`, nothing
else changed; and a feed reader (newsboat) shows the correction after a reload."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest

from tests.desk_site import NOW, DeskSite, Story
from tests.test_published_clients import served  # noqa: F401  (a fixture)
from tests.validators import newsboat_reload, validate_atom

ATOM = "{http://www.w3.org/2005/Atom}"
# Two closings of one day in the past, so that an amendment's time differs from theirs.
FIRST, SECOND = NOW - timedelta(minutes=50), NOW - timedelta(minutes=20)
if FIRST.date() != SECOND.date():  # just after midnight: both on the day before
    FIRST, SECOND = SECOND - timedelta(hours=2), SECOND - timedelta(hours=1)


def atom_entries(path: Path) -> dict[str, tuple[str, str, str]]:
    """id -> (title, published, updated) of an Atom feed's entries."""
    root = ET.parse(path).getroot()
    return {
        entry.findtext(f"{ATOM}id", ""): (
            entry.findtext(f"{ATOM}title", ""),
            entry.findtext(f"{ATOM}published", ""),
            entry.findtext(f"{ATOM}updated", ""),
        )
        for entry in root.iter(f"{ATOM}entry")
    }


def two_editions(site: DeskSite) -> tuple[str, str]:
    """Two editions of one day, closed at FIRST and SECOND."""
    site.root.mkdir(exist_ok=True)
    site.feed(
        "sci",
        [
            Story(
                "Coral grows back", "https://sci.example/1", published=FIRST - timedelta(minutes=5)
            ),
            Story(
                "Bees cuont to four",
                "https://sci.example/2",
                published=FIRST - timedelta(minutes=5),
            ),
        ],
    )
    site.ok("poll")
    site.ok("build", "--at", f"{FIRST:%Y-%m-%d %H:%M:%S}")
    site.feed(
        "sci",
        [Story("Patch now", "https://sci.example/3", published=SECOND - timedelta(minutes=5))],
    )
    site.ok("poll", "--all")
    site.ok("build", "--at", f"{SECOND:%Y-%m-%d %H:%M:%S}")
    day = f"{FIRST:%Y/%m/%d}"
    return f"links/{day}/1", f"links/{day}/2"


@pytest.fixture
def desk(tmp_path: Path) -> DeskSite:
    return DeskSite(tmp_path / "site")


def test_amend_rewrites_one_edition_with_the_same_ids_and_a_new_updated(desk: DeskSite) -> None:
    first, second = two_editions(desk)
    listing = desk.ok("amend", first).stdout.splitlines()
    assert listing[0] == f"{first}: Links {FIRST:%d/%m/%Y}: Coral grows back and Bees cuont to four"
    typo = next(line.split()[0] for line in listing[1:] if "Bees cuont" in line)
    feeds = [desk.public / "links" / "feed.xml", desk.public / "feed.xml"]
    before = {path: atom_entries(path) for path in feeds}
    pages = {path: path.read_bytes() for path in desk.public.rglob("*") if path.is_file()}

    result = desk.ok(
        "amend", first, "--hide", typo, "--hide", typo.upper(), "--title", "Coral grows back"
    )
    assert f"amended {first}: Links {FIRST:%d/%m/%Y}: Coral grows back" in result.stdout
    assert result.stdout.count("taken out: Bees cuont to four") == 1  # named twice, out once

    for path in feeds:
        validate_atom(path)
        after = atom_entries(path)
        assert after.keys() == before[path].keys()  # the same ids
        for entry_id, (title, published, updated) in after.items():
            if entry_id.endswith(f"{first}.html"):
                assert title == f"Links {FIRST:%d/%m/%Y}: Coral grows back"
                assert published == before[path][entry_id][1]
                assert updated > published  # the same offset (UTC): compared as text
            else:
                assert (title, published, updated) == before[path][entry_id]  # nothing else's
    changed = {
        path.relative_to(desk.public).as_posix()
        for path, data in pages.items()
        if path.read_bytes() != data
    }
    assert f"{first}.html" in changed and f"{first}.gmi" in changed
    assert f"{second}.html" not in changed and f"{second}.gmi" not in changed
    page = (desk.public / f"{first}.html").read_text()
    assert "Bees cuont" not in page and "Coral grows back" in page
    # The page says when it was corrected; the other edition's does not.
    assert "· corrected <time datetime=" in page
    assert "\nCorrected " in (desk.public / f"{first}.gmi").read_text()
    assert "corrected" not in (desk.public / f"{second}.html").read_text().casefold()
    # The entry stays out of later editions too: amending is not un-publishing.
    assert "Bees cuont to four" not in [*desk.titles(), *desk.held()]
    # A rebuild of the whole site renders the same bytes (the amendment is stored).
    desk.ok("render")
    assert (desk.public / f"{first}.html").read_text() == page


def test_amend_refuses_what_it_cannot_do_and_changes_nothing(desk: DeskSite) -> None:
    first, second = two_editions(desk)
    pages = {path: path.read_bytes() for path in desk.public.rglob("*") if path.is_file()}
    other = desk.ok("amend", second).stdout.splitlines()[1].split()[0]
    cases = {
        ("amend", first, "--hide", other): f"{other}: not an item of {first}",
        (
            "amend",
            "links/2020/01/01/1",
            "--title",
            "x",
        ): "no edition links/2020/01/01/1 in the database",
        ("amend", "nonsense", "--title", "x"): "'nonsense' is not an edition",
        ("amend", first, "--title", "  "): "--title: the new words are empty",
    }
    for args, message in cases.items():
        result = desk.digest(*args)
        assert result.exit_code == 2, args
        assert message in result.stderr and "nothing changed" in result.stderr
    every = [line.split()[0] for line in desk.ok("amend", second).stdout.splitlines()[1:]]
    result = desk.digest("amend", second, *[arg for h in every for arg in ("--hide", h)])
    assert result.exit_code == 2 and "would leave" in result.stderr
    assert {path: path.read_bytes() for path in desk.public.rglob("*") if path.is_file()} == pages


def test_newsboat_shows_the_amended_title_after_a_reload(
    served: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, url = served
    desk = DeskSite(tmp_path / "site")
    first, _ = two_editions(desk)
    feed = url + "links/feed.xml"

    def titles() -> dict[str, str]:
        (root / "links").mkdir(exist_ok=True)
        (root / "links" / "feed.xml").write_bytes((desk.public / "links" / "feed.xml").read_bytes())
        cache = newsboat_reload(home, [feed])
        with sqlite3.connect(cache) as db:
            return dict(db.execute("SELECT guid, title FROM rss_item").fetchall())

    home = tmp_path / "home"
    home.mkdir()
    old = titles()
    guid = f"https://links.example.org/{first}.html"
    assert old[guid] == f"Links {FIRST:%d/%m/%Y}: Coral grows back and Bees cuont to four"
    desk.ok("amend", first, "--title", "Coral grows back and Bees count to four")
    new = titles()
    assert new.keys() == old.keys()  # no second item for the same edition
    assert new[guid] == f"Links {FIRST:%d/%m/%Y}: Coral grows back and Bees count to four"
    assert {g: t for g, t in new.items() if g != guid} == {
        g: t for g, t in old.items() if g != guid
    }
