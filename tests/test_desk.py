"""The editor's desk: handles, choices in the database (SQLite and PostgreSQL), and the
commands an editor types (draft, hide, unhide, pin, unpin, headline, title, draft --edit),
checked by what the next `digest build` closes."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from digest.config import FeedSettings, StreamSettings
from digest.editions import close_edition, plan_edition
from digest.handles import ALPHABET, entry_id_of, handle_of
from digest.store import EditionRow, EntryRow, FeedRow, Store, store_entries
from digest.store.choices import (
    Choices,
    load_choices,
    set_headlines,
    set_hidden,
    set_pinned,
    set_title,
    spend,
)
from tests.conftest import add_feeds, make_entry, sqlite_copy
from tests.desk_site import NOW, DeskSite, Story

# --- handles ----------------------------------------------------------------------------


@settings(deadline=None)  # no timing: the machine may be busy
@given(st.integers(min_value=0, max_value=10**12))
def test_a_handle_names_its_entry_and_no_other(entry_id: int) -> None:
    handle = handle_of(entry_id)
    assert entry_id_of(handle) == entry_id
    assert entry_id_of(handle.upper()) == entry_id
    for position in range(len(handle)):  # one character mistyped: refused, never another id
        for char in ALPHABET:
            if char != handle[position]:
                typo = handle[:position] + char + handle[position + 1 :]
                assert entry_id_of(typo) is None, typo


def test_handles_are_short_and_forgive_look_alikes() -> None:
    assert len(handle_of(1)) == 4
    assert len(handle_of(32_767)) == 4
    assert len(handle_of(1_000_000)) == 5
    one = handle_of(1)  # "001…": 0 may be typed as o, 1 as l or i
    assert entry_id_of("oo" + one[2:].replace("1", "l")) == 1
    assert entry_id_of("") is None
    assert entry_id_of("12") is None  # too short
    assert entry_id_of("ab-c") is None  # not the alphabet
    assert entry_id_of(" " + handle_of(77) + "\n") == 77


# --- choices in the database, on both backends -------------------------------------------

T0 = datetime(2026, 12, 2, 9, tzinfo=UTC)
ZONE = ZoneInfo("UTC")
LINKS = StreamSettings(title="Links {date:%d/%m/%Y}: {headlines}", sections=("Science", "Security"))


def entry_ids(store: Store) -> dict[str, int]:
    feed = FeedSettings(url="https://a.example/feed", name="A", stream="links", section="Science")
    feed_id = add_feeds(store, [feed], T0)[feed.url]
    titles = ["One", "Two", "Three", "Old"]
    with store.writing() as session:
        store_entries(
            session,
            feed_id,
            [
                make_entry(title, published=T0 - timedelta(days=10 if title == "Old" else 1))
                for title in titles
            ],
            T0,
        )
    with store.reading() as session:
        return {
            title: entry_id
            for title, entry_id in session.execute(select(EntryRow.title, EntryRow.id))
        }


def test_choices_are_stored_and_spent_by_the_edition_that_used_them(store: Store) -> None:
    ids = entry_ids(store)
    with store.writing() as session:
        set_hidden(session, {ids["Two"]: "links"}, True, T0)
        set_pinned(session, {ids["Old"]: "links"}, {ids["Old"]: "Security"}, True, T0)
        set_headlines(session, "links", [ids["Three"], ids["One"]], T0)
        set_title(session, "links", "Words of My Own", T0)
    with store.reading() as session:
        assert load_choices(session, "links") == Choices(
            hidden=frozenset({ids["Two"]}),
            pinned={ids["Old"]: "Security"},
            headlines=(ids["Three"], ids["One"]),
            title="Words of My Own",
        )
        assert load_choices(session, "other") == Choices()
    with store.writing() as session:
        edition = close_edition(session, "links", LINKS, ZONE, T0)
    assert edition is not None
    assert edition.title == "Links 02/12/2026: Words of My Own"
    assert [(s.name, [i.title for i in s.items]) for s in edition.sections] == [
        ("Science", ["One", "Three"]),
        ("Security", ["Old"]),  # pinned, though older than the lookback, and moved
    ]
    with store.reading() as session:
        # Spent: the title, headlines and the pin; the hide lasts.
        assert load_choices(session, "links") == Choices(hidden=frozenset({ids["Two"]}))
    with store.writing() as session:
        set_hidden(session, {ids["Two"]: "links"}, False, T0)
    with store.reading() as session:
        plan = plan_edition(session, "links", LINKS, ZONE, T0 + timedelta(hours=1))
    assert [c.title for c in plan.items] == ["Two"]
    assert plan.title == "Links 02/12/2026: Two"


def test_a_closing_spends_only_the_choices_it_read(store: Store) -> None:
    """An editor's choice stored while an edition closes waits for the next edition."""
    ids = entry_ids(store)
    with store.writing() as session:
        edition = close_edition(session, "links", LINKS, ZONE, T0)
        assert edition is not None
        edition_id = session.scalars(select(EditionRow.id)).one()
        set_title(session, "links", "Read by the closing", T0)
        set_pinned(session, {ids["Old"]: "links"}, {}, True, T0)
    with store.reading() as session:
        read = load_choices(session, "links")
    with store.writing() as session:
        set_headlines(session, "links", [ids["Old"]], T0)  # stored meanwhile
        spend(session, edition_id, read, used=[ids["Old"]])
    with store.reading() as session:
        assert load_choices(session, "links") == Choices(headlines=(ids["Old"],))


