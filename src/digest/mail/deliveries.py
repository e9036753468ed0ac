"""The deliveries: each newly closed edition goes once to each of its stream's `mail_to`.

A delivery is a row per edition and recipient, queued when the edition closes and moved
pending -> sending -> sent (or failed) in short transactions around the SMTP exchange:

- a run claims one delivery at a time (state `sending`, a lease until it is taken for dead),
  sends it, then marks it `sent`. Another runner never takes a claimed delivery, so two
  runners never send one twice;
- a down or refusing server (a 4xx answer, a refused login, no connection) leaves the
  delivery `pending` with a backoff; the next run after it retries. No connection or a
  refused login spends no try of any message, and its wait grows with the outage (see
  _defer_all). A recipient or a message refused for good (5xx at RCPT or DATA) or one past
  MAX_ATTEMPTS tries is `failed`, which `digest status` shows;
- a run killed mid-send leaves its one claimed delivery `sending`: once its lease is over it
  is sent again. The server may already have taken it, so that one message can arrive twice
  (with the same Message-ID, which mail programs use to fold duplicates); no other can.

Editions closed while a run was killed between closing and queueing are caught up: a stream's
editions newer than its newest one with deliveries, and with none, are queued too.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest.config import Settings, SmtpSettings, mail_address
from digest.editions import Edition, edition_from_row, edition_path, stored_edition
from digest.mail.message import compose, mail_settings
from digest.mail.smtp import MailError, alive, connect, quit_quietly, send
from digest.render import TemplateProblem
from digest.store import EditionRow, Store
from digest.store.models import MailDeliveryRow

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
MAX_ATTEMPTS = 12  # with the backoff below: about a day of tries
FIRST_RETRY = timedelta(minutes=2)
LONGEST_RETRY = timedelta(hours=4)
# How far back a run looks for editions a killed run closed but never queued.
CATCH_UP = timedelta(days=1)
# How long `digest status` lists a delivery that failed for good.
FAILED_SHOWN_FOR = timedelta(days=7)


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed try: doubling, capped."""
    delay: timedelta = FIRST_RETRY * 2 ** max(attempts - 1, 0)
    return min(delay, LONGEST_RETRY)


def send_lease(smtp: SmtpSettings, lease: timedelta | None = None) -> timedelta:
    """How long a claimed delivery is left to its sender before another run takes it for
    dead: long enough for connecting and the four SMTP steps of one message."""
    return lease or timedelta(seconds=5 * smtp.timeout)


# --- queueing -------------------------------------------------------------------------------


def queue_deliveries(
    store: Store, settings: Settings, editions: Sequence[Edition], now: datetime
) -> int:
    """Queue the newly closed `editions` for their streams' recipients, and any edition a
    killed run closed but never queued (see the module docstring); returns how many."""
    mailed = {name: s.mail_to for name, s in settings.streams.items() if s.mail_to}
    if settings.mail is None or not mailed:
        return 0
    try:
        return _queue(store, mailed, editions, now)
    except IntegrityError:
        # Another runner queued some of them between our look and our insert: look again.
        return _queue(store, mailed, editions, now)


