"""Editions by email: each newly closed edition goes once to each of its stream's `mail_to`.

deliveries: the queue (a row per edition and recipient) and the runs that send it; message:
an edition as a message; smtp: the exchange with the server.
"""

from digest.mail.deliveries import (
    FIRST_RETRY,
    LONGEST_RETRY,
    MailSummary,
    Waiting,
    deliver_due,
    find_edition,
    queue_deliveries,
    send_one,
    waiting_deliveries,
)
from digest.mail.smtp import MailError

__all__ = [
    "FIRST_RETRY",
    "LONGEST_RETRY",
    "MailError",
    "MailSummary",
    "Waiting",
    "deliver_due",
    "find_edition",
    "queue_deliveries",
    "send_one",
    "waiting_deliveries",
]
