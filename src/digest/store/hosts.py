"""Gemini host keys, pinned on first use.

The fetcher compares keys with the map `known_hosts` gives it; the poller records what it saw.
A changed key is never trusted automatically: it waits as the host's offered key until the
operator accepts it with `trust_host`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from digest.store.models import GeminiHostRow
from digest.store.upsert import insert

__all__ = ["known_hosts", "offer_host", "remember_host", "trust_host"]


def known_hosts(session: Session) -> dict[str, str]:
    """host:port -> the trusted key fingerprint, as `digest.fetch.Fetcher` takes it."""
    return dict(session.execute(select(GeminiHostRow.host, GeminiHostRow.fingerprint)).all())


def remember_host(session: Session, host: str, fingerprint: str, now: datetime) -> None:
    """Pin a first-seen key, or note that the trusted key was seen again.

    Never replaces a trusted key: if another poller pinned a different one meanwhile, that
    one stands and the next fetch reports the difference. Seeing the trusted key again also
    withdraws a pending offer, so `trust` never accepts a key the host has since dropped.
    """
    session.execute(
        insert(session.get_bind().dialect, GeminiHostRow)
        .values(host=host, fingerprint=fingerprint, first_seen=now, last_seen=now)
        .on_conflict_do_nothing(index_elements=[GeminiHostRow.host])
    )
    session.execute(
        update(GeminiHostRow)
        .where(GeminiHostRow.host == host, GeminiHostRow.fingerprint == fingerprint)
        .values(last_seen=now, offered_fingerprint=None)
    )


def offer_host(session: Session, host: str, fingerprint: str, now: datetime) -> None:
    """Record a changed key, untrusted until `trust_host` (the newest offer replaces older ones)."""
    session.execute(
        update(GeminiHostRow)
        .where(GeminiHostRow.host == host, GeminiHostRow.fingerprint != fingerprint)
        .values(offered_fingerprint=fingerprint, last_seen=now)
    )


def trust_host(session: Session, host: str) -> bool:
    """The operator accepts the offered key; False when nothing is offered for `host`."""
    row = session.get(GeminiHostRow, host)
    if row is None or row.offered_fingerprint is None:
        return False
    row.fingerprint, row.offered_fingerprint = row.offered_fingerprint, None
    return True
