"""The exchange with the SMTP server: connect (secured and logged in as the config says),
send one message, and every refusal or failure told in one line, with whether it is for good
(a 5xx answer) or for later."""

from __future__ import annotations

import os
import smtplib
import ssl
from email.message import EmailMessage

from digest.config import SmtpSettings


class MailError(Exception):
    """Mail could not go out at all (no connection, a refused login, no password): one line."""


def connect(smtp: SmtpSettings) -> smtplib.SMTP:
    """A connection, secured and logged in as the config says; MailError in one line."""
    where = f"{smtp.host}:{smtp.effective_port}"
    password = None
    if smtp.user:
        password = os.environ.get(smtp.password_env)
        if not password:
            raise MailError(
                f"mail: the environment variable {smtp.password_env} (mail.smtp.password_env) "
                "is not set: it holds the SMTP password"
            )
    context = ssl.create_default_context()
    connection: smtplib.SMTP | None = None
    try:
        if smtp.security == "tls":
            connection = smtplib.SMTP_SSL(
                smtp.host, smtp.effective_port, timeout=smtp.timeout, context=context
            )
        else:
            connection = smtplib.SMTP(smtp.host, smtp.effective_port, timeout=smtp.timeout)
            if smtp.security == "starttls":
                connection.starttls(context=context)
        if smtp.user and password is not None:
            connection.login(smtp.user, password)
    except smtplib.SMTPAuthenticationError as error:
        quit_quietly(connection)
        raise MailError(
            f"mail: {where} refused the login of user {smtp.user!r} ({_reply(error)}): "
            f"check mail.smtp.user and the password in ${smtp.password_env}"
        ) from None
    except smtplib.SMTPNotSupportedError as error:
        quit_quietly(connection)
        raise MailError(f"mail: {where}: {error} (check mail.smtp.security)") from None
    except (smtplib.SMTPException, OSError) as error:
        quit_quietly(connection)
        raise MailError(f"mail: cannot reach the SMTP server {where}: {_reason(error)}") from None
    return connection


def send(connection: smtplib.SMTP, message: EmailMessage) -> tuple[str | None, bool]:
    """Send one message: (None, _) when the server took it, else (why, whether for good)."""
    try:
        refused = connection.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        return _reply(error), all(code >= 500 for code in codes)
    except smtplib.SMTPDataError as error:
        # The server refused this message's content (5xx: too big, taken for spam): sending
        # the same bytes again gets the same answer. A 4xx is a "later".
        return _reply(error), error.smtp_code >= 500
    except smtplib.SMTPResponseException as error:
        # A refused sender concerns every message and is the site's to fix (mail.from, the
        # relay's rules): retried for MAX_ATTEMPTS tries, time enough to fix it, then given up.
        return _reply(error), False
    except (smtplib.SMTPException, OSError) as error:
        return _reason(error), False
    if refused:
        return "; ".join(
            f"{code} {text.decode(errors='replace')}" for code, text in refused.values()
        ), False
    return None, False


def _reply(error: smtplib.SMTPException) -> str:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"{code} {text.decode(errors='replace')}" for code, text in error.recipients.values()
        )
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        return f"{error.smtp_code} {' '.join(text.split())}"
    return _reason(error)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, TimeoutError):
        return f"no answer in time ({text or 'timed out'})"
    return text or type(error).__name__


def alive(connection: smtplib.SMTP) -> bool:
    try:
        return connection.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def quit_quietly(connection: smtplib.SMTP | None) -> None:
    if connection is None:
        return
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