def test_hiding_unpins_and_pinning_unhides(store: Store) -> None:
    ids = entry_ids(store)
    one = {ids["One"]: "links"}
    with store.writing() as session:
        set_pinned(session, one, {}, True, T0)
        set_hidden(session, one, True, T0)
    with store.reading() as session:
        assert load_choices(session, "links") == Choices(hidden=frozenset(one))
    with store.writing() as session:
        set_pinned(session, one, {}, True, T0)
        set_title(session, "links", "A", T0)
        set_title(session, "links", None, T0)  # cleared
    with store.reading() as session:
        assert load_choices(session, "links") == Choices(pinned={ids["One"]: None})


def test_a_hide_and_a_pin_follow_their_entry_into_the_stream_its_feed_moved_to(
    store: Store,
) -> None:
    """feeds.yaml moves a feed to another stream: an entry hidden while it was in the first
    stays out of the second's editions, and a pin puts it into the second's next edition."""
    ids = entry_ids(store)
    with store.writing() as session:
        set_hidden(session, {ids["Two"]: "links"}, True, T0)
        set_pinned(session, {ids["Old"]: "links"}, {}, True, T0)
        session.execute(update(FeedRow).values(stream="science"))  # as sync_feeds does
    with store.reading() as session:
        plan = plan_edition(session, "science", LINKS, ZONE, T0)
    assert [c.title for c in plan.items] == ["Old", "One", "Three"]
    assert [(h.candidate.title, h.reason) for h in plan.held] == [("Two", "hidden by the editor")]
    with store.writing() as session:
        assert close_edition(session, "science", LINKS, ZONE, T0) is not None
    with store.reading() as session:
        assert load_choices(session, "science") == Choices(hidden=frozenset({ids["Two"]}))
        assert load_choices(session, "links") == Choices()


# --- the commands ----------------------------------------------------------------------


@pytest.fixture
def desk(tmp_path: Path, migrated_sqlite: Path) -> DeskSite:
    site = DeskSite(tmp_path)
    sqlite_copy(migrated_sqlite, tmp_path / "digest.db")  # the site's database
    # Older than the other feed's stories, so that the order of items does not depend on
    # which feed the poll happened to store first.
    earlier = NOW - timedelta(hours=2)
    site.feed(
        "sci",
        [
            Story("Coral grows back", "https://sci.example/1", "Reefs recover.", earlier),
            Story("Slop about AI", "https://sci.example/2", published=earlier),
            Story("Bees count to four", "https://sci.example/3", published=earlier),
        ],
    )
    site.feed(
        "sec",
        [
            Story("Patch now", "https://sec.example/1"),
            Story("Typo squatting", "https://sec.example/2"),
        ],
        section="Security",
    )
    site.ok("poll")
    return site


