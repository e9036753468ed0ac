"""The editor's desk: the draft of each stream's next edition, the choices an editor makes
about it by handle, and corrections to a closed edition (`amend`).

The decisions themselves are pure and live elsewhere (digest.editions.choose_items applies
the rules and the choices, digest.handles names entries, digest.draft_file reads an edited
draft); this module checks what an editor asked for against the database and the config,
all of it or nothing, and stores it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from digest.config import Settings
from digest.draft_file import Edits, EmptyDraftFile, parse_draft_file, render_draft_file
from digest.editions import (
    Edition,
    Plan,
    edition_from_row,
    edition_path,
    plan_edition,
    stored_edition,
)
from digest.handles import entry_id_of, handle_of
from digest.rules import blocked_domain, stream_rules
from digest.store import EditionItemRow, EditionRow, EntryRow, FeedRow, Store
from digest.store.choices import set_headlines, set_hidden, set_pinned, set_title
from digest.store.packed import KeptItem, kept_items, pack


class DeskError(Exception):
    """What an editor asked for cannot be done; `problems` has one line each. Nothing was
    changed."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class DraftItem:
    handle: str
    feed: str
    section: str
    title: str
    link: str | None
    summary: str
    published: datetime
    pinned: bool = False
    headline: bool = False  # the editor chose it for the title

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"published": self.published.isoformat()}


@dataclass(frozen=True)
class HeldItem:
    handle: str
    feed: str
    section: str
    title: str
    link: str | None
    reason: str
    hidden: bool  # by the editor (an unhide lets it in)
    pinned: bool = False  # by the editor, and held back all the same (a repeat, a blocked domain)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Draft:
    """A stream's next edition as it would close now; shown, never written."""

    stream: str
    title: str
    closes: bool  # enough items to close (min_items)
    min_items: int
    items: tuple[DraftItem, ...]
    held_back: tuple[HeldItem, ...]
    title_choice: str | None = None  # the editor's words for the title
    sections: tuple[str, ...] = field(default=())  # every section an item may go to
    headlines: tuple[str, ...] = ()  # handles of the items the editor chose, in their order

    def as_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "title": self.title,
            "closes": self.closes,
            "min_items": self.min_items,
            "title_choice": self.title_choice,
            "headlines": list(self.headlines),
            "items": [item.as_json() for item in self.items],
            "held_back": [held.as_json() for held in self.held_back],
        }


def drafts(store: Store, settings: Settings, streams: Sequence[str], at: datetime) -> list[Draft]:
    """The drafts of these streams as of `at`. Reads only."""
    with store.reading() as session:
        return [
            _draft(
                plan_edition(
                    session,
                    name,
                    settings.streams[name],
                    settings.site.zone,
                    at,
                    stream_rules(settings, name),
                ),
                _sections(settings, name),
            )
            for name in streams
        ]


def _draft(plan: Plan, sections: tuple[str, ...]) -> Draft:
    choices = plan.choices
    going_in = {c.entry_id for c in plan.items}
    return Draft(
        stream=plan.stream,
        title=plan.title,
        closes=plan.closes,
        min_items=plan.min_items,
        items=tuple(
            DraftItem(
                handle=handle_of(c.entry_id),
                feed=c.source,
                section=c.section,
                title=c.title,
                link=c.link,
                summary=c.blurb,
                published=c.published,
                pinned=c.entry_id in choices.pinned,
                headline=c.entry_id in choices.headlines,
            )
            for c in plan.items
        ),
        held_back=tuple(
            HeldItem(
                handle=handle_of(held.candidate.entry_id),
                feed=held.candidate.source,
                section=choices.pinned.get(held.candidate.entry_id) or held.candidate.section,
                title=held.candidate.title,
                link=held.candidate.link,
                reason=held.reason,
                hidden=held.candidate.entry_id in choices.hidden,
                pinned=held.candidate.entry_id in choices.pinned,
            )
            for held in plan.held
        ),
        title_choice=choices.title,
        sections=sections,
        headlines=tuple(
            handle_of(entry_id)
            for entry_id in dict.fromkeys(choices.headlines)
            if entry_id in going_in
        ),
    )


