"""Editions stage: choose which stored entries close into a stream's next edition.

An edition is immutable once closed: its items are copied out of the entries at closing
time, so later changes to an entry never change a published edition.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from itertools import groupby
from zoneinfo import ZoneInfo

from sqlalchemy import func, inspect, or_, select
from sqlalchemy.orm import Session

from digest.config import StreamSettings
from digest.handles import handle_of
from digest.rules import NO_RULES, StreamRules
from digest.store import EditionItemRow, EditionRow, EntryRow, FeedRow, mark_published
from digest.store.choices import NO_CHOICES, Choices, load_choices, spend
from digest.store.packed import KeptItem, kept_items, published_among, record_published

MAX_HEADLINES = 3


@dataclass(frozen=True)
class EditionItem:
    source: str  # the feed's name
    title: str
    link: str | None
    blurb: str
    published: datetime  # aware UTC


@dataclass(frozen=True)
class EditionSection:
    name: str
    items: tuple[EditionItem, ...]


@dataclass(frozen=True)
class Edition:
    stream: str
    date: date  # local date (site.timezone) of closed_at
    number: int  # n-th edition of that date, from 1
    title: str  # e.g. "Links 28/03/2025: A, B, and C"
    summary: str  # the stream's summary line, e.g. "Links for the day"
    closed_at: datetime  # aware UTC
    sections: tuple[EditionSection, ...]
    updated_at: datetime | None = None  # aware UTC: when `digest amend` last corrected it
    # A fingerprint of its stored row, every column: an edition changed after closing (an
    # amendment) gets another, so its pages are made again (digest.render). Not part of what
    # the edition is: one just closed and the same loaded back are equal.
    revision: str = field(default="", compare=False)

    @property
    def path(self) -> str:
        """Path under the output folder, without extension: links/2025/03/28/1."""
        return edition_path(self.stream, self.date, self.number)


@dataclass(frozen=True)
class Candidate:
    """An entry that could go into the next edition, with what the choice needs to know."""

    entry_id: int
    feed_url: str  # the feed's URL in feeds.yaml: which feed's rules apply
    source: str
    section: str
    title: str
    link: str | None
    canonical_url: str | None
    blurb: str
    published: datetime
    weight: int


@dataclass(frozen=True)
class Held:
    """A candidate kept out of the edition, and why (for the draft)."""

    candidate: Candidate
    reason: str


@dataclass(frozen=True)
class Choice:
    """What choose_items decided: the items, oldest first, and the candidates held back."""

    items: list[Candidate]
    held: list[Held]


@dataclass(frozen=True)
class Plan:
    """The edition a stream would close at `at`: what the draft shows and a closing saves."""

    stream: str
    local: datetime  # `at` in the site's zone
    title: str
    sections: tuple[tuple[str, tuple[Candidate, ...]], ...]
    held: tuple[Held, ...]
    choices: Choices
    min_items: int

    @property
    def items(self) -> list[Candidate]:
        return [item for _, items in self.sections for item in items]

    @property
    def closes(self) -> bool:
        return len(self.items) >= max(self.min_items, 1)


def plan_edition(
    session: Session,
    name: str,
    stream: StreamSettings,
    zone: ZoneInfo,
    at: datetime,
    rules: StreamRules = NO_RULES,
) -> Plan:
    """The stream's next edition as of `at`, with the rules and the editor's choices applied.

    Candidates: entries of the stream's feeds published in (at - lookback, at] that are in no
    edition yet, and the entries the editor pinned, however old. A story whose canonical URL
    an earlier edition of the stream carried, or that another candidate already carries, is
    left out (unless pinned).
    """
    choices = _usable(load_choices(session, name), stream)
    candidates = _candidates(session, name, stream, at, list(choices.pinned))
    carried = _carriers(session, name, [c.canonical_url for c in candidates if c.canonical_url])
    published = published_among(session, name, carried)
    choice = choose_items(candidates, published, rules, choices)
    local = at.astimezone(zone)
    return Plan(
        stream=name,
        local=local,
        title=_title(stream, local, choice.items, carried, choices),
        sections=_ordered_sections(choice.items, stream),
        held=tuple(choice.held),
        choices=choices,
        min_items=stream.min_items,
    )


def close_edition(
    session: Session,
    name: str,
    stream: StreamSettings,
    zone: ZoneInfo,
    at: datetime,
    *,
    after: int = 0,
    rules: StreamRules = NO_RULES,
) -> Edition | None:
    """Close the stream's next edition as of `at` (see plan_edition), or None when too little
    is new. The editor's choices it used are spent.

    Its number is the next of the day after the ones the database records and after `after`:
    the highest number the caller knows to be taken some other way (published pages the
    database has no record of, see digest.publish.close_stream).

    The caller commits; the unique keys on (stream, date, number) and on the entry make a
    second closer fail instead of doubling.
    """
    plan = plan_edition(session, name, stream, zone, at, rules)
    if not plan.closes:
        return None
    number = 1 + max(
        after,
        session.scalar(
            select(func.max(EditionRow.number)).where(
                EditionRow.stream == name, EditionRow.date == plan.local.date()
            )
        )
        or 0,
    )
    edition = Edition(
        stream=name,
        date=plan.local.date(),
        number=number,
        title=plan.title,
        summary=stream.summary,
        closed_at=at,
        sections=tuple(
            EditionSection(
                section,
                tuple(EditionItem(c.source, c.title, c.link, c.blurb, c.published) for c in items),
            )
            for section, items in plan.sections
        ),
    )
    edition_id = _save(session, edition, plan.items)
    spend(session, edition_id, plan.choices, [c.entry_id for c in plan.items])
    return edition


def choose_items(
    candidates: list[Candidate],
    published_before: set[str],
    rules: StreamRules = NO_RULES,
    choices: Choices = NO_CHOICES,
) -> Choice:
    """What an edition holds, and what is held back and why.

    Blocked domains stay out whatever the editor chose; then hidden entries; then the rules,
    which a pin overrides. Each story goes in once (by canonical URL), and none that an
    earlier edition of the stream carried unless pinned: candidates come oldest first, so the
    first teller wins, but a pinned teller wins over all.
    """
    reasons: dict[int, str | None] = {}
    teller: dict[str, int] = {}
    pinned_first = sorted(candidates, key=lambda c: c.entry_id not in choices.pinned)
    for candidate in pinned_first:
        pinned = candidate.entry_id in choices.pinned
        reason = rules.blocks(candidate.link)
        if reason is None and candidate.entry_id in choices.hidden:
            reason = "hidden by the editor"
        if reason is None and not pinned:
            reason = rules.filters(
                feed_url=candidate.feed_url,
                title=candidate.title,
                link=candidate.link,
                summary=candidate.blurb,
            )
        url = candidate.canonical_url
        if reason is None and url:
            if url in teller:
                reason = f"the same story as {handle_of(teller[url])}"
            elif url in published_before and not pinned:
                reason = "the same story as an earlier edition's"
            else:
                teller[url] = candidate.entry_id
        reasons[candidate.entry_id] = reason
    items, held = [], []
    for candidate in candidates:
        reason = reasons[candidate.entry_id]
        if reason is not None:
            held.append(Held(candidate, reason))
        elif section := choices.pinned.get(candidate.entry_id):
            items.append(replace(candidate, section=section))
        else:
            items.append(candidate)
    return Choice(items, held)


def _usable(choices: Choices, stream: StreamSettings) -> Choices:
    """Choices as the config now allows: a pin into a section the stream no longer lists
    puts the entry in its own section."""
    known = {*stream.sections, stream.default_section}
    return replace(
        choices,
        pinned={
            entry_id: section if section in known else None
            for entry_id, section in choices.pinned.items()
        },
    )


def _title(
    stream: StreamSettings,
    local: datetime,
    items: list[Candidate],
    carried: dict[str, int],
    choices: Choices,
) -> str:
    """The editor's words verbatim (never cut), else the headlines they chose, in their order,
    else the most prominent ones."""
    if choices.title:
        return stream.title.format(date=local, headlines=choices.title)
    by_id = {item.entry_id: item.title for item in items}
    chosen = [by_id[entry_id] for entry_id in choices.headlines if entry_id in by_id]
    headlines = chosen or rank_headlines(items, carried)
    return edition_title(stream.title, local, headlines, stream.title_max)


def _candidates(
    session: Session, name: str, stream: StreamSettings, at: datetime, pinned: list[int]
) -> list[Candidate]:
    recent = (EntryRow.published_at > at - stream.lookback) & (EntryRow.published_at <= at)
    rows = session.execute(
        select(EntryRow, FeedRow)
        .join(FeedRow, EntryRow.feed_id == FeedRow.id)
        .where(
            FeedRow.stream == name,
            or_(recent, EntryRow.id.in_(pinned)) if pinned else recent,
            ~EntryRow.in_edition,
        )
        .order_by(EntryRow.published_at, EntryRow.id)
    ).all()
    known = set(stream.sections)
    return [
        Candidate(
            entry_id=entry.id,
            feed_url=feed.config_url,
            source=feed.name,
            section=feed.section if feed.section in known else stream.default_section,
            title=entry.title,
            link=entry.link,
            canonical_url=entry.canonical_url,
            blurb=entry.summary,
            published=entry.published_at,
            weight=feed.weight,
        )
        for entry, feed in rows
    ]


def _carriers(session: Session, name: str, canonicals: list[str]) -> dict[str, int]:
    """How many of the stream's feeds carry each story: a story many carry is prominent."""
    counts: dict[str, int] = {}
    for start in range(0, len(canonicals), 500):
        chunk = canonicals[start : start + 500]
        rows = session.execute(
            select(EntryRow.canonical_url, func.count(func.distinct(EntryRow.feed_id)))
            .join(FeedRow, EntryRow.feed_id == FeedRow.id)
            .where(FeedRow.stream == name, EntryRow.canonical_url.in_(chunk))
            .group_by(EntryRow.canonical_url)
        )
        counts.update((canonical, count) for canonical, count in rows if canonical)
    return counts


