"""Packed editions: how years of published history stay small.

An edition keeps its items as edition_items rows while it is young: editors amend it, the
desk lists its handles, its entries are still in `entries` with their dates and content
hash. Once older than `retention.published`, retention packs it (`pack_edition`): its shown
items go, compressed together, into the edition row itself (a day's items share their sites,
sections and words, so they pack to about a third of their text); its entries' rows give
way to a fingerprint of their key (`retired_entries`), so a feed that still lists one does
not bring it back as new. Every reader of an edition's items goes through `kept_items`, so a
packed edition renders byte for byte as it did before.

Fingerprints are the first 8 bytes of a BLAKE2b hash, as a signed 64-bit integer (the
databases' BIGINT): a collision within one feed's keys or one stream's stories would need
billions of them.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from digest.store.models import (
    ChoiceRow,
    EditionItemRow,
    EditionRow,
    EntryRow,
    PublishedUrlRow,
    RetiredEntryRow,
)
from digest.store.upsert import insert

# The packing's own format, in the blob's first byte: a later format can read older ones.
_FORMAT = 1


@dataclass(frozen=True)
class KeptItem:
    """An item as its edition keeps it, in a row or packed: what its pages show, and the
    entry id its handle names (the entry itself may be retired)."""

    entry_id: int
    section: str
    source: str
    title: str
    link: str | None
    blurb: str
    published_at: datetime


def fingerprint(text: str) -> int:
    """A key's or a canonical URL's fingerprint, as the database keeps it."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def pack(items: Sequence[KeptItem]) -> bytes:
    rows = [
        [i.entry_id, i.section, i.source, i.title, i.link, i.blurb, i.published_at.isoformat()]
        for i in items
    ]
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return bytes([_FORMAT]) + zlib.compress(text.encode("utf-8"), 9)


def unpack(blob: bytes) -> list[KeptItem]:
    if not blob or blob[0] != _FORMAT:
        raise ValueError(f"packed edition of unknown format {blob[:1]!r}: a newer digest's?")
    rows = json.loads(zlib.decompress(blob[1:]).decode("utf-8"))
    return [
        KeptItem(entry_id, section, source, title, link, blurb, datetime.fromisoformat(when))
        for entry_id, section, source, title, link, blurb, when in rows
    ]


def kept_items(session: Session, edition_ids: Sequence[int]) -> dict[int, list[KeptItem]]:
    """Each edition's shown items in their order, packed or not, by edition id."""
    items: dict[int, list[KeptItem]] = {edition_id: [] for edition_id in edition_ids}
    for start in range(0, len(edition_ids), 500):
        chunk = edition_ids[start : start + 500]
        for edition_id, blob in session.execute(
            select(EditionRow.id, EditionRow.packed).where(
                EditionRow.id.in_(chunk), EditionRow.packed.is_not(None)
            )
        ):
            assert blob is not None  # by the query
            items[edition_id] = unpack(blob)
        for item in session.scalars(
            select(EditionItemRow)
            .where(EditionItemRow.edition_id.in_(chunk), ~EditionItemRow.hidden)
            .order_by(EditionItemRow.edition_id, EditionItemRow.position)
        ):
            items[item.edition_id].append(_kept(item))
    return items


def _kept(row: EditionItemRow) -> KeptItem:
    return KeptItem(
        row.entry_id, row.section, row.source, row.title, row.link, row.blurb, row.published_at
    )


def record_published(session: Session, stream: str, canonicals: Iterable[str]) -> None:
    """The stream's stories an edition just took, for `published_among`."""
    values = [{"stream": stream, "url_fingerprint": fingerprint(url)} for url in set(canonicals)]
    if values:
        statement = insert(session.get_bind().dialect, PublishedUrlRow)
        session.execute(statement.on_conflict_do_nothing(), values)


def published_among(session: Session, stream: str, canonicals: Iterable[str]) -> set[str]:
    """Those of `canonicals` that the stream has published, in any edition ever."""
    by_print: dict[int, list[str]] = {}
    for url in set(canonicals):
        by_print.setdefault(fingerprint(url), []).append(url)
    prints = list(by_print)
    found: set[str] = set()
    for start in range(0, len(prints), 500):
        for known in session.scalars(
            select(PublishedUrlRow.url_fingerprint).where(
                PublishedUrlRow.stream == stream,
                PublishedUrlRow.url_fingerprint.in_(prints[start : start + 500]),
            )
        ):
            found.update(by_print[known])
    return found


def retired_among(session: Session, feed_id: int, keys: Sequence[str]) -> set[str]:
    """Those of a feed's `keys` whose entries were retired with their packed edition."""
    by_print = {fingerprint(key): key for key in keys}
    prints = list(by_print)
    found: set[str] = set()
    for start in range(0, len(prints), 500):
        found.update(
            by_print[known]
            for known in session.scalars(
                select(RetiredEntryRow.key_fingerprint).where(
                    RetiredEntryRow.feed_id == feed_id,
                    RetiredEntryRow.key_fingerprint.in_(prints[start : start + 500]),
                )
            )
        )
    return found


def pack_edition(session: Session, edition: EditionRow) -> int:
    """Pack one edition's items into its row and retire their entries; how many entries
    were retired. Entries that an editor's pending choice still names keep their rows (they
    stay out of later editions by `in_edition`)."""
    rows = list(
        session.scalars(
            select(EditionItemRow)
            .where(EditionItemRow.edition_id == edition.id)
            .order_by(EditionItemRow.position)
        )
    )
    edition.packed = pack([_kept(row) for row in rows if not row.hidden])
    entry_ids = [row.entry_id for row in rows]
    session.execute(delete(EditionItemRow).where(EditionItemRow.edition_id == edition.id))
    chosen = select(ChoiceRow.id).where(
        ChoiceRow.entry_id == EntryRow.id, ChoiceRow.spent_in.is_(None)
    )
    retiring = session.execute(
        select(EntryRow.id, EntryRow.feed_id, EntryRow.key).where(
            EntryRow.id.in_(entry_ids), ~chosen.exists()
        )
    ).all()
    if not retiring:
        return 0
    statement = insert(session.get_bind().dialect, RetiredEntryRow).on_conflict_do_nothing()
    session.execute(
        statement,
        [{"feed_id": feed_id, "key_fingerprint": fingerprint(key)} for _, feed_id, key in retiring],
    )
    session.execute(delete(EntryRow).where(EntryRow.id.in_([row[0] for row in retiring])))
    return len(retiring)