def closed_titles(site: DeskSite) -> tuple[str, list[str]]:
    """The newest edition page's title and item headlines, as the page shows them."""
    import re

    page = max(site.public.glob("links/*/*/*/*.gmi"), key=lambda p: p.stat().st_mtime_ns)
    text = page.read_text()
    heading = text.splitlines()[0].removeprefix("# ")
    return heading, re.findall(r"^=> \S+ .* ☛ (.*)$", text, re.MULTILINE)


def test_draft_shows_the_next_edition_and_writes_nothing(desk: DeskSite) -> None:
    draft = desk.draft()
    assert draft["closes"] is True
    assert draft["title"].startswith(f"Links {NOW:%d/%m/%Y}: ")
    assert [(i["section"], i["title"], i["feed"]) for i in draft["items"]] == [
        ("Science", "Coral grows back", "sci"),
        ("Science", "Slop about AI", "sci"),
        ("Science", "Bees count to four", "sci"),
        ("Security", "Patch now", "sec"),
        ("Security", "Typo squatting", "sec"),
    ]
    first = draft["items"][0]
    assert set(first) >= {"handle", "feed", "section", "title", "link", "summary"}
    assert first["link"] == "https://sci.example/1" and first["summary"] == "Reefs recover."
    assert draft["held_back"] == []
    assert desk.draft() == draft  # stable handles, nothing changed by looking
    text = desk.ok("draft").stdout
    assert f"    {first['handle']}  sci ☛ Coral grows back" in text
    assert not desk.public.exists()
    assert desk.digest("draft", "nope").exit_code == 2


def test_an_editor_shapes_the_next_edition_and_build_honours_it(desk: DeskSite) -> None:
    slop, typo = desk.handle("Slop about AI"), desk.handle("Typo squatting")
    bees, patch = desk.handle("Bees count to four"), desk.handle("Patch now")
    hidden = desk.ok("hide", slop, typo).stdout
    assert f"{slop} hidden: Slop about AI" in hidden
    assert desk.held() == {
        "Slop about AI": "hidden by the editor",
        "Typo squatting": "hidden by the editor",
    }
    desk.ok("pin", bees, "--section", "Security")
    desk.ok("headline", "links", patch, bees)
    assert desk.draft()["title"] == f"Links {NOW:%d/%m/%Y}: Patch now and Bees count to four"
    desk.ok("unhide", typo)
    assert "Typo squatting" in desk.titles()

    desk.ok("build")
    title, items = closed_titles(desk)
    assert title == f"Links {NOW:%d/%m/%Y}: Patch now and Bees count to four"
    assert items == ["Coral grows back", "Bees count to four", "Patch now", "Typo squatting"]
    # Spent: the next draft has no choices but the lasting hide.
    draft = desk.draft()
    assert draft["items"] == [] and draft["headlines"] == []
    assert desk.held() == {"Slop about AI": "hidden by the editor"}


def test_a_headline_named_twice_is_in_the_title_once(desk: DeskSite) -> None:
    patch, bees = desk.handle("Patch now"), desk.handle("Bees count to four")
    desk.ok("headline", "links", patch, bees, patch.upper())
    assert desk.draft()["title"] == f"Links {NOW:%d/%m/%Y}: Patch now and Bees count to four"
    assert desk.draft()["headlines"] == [patch, bees]  # in the order given


def test_a_headline_must_be_an_item_of_the_next_edition(desk: DeskSite) -> None:
    slop, patch = desk.handle("Slop about AI"), desk.handle("Patch now")
    desk.ok("hide", slop)
    result = desk.digest("headline", "links", patch, slop)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{slop}: 'Slop about AI' is not in the next edition (hidden by the editor)",
        "nothing changed",
    ]
    assert desk.draft()["headlines"] == []