def _ordered_sections(
    chosen: list[Candidate], stream: StreamSettings
) -> tuple[tuple[str, tuple[Candidate, ...]], ...]:
    """Sections in the order the stream lists them (the default one last when unlisted);
    items in the order they were published."""
    order = list(stream.sections)
    if stream.default_section not in order:
        order.append(stream.default_section)
    return tuple(
        (section, tuple(c for c in chosen if c.section == section))
        for section in order
        if any(c.section == section for c in chosen)
    )


def rank_headlines(chosen: list[Candidate], carried: dict[str, int]) -> list[str]:
    """Most prominent first: the feed's weight, then stories many feeds carry, then recency."""
    ranked = sorted(
        chosen,
        key=lambda c: (-c.weight, -carried.get(c.canonical_url or "", 1), -c.published.timestamp()),
    )
    return [c.title for c in ranked[:MAX_HEADLINES]]


def join_headlines(headlines: list[str]) -> str:
    """ "A", "A and B", "A, B, and C"."""
    if len(headlines) <= 2:
        return " and ".join(headlines)
    return ", ".join(headlines[:-1]) + ", and " + headlines[-1]


def edition_title(pattern: str, local: datetime, headlines: list[str], title_max: int) -> str:
    """Fill the stream's title pattern, dropping headlines from the end to fit `title_max`;
    a single headline that is still too long is cut with an ellipsis."""
    for count in range(len(headlines), 0, -1):
        title = pattern.format(date=local, headlines=join_headlines(headlines[:count]))
        if len(title) <= title_max:
            return title
    bare = pattern.format(date=local, headlines="")
    room = title_max - len(bare) - 1
    first = headlines[0] if headlines else ""
    cut = first if len(first) <= room else first[: max(room, 0)].rstrip() + "…"
    return pattern.format(date=local, headlines=cut)


