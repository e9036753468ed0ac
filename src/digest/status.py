"""What `digest status` reports: the daemon, polling, failing feeds, each stream's editions and
the editor's choices waiting for its next one."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from digest.clock import close_trigger
from digest.config import Config
from digest.due import MAX_RETRY_AFTER, out_of_reach
from digest.editions import edition_path
from digest.handles import handle_of
from digest.locks import running_daemon
from digest.store import EditionRow, Store, feed_health, feeds_scheduled_after, live_workers
from digest.store.choices import Choices, load_choices

# A worker whose heartbeat is older than this is taken for gone and not listed.
WORKERS_SHOWN_WITHIN = timedelta(minutes=2)


def site_status(store: Store, config: Config, now: datetime) -> dict[str, Any]:
    """What `digest status` shows: the daemon, polling, failing feeds, each stream's editions."""
    settings = config.settings
    pid = running_daemon(settings.site.state_dir)
    with store.reading() as session:
        health = feed_health(session)
        newest = (
            select(EditionRow.stream, func.max(EditionRow.id).label("id"))
            .group_by(EditionRow.stream)
            .subquery()
        )
        last = {
            row.stream: row
            for row in session.scalars(
                select(EditionRow).join(newest, EditionRow.id == newest.c.id)
            )
        }
        workers = live_workers(session, now, WORKERS_SHOWN_WITHIN)
        # Left by a clock that ran ahead; the next poll pulls them back (digest.poll).
        unreachable = out_of_reach(feeds_scheduled_after(session, now + MAX_RETRY_AFTER), now)
        choices = {name: load_choices(session, name) for name in settings.streams}
    polls = [feed.last_poll for feed in health if feed.last_poll]
    streams: dict[str, Any] = {}
    for name, stream in settings.streams.items():
        row = last.get(name)
        trigger = close_trigger(stream.schedule, settings.site.zone, config.timings.close_every)
        fire = trigger.get_next_fire_time(None, now)
        streams[name] = {
            "schedule": stream.schedule,
            "last_edition": None
            if row is None
            else {
                "path": edition_path(row.stream, row.date, row.number),
                "title": row.title,
                "closed_at": row.closed_at.isoformat(),
            },
            "next_closing": fire.isoformat() if fire else None,
            "choices": _choices(choices[name]),
        }
    return {
        **outreach_status(store, now),
        "daemon": {"running": pid is not None, "pid": pid},
        "last_poll": max(polls).isoformat() if polls else None,
        "feeds": len(health),
        "failing_feeds": [feed.as_json() for feed in health if feed.failures or feed.disabled],
        "next_poll_out_of_reach": [
            {"name": feed.name, "next_poll": feed.next_poll_at.isoformat()} for feed in unreachable
        ],
        "streams": streams,
        "workers": [
            {
                "id": worker.id,
                "role": worker.role,
                "started_at": worker.started_at.isoformat(),
                "heartbeat_at": worker.heartbeat_at.isoformat(),
                "feeds_held": worker.feeds_held,
            }
            for worker in workers
        ],
    }


def _choices(choices: Choices) -> dict[str, Any]:
    """The editor's choices in force for a stream's next edition, entries by handle."""
    return {
        "hidden": sorted(handle_of(entry_id) for entry_id in choices.hidden),
        "pinned": [
            {"handle": handle_of(entry_id), "section": section}
            for entry_id, section in choices.pinned.items()
        ],
        "headlines": [handle_of(entry_id) for entry_id in choices.headlines],
        "title": choices.title,
    }


def outreach_status(store: Store, now: datetime) -> dict[str, Any]:
    """The mail not yet delivered and the WebSub pings not yet taken by their hub."""
    from digest.mail import waiting_deliveries
    from digest.websub import pending_pings

    return {
        "mail_waiting": [
            {
                "edition": delivery.edition,
                "to": delivery.recipient,
                "state": delivery.state,
                "attempts": delivery.attempts,
                "next_attempt": delivery.next_attempt_at.isoformat()
                if delivery.next_attempt_at
                else None,
                "last_error": delivery.last_error,
            }
            for delivery in waiting_deliveries(store, now)
        ],
        "websub_waiting": [
            {"hub": ping.hub, "feed": ping.topic, "last_error": ping.error}
            for ping in pending_pings(store)
        ],
    }