def _queue(
    store: Store,
    mailed: dict[str, tuple[str, ...]],
    editions: Sequence[Edition],
    now: datetime,
) -> int:
    queued = 0
    with store.writing() as session:
        for name, recipients in mailed.items():
            closed = [e for e in editions if e.stream == name]
            for edition_id in _editions_to_queue(session, name, closed, now - CATCH_UP):
                session.add_all(
                    MailDeliveryRow(
                        edition_id=edition_id,
                        recipient=recipient,
                        state=PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    for recipient in recipients
                )
                queued += len(recipients)
    return queued


def _editions_to_queue(
    session: Session, stream: str, closed: Sequence[Edition], since: datetime
) -> list[int]:
    """The ids of the stream's editions to queue: those just closed, and those closed after
    `since` and after the newest edition that has deliveries, without any of their own (not
    older ones: a stream whose mail_to comes back after a while does not mail its backlog)."""
    ids = [
        row_id
        for edition in closed
        if (
            row_id := session.scalar(
                select(EditionRow.id).where(
                    EditionRow.stream == stream,
                    EditionRow.date == edition.date,
                    EditionRow.number == edition.number,
                )
            )
        )
        is not None
    ]
    newest = session.scalar(
        select(func.max(MailDeliveryRow.edition_id))
        .join(EditionRow, EditionRow.id == MailDeliveryRow.edition_id)
        .where(EditionRow.stream == stream)
    )
    if newest is not None:
        ids += session.scalars(
            select(EditionRow.id).where(
                EditionRow.stream == stream, EditionRow.id > newest, EditionRow.closed_at > since
            )
        )
    has_deliveries = set(
        session.scalars(
            select(MailDeliveryRow.edition_id).where(MailDeliveryRow.edition_id.in_(ids))
        )
    )
    return sorted(set(ids) - has_deliveries)


# --- sending --------------------------------------------------------------------------------


@dataclass
class MailSummary:
    sent: list[tuple[str, str]] = field(default_factory=list)  # (edition path, recipient)
    retried: list[tuple[str, str, str]] = field(default_factory=list)  # (..., error)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # given up
    problem: str | None = None  # why nothing more could be sent (one line)

    def lines(self) -> list[str]:
        """What went wrong, one line each, for stderr or the log."""
        lines = [
            f"mail: {path} to {to}: {error}; tried again later" for path, to, error in self.retried
        ]
        lines += [f"mail: {path} to {to}: {error}; not sent" for path, to, error in self.failed]
        return lines + ([self.problem] if self.problem else [])


def deliver_due(
    store: Store,
    settings: Settings,
    now: datetime,
    lease: timedelta | None = None,
    cancel: threading.Event | None = None,
) -> MailSummary:
    """Send the deliveries that are due, one claimed at a time, over one connection;
    `cancel` (the daemon stopping) ends it between two messages."""
    summary = MailSummary()
    start = now
    if settings.mail is None or not _any_due(store, now):
        return summary
    smtp = settings.mail.smtp
    hold = send_lease(smtp, lease)
    editions: dict[int, Edition] = {}
    connection: smtplib.SMTP | None = None
    started = time.monotonic()
    try:
        while not (cancel and cancel.is_set()):
            # `now` moves on with the run: a lease runs from its claim, not from the start of
            # a run that may have been sending for longer than a lease (another runner would
            # take the message in flight for dead and send it again), and backoffs from the try.
            now = start + timedelta(seconds=time.monotonic() - started)
            if not (claimed := _claim(store, now, hold)):
                break
            delivery_id, edition_id, recipient, attempts = claimed
            edition = editions.get(edition_id) or _edition(store, edition_id)
            if edition is None:  # removed since it was queued (the edition is gone)
                _finish(store, delivery_id, FAILED, now, "the edition no longer exists")
                continue
            editions[edition_id] = edition
            stream = settings.streams.get(edition.stream)
            if stream is None or recipient not in stream.mail_to:
                gone = f"no longer in streams.{edition.stream}.mail_to"
                _finish(store, delivery_id, FAILED, now, gone)
                continue
            try:
                if connection is None:
                    connection = connect(smtp)
            except MailError as error:
                waiting = _defer_all(store, delivery_id, now, str(error))
                summary.problem = f"{error}; {waiting} messages wait"
                break
            try:
                message = compose(edition, settings, recipient)
            except TemplateProblem as problem:
                # Every message would fail alike: this one counts a try (so that a template
                # left broken gives up in time), the others wait for the site to fix it.
                _fail_or_retry(store, delivery_id, attempts, now, f"template {problem}")
                summary.problem = f"mail: template {problem}; the messages wait"
                break
            error_text, permanent = send(connection, message)
            if error_text is None:
                _finish(store, delivery_id, SENT, now)
                summary.sent.append((edition.path, recipient))
                continue
            if _fail_or_retry(store, delivery_id, attempts, now, error_text, permanent=permanent):
                summary.failed.append((edition.path, recipient, error_text))
            else:
                summary.retried.append((edition.path, recipient, error_text))
            if not alive(connection):
                connection = None
    finally:
        if connection is not None:
            quit_quietly(connection)
    return summary


def send_one(settings: Settings, edition: Edition, recipient: str) -> None:
    """Send an edition to one address now, outside the queue (`digest mail --to`)."""
    mail_address(recipient)
    message = compose(edition, settings, recipient)  # a broken template: before connecting
    connection = connect(mail_settings(settings).smtp)
    try:
        error, _permanent = send(connection, message)
    finally:
        quit_quietly(connection)
    if error is not None:
        raise MailError(f"mail: {edition.path} to {recipient}: {error}")


def find_edition(store: Store, path: str) -> Edition | None:
    """An edition by its path (links/2025/03/28/1), as `digest build` names it."""
    with store.reading() as session:
        try:
            row = stored_edition(session, path)
        except ValueError:
            return None
        return None if row is None else edition_from_row(session, row)


def _edition(store: Store, edition_id: int) -> Edition | None:
    with store.reading() as session:
        row = session.get(EditionRow, edition_id)
        return None if row is None else edition_from_row(session, row)


def _any_due(store: Store, now: datetime) -> bool:
    with store.reading() as session:
        return (
            session.scalar(
                select(MailDeliveryRow.id)
                .where(
                    MailDeliveryRow.state.in_((PENDING, SENDING)),
                    MailDeliveryRow.next_attempt_at <= now,
                )
                .limit(1)
            )
            is not None
        )


def _claim(store: Store, now: datetime, hold: timedelta) -> tuple[int, int, str, int] | None:
    """Take the next due delivery (pending, or sending past its lease: its sender died) for
    this run: (id, edition id, recipient, attempts including this one)."""
    with store.writing() as session:
        row = session.scalars(
            select(MailDeliveryRow)
            .where(
                MailDeliveryRow.state.in_((PENDING, SENDING)),
                MailDeliveryRow.next_attempt_at <= now,
            )
            .order_by(MailDeliveryRow.next_attempt_at, MailDeliveryRow.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        row.state = SENDING
        row.attempts += 1
        row.next_attempt_at = now + hold
        return row.id, row.edition_id, row.recipient, row.attempts


def _finish(
    store: Store, delivery_id: int, state: str, now: datetime, error: str | None = None
) -> None:
    sent_at = now if state == SENT else None
    _record(
        store, delivery_id, state=state, next_attempt_at=None, last_error=error, sent_at=sent_at
    )


def _fail_or_retry(
    store: Store,
    delivery_id: int,
    attempts: int,
    now: datetime,
    error: str,
    *,
    permanent: bool = False,
) -> bool:
    """Give the delivery up (refused for good, or out of tries: True) or try it later."""
    if permanent or attempts >= MAX_ATTEMPTS:
        _finish(store, delivery_id, FAILED, now, error)
        return True
    _retry(store, delivery_id, attempts, now, error)
    return False


def _retry(store: Store, delivery_id: int, attempts: int, now: datetime, error: str) -> None:
    """Back to pending, after a backoff that grows with the message's tries."""
    _record(
        store,
        delivery_id,
        state=PENDING,
        next_attempt_at=now + retry_delay(attempts),
        last_error=error,
    )


def _record(store: Store, delivery_id: int, **values: object) -> None:
    with store.writing() as session:
        session.execute(
            update(MailDeliveryRow).where(MailDeliveryRow.id == delivery_id).values(**values)
        )


def _defer_all(store: Store, claimed: int, now: datetime, error: str) -> int:
    """Put the claimed delivery and every due one back: the server is down or refuses us, no
    fault of the messages, so their tries are not spent. They wait as long as the oldest of
    them has waited so far (FIRST_RETRY to LONGEST_RETRY), so a server that stays down, or a
    login it keeps refusing, is tried less and less often instead of every two minutes for
    days. Returns how many messages wait."""
    deferred = or_(
        MailDeliveryRow.id == claimed,
        (MailDeliveryRow.state == PENDING) & (MailDeliveryRow.next_attempt_at <= now),
    )
    with store.writing() as session:
        session.execute(
            update(MailDeliveryRow)
            .where(MailDeliveryRow.id == claimed)
            .values(state=PENDING, attempts=MailDeliveryRow.attempts - 1)
        )
        oldest = session.scalar(select(func.min(MailDeliveryRow.created_at)).where(deferred))
        waited = now - oldest if oldest is not None else timedelta(0)
        delay = min(max(waited, FIRST_RETRY), LONGEST_RETRY)
        session.execute(
            update(MailDeliveryRow)
            .where(deferred)
            .values(next_attempt_at=now + delay, last_error=error)
        )
        waiting = session.scalar(
            select(func.count())
            .select_from(MailDeliveryRow)
            .where(MailDeliveryRow.state.in_((PENDING, SENDING)))
        )
    return waiting or 0


# --- status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    edition: str  # path
    recipient: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None


def waiting_deliveries(store: Store, now: datetime) -> list[Waiting]:
    """The deliveries not sent: pending, in flight, and failed in the last week, oldest
    first (digest status)."""
    with store.reading() as session:
        rows = session.execute(
            select(MailDeliveryRow, EditionRow)
            .join(EditionRow, EditionRow.id == MailDeliveryRow.edition_id)
            .where(
                or_(
                    MailDeliveryRow.state.in_((PENDING, SENDING)),
                    (MailDeliveryRow.state == FAILED)
                    & (MailDeliveryRow.created_at > now - FAILED_SHOWN_FOR),
                )
            )
            .order_by(MailDeliveryRow.id)
        )
        return [
            Waiting(
                edition=edition_path(e.stream, e.date, e.number),
                recipient=d.recipient,
                state=d.state,
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at,
                last_error=d.last_error,
            )
            for d, e in rows
        ]