def test_title_is_taken_verbatim_and_not_cut(desk: DeskSite) -> None:
    words = "Slop, Autosuggestions, and Nostr; " + "a very long editor's note " * 6
    result = desk.ok("title", "links", words)
    assert result.stdout.strip() == f"next title of links: Links {NOW:%d/%m/%Y}: {words.strip()}"
    desk.ok("build")
    title, _ = closed_titles(desk)
    assert title == f"Links {NOW:%d/%m/%Y}: {words.strip()}"
    assert len(title) > 110  # title_max cuts headlines, never an editor's words


def test_wrong_handles_change_nothing_and_say_which(desk: DeskSite) -> None:
    good = desk.handle("Patch now")
    typo = good[:-1] + ("0" if good[-1] != "0" else "1")
    unknown = handle_of(99_999)
    result = desk.digest("hide", good, typo, unknown)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{typo!r} is not a handle (a typo?): `digest draft` lists them",
        f"{unknown}: no entry has this handle",
        "nothing changed",
    ]
    assert desk.held() == {}
    result = desk.digest("pin", good, "--section", "Gossip")
    assert result.exit_code == 2
    assert (
        "no section 'Gossip' in stream links (known: Leftovers, Science, Security)" in result.stderr
    )
    assert desk.digest("headline", "linx", good).exit_code == 2


def test_a_long_string_that_checks_out_is_no_entry_not_a_crash(desk: DeskSite) -> None:
    # A pasted token can pass the check digit (1 in 32); its id is beyond any database's.
    huge = handle_of(2**64 + 5)
    for command in (["hide", huge], ["unpin", huge], ["headline", "links", huge]):
        result = desk.digest(*command)
        assert result.exit_code == 2, result.output
        assert f"{huge!r} is not a handle (a typo?)" in result.stderr


def test_closed_entries_are_amended_not_hidden(desk: DeskSite) -> None:
    patch = desk.handle("Patch now")
    desk.ok("build")
    result = desk.digest("hide", patch)
    assert result.exit_code == 2
    (path,) = [
        p.relative_to(desk.public).with_suffix("") for p in desk.public.glob("links/*/*/*/1.html")
    ]
    assert (
        f"{patch}: 'Patch now' is in {path} already: `digest amend {path} --hide {patch}` takes"
        " it out" in result.stderr
    )


def test_a_blocked_domain_cannot_be_pinned(desk: DeskSite) -> None:
    desk.top_extra = "block_domains: [sci.example]\n"
    desk.write_config()
    coral = desk.handle("Coral grows back")
    result = desk.digest("pin", coral)
    assert result.exit_code == 2
    assert "blocked domain sci.example (block_domains)" in result.stderr


def test_pin_lets_in_what_a_rule_held_back(desk: DeskSite) -> None:
    desk.stream_extra = "    exclude: [slop]\n"
    desk.write_config()
    assert desk.held() == {"Slop about AI": "excluded by the stream's rule 'slop'"}
    desk.ok("pin", desk.handle("Slop about AI"))
    assert "Slop about AI" in desk.titles()
    desk.ok("unpin", desk.handle("Slop about AI"))
    assert "Slop about AI" not in desk.titles()


def test_an_entry_older_than_the_lookback_is_pinned_by_its_handle_from_entries(
    desk: DeskSite,
) -> None:
    old = NOW - timedelta(days=9)
    desk.feed("old", [Story("From last week", "https://old.example/1", published=old)])
    desk.ok("poll")
    assert "From last week" not in desk.titles()
    listed = json.loads(desk.ok("entries", "--feed", "old", "--json").stdout)["entries"]
    ((handle, title),) = [(e["handle"], e["title"]) for e in listed]
    assert title == "From last week"
    assert handle in desk.ok("entries", "--feed", "old").stdout
    desk.ok("pin", handle)
    assert "From last week" in desk.titles()
    desk.ok("build")
    assert "From last week" in closed_titles(desk)[1]


