"""Editions: what closes, in which order, under which title, and that it never changes."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from digest.config import FeedSettings, Settings, SiteSettings, StreamSettings
from digest.editions import (
    Candidate,
    Choice,
    Edition,
    choose_items,
    close_edition,
    edition_title,
    join_headlines,
    load_editions,
)
from digest.handles import handle_of
from digest.parse import ParsedEntry
from digest.publish import build
from digest.store import EditionRow, EntryRow, Store, store_entries
from tests.conftest import add_feeds, examples, make_entry

LONDON = ZoneInfo("Europe/London")
T0 = datetime(2025, 3, 28, 9, 0, tzinfo=UTC)
LINKS = StreamSettings(
    title="Links {date:%d/%m/%Y}: {headlines}",
    summary="Links for the day",
    sections=("Leftovers", "Science", "Security"),
)


def feeds(store: Store, *specs: tuple[str, str | None, int]) -> dict[str, int]:
    """(name, section, weight) -> feed ids by name, all in the links stream."""
    settings = [
        FeedSettings(
            url=f"https://{name}.example/feed",
            name=name,
            stream="links",
            section=section,
            weight=weight,
        )
        for name, section, weight in specs
    ]
    ids = add_feeds(store, settings, T0)
    return {feed.name: ids[feed.url] for feed in settings}


def put(store: Store, feed_id: int, *entries: ParsedEntry, now: datetime = T0) -> None:
    with store.writing() as session:
        store_entries(session, feed_id, list(entries), now)


def close(
    store: Store, at: datetime, stream: StreamSettings = LINKS, zone: ZoneInfo = LONDON
) -> Edition | None:
    with store.writing() as session:
        return close_edition(session, "links", stream, zone, at)


def titles(edition: Edition) -> list[tuple[str, list[str]]]:
    return [(s.name, [item.title for item in s.items]) for s in edition.sections]


def test_join_headlines() -> None:
    assert join_headlines(["A"]) == "A"
    assert join_headlines(["A", "B"]) == "A and B"
    assert join_headlines(["A", "B", "C"]) == "A, B, and C"


def test_title_fills_the_pattern_and_drops_headlines_to_fit() -> None:
    when = datetime(2025, 3, 27, 12, tzinfo=LONDON)
    pattern = LINKS.title
    heads = ["Obituary to a Shop", "Russia Trying to Buy Time", "A Third Headline That Is Long"]
    assert edition_title(pattern, when, heads[:2], 110) == (
        "Links 27/03/2025: Obituary to a Shop and Russia Trying to Buy Time"
    )
    full = edition_title(pattern, when, heads, 110)
    assert full == (
        "Links 27/03/2025: Obituary to a Shop, Russia Trying to Buy Time, "
        "and A Third Headline That Is Long"
    )
    assert edition_title(pattern, when, heads, 70) == (
        "Links 27/03/2025: Obituary to a Shop and Russia Trying to Buy Time"
    )
    cut = edition_title(pattern, when, ["x" * 200], 60)
    assert len(cut) <= 60 and cut.startswith("Links 27/03/2025: xxx") and cut.endswith("…")


def candidate(entry_id: int, canonical_url: str | None) -> Candidate:
    return Candidate(
        entry_id=entry_id,
        feed_url=f"https://feed{entry_id}.example/feed",
        source=f"Feed {entry_id}",
        section="Leftovers",
        title=f"Story {entry_id}",
        link=canonical_url,
        canonical_url=canonical_url,
        blurb="",
        published=T0 + timedelta(minutes=entry_id),
        weight=0,
    )


def test_choose_items_keeps_each_story_once_and_none_published_before() -> None:
    """The pure choice, without a database: the first teller of a story wins."""
    told = [
        candidate(1, "https://example.net/a"),
        candidate(2, "https://example.net/b"),
        candidate(3, "https://example.net/a"),  # the same story, told later by another feed
        candidate(4, None),  # no canonical URL: never taken for another
        candidate(5, None),
        candidate(6, "https://example.net/old"),  # an earlier edition carried it
    ]
    chosen = choose_items(told, {"https://example.net/old"})
    assert [c.entry_id for c in chosen.items] == [1, 2, 4, 5]
    assert [(held.candidate.entry_id, held.reason) for held in chosen.held] == [
        (3, f"the same story as {handle_of(1)}"),
        (6, "the same story as an earlier edition's"),
    ]
    assert choose_items([], set()) == Choice([], [])


def test_sections_in_stream_order_items_in_publication_order(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0), ("sec", "Security", 0), ("misc", "Unlisted", 0))
    put(store, ids["sec"], make_entry("Patch now", published=T0 - timedelta(hours=1)))
    put(
        store,
        ids["sci"],
        make_entry("Second find", published=T0 - timedelta(hours=2)),
        make_entry("First find", published=T0 - timedelta(hours=5)),
    )
    put(store, ids["misc"], make_entry("Odd thing", published=T0 - timedelta(hours=3)))
    edition = close(store, T0)
    assert edition is not None
    assert titles(edition) == [
        ("Leftovers", ["Odd thing"]),
        ("Science", ["First find", "Second find"]),
        ("Security", ["Patch now"]),
    ]
    assert (edition.stream, edition.date, edition.number) == ("links", date(2025, 3, 28), 1)
    assert edition.path == "links/2025/03/28/1"
    assert edition.summary == "Links for the day"


def test_two_builds_a_day_are_numbered_and_nothing_new_closes_nothing(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0))
    put(store, ids["sci"], make_entry("Morning", published=T0 - timedelta(hours=1)))
    first = close(store, T0)
    assert close(store, T0 + timedelta(minutes=5)) is None
    put(store, ids["sci"], make_entry("Evening", published=T0 + timedelta(hours=8)))
    second = close(store, T0 + timedelta(hours=9))
    assert first and second
    assert (first.date, first.number) == (second.date, 1)
    assert second.number == 2
    assert titles(second) == [("Science", ["Evening"])]
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(EditionRow)) == 2


def test_min_items_holds_back_a_thin_edition(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0))
    put(store, ids["sci"], make_entry("Lonely", published=T0 - timedelta(hours=1)))
    thick = LINKS.model_copy(update={"min_items": 2})
    assert close(store, T0, thick) is None
    put(store, ids["sci"], make_entry("Company", published=T0))
    edition = close(store, T0 + timedelta(minutes=1), thick)
    assert edition and titles(edition) == [("Science", ["Lonely", "Company"])]


def test_lookback_keeps_a_new_feeds_backlog_out(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0))
    put(
        store,
        ids["sci"],
        make_entry("Fresh", published=T0 - timedelta(days=1)),
        make_entry("Ancient", published=T0 - timedelta(days=30)),
        make_entry("Just past the lookback", published=T0 - timedelta(days=2, seconds=1)),
    )
    edition = close(store, T0)
    assert edition and titles(edition) == [("Science", ["Fresh"])]
    assert close(store, T0 + timedelta(hours=1)) is None  # the old ones never come back


def test_a_story_in_two_feeds_appears_once_and_ranks_first(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0), ("sec", "Security", 0), ("misc", None, 0))
    story = "https://news.example/big-story"
    put(store, ids["sec"], make_entry("Big story", link=story, published=T0 - timedelta(hours=3)))
    put(
        store,
        ids["sci"],
        make_entry(
            "Big story (copy)",
            link="http://www.news.example/big-story/?utm_source=rss",
            published=T0 - timedelta(hours=2),
        ),
    )
    put(store, ids["misc"], make_entry("Newer small story", published=T0 - timedelta(hours=1)))
    edition = close(store, T0)
    assert edition is not None
    assert titles(edition) == [("Leftovers", ["Newer small story"]), ("Security", ["Big story"])]
    assert edition.title == "Links 28/03/2025: Big story and Newer small story"
    # a later copy of the same story does not come back in the next edition
    put(
        store,
        ids["misc"],
        make_entry("Big story again", link=story + "#comments", published=T0 + timedelta(hours=1)),
    )
    assert close(store, T0 + timedelta(hours=2)) is None


def test_feed_weight_decides_the_headlines_first(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0), ("sec", "Security", 5))
    put(
        store,
        ids["sci"],
        *[make_entry(f"Science {n}", published=T0 - timedelta(minutes=n)) for n in range(1, 4)],
    )
    put(store, ids["sec"], make_entry("Old but weighty", published=T0 - timedelta(hours=20)))
    edition = close(store, T0)
    assert edition and edition.title == (
        "Links 28/03/2025: Old but weighty, Science 1, and Science 2"
    )


def test_a_closed_edition_never_changes(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0))
    put(store, ids["sci"], make_entry("Original title", published=T0 - timedelta(hours=1)))
    closed = close(store, T0)
    with store.writing() as session:
        session.execute(update(EntryRow).values(title="Rewritten title", summary="changed"))
    with store.reading() as session:
        [loaded] = load_editions(session)
    assert loaded == closed


def site(timezone: str) -> Settings:
    return Settings(
        site=SiteSettings(title="T", base_url="https://example.org/", timezone=timezone),
        streams={"links": LINKS},
    )


def test_edition_dates_follow_the_site_timezone_across_midnight(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0))
    tokyo = site("Asia/Tokyo")  # UTC+9: 14:50 UTC is 23:50, 15:10 UTC is 00:10 next day
    put(
        store,
        ids["sci"],
        make_entry("Before midnight", published=datetime(2025, 3, 28, 14, tzinfo=UTC)),
    )
    with time_machine.travel(datetime(2025, 3, 28, 14, 50, tzinfo=UTC), tick=False):
        [late] = build(store, tokyo)
    put(
        store,
        ids["sci"],
        make_entry("After midnight", published=datetime(2025, 3, 28, 15, tzinfo=UTC)),
    )
    with time_machine.travel(datetime(2025, 3, 28, 15, 10, tzinfo=UTC), tick=False):
        [early] = build(store, tokyo)
        assert build(store, tokyo) == []
    assert (late.date, late.number) == (date(2025, 3, 28), 1)
    assert (early.date, early.number) == (date(2025, 3, 29), 1)
    assert late.title.startswith("Links 28/03/2025: ")
    assert early.title.startswith("Links 29/03/2025: ")


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_build_at_closes_as_of_that_time(store: Store, zone: str) -> None:
    ids = feeds(store, ("sci", "Science", 0))
    put(
        store,
        ids["sci"],
        make_entry("Then", published=datetime(2025, 3, 27, 10, tzinfo=UTC)),
        make_entry("Later", published=datetime(2025, 3, 29, 10, tzinfo=UTC)),
    )
    [edition] = build(store, site(zone), at=datetime(2025, 3, 28, 3, tzinfo=UTC))
    assert titles(edition) == [("Science", ["Then"])]
    assert edition.date == datetime(2025, 3, 28, 3, tzinfo=UTC).astimezone(ZoneInfo(zone)).date()


story_links = st.sampled_from([f"https://story.example/{n}" for n in range(6)])


@settings(
    max_examples=examples(30),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.tuples(st.integers(0, 2), story_links, st.integers(1, 40)), min_size=1, max_size=15)
)
def test_property_every_story_appears_at_most_once(
    store: Store, items: list[tuple[int, str, int]]
) -> None:
    stream = f"s{uuid.uuid4().hex[:8]}"
    settings_ = [
        FeedSettings(url=f"https://f{n}.example/{stream}", name=f"f{n}", stream=stream)
        for n in range(3)
    ]
    ids = add_feeds(store, settings_, T0)
    for n, link, hours in items:
        variant = link.replace("https://", "http://www.") if hours % 2 else link + "/"
        put(
            store,
            ids[settings_[n].url],
            make_entry(
                f"{link} via {n}",
                link=variant,
                key=f"{link}-{hours}",
                published=T0 - timedelta(hours=hours),
            ),
        )
    with store.writing() as session:
        edition = close_edition(session, stream, LINKS, LONDON, T0)
    assert edition is not None
    links = [item.link for section in edition.sections for item in section.items]
    folded = {link.replace("http://www.", "https://").rstrip("/") for link in links if link}
    assert len(folded) == len(links)
    assert folded == {link for _, link, _ in items}


def test_builders_racing_close_one_edition(store: Store) -> None:
    ids = feeds(store, ("sci", "Science", 0))
    put(store, ids["sci"], *[make_entry(f"Story {n}", published=T0) for n in range(20)])
    barrier = threading.Barrier(4)
    results: list[list[Edition]] = []

    def builder() -> None:
        barrier.wait()
        results.append(build(store, site("UTC"), at=T0 + timedelta(minutes=1)))

    threads = [threading.Thread(target=builder) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4  # nobody crashed
    assert sum(len(closed) for closed in results) == 1
    with store.reading() as session:
        [edition] = load_editions(session)
    assert sum(len(section.items) for section in edition.sections) == 20
