"""Pages: what digest published in the output folder, so that a render knows it without
reading the folder; and the kept pages, published editions the database had no record of.

A page is kept as its path, a fingerprint of what it was made of (`source`) and the hash of
its bytes (`digest`), both made by the render stage; here they are plain strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from digest.store.models import KeptEditionRow, PageRow
from digest.store.upsert import insert

_CHUNK = 500


def published_pages(session: Session) -> dict[str, tuple[str, str]]:
    """Every recorded page: path -> (source, digest)."""
    return {
        path: (source, digest)
        for path, source, digest in session.execute(
            select(PageRow.path, PageRow.source, PageRow.digest)
        )
    }


def record_pages(session: Session, pages: Mapping[str, tuple[str, str]]) -> None:
    """Record (or replace) pages: path -> (source, digest)."""
    dialect = session.get_bind().dialect
    rows = [{"path": p, "source": s, "digest": d} for p, (s, d) in pages.items()]
    for start in range(0, len(rows), _CHUNK):
        statement = insert(dialect, PageRow).values(rows[start : start + _CHUNK])
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[PageRow.path],
                set_={"source": statement.excluded.source, "digest": statement.excluded.digest},
            )
        )


def forget_pages(session: Session) -> None:
    """Forget every recorded page: the output folder is not the one they describe."""
    session.execute(delete(PageRow))


@dataclass(frozen=True)
class KeptEdition:
    stream: str
    date: date
    number: int
    title: str
    closed_at: datetime  # aware UTC


def kept_editions(session: Session) -> list[KeptEdition]:
    rows = session.scalars(select(KeptEditionRow).order_by(KeptEditionRow.closed_at.desc()))
    return [KeptEdition(r.stream, r.date, r.number, r.title, r.closed_at) for r in rows]


def replace_kept_editions(session: Session, kept: Iterable[KeptEdition]) -> None:
    session.execute(delete(KeptEditionRow))
    rows: Sequence[KeptEdition] = list(kept)
    session.add_all(
        KeptEditionRow(
            stream=k.stream, date=k.date, number=k.number, title=k.title, closed_at=k.closed_at
        )
        for k in rows
    )