def format_draft(draft: Draft) -> list[str]:
    """The draft as `digest draft` prints it."""
    if not draft.items:
        lines = [f"{draft.stream}: nothing to close now"]
    elif draft.closes:
        lines = [
            f"{draft.stream}: {draft.title}",
            f"  (would close now with {len(draft.items)} items)",
        ]
    else:
        lines = [
            f"{draft.stream}: {draft.title}",
            f"  (would not close now: {len(draft.items)} items, min_items {draft.min_items})",
        ]
    if draft.title_choice:
        lines.append(f"  (the title's words are the editor's: {draft.title_choice})")
    section = None
    for item in draft.items:
        if item.section != section:
            section = item.section
            lines.append(f"  {section}")
        marks = "".join(
            mark for mark, on in (("pinned", item.pinned), ("headline", item.headline)) if on
        )
        lines.append(
            f"    {item.handle}  {item.feed} ☛ {item.title}" + (f"  ({marks})" if marks else "")
        )
        if item.summary:
            lines.append(f"          > {_cut(' '.join(item.summary.split()), 100)}")
    if draft.held_back:
        lines.append("  held back:")
    for held in draft.held_back:
        lines.append(f"    {held.handle}  {held.feed} ☛ {held.title}  ({held.reason})")
    return lines


def edit_draft(
    store: Store,
    settings: Settings,
    stream: str,
    now: datetime,
    edit: Callable[[str], str | None],
) -> str:
    """Let an editor edit the stream's draft as text (`edit` runs their editor), then apply
    every choice at once. DraftFileError names each wrong line, and nothing changes."""
    (shown,) = drafts(store, settings, [stream], now)
    text = edit(render_draft_file(shown))
    if text is None:
        return "not saved: nothing changed"
    try:
        edits = parse_draft_file(text, shown)
    except EmptyDraftFile:
        return "the draft file was emptied: nothing changed"
    apply_edits(store, shown, edits, now)
    (after,) = drafts(store, settings, [stream], now)
    return (
        f"{stream}: {after.title}\n"
        f"  {len(after.items)} items, {len(after.held_back)} held back"
        + ("" if after.closes else f" (would not close: min_items {after.min_items})")
    )


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _sections(settings: Settings, stream: str) -> tuple[str, ...]:
    config = settings.streams[stream]
    return tuple(dict.fromkeys([*config.sections, config.default_section]))


# --- choices by handle -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An entry an editor named by its handle."""

    handle: str
    entry_id: int
    stream: str
    title: str
    link: str | None
    edition: str | None  # the path of the edition that holds it, if one does


def resolve(session: Session, handles: Sequence[str]) -> list[Target]:
    """The entries these handles name; DeskError naming every handle that names none."""
    problems = []
    ids: dict[str, int] = {}
    for text in handles:
        entry_id = entry_id_of(text)
        if entry_id is None:
            problems.append(f"{text!r} is not a handle (a typo?): `digest draft` lists them")
        else:
            ids[text] = entry_id
    rows = {
        entry.id: (entry, feed)
        for entry, feed in session.execute(
            select(EntryRow, FeedRow)
            .join(FeedRow, EntryRow.feed_id == FeedRow.id)
            .where(EntryRow.id.in_(list(ids.values())))
        )
    }
    # A published entry's text is its edition's copy (digest.store.entries).
    published = {
        item.entry_id: (edition_path(stream, day, number), item.title, item.link)
        for item, stream, day, number in session.execute(
            select(EditionItemRow, EditionRow.stream, EditionRow.date, EditionRow.number)
            .join(EditionRow, EditionItemRow.edition_id == EditionRow.id)
            .where(EditionItemRow.entry_id.in_(list(ids.values())))
        )
    }
    targets = []
    for text, entry_id in ids.items():
        found = rows.get(entry_id)
        if found is None:
            problems.append(f"{text}: no entry has this handle")
            continue
        entry, feed = found
        if not feed.stream:
            problems.append(f"{text}: {entry.title!r} is an own post, in no stream's editions")
            continue
        edition, title, link = published.get(entry_id, (None, entry.title, entry.link))
        targets.append(Target(text, entry_id, feed.stream, title, link, edition))
    if problems:
        raise DeskError(problems)
    return targets


