"""An edition as an email message: a plain-text part for terminal mail readers and an HTML
part, each filled from its template (a site may override them like the pages' templates),
with the list headers mail programs use (List-Id, List-Unsubscribe) and one Message-ID for
every copy of an edition."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote, urlsplit

from digest.config import MailSettings, Settings, StreamSettings, mail_address
from digest.editions import Edition
from digest.mail.smtp import MailError
from digest.parse.text import clean_text
from digest.render import fill, make_environment
from digest.views import edition_view


def compose(edition: Edition, settings: Settings, recipient: str) -> EmailMessage:
    """The edition as a message to `recipient`: a plain-text part for terminal mail readers
    and an HTML part, each from its template (overridable like the pages' templates)."""
    mail = mail_settings(settings)
    site = settings.site
    stream = settings.streams.get(edition.stream, StreamSettings())
    host = urlsplit(site.base_url).hostname or "localhost"
    view = edition_view(edition, site.base_url, site.gemini_base_url or site.base_url, site.zone)
    unsubscribe = unsubscribe_url(mail, edition.stream)
    stream_title = clean_text(stream.display_label(edition.stream))
    stream_url = f"{site.base_url}{edition.stream}/"
    context = {
        "edition": view,
        "site_title": clean_text(site.title),
        "stream_title": stream_title,
        "stream_url": stream_url,
        "unsubscribe": unsubscribe,
    }
    env = make_environment(site.templates)
    message = EmailMessage()
    message["Subject"] = view.title
    message["From"] = mail.sender
    message["To"] = recipient
    message["Date"] = format_datetime(edition.closed_at)
    message["Message-ID"] = message_id(edition, host)
    message["List-Id"] = f"{_phrase(stream_title)} <{edition.stream}.{host}>"
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Archive"] = f"<{stream_url}>"
    message["Precedence"] = "list"
    message.set_content(fill(env, "edition_mail.txt", **context))
    message.add_alternative(fill(env, "edition_mail.html", **context), subtype="html")
    return message


def message_id(edition: Edition, host: str) -> str:
    """The same for every copy and every try of an edition: mail programs fold duplicates."""
    return f"<{edition.path.replace('/', '.')}@{host}>"


def unsubscribe_url(mail: MailSettings, stream: str) -> str:
    if mail.list_unsubscribe:
        return mail.list_unsubscribe
    return f"mailto:{mail_address(mail.sender)}?subject={quote(f'unsubscribe {stream}')}"


def _phrase(text: str) -> str:
    """A display name for a header, quoted when it holds specials."""
    plain = all(char.isalnum() or char in " -_.!#$%&'*+/=?^`{|}~" for char in text)
    return text if plain else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mail_settings(settings: Settings) -> MailSettings:
    if settings.mail is None:
        raise MailError("mail: no mail: section in the config to send with")
    return settings.mail
