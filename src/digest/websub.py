"""WebSub: tell the hubs in `site.websub_hubs` when a published Atom feed changed, so that
subscribers get new editions within seconds instead of at their next poll.

Every Atom feed names the hubs (`<link rel="hub">`) and itself (`<link rel="self">`, the
topic). After a render whose report says a feed's bytes changed, each hub gets one
`hub.mode=publish` ping per changed feed. A ping is recorded in the database before it is
sent and removed once the hub answered 2xx, so a hub that is down, slow or refusing, or a run
killed mid-ping, is told on the next run. Pings never block or fail publication: they are
sent after the files are in place, with a timeout, and a failure is a warning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from digest.config import Settings
from digest.store import Store
from digest.store.models import HubPingRow

if TYPE_CHECKING:
    import aiohttp

PING_TIMEOUT = 10.0  # seconds for one ping, connection and answer included
# The Atom feeds the render stage writes: the site's and each stream's (digest.render).
ATOM_FEED_NAME = "feed.xml"
_ERROR_CHARS = 200  # of a hub's answer, kept as the reason


@dataclass(frozen=True)
class Ping:
    hub: str
    topic: str  # the feed's public URL


@dataclass(frozen=True)
class PingFailure:
    hub: str
    topic: str
    error: str

    def line(self) -> str:
        return f"WebSub hub {self.hub} not told of {self.topic}: {self.error}; retried next run"


@dataclass(frozen=True)
class PingSummary:
    sent: tuple[Ping, ...]
    failed: tuple[PingFailure, ...]


def changed_feeds(written: Iterable[Path], output_dir: Path, base_url: str) -> list[str]:
    """The public URLs of the Atom feeds among the files a render rewrote."""
    return sorted(
        base_url + path.relative_to(output_dir).as_posix()
        for path in written
        if path.name == ATOM_FEED_NAME and path.is_relative_to(output_dir)
    )


def record_pings(
    session: Session, settings: Settings, written: Iterable[Path], now: datetime
) -> int:
    """Queue a ping to every hub for every changed feed (one row per hub and feed, however
    often it changes before the hub is told); returns how many were queued. Called in the
    transaction that records the published pages, so a render that counts is never unpinged.
    A row's created_at is when its feed last changed: send_pings forgets only what it told."""
    hubs = settings.site.websub_hubs
    topics = changed_feeds(written, Path(settings.site.output_dir), settings.site.base_url)
    if not hubs or not topics:
        return 0
    queued = set(
        session.execute(
            select(HubPingRow.hub, HubPingRow.topic).where(
                HubPingRow.hub.in_(hubs), HubPingRow.topic.in_(topics)
            )
        )
    )
    # Already queued: marked as changed again, so that a ping in flight meanwhile (the hub
    # may have read the feed before this change) does not take the row with it.
    session.execute(
        update(HubPingRow)
        .where(HubPingRow.hub.in_(hubs), HubPingRow.topic.in_(topics))
        .values(created_at=now)
    )
    session.add_all(
        HubPingRow(hub=hub, topic=topic, attempts=0, created_at=now)
        for hub in hubs
        for topic in topics
        if (hub, topic) not in queued
    )
    return len(hubs) * len(topics)


def send_pings(store: Store, settings: Settings) -> PingSummary:
    """Send every queued ping to the hubs still configured (others are dropped); forget the
    ones a hub took, keep the others with their reason for the next run."""
    hubs = settings.site.websub_hubs
    with store.reading() as session:  # most runs have nothing queued: no write for them
        seen = {(row.hub, row.topic): row.created_at for row in session.scalars(select(HubPingRow))}
    rows = [Ping(hub, topic) for hub, topic in seen]
    if any(ping.hub not in hubs for ping in rows):
        with store.writing() as session:
            session.execute(delete(HubPingRow).where(HubPingRow.hub.not_in(hubs)))
    queued = [ping for ping in rows if ping.hub in hubs]
    if not queued:
        return PingSummary((), ())
    from digest.poll import run_async

    results = run_async(_ping_all(queued, _user_agent(settings)))
    sent = tuple(ping for ping, error in zip(queued, results, strict=True) if error is None)
    failed = tuple(
        PingFailure(ping.hub, ping.topic, error)
        for ping, error in zip(queued, results, strict=True)
        if error is not None
    )
    with store.writing() as session:
        for ping in sent:  # unless the feed changed again since it was read
            session.execute(
                delete(HubPingRow).where(
                    HubPingRow.hub == ping.hub,
                    HubPingRow.topic == ping.topic,
                    HubPingRow.created_at == seen[ping.hub, ping.topic],
                )
            )
        for failure in failed:
            row = session.scalar(
                select(HubPingRow).where(
                    HubPingRow.hub == failure.hub, HubPingRow.topic == failure.topic
                )
            )
            if row is not None:
                row.attempts += 1
                row.last_error = failure.error
    return PingSummary(sent, failed)


def pending_pings(store: Store) -> list[PingFailure]:
    """The pings waiting for the next run, with why the last try failed (digest status)."""
    with store.reading() as session:
        return [
            PingFailure(row.hub, row.topic, row.last_error or "not sent yet")
            for row in session.scalars(select(HubPingRow).order_by(HubPingRow.id))
        ]


def _user_agent(settings: Settings) -> str:
    from digest.fetch import USER_AGENT

    return settings.fetch.user_agent or USER_AGENT


async def _ping_all(pings: Sequence[Ping], user_agent: str) -> list[str | None]:
    """Each ping's error, or None when the hub took it; all sent at once, each with its
    own timeout."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=PING_TIMEOUT)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"User-Agent": user_agent}
    ) as session:
        return list(await asyncio.gather(*(_ping(session, ping) for ping in pings)))


async def _ping(session: aiohttp.ClientSession, ping: Ping) -> str | None:
    import aiohttp

    try:
        async with session.post(
            ping.hub, data={"hub.mode": "publish", "hub.url": ping.topic}, allow_redirects=False
        ) as response:
            if 200 <= response.status < 300:
                return None
            answer = " ".join((await response.text(errors="replace"))[:_ERROR_CHARS].split())
            return f"HTTP {response.status}" + (f": {answer}" if answer else "")
    except TimeoutError:
        return f"no answer within {PING_TIMEOUT:g} s"
    except aiohttp.ClientError as error:
        return str(error) or type(error).__name__