# --- draft --edit ----------------------------------------------------------------------


def editor(tmp_path: Path, body: str) -> dict[str, str]:
    """$EDITOR as a script: `body` is Python that rewrites `text` (the file's content)."""
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys, pathlib\n"
        "path = pathlib.Path(sys.argv[1])\n"
        "text = path.read_text()\n"
        f"{body}\n"
        "path.write_text(text)\n"
    )
    return {"EDITOR": f"{sys.executable} {script}", "VISUAL": ""}


def test_draft_edit_applies_every_choice_at_once(desk: DeskSite, tmp_path: Path) -> None:
    slop, typo = desk.handle("Slop about AI"), desk.handle("Typo squatting")
    bees, patch = desk.handle("Bees count to four"), desk.handle("Patch now")
    seen = tmp_path / "seen.txt"
    env = editor(
        tmp_path,
        f"pathlib.Path({str(seen)!r}).write_text(text)\n"
        f"text = text.replace('keep {slop} [Science]', 'hide {slop} [Science]')\n"
        f"text = text.replace('keep {typo} [Security]', 'h {typo} [Security]')\n"
        f"text = text.replace('keep {bees} [Science]', 'keep {bees} [Security]')\n"
        f"text = text.replace('headlines:', 'headlines: {patch} {bees}')\n",
    )
    result = desk.digest("draft", "--edit", "links", env=env)
    assert result.exit_code == 0, result.output
    shown = seen.read_text()
    assert f"keep {slop} [Science] sci ☛ Slop about AI" in shown
    assert "#   hide  it stays out" in shown
    assert desk.held() == {
        "Slop about AI": "hidden by the editor",
        "Typo squatting": "hidden by the editor",
    }
    draft = desk.draft()
    assert draft["title"] == f"Links {NOW:%d/%m/%Y}: Patch now and Bees count to four"
    assert [(i["section"], i["title"]) for i in draft["items"]] == [
        ("Science", "Coral grows back"),
        ("Security", "Bees count to four"),
        ("Security", "Patch now"),
    ]
    assert "3 items, 2 held back" in result.stdout

    # Edited again: the held-back lines are there to undo, and a title line sets the words.
    env = editor(
        tmp_path,
        f"text = text.replace('hide {typo}', 'keep {typo}')\n"
        "text = text.replace('title:', 'title: Coral and Bees')\n",
    )
    assert desk.digest("draft", "--edit", "links", env=env).exit_code == 0
    assert desk.held() == {"Slop about AI": "hidden by the editor"}
    desk.ok("build")
    title, items = closed_titles(desk)
    assert title == f"Links {NOW:%d/%m/%Y}: Coral and Bees"
    assert items == ["Coral grows back", "Bees count to four", "Patch now", "Typo squatting"]


def test_a_draft_file_saved_as_it_was_keeps_the_headlines_in_their_order(
    desk: DeskSite, tmp_path: Path
) -> None:
    bees, patch = desk.handle("Bees count to four"), desk.handle("Patch now")
    desk.ok("headline", "links", patch, bees)  # not the order of the items
    title = f"Links {NOW:%d/%m/%Y}: Patch now and Bees count to four"
    assert desk.draft()["title"] == title
    assert desk.draft()["headlines"] == [patch, bees]
    result = desk.digest("draft", "--edit", "links", env=editor(tmp_path, "text += '# ok\\n'"))
    assert result.exit_code == 0, result.output
    assert desk.draft()["title"] == title


def test_a_draft_file_saved_as_it_was_keeps_a_waiting_pin(desk: DeskSite, tmp_path: Path) -> None:
    # Another feed tells "Patch now" too: both tellers pinned, one goes in, one waits.
    desk.feed("mirror", [Story("Patch now (mirror)", "https://sec.example/1")], "Security")
    desk.ok("poll")
    patch, twin = desk.handle("Patch now"), desk.handle("Patch now (mirror)")
    desk.ok("pin", patch, "--section", "Leftovers")
    desk.ok("pin", twin, "--section", "Leftovers")
    assert desk.held() == {"Patch now (mirror)": f"the same story as {patch}"}
    result = desk.digest("draft", "--edit", "links", env=editor(tmp_path, "text += '# ok\\n'"))
    assert result.exit_code == 0, result.output
    choices = json.loads(desk.ok("status", "--json").stdout)["streams"]["links"]["choices"]
    assert choices["pinned"] == [
        {"handle": patch, "section": "Leftovers"},
        {"handle": twin, "section": "Leftovers"},
    ]


