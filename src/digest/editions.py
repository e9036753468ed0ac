"""Editions stage: choose which stored entries close into a stream's next edition.

An edition is immutable once closed: its items are copied out of the entries at closing
time, so later changes to an entry never change a published edition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import groupby
from zoneinfo import ZoneInfo

from sqlalchemy import func, inspect, select, update
from sqlalchemy.orm import Session

from digest.config import StreamSettings
from digest.store import EditionItemRow, EditionRow, EntryRow, FeedRow

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
    source: str
    section: str
    title: str
    link: str | None
    canonical_url: str | None
    blurb: str
    published: datetime
    weight: int


def close_edition(
    session: Session,
    name: str,
    stream: StreamSettings,
    zone: ZoneInfo,
    at: datetime,
    *,
    after: int = 0,
) -> Edition | None:
    """Close the stream's next edition as of `at`, or None when too little is new.

    Its number is the next of the day after the ones the database records and after `after`:
    the highest number the caller knows to be taken some other way (published pages the
    database has no record of, see digest.publish.close_stream).

    Candidates: entries of the stream's feeds published in (at - lookback, at] that are in no
    edition yet. A story whose canonical URL an earlier edition of the stream carried, or that
    another candidate already carries, is left out. The caller commits; the unique keys on
    (stream, date, number) and on the entry make a second closer fail instead of doubling.
    """
    candidates = _candidates(session, name, stream, at)
    carried = _carriers(session, name, [c.canonical_url for c in candidates if c.canonical_url])
    chosen = choose_items(candidates, _published_canonicals(session, name, list(carried)))
    if len(chosen) < stream.min_items or not chosen:
        return None

    local = at.astimezone(zone)
    number = 1 + max(
        after,
        session.scalar(
            select(func.max(EditionRow.number)).where(
                EditionRow.stream == name, EditionRow.date == local.date()
            )
        )
        or 0,
    )
    sections = _ordered_sections(chosen, stream)
    headlines = rank_headlines(chosen, carried)
    edition = Edition(
        stream=name,
        date=local.date(),
        number=number,
        title=edition_title(stream.title, local, headlines, stream.title_max),
        summary=stream.summary,
        closed_at=at,
        sections=sections,
    )
    _save(session, edition, chosen)
    return edition


def choose_items(candidates: list[Candidate], published_before: set[str]) -> list[Candidate]:
    """What an edition holds: each story once (by canonical URL), and none that an earlier
    edition of the stream carried; candidates come oldest first, so the first teller wins."""
    chosen: list[Candidate] = []
    seen = set(published_before)
    for candidate in candidates:
        if candidate.canonical_url:
            if candidate.canonical_url in seen:
                continue
            seen.add(candidate.canonical_url)
        chosen.append(candidate)
    return chosen


def _candidates(
    session: Session, name: str, stream: StreamSettings, at: datetime
) -> list[Candidate]:
    in_edition = select(EditionItemRow.entry_id).where(EditionItemRow.entry_id == EntryRow.id)
    rows = session.execute(
        select(EntryRow, FeedRow)
        .join(FeedRow, EntryRow.feed_id == FeedRow.id)
        .where(
            FeedRow.stream == name,
            EntryRow.published_at > at - stream.lookback,
            EntryRow.published_at <= at,
            ~in_edition.exists(),
        )
        .order_by(EntryRow.published_at, EntryRow.id)
    ).all()
    known = set(stream.sections)
    return [
        Candidate(
            entry_id=entry.id,
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


def _published_canonicals(session: Session, name: str, canonicals: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(canonicals), 500):
        found.update(
            session.scalars(
                select(EditionItemRow.canonical_url).where(
                    EditionItemRow.stream == name,
                    EditionItemRow.canonical_url.in_(canonicals[start : start + 500]),
                )
            )
        )
    return found


def _ordered_sections(
    chosen: list[Candidate], stream: StreamSettings
) -> tuple[EditionSection, ...]:
    """Sections in the order the stream lists them (the default one last when unlisted);
    items in the order they were published."""
    order = list(stream.sections)
    if stream.default_section not in order:
        order.append(stream.default_section)
    return tuple(
        EditionSection(
            name=section,
            items=tuple(
                EditionItem(c.source, c.title, c.link, c.blurb, c.published)
                for c in chosen
                if c.section == section
            ),
        )
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


def _save(session: Session, edition: Edition, chosen: list[Candidate]) -> None:
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
                    canonical_url=candidate.canonical_url,
                    blurb=candidate.blurb,
                    published_at=candidate.published,
                )
            )
    session.flush()
    ids = [candidate.entry_id for candidate in chosen]
    for start in range(0, len(ids), 500):
        session.execute(
            update(EntryRow)
            .where(EntryRow.id.in_(ids[start : start + 500]))
            .values(in_edition=True)
        )


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
    items: dict[int, list[EditionItemRow]] = {}
    if not bare:
        items = _items(session, [row.id for row in rows])
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
    return _edition_from_rows(row, _items(session, [row.id]).get(row.id, []))


def _items(session: Session, ids: list[int]) -> dict[int, list[EditionItemRow]]:
    items: dict[int, list[EditionItemRow]] = {row_id: [] for row_id in ids}
    for start in range(0, len(ids), 500):
        for item in session.scalars(
            select(EditionItemRow)
            .where(EditionItemRow.edition_id.in_(ids[start : start + 500]))
            .order_by(EditionItemRow.edition_id, EditionItemRow.position)
        ):
            items[item.edition_id].append(item)
    return items


def edition_paths(session: Session) -> list[str]:
    return [
        edition_path(row.stream, row.date, row.number)
        for row in session.execute(select(EditionRow.stream, EditionRow.date, EditionRow.number))
    ]


def edition_path(stream: str, day: date, number: int) -> str:
    """An edition's place under the output folder, without extension: links/2025/03/28/1.
    The one spelling of it: subscribers' links depend on it staying the same."""
    return f"{stream}/{day:%Y/%m/%d}/{number}"


def _edition_from_rows(row: EditionRow, items: list[EditionItemRow]) -> Edition:
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
        revision=_revision(row),
    )


def _revision(row: EditionRow) -> str:
    """Every column of the row, whatever columns later migrations add (an amendment's)."""
    values = tuple(getattr(row, column.key) for column in inspect(EditionRow).column_attrs)
    return hashlib.sha256(repr(values).encode("utf-8")).hexdigest()