def _save(session: Session, edition: Edition, chosen: list[Candidate]) -> int:
    row = EditionRow(
        stream=edition.stream,
        date=edition.date,
        number=edition.number,
        title=edition.title,
        summary=edition.summary,
        closed_at=edition.closed_at,
    )
    session.add(row)
    session.flush()
    position = 0
    for section in edition.sections:
        for candidate in (c for c in chosen if c.section == section.name):
            position += 1
            session.add(
                EditionItemRow(
                    edition_id=row.id,
                    position=position,
                    entry_id=candidate.entry_id,
                    stream=edition.stream,
                    section=section.name,
                    source=candidate.source,
                    title=candidate.title,
                    link=candidate.link,
                    blurb=candidate.blurb,
                    published_at=candidate.published,
                )
            )
    session.flush()
    mark_published(session, [candidate.entry_id for candidate in chosen])
    record_published(session, edition.stream, (c.canonical_url for c in chosen if c.canonical_url))
    return row.id


def load_editions(
    session: Session, stream: str | None = None, *, bare: bool = False
) -> list[Edition]:
    """Closed editions, newest first, exactly as they were closed; `bare`: without their
    sections (what indexes and archives need: a site that has published for years does not
    reload every item to add one edition; `with_sections` loads one when its page is made)."""
    query = select(EditionRow).order_by(EditionRow.closed_at.desc(), EditionRow.id.desc())
    if stream is not None:
        query = query.where(EditionRow.stream == stream)
    rows = list(session.scalars(query))
    items: dict[int, list[KeptItem]] = {}
    if not bare:
        items = kept_items(session, [row.id for row in rows])
    return [_edition_from_rows(row, items.get(row.id, [])) for row in rows]


