"""Workers: which daemons and pollers are alive, by the heartbeats they write.

Lets `digest status` tell live workers from dead ones, and how many feeds each holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digest.store.models import FeedRow, WorkerRow
from digest.store.upsert import insert


def heartbeat(session: Session, worker: str, role: str, now: datetime) -> None:
    """Record that `worker` is alive (inserted on its first beat)."""
    statement = insert(session.get_bind().dialect, WorkerRow).values(
        id=worker, role=role, started_at=now, heartbeat_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[WorkerRow.id], set_={"heartbeat_at": now, "role": role}
        )
    )


@dataclass(frozen=True)
class WorkerStatus:
    """One live worker and the number of feeds it holds a live lease on."""

    id: str
    role: str
    started_at: datetime
    heartbeat_at: datetime
    feeds_held: int


def live_workers(session: Session, now: datetime, within: timedelta) -> list[WorkerStatus]:
    """Workers seen within `within`, with how many feeds each holds a live lease on."""
    held = dict(
        session.execute(
            select(FeedRow.claimed_by, func.count())
            .where(FeedRow.claimed_by.is_not(None), FeedRow.lease_until >= now)
            .group_by(FeedRow.claimed_by)
        ).all()
    )
    rows = session.scalars(
        select(WorkerRow).where(WorkerRow.heartbeat_at >= now - within).order_by(WorkerRow.id)
    )
    return [
        WorkerStatus(row.id, row.role, row.started_at, row.heartbeat_at, held.get(row.id, 0))
        for row in rows
    ]