def test_a_draft_file_with_bad_lines_changes_nothing_and_names_them(
    desk: DeskSite, tmp_path: Path
) -> None:
    slop, patch = desk.handle("Slop about AI"), desk.handle("Patch now")
    before = desk.draft()
    env = editor(
        tmp_path,
        f"text = text.replace('keep {slop} [Science]', 'hide {slop} [Science]')\n"
        f"text = text.replace('keep {patch} [Security]', 'hdie {patch} [Security]')\n"
        "text += 'keep zzzz [Science] made up\\n'\n"
        "text = text.replace('title:', 'title: Fine words')\n",
    )
    result = desk.digest("draft", "--edit", "links", env=env)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[-1] == "nothing changed"
    assert any(": unknown verb 'hdie' (keep, pin, hide or skip)" in line for line in lines)
    assert any("'zzzz' is not a handle of this draft" in line for line in lines)
    assert all(line.startswith("draft line ") for line in lines[:-1]) and len(lines) == 3
    assert desk.draft() == before  # the good lines were not applied either


def test_an_emptied_draft_file_changes_nothing(desk: DeskSite, tmp_path: Path) -> None:
    desk.ok("title", "links", "Kept words")
    before = desk.draft()
    for body in (
        "text = ''",
        "text = '\\n'.join(l for l in text.splitlines() if l.startswith('#'))",
    ):
        result = desk.digest("draft", "--edit", "links", env=editor(tmp_path, body))
        assert result.exit_code == 0
        assert "the draft file was emptied: nothing changed" in result.stdout
        assert desk.draft() == before


def test_choices_made_by_cli_reach_build_on_either_database(
    database_url: str, tmp_path: Path
) -> None:
    site = DeskSite(tmp_path, database=database_url)
    site.feed(
        "sci",
        [Story("Keep me", "https://sci.example/1"), Story("Hide me", "https://sci.example/2")],
    )
    site.ok("poll")
    site.ok("hide", site.handle("Hide me"))
    site.ok("title", "links", "Chosen Words")
    site.ok("build")
    assert closed_titles(site) == (f"Links {NOW:%d/%m/%Y}: Chosen Words", ["Keep me"])
    assert site.draft()["title_choice"] is None


def test_status_lists_the_choices_waiting_for_the_next_edition(desk: DeskSite) -> None:
    slop, bees = desk.handle("Slop about AI"), desk.handle("Bees count to four")
    patch = desk.handle("Patch now")
    assert "editor's choices" not in desk.ok("status").stdout

    desk.ok("hide", slop)
    desk.ok("pin", bees, "--section", "Security")
    desk.ok("headline", "links", patch, bees)
    desk.ok("title", "links", "Bees and patches")

    choices = json.loads(desk.ok("status", "--json").stdout)["streams"]["links"]["choices"]
    assert choices == {
        "hidden": [slop],
        "pinned": [{"handle": bees, "section": "Security"}],
        "headlines": [patch, bees],
        "title": "Bees and patches",
    }
    assert (
        "  editor's choices: 1 hidden, 1 pinned, headlines "
        f"{patch} {bees}, title 'Bees and patches' (digest draft links shows them)"
    ) in desk.ok("status").stdout.splitlines()
    # Spent by the edition that used them: only the lasting hide is left.
    desk.ok("build")
    after = json.loads(desk.ok("status", "--json").stdout)["streams"]["links"]["choices"]
    assert after == {"hidden": [slop], "pinned": [], "headlines": [], "title": None}