def _already_closed(targets: Sequence[Target], *, amend_hint: bool = False) -> list[str]:
    """A choice about the next edition cannot concern an entry a closed one holds."""
    return [
        f"{t.handle}: {t.title!r} is in {t.edition} already"
        + (f": `digest amend {t.edition} --hide {t.handle}` takes it out" if amend_hint else "")
        for t in targets
        if t.edition
    ]


def hide(
    store: Store, handles: Sequence[str], now: datetime, *, hidden: bool = True
) -> list[Target]:
    """Keep entries out of every edition (or, with hidden=False, let them in again)."""
    with store.writing() as session:
        targets = resolve(session, handles)
        if hidden and (problems := _already_closed(targets, amend_hint=True)):
            raise DeskError(problems)
        set_hidden(session, {t.entry_id: t.stream for t in targets}, hidden, now)
    return targets


def pin(
    store: Store,
    settings: Settings,
    handles: Sequence[str],
    section: str | None,
    now: datetime,
    *,
    pinned: bool = True,
) -> list[Target]:
    """Put entries into their stream's next edition (into `section`, if given), whatever
    their age and the exclude and include rules; or, with pinned=False, stop doing so."""
    with store.writing() as session:
        targets = resolve(session, handles)
        problems = _already_closed(targets) if pinned else []
        for target in targets if pinned else []:
            if target.stream not in settings.streams:
                problems.append(f"{target.handle}: its stream {target.stream!r} is not configured")
                continue
            if blocked := blocked_domain(target.link, settings.block_domains):
                problems.append(
                    f"{target.handle}: {target.title!r}: blocked domain {blocked} "
                    "(block_domains): its links never enter an edition"
                )
            known = _sections(settings, target.stream)
            if section is not None and section not in known:
                problems.append(
                    f"{target.handle}: no section {section!r} in stream {target.stream} "
                    f"(known: {', '.join(known)})"
                )
        if problems:
            raise DeskError(problems)
        set_pinned(
            session,
            {t.entry_id: t.stream for t in targets},
            {t.entry_id: section for t in targets},
            pinned,
            now,
        )
    return targets


def headline(
    store: Store, settings: Settings, stream: str, handles: Sequence[str], now: datetime
) -> list[Target]:
    """The items whose headlines make the next edition's title, in this order (none: the
    usual choice). Each must be an item of the draft: the title is made of those only."""
    _known_stream(settings, stream)
    (shown,) = drafts(store, settings, [stream], now)
    going_in = {entry_id_of(item.handle) for item in shown.items}
    held = {entry_id_of(entry.handle): entry.reason for entry in shown.held_back}
    with store.writing() as session:
        targets = resolve(session, handles)
        problems = _already_closed(targets) + [
            f"{t.handle}: {t.title!r} is in stream {t.stream}, not {stream}"
            if t.stream != stream
            else f"{t.handle}: {t.title!r} is not in the next edition"
            + (f" ({held[t.entry_id]})" if t.entry_id in held else "")
            for t in targets
            if not t.edition and (t.stream != stream or t.entry_id not in going_in)
        ]
        if problems:
            raise DeskError(problems)
        set_headlines(session, stream, [t.entry_id for t in targets], now)
    return targets


def title(store: Store, settings: Settings, stream: str, text: str, now: datetime) -> str:
    """Set the next edition's {headlines} part (empty: made from headlines again); returns
    the title it gives as of `now`."""
    _known_stream(settings, stream)
    words = " ".join(text.split())
    with store.writing() as session:
        set_title(session, stream, words or None, now)
    return _preview(settings, stream, words, now)


def _preview(settings: Settings, stream: str, words: str, at: datetime) -> str:
    pattern = settings.streams[stream].title
    return pattern.format(date=at.astimezone(settings.site.zone), headlines=words)


def _known_stream(settings: Settings, stream: str) -> None:
    if stream not in settings.streams:
        raise DeskError([f"unknown stream {stream!r} (known: {', '.join(settings.streams)})"])


