"""Rules in feeds.yaml (exclude, include, block_domains): the pure decision, the config's
errors, and what `digest build` closes under them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.config import ConfigError, load_config
from digest.editions import Candidate, choose_items
from digest.handles import handle_of
from digest.rules import PatternRules, StreamRules, blocked_domain, stream_rules
from digest.store.choices import Choices
from tests.desk_site import NOW, DeskSite, Story

T0 = datetime(2026, 12, 2, 9, tzinfo=UTC)


def candidate(
    entry_id: int,
    title: str,
    link: str | None = None,
    *,
    feed: str = "https://a.example/feed",
    summary: str = "",
    canonical: str | None = None,
) -> Candidate:
    return Candidate(
        entry_id=entry_id,
        feed_url=feed,
        source="A",
        section="Science",
        title=title,
        link=link,
        canonical_url=canonical,
        blurb=summary,
        published=T0 + timedelta(minutes=entry_id),
        weight=0,
    )


def test_blocked_domains_take_subdomains_and_nothing_else() -> None:
    domains = ("slop.example", "ai-news.test")
    assert blocked_domain("https://slop.example/a", domains) == "slop.example"
    assert blocked_domain("http://www.SLOP.example./a", domains) == "slop.example"
    assert blocked_domain("https://deep.sub.ai-news.test/x", domains) == "ai-news.test"
    assert blocked_domain("https://notslop.example/a", domains) is None  # not a subdomain
    assert blocked_domain("https://slop.example.org/a", domains) is None
    assert blocked_domain("gemini://slop.example/", domains) == "slop.example"
    assert blocked_domain(None, domains) is None
    assert blocked_domain("https://[::1/", domains) is None  # unreadable: not blocked, no crash


def test_blocked_domains_match_international_hosts_however_they_are_written(
    tmp_path: Path,
) -> None:
    # A link may spell an internationalised host in Unicode (or with an ideographic full
    # stop); feeds.yaml in its ASCII form (or in Unicode): the same host either way.
    punycode = ("xn--bcher-kva.example",)
    assert blocked_domain("https://bücher.example/a", punycode) == "xn--bcher-kva.example"
    assert blocked_domain("https://www.BÜCHER.example/a", punycode) == "xn--bcher-kva.example"
    assert blocked_domain("https://bücher\u3002example/a", punycode) == "xn--bcher-kva.example"
    assert blocked_domain("https://xn--bcher-kva.example/a", punycode) == "xn--bcher-kva.example"
    assert blocked_domain("https://notbücher.example/a", punycode) is None
    path = write(tmp_path, "block_domains: [Bücher.example]\n")
    assert load_config(path).settings.block_domains == punycode


def test_patterns_match_title_link_or_summary_case_insensitively() -> None:
    rules = PatternRules("the stream's", exclude=(r"\bcrypto",), include=())
    assert rules.holds(("Crypto Winter", "", "")) == "excluded by the stream's rule '\\bcrypto'"
    assert rules.holds(("A", "https://x.example/cryptocurrency", "")) is not None
    assert rules.holds(("A", "", "all about CRYPTO")) is not None
    assert rules.holds(("CRYPTOgraphy news", "", "")) is not None
    assert rules.holds(("A decrypted file", "", "")) is None  # no word start
    only = PatternRules("the feed's", include=("linux", "bsd"))
    assert only.holds(("Linux 7.0 released", "", "")) is None
    assert only.holds(("Windows news", "", "")) == "matches none of the feed's include rules"


def test_a_rule_that_backtracks_without_end_holds_its_entry_back_in_time() -> None:
    """The rule is the site's, the text a feed's: `re` would search this for longer than the
    universe has existed; the entry is held back with a reason and the rest goes on."""
    hostile = ("a" * 5000 + "!", "", "")
    slow = r"^(a|aa)+$"
    for rules in (
        PatternRules("the stream's", exclude=(slow,)),
        PatternRules("the stream's", include=(slow, "linux")),
    ):
        assert rules.holds(hostile) == f"the stream's rule '{slow}' took over 0.1 s on it"
        assert rules.holds(("aaaa", "", "")) == (
            "excluded by the stream's rule '^(a|aa)+$'" if rules.exclude else None
        )
    either = PatternRules("the feed's", include=(slow, "!"))  # another include rule matches
    assert either.holds(hostile) is None


def test_choose_items_applies_rules_and_choices_in_their_order() -> None:
    rules = StreamRules(
        stream=PatternRules("the stream's", exclude=("sponsored",)),
        feeds={"https://b.example/feed": PatternRules("the feed's", include=("linux",))},
        block_domains=("slop.example",),
    )
    told = [
        candidate(1, "Plain story", "https://news.example/1"),
        candidate(2, "Sponsored: buy now", "https://news.example/2"),
        candidate(3, "Machine-written", "https://www.slop.example/3"),
        candidate(4, "Windows news", "https://b.example/4", feed="https://b.example/feed"),
        candidate(5, "Linux news", "https://b.example/5", feed="https://b.example/feed"),
        candidate(6, "Hidden one", "https://news.example/6"),
        candidate(7, "Sponsored but pinned", "https://news.example/7"),
        candidate(8, "Pinned slop", "https://slop.example/8"),
    ]
    choices = Choices(hidden=frozenset({6}), pinned={7: "Security", 8: None})
    choice = choose_items(told, set(), rules, choices)
    assert [(c.entry_id, c.section) for c in choice.items] == [
        (1, "Science"),
        (5, "Science"),
        (7, "Security"),  # a pin overrides the rules and moves it
    ]
    assert {held.candidate.entry_id: held.reason for held in choice.held} == {
        2: "excluded by the stream's rule 'sponsored'",
        3: "blocked domain slop.example",
        4: "matches none of the feed's include rules",
        6: "hidden by the editor",
        8: "blocked domain slop.example",  # a pin never lets a blocked domain in
    }


def test_a_pinned_teller_wins_the_story_and_beats_an_earlier_edition() -> None:
    url = "https://news.example/story"
    told = [
        candidate(1, "First teller", url, canonical=url),
        candidate(2, "Pinned teller", url, canonical=url),
        candidate(
            3, "Told before", "https://news.example/old", canonical="https://news.example/old"
        ),
    ]
    choice = choose_items(
        told, {"https://news.example/old"}, choices=Choices(pinned={2: None, 3: None})
    )
    assert [c.entry_id for c in choice.items] == [2, 3]
    assert [(h.candidate.entry_id, h.reason) for h in choice.held] == [
        (1, f"the same story as {handle_of(2)}")
    ]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "site: {title: T, base_url: 'https://x.example/'}\n"
        "streams:\n"
        "  links:\n"
        "    exclude: [sponsored]\n" + text
    )
    return path


def test_bad_patterns_and_domains_are_config_errors_with_their_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "    include:\n"
        "      - linux\n"
        "      - 'foo('\n"
        "block_domains: [slop.example, 'https://bad.example/x']\n"
        "feeds:\n"
        "  - url: https://a.example/feed\n"
        "    stream: links\n"
        "    exclude: ['[a-']\n",
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.problems == [
        f"{path}:7: streams.links.include[1]: not a valid regular expression 'foo(': "
        "missing ) at position 4",
        f"{path}:8: block_domains[1]: expected a domain such as slop.example, "
        "got 'https://bad.example/x'",
        f"{path}:12: feeds[0].exclude[0]: not a valid regular expression '[a-': "
        "unterminated character set at position 3",
    ]


def test_stream_rules_come_from_the_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "block_domains: ['*.Slop.Example', ai.test]\n"
        "feeds:\n"
        "  - {url: 'https://a.example/feed', stream: links, include: [linux]}\n"
        "  - {url: 'https://b.example/feed', stream: links}\n",
    )
    rules = stream_rules(load_config(path).settings, "links")
    assert rules.block_domains == ("slop.example", "ai.test")
    assert rules.stream.exclude == ("sponsored",)
    assert set(rules.feeds) == {"https://a.example/feed"}


@pytest.fixture
def desk(tmp_path: Path) -> DeskSite:
    return DeskSite(tmp_path)


def test_bad_regex_in_the_cli_is_one_line_and_exit_2(desk: DeskSite) -> None:
    desk.stream_extra = "    exclude: ['(unclosed']\n"
    desk.feed("a", [Story("A", "https://a.example/1")])
    for command in (["check"], ["build"], ["draft"]):
        result = desk.digest(*command)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            f"{desk.config}:14: streams.links.exclude[0]: not a valid regular expression "
            "'(unclosed': missing ) at position 9"
        )
    assert not (desk.root / "digest.db").exists()


def test_a_blocked_domain_carried_by_two_feeds_stays_out_of_the_edition(desk: DeskSite) -> None:
    desk.top_extra = "block_domains: [slop.example]\n"
    desk.feed(
        "a", [Story("Real news", "https://a.example/1"), Story("Slop A", "https://slop.example/x")]
    )
    desk.feed(
        "b", [Story("Slop B", "https://www.slop.example/y"), Story("B news", "https://b.example/2")]
    )
    desk.ok("poll")
    assert desk.held() == {
        "Slop A": "blocked domain slop.example",
        "Slop B": "blocked domain slop.example",
    }
    closed = desk.ok("build").stdout
    assert "closed links/" in closed
    (page,) = desk.public.glob("links/*/*/*/1.html")
    text = page.read_text()
    assert "Real news" in text and "B news" in text
    assert "slop.example" not in text and "Slop" not in text
    # Nothing is lost: the entries are stored, and unblocking lets them into the next edition.
    desk.top_extra = ""
    desk.write_config()
    assert sorted(desk.titles()) == ["Slop A", "Slop B"]


def test_rules_apply_when_editions_close_not_when_entries_are_stored(desk: DeskSite) -> None:
    desk.feed(
        "a",
        [
            Story("Crypto coin soars", "https://a.example/1"),
            Story("Kernel release", "https://a.example/2", summary="linux and bsd"),
            Story("Sponsored post", "https://a.example/3"),
        ],
        extra="include: [kernel, crypto]",
    )
    desk.ok("poll")
    assert desk.titles() == ["Crypto coin soars", "Kernel release"]
    # A rule added after the entries were stored applies to the next edition.
    desk.stream_extra = "    exclude: ['coin']\n"
    desk.write_config()
    assert desk.titles() == ["Kernel release"]
    assert desk.held() == {
        "Crypto coin soars": "excluded by the stream's rule 'coin'",
        "Sponsored post": "matches none of the feed's include rules",
    }
    desk.ok("build")
    # The next edition: the rule is dropped, and what it held back is there to close.
    desk.stream_extra = ""
    desk.feeds["a"] = ("Science", "")
    desk.write_config()
    assert desk.titles() == ["Crypto coin soars", "Sponsored post"]


def test_entries_older_than_the_lookback_are_neither_items_nor_held_back(desk: DeskSite) -> None:
    old = NOW - timedelta(days=5)
    desk.feed("a", [Story("Old story", "https://a.example/old", published=old)])
    desk.ok("poll")
    assert desk.titles() == [] and desk.held() == {}
