"""Choices: an editor's decisions about each stream's next edition, kept in the database so
that the daemon, cron runs and every node of a PostgreSQL setup honour them.

A hide lasts (its entry stays out of every edition until unhidden); pins, headlines and a
title concern the next edition only and are spent by the edition that used them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from digest.store.models import ChoiceRow, EntryRow, FeedRow

HIDE, PIN, HEADLINE, TITLE = "hide", "pin", "headline", "title"


@dataclass(frozen=True)
class Choices:
    """A stream's choices in force, as the editions stage applies them."""

    hidden: frozenset[int] = frozenset()  # entry ids
    pinned: Mapping[int, str | None] = field(default_factory=dict)  # entry id -> section or None
    headlines: tuple[int, ...] = ()  # entry ids whose headlines make the title, in order
    title: str | None = None  # the title's {headlines} part, verbatim
    # The rows these came from, (id, kind, entry id): a closing spends these and no others,
    # not one an editor stored while it closed.
    rows: tuple[tuple[int, str, int | None], ...] = field(default=(), compare=False)


NO_CHOICES = Choices()


def load_choices(session: Session, stream: str) -> Choices:
    """The stream's choices not yet spent. A hide or a pin concerns an entry, so it belongs to
    the stream the entry's feed is in now (feeds.yaml may have moved it since), not to the
    one it was made for."""
    entry_stream = (
        select(FeedRow.stream)
        .join(EntryRow, EntryRow.feed_id == FeedRow.id)
        .where(EntryRow.id == ChoiceRow.entry_id)
        .scalar_subquery()
    )
    rows = session.scalars(
        select(ChoiceRow)
        .where(
            ChoiceRow.spent_in.is_(None),
            or_(
                ChoiceRow.kind.in_([HIDE, PIN]) & (entry_stream == stream),
                ChoiceRow.kind.not_in([HIDE, PIN]) & (ChoiceRow.stream == stream),
            ),
        )
        .order_by(ChoiceRow.position, ChoiceRow.id)
    ).all()
    title = [row.text for row in rows if row.kind == TITLE and row.text is not None]
    return Choices(
        hidden=frozenset(row.entry_id for row in rows if row.kind == HIDE and row.entry_id),
        pinned={row.entry_id: row.section for row in rows if row.kind == PIN and row.entry_id},
        headlines=tuple(row.entry_id for row in rows if row.kind == HEADLINE and row.entry_id),
        title=title[-1] if title else None,
        rows=tuple((row.id, row.kind, row.entry_id) for row in rows),
    )


def set_hidden(session: Session, entries: Mapping[int, str], hidden: bool, now: datetime) -> None:
    """Hide (or unhide) entries, given as entry id -> its stream. Hiding unpins."""
    _drop(session, [HIDE, PIN] if hidden else [HIDE], entries)
    if hidden:
        session.add_all(
            ChoiceRow(stream=stream, kind=HIDE, entry_id=entry_id, made_at=now)
            for entry_id, stream in entries.items()
        )


def set_pinned(
    session: Session,
    entries: Mapping[int, str],
    sections: Mapping[int, str | None],
    pinned: bool,
    now: datetime,
) -> None:
    """Pin (or unpin) entries, each into its section in `sections` (None: its feed's).
    Pinning unhides."""
    _drop(session, [HIDE, PIN] if pinned else [PIN], entries)
    if pinned:
        session.add_all(
            ChoiceRow(
                stream=stream,
                kind=PIN,
                entry_id=entry_id,
                section=sections.get(entry_id),
                made_at=now,
            )
            for entry_id, stream in entries.items()
        )


def set_headlines(session: Session, stream: str, entry_ids: Sequence[int], now: datetime) -> None:
    """The next edition's headlines, in order, each once (none: chosen as usual)."""
    _drop_stream(session, stream, HEADLINE)
    session.add_all(
        ChoiceRow(stream=stream, kind=HEADLINE, entry_id=entry_id, position=index, made_at=now)
        for index, entry_id in enumerate(dict.fromkeys(entry_ids))
    )


def set_title(session: Session, stream: str, text: str | None, now: datetime) -> None:
    """The next edition's {headlines} part, verbatim (None or empty: made from headlines)."""
    _drop_stream(session, stream, TITLE)
    if text:
        session.add(ChoiceRow(stream=stream, kind=TITLE, text=text, made_at=now))


def spend(session: Session, edition_id: int, choices: Choices, used: Collection[int]) -> None:
    """Mark the choices an edition closed with as spent: its title, its headlines and the
    pins of the entries it holds. Pins it could not use wait for the next edition."""
    used = set(used)
    ids = [
        row_id
        for row_id, kind, entry_id in choices.rows
        if kind in (TITLE, HEADLINE) or (kind == PIN and entry_id in used)
    ]
    for start in range(0, len(ids), 500):
        session.execute(
            update(ChoiceRow)
            .where(ChoiceRow.id.in_(ids[start : start + 500]), ChoiceRow.spent_in.is_(None))
            .values(spent_in=edition_id)
        )


def _drop(session: Session, kinds: list[str], entries: Collection[int]) -> None:
    ids = list(entries)
    for start in range(0, len(ids), 500):
        session.execute(
            delete(ChoiceRow).where(
                ChoiceRow.spent_in.is_(None),
                ChoiceRow.kind.in_(kinds),
                ChoiceRow.entry_id.in_(ids[start : start + 500]),
            )
        )


def _drop_stream(session: Session, stream: str, kind: str) -> None:
    session.execute(
        delete(ChoiceRow).where(
            ChoiceRow.stream == stream, ChoiceRow.kind == kind, ChoiceRow.spent_in.is_(None)
        )
    )