def apply_edits(store: Store, draft: Draft, edits: Edits, now: datetime) -> None:
    """Store an edited draft's choices in one transaction. Entries that closed into an
    edition since the draft was shown are refused, and then nothing changes."""
    with store.writing() as session:
        ids = [*edits.hide, *edits.clear, *edits.pin]
        closed = set(
            session.scalars(select(EditionItemRow.entry_id).where(EditionItemRow.entry_id.in_(ids)))
        )
        if closed:
            raise DeskError(
                [
                    f"{handle_of(entry_id)}: closed into an edition since the draft was made: "
                    "nothing changed; run `digest draft --edit` again"
                    for entry_id in sorted(closed)
                ]
            )
        stream = {entry_id: draft.stream for entry_id in ids}
        set_hidden(session, {i: stream[i] for i in edits.clear}, False, now)
        set_pinned(session, {i: stream[i] for i in edits.clear}, {}, False, now)
        set_hidden(session, {i: stream[i] for i in edits.hide}, True, now)
        set_pinned(session, {i: stream[i] for i in edits.pin}, edits.pin, True, now)
        if edits.headlines is not None:
            set_headlines(session, draft.stream, list(edits.headlines), now)
        if edits.title is not None:
            set_title(session, draft.stream, edits.title or None, now)


# --- corrections to a closed edition -----------------------------------------------------


def find_edition(session: Session, path: str) -> EditionRow:
    """The edition at `path` (links/2026/12/02/1, an extension allowed); DeskError if none."""
    try:
        row = stored_edition(session, path)
    except ValueError as error:
        raise DeskError([str(error)]) from None
    if row is None:
        raise DeskError([f"no edition {path.strip().strip('/')} in the database"])
    return row


@dataclass(frozen=True)
class Amended:
    edition: Edition
    hidden: list[str]  # titles taken out
    warnings: list[str]


def edition_items(store: Store, path: str) -> tuple[Edition, list[tuple[str, str, str]]]:
    """A closed edition and its shown items as (handle, section, "source ☛ title")."""
    with store.reading() as session:
        row = find_edition(session, path)
        items = kept_items(session, [row.id])[row.id]
        shown = [(handle_of(i.entry_id), i.section, f"{i.source} ☛ {i.title}") for i in items]
        edition = edition_from_row(session, row)
    return edition, shown


def amend(
    store: Store,
    settings: Settings,
    path: str,
    hide_handles: Sequence[str],
    words: str | None,
    now: datetime,
) -> Amended:
    """Correct a closed edition: take items out, give its title new words. Its pages and
    feed entries keep their ids; its `updated` time becomes `now`. The caller renders it."""
    with store.writing() as session:
        row = find_edition(session, path)
        items = kept_items(session, [row.id])[row.id]
        by_id = {item.entry_id: item for item in items}
        problems = []
        hidden: list[KeptItem] = []
        for text in hide_handles:
            entry_id = entry_id_of(text)
            if entry_id is None:
                problems.append(
                    f"{text!r} is not a handle (a typo?): `digest amend {path}` lists them"
                )
            elif entry_id not in by_id:
                problems.append(f"{text}: not an item of {_path(row)}")
            elif by_id[entry_id] not in hidden:  # a handle given twice is taken out once
                hidden.append(by_id[entry_id])
        if hidden and len(hidden) == len(items):
            problems.append(f"that would leave {_path(row)} empty: hide fewer items")
        if words is not None and not " ".join(words.split()):
            problems.append("--title: the new words are empty")
        if problems:
            raise DeskError(problems)
        if row.stream not in settings.streams:
            raise DeskError([f"{_path(row)}: its stream {row.stream!r} is not configured"])
        if words is not None:
            local = row.closed_at.astimezone(settings.site.zone)
            row.title = settings.streams[row.stream].title.format(
                date=local, headlines=" ".join(words.split())
            )
        warnings = [
            f"the title still names {item.title!r}: --title gives it new words"
            for item in hidden
            if words is None and item.title and item.title in row.title
        ]
        if hidden and row.packed is not None:
            # Nothing else needs a packed edition's hidden items: its entries are retired.
            row.packed = pack([item for item in items if item not in hidden])
        elif hidden:
            session.execute(
                update(EditionItemRow)
                .where(
                    EditionItemRow.edition_id == row.id,
                    EditionItemRow.entry_id.in_([item.entry_id for item in hidden]),
                )
                .values(hidden=True)
            )
        row.updated_at = now
        session.flush()
        edition = edition_from_row(session, row)
    return Amended(edition, [item.title for item in hidden], warnings)


def _path(row: EditionRow) -> str:
    return edition_path(row.stream, row.date, row.number)
