"""After publishing: WebSub pings for the feeds that changed, then the mail that is due.

Run outside the publish lock by every runner that publishes (the CLI's build, render, update
and mail, the daemon's closings and its outreach job), so a slow hub or mail server never
holds up another runner's closing. What fails is kept in the database and retried.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from digest.config import Settings
from digest.store import Store


@dataclass
class Outreach:
    done: list[str] = field(default_factory=list)  # one line each: what went out
    problems: list[str] = field(default_factory=list)  # one line each: what did not
    mail_undelivered: bool = False  # some mail due now did not go (it waits for a retry)


def reach_out(
    store: Store,
    settings: Settings,
    lease: timedelta | None = None,
    cancel: threading.Event | None = None,
) -> Outreach:
    """Ping the hubs queued by digest.websub.record_pings and send the mail due (`cancel`:
    stop between two messages)."""
    from digest.websub import send_pings

    result = Outreach()
    pings = send_pings(store, settings)
    result.problems += [failure.line() for failure in pings.failed]
    if pings.sent:
        result.done.append(f"WebSub: {len(pings.sent)} pings sent")
    if settings.mail is None:
        return result
    from digest.mail import deliver_due, queue_deliveries

    now = datetime.now(UTC)
    queue_deliveries(store, settings, (), now)  # editions a killed run closed, never queued
    mail = deliver_due(store, settings, now, lease, cancel)
    result.problems += mail.lines()
    result.mail_undelivered = bool(mail.lines())
    if mail.sent:
        result.done.append(f"mailed {len(mail.sent)} messages")
    return result