def with_sections(session: Session, edition: Edition) -> Edition:
    """The edition with its sections, as it was closed, given a bare one."""
    row = session.scalars(
        select(EditionRow).where(
            EditionRow.stream == edition.stream,
            EditionRow.date == edition.date,
            EditionRow.number == edition.number,
        )
    ).one()
    return edition_from_row(session, row)


def edition_from_row(session: Session, row: EditionRow) -> Edition:
    """The edition a stored row holds, with its sections."""
    return _edition_from_rows(row, kept_items(session, [row.id])[row.id])


def edition_paths(session: Session) -> list[str]:
    return [
        edition_path(row.stream, row.date, row.number)
        for row in session.execute(select(EditionRow.stream, EditionRow.date, EditionRow.number))
    ]


def stored_edition(session: Session, path: str) -> EditionRow | None:
    """The stored edition at `path` (links/2026/12/02/1, an extension allowed), None if there
    is none; ValueError when `path` cannot name an edition."""
    match = _EDITION_PATH.match(path.strip().strip("/"))
    if match is None:
        raise ValueError(f"{path!r} is not an edition: name it as links/2026/12/02/1")
    stream, year, month, day, number = match.groups()
    try:
        day_of = date(int(year), int(month), int(day))
    except ValueError:
        raise ValueError(f"{path!r}: not a date") from None
    return session.scalar(
        select(EditionRow).where(
            EditionRow.stream == stream, EditionRow.date == day_of, EditionRow.number == int(number)
        )
    )


_EDITION_PATH = re.compile(r"^([a-z0-9][a-z0-9_-]*)/(\d{4})/(\d{2})/(\d{2})/([1-9]\d*)(?:\.\w+)?$")


def edition_path(stream: str, day: date, number: int) -> str:
    """An edition's place under the output folder, without extension: links/2025/03/28/1.
    The one spelling of it: subscribers' links depend on it staying the same."""
    return f"{stream}/{day:%Y/%m/%d}/{number}"


def _edition_from_rows(row: EditionRow, items: list[KeptItem]) -> Edition:
    sections = tuple(
        EditionSection(
            name,
            tuple(EditionItem(i.source, i.title, i.link, i.blurb, i.published_at) for i in group),
        )
        for name, group in groupby(items, key=lambda item: item.section)
    )
    return Edition(
        stream=row.stream,
        date=row.date,
        number=row.number,
        title=row.title,
        summary=row.summary,
        closed_at=row.closed_at,
        sections=sections,
        updated_at=row.updated_at,
        revision=_revision(row),
    )


def _revision(row: EditionRow) -> str:
    """Every column of the row, whatever columns later migrations add (an amendment's), but
    how its items are kept: a packed edition is the same edition."""
    values = tuple(
        getattr(row, column.key)
        for column in inspect(EditionRow).column_attrs
        if column.key != "packed"
    )
    return hashlib.sha256(repr(values).encode("utf-8")).hexdigest()
