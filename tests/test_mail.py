"""Editions by email against a real SMTP server on 127.0.0.1 (aiosmtpd): one message per
recipient per edition with both parts and the list headers; a refusing server, then an
accepting one: sent exactly once; a refused login: one line, nothing lost; kill -9 mid-send:
only the message in flight can arrive twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
import time_machine
from click.testing import CliRunner, Result
from sqlalchemy import select

from digest.cli import cli
from digest.config import (
    FeedSettings,
    MailSettings,
    Settings,
    SiteSettings,
    StreamSettings,
    load_config,
)
from digest.mail import FIRST_RETRY, LONGEST_RETRY, deliver_due, queue_deliveries
from digest.publish import build
from digest.store import Store, store_entries
from digest.store.models import MailDeliveryRow
from tests.conftest import add_feeds, make_entry
from tests.gemini_servers import free_port
from tests.outreach_servers import smtp_server, tls_certificate

# End to end: the CLI against a real SMTP server, with killed senders.
pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
READERS = ("reader@example.net", "list@example.org")
T0 = datetime(2025, 3, 1, 9, tzinfo=UTC)


def digest(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def demo_with_mail(tmp_path: Path, port: int, smtp_extra: str = "") -> Path:
    """The demo (offline, file: feeds) mailing the links stream to READERS."""
    target = tmp_path / "examples" / "demo"
    shutil.copytree(DEMO, target)
    config = target / "feeds.yaml"
    text = config.read_text()
    mail = (
        "mail:\n"
        f"  smtp: {{host: 127.0.0.1, port: {port}, security: none, timeout: 10{smtp_extra}}}\n"
        '  from: "Example Links <links@links.example.org>"\n\n'
    )
    text = text.replace("\nstreams:", f"\n{mail}streams:", 1)
    recipients = ", ".join(READERS)
    text = text.replace(
        "    lookback: 36500d   # the demo feeds are old: take everything\n",
        f"    lookback: 36500d\n    mail_to: [{recipients}]\n",
        1,
    )
    config.write_text(text)
    return config


def deliveries(tmp_path: Path) -> list[tuple[str, str, int]]:
    store = Store(f"sqlite:///{tmp_path / 'build' / 'demo.db'}")
    try:
        with store.reading() as session:
            rows = session.scalars(select(MailDeliveryRow).order_by(MailDeliveryRow.id))
            return [(row.recipient, row.state, row.attempts) for row in rows]
    finally:
        store.close()


def links_edition(tmp_path: Path) -> str:
    (page,) = (tmp_path / "public" / "links").glob("*/*/*/1.html")
    return page.relative_to(tmp_path / "public").with_suffix("").as_posix()


def parts(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content().replace("\r\n", "\n")
        for part in message.walk()
        if not part.is_multipart()
    }


def test_each_new_edition_goes_once_to_each_recipient_with_both_parts(tmp_path: Path) -> None:
    port = free_port()
    with smtp_server(port) as server:
        config = demo_with_mail(tmp_path, port)

        first = digest(config, "update")

        assert first.exit_code == 0, first.output
        assert "mailed 2 messages" in first.output
        path = links_edition(tmp_path)
        for reader in READERS:
            (message,) = server.to(reader)
            assert message["To"] == reader
            assert message["From"] == "Example Links <links@links.example.org>"
            assert message["Subject"].startswith("Links ")
            assert message["Message-ID"] == f"<{path.replace('/', '.')}@links.example.org>"
            assert message["List-Id"] == "Links <links.links.example.org>"
            assert message["List-Unsubscribe"] == (
                "<mailto:links@links.example.org?subject=unsubscribe%20links>"
            )
            assert message.get_content_type() == "multipart/alternative"
            body = parts(message)
            assert set(body) == {"text/plain", "text/html"}
            text, html = body["text/plain"], body["text/html"]
            # The same edition in both: its title, its page, its sections and items.
            assert message["Subject"] in text and f"https://links.example.org/{path}.html" in text
            assert "Science\n=======" in text and " ☛ " in text
            assert "<" not in text.split("\n-- \n")[0]  # plain text, no markup
            assert f'href="https://links.example.org/{path}.html"' in html
            assert "<h2" in html and "Science" in html
        assert len(server.received) == 2  # the gemini-links stream mails no one

        again = digest(config, "update")

        assert again.exit_code == 0 and "mailed" not in again.output
        assert len(server.received) == 2
    assert deliveries(tmp_path) == [(reader, "sent", 1) for reader in READERS]


def test_a_refusing_server_then_an_accepting_one_sends_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    with smtp_server(port) as server:
        server.refuse_next = 2
        config = demo_with_mail(tmp_path, port)

        refused = digest(config, "update")

        assert refused.exit_code == 1  # published, but the mail waits
        assert (tmp_path / "public" / "links" / "feed.xml").is_file()
        lines = refused.stderr.splitlines()
        assert len(lines) == 2
        assert all("451 4.3.0 Try again later; tried again later" in line for line in lines)
        assert server.received == []
        status = digest(config, "status")
        assert "mail not delivered: 2" in status.output
        assert "pending after 1 tries" in status.output

        soon = digest(config, "mail")  # within the backoff: nothing is tried yet
        assert soon.exit_code == 0 and server.received == []

        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=5)):
            later = digest(config, "mail")

        assert later.exit_code == 0, later.output
        assert "mailed 2 messages" in later.output
        assert sorted(r for m in server.received for r in m.recipients) == sorted(READERS)
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=5)):
            assert digest(config, "mail").exit_code == 0
        assert len(server.received) == 2
    assert deliveries(tmp_path) == [(reader, "sent", 2) for reader in READERS]
    assert "mail not delivered" not in digest(config, "status").output


def test_a_message_refused_for_good_is_not_sent_again(tmp_path: Path) -> None:
    """A 5xx at DATA refuses the message itself: the same bytes would get the same answer."""
    port = free_port()
    with smtp_server(port) as server:
        server.refuse_next = 1
        server.refusal = "554 5.6.0 Message content rejected"
        config = demo_with_mail(tmp_path, port)

        result = digest(config, "update")

        assert result.exit_code == 1  # published; the failure is said
        (line,) = result.stderr.splitlines()
        assert line.endswith(": 554 5.6.0 Message content rejected; not sent")
        assert len(server.received) == 1  # the other recipient's copy went
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=5)):
            assert digest(config, "mail").exit_code == 0
        assert len(server.received) == 1
        status = digest(config, "status").output
    refused = line.split(" to ")[1].split(":")[0]
    assert sorted(deliveries(tmp_path)) == sorted(
        (reader, "failed" if reader == refused else "sent", 1) for reader in READERS
    )
    assert "554 5.6.0 Message content rejected" in status


def test_a_refused_login_is_one_line_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "wrong")
    with smtp_server(port, refuse_logins=True) as server:
        config = demo_with_mail(tmp_path, port, ", user: links, password_env: DIGEST_SMTP_PASSWORD")

        check = digest(config, "check")
        result = digest(config, "update")

        assert (
            f"mail: from Example Links <links@links.example.org> via 127.0.0.1:{port} (none) "
            "to links: 2 addresses" in check.output
        )
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            f"mail: 127.0.0.1:{port} refused the login of user 'links' (535 5.7.8 "
            "Authentication credentials invalid): check mail.smtp.user and the password in "
            "$DIGEST_SMTP_PASSWORD; 2 messages wait"
        ]
        assert server.received == []
    assert deliveries(tmp_path) == [(reader, "pending", 0) for reader in READERS]

    monkeypatch.delenv("DIGEST_SMTP_PASSWORD")
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=5)):
        unset = digest(config, "mail")
    assert unset.exit_code == 1
    assert unset.stderr.splitlines() == [
        "mail: the environment variable DIGEST_SMTP_PASSWORD (mail.smtp.password_env) is not "
        "set: it holds the SMTP password; 2 messages wait"
    ]


def test_a_server_that_is_down_keeps_the_mail_for_later(tmp_path: Path) -> None:
    port = free_port()
    config = demo_with_mail(tmp_path, port)

    down = digest(config, "update")

    assert down.exit_code == 1
    (line,) = down.stderr.splitlines()
    assert line.startswith(f"mail: cannot reach the SMTP server 127.0.0.1:{port}: ")
    assert line.endswith("; 2 messages wait")
    with smtp_server(port) as server, time_machine.travel(datetime.now(UTC) + timedelta(minutes=5)):
        assert digest(config, "mail").exit_code == 0
        assert len(server.received) == 2


def next_tries(tmp_path: Path) -> list[datetime]:
    store = Store(f"sqlite:///{tmp_path / 'build' / 'demo.db'}")
    try:
        with store.reading() as session:
            rows = session.scalars(select(MailDeliveryRow).order_by(MailDeliveryRow.id))
            return [row.next_attempt_at for row in rows if row.next_attempt_at is not None]
    finally:
        store.close()


def test_a_server_that_stays_down_is_tried_less_and_less_often(tmp_path: Path) -> None:
    """A server that is down, or refuses our login, is no fault of the messages: their tries
    are not spent, but the wait grows with the outage instead of a try every two minutes."""
    config = demo_with_mail(tmp_path, free_port())
    assert digest(config, "update").exit_code == 1
    first = min(next_tries(tmp_path)) - datetime.now(UTC)
    assert timedelta(minutes=1) < first <= FIRST_RETRY

    with time_machine.travel(datetime.now(UTC) + timedelta(hours=1)):
        assert digest(config, "mail").exit_code == 1
        later = min(next_tries(tmp_path)) - datetime.now(UTC)
    with time_machine.travel(datetime.now(UTC) + timedelta(days=2)):
        assert digest(config, "mail").exit_code == 1
        longest = max(next_tries(tmp_path)) - datetime.now(UTC)

    assert timedelta(minutes=55) < later < timedelta(hours=1, minutes=1)
    assert LONGEST_RETRY - timedelta(minutes=1) < longest <= LONGEST_RETRY
    assert deliveries(tmp_path) == [(reader, "pending", 0) for reader in READERS]


def test_killed_mid_send_only_the_message_in_flight_can_arrive_twice(tmp_path: Path) -> None:
    port = free_port()
    with smtp_server(port) as server:
        config = demo_with_mail(tmp_path, port)
        server.hold.clear()  # the first message stays in flight until the client is killed
        env = {**os.environ, "DIGEST_TEST_LEASE": "30s"}
        process = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "update"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert server.in_flight.wait(120), "no message reached the server"
            process.send_signal(signal.SIGKILL)
            assert process.wait(30) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
        server.hold.set()  # the server had the whole message: it keeps it, as a real one would

        assert sorted(state for _, state, _ in deliveries(tmp_path)) == ["pending", "sending"]
        settings = load_config(config).settings
        store = Store(settings.site.database)
        try:
            # Within the lease the killed sender's message is left alone...
            assert deliver_due(store, settings, datetime.now(UTC)).sent == [
                (links_edition(tmp_path), READERS[1])
            ]
            # ...and sent again once it is over.
            later = deliver_due(store, settings, datetime.now(UTC) + timedelta(minutes=1))
            assert later.sent == [(links_edition(tmp_path), READERS[0])]
            assert deliver_due(store, settings, datetime.now(UTC) + timedelta(days=2)).sent == []
        finally:
            store.close()

    in_flight, other = (server.to(reader) for reader in READERS)
    assert len(in_flight) == 2  # the documented duplicate: the one message in flight
    assert in_flight[0]["Message-ID"] == in_flight[1]["Message-ID"]
    assert len(other) == 1
    assert sorted(state for _, state, _ in deliveries(tmp_path)) == ["sent", "sent"]


def test_digest_mail_sends_one_edition_by_hand(tmp_path: Path) -> None:
    port = free_port()
    with smtp_server(port) as server:
        config = demo_with_mail(tmp_path, port)
        assert digest(config, "update").exit_code == 0
        path = links_edition(tmp_path)

        by_hand = digest(config, "mail", "--edition", path, "--to", "me@example.com")
        unknown = digest(config, "mail", "--edition", "links/1999/01/01/1", "--to", "a@b.example")
        half = digest(config, "mail", "--to", "me@example.com")
        bad_address = digest(config, "mail", "--edition", path, "--to", "me")

        assert by_hand.exit_code == 0, by_hand.output
        assert by_hand.output == f"sent {path} to me@example.com\n"
        (message,) = server.to("me@example.com")
        assert set(parts(message)) == {"text/plain", "text/html"}
        assert unknown.exit_code == 2 and "no edition links/1999/01/01/1" in unknown.stderr
        assert half.exit_code == 2 and "--edition and --to go together" in half.stderr
        assert bad_address.exit_code == 2 and "expected a mail address" in bad_address.stderr
    assert len(deliveries(tmp_path)) == 2  # by hand: outside the queue


def test_a_broken_mail_template_keeps_the_mail_until_it_is_fixed(tmp_path: Path) -> None:
    """The site's own edition_mail.txt with an error: the site is published, the error names
    the file and line, no message goes (nor half of one), and all go once it is fixed."""
    port = free_port()
    with smtp_server(port) as server:
        config = demo_with_mail(tmp_path, port)
        config.write_text(
            config.read_text().replace("\nsite:\n", "\nsite:\n  templates: mine\n", 1)
        )
        template = config.parent / "mine" / "edition_mail.txt"
        template.parent.mkdir()
        template.write_text("{{ edition.title }}\n\n{{ edition.nope }}\n")
        said = f"mail: template {template}:3: 'digest.views.EditionView object' has no attribute"

        result = digest(config, "update")

        assert result.exit_code == 1
        assert (tmp_path / "public" / "links" / "feed.xml").is_file()
        (line,) = result.stderr.splitlines()
        assert line.startswith(said) and line.endswith("; the messages wait")
        path = links_edition(tmp_path)
        by_hand = digest(config, "mail", "--edition", path, "--to", "me@example.com")
        assert by_hand.exit_code == 2 and by_hand.stderr.startswith(said)
        assert server.received == []
        # One try counted (a template left broken gives up in time), the other untouched.
        assert sorted(deliveries(tmp_path)) == sorted(
            (reader, "pending", n) for reader, n in zip(READERS, (1, 0), strict=True)
        )

        template.write_text("{{ edition.title }}\n")
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=5)):
            fixed = digest(config, "mail")
        assert fixed.exit_code == 0, fixed.output
        assert sorted(r for m in server.received for r in m.recipients) == sorted(READERS)


def smtp_line(config: Path) -> int:
    """The line of feeds.yaml that holds mail.smtp."""
    lines = config.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith("  smtp:"))


def test_mail_config_errors_name_their_lines(tmp_path: Path) -> None:
    config = demo_with_mail(tmp_path, 2525, ", password: secret")
    text = config.read_text()
    config.write_text(text.replace("links@links.example.org>", "nobody>"))

    result = digest(config, "check")

    smtp = smtp_line(config)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{config}:{smtp}: mail.smtp: the password is never read from the file: put it in an "
        "environment variable and name that variable in password_env",
        f"{config}:{smtp + 1}: mail.from: expected a mail address such as links@example.org, got "
        "'Example Links <nobody>'",
    ]


def test_a_login_in_clear_over_the_network_is_refused(tmp_path: Path) -> None:
    """`security: none` with a login would put the password on the wire as it is; a relay on
    this machine (the tests' own server) is let through."""
    config = demo_with_mail(tmp_path, 2525, ", user: links, password_env: DIGEST_SMTP_PASSWORD")
    assert digest(config, "check").exit_code == 0
    config.write_text(config.read_text().replace("host: 127.0.0.1", "host: smtp.example.org"))

    result = digest(config, "check")

    smtp = smtp_line(config)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{config}:{smtp}: mail.smtp: a login to smtp.example.org with security: none sends "
        "the password in clear: use starttls or tls"
    ]


def test_a_recipient_entry_holding_several_addresses_is_refused(tmp_path: Path) -> None:
    """ "a@x, b@y" is not one recipient: its To: header would mail both, and b@y listed again
    would get every edition twice."""
    config = demo_with_mail(tmp_path, 2525)
    text = config.read_text()
    config.write_text(text.replace(f"{READERS[0]}, ", f'"{READERS[0]}, {READERS[1]}", ', 1))

    result = digest(config, "check")

    line = next(n for n, t in enumerate(config.read_text().splitlines(), 1) if "mail_to" in t)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{config}:{line}: streams.links.mail_to: expected one mail address, got several in "
        f"'{READERS[0]}, {READERS[1]}': list each alone"
    ]
    config.write_text(text)
    assert digest(config, "update").exit_code == 1  # no server: nothing sent, edition closed
    by_hand = digest(
        config, "mail", "--edition", links_edition(tmp_path), "--to", "a@x.org, b@y.org"
    )
    assert by_hand.exit_code == 2 and "expected one mail address" in by_hand.output


def add_leftover(config: Path, number: int) -> None:
    """One more item in the demo's misc feed: the next update closes another edition."""
    feed = config.parent / "feeds" / "misc.xml"
    item = (
        f"<item><title>Leftover number {number}</title>"
        f"<link>https://misc.example.net/{number}/</link>"
        f"<pubDate>Fri, 28 Mar 2025 12:00:00 +0000</pubDate>"
        "<description>One more.</description></item>\n</channel>"
    )
    feed.write_text(feed.read_text().replace("</channel>", item, 1))


def test_an_edition_closed_by_a_run_killed_before_queueing_is_mailed_next_run(
    tmp_path: Path,
) -> None:
    port = free_port()
    with smtp_server(port) as server:
        config = demo_with_mail(tmp_path, port)
        assert digest(config, "update").exit_code == 0
        assert len(server.received) == 2
        add_leftover(config, 1)
        assert digest(config, "poll", "--all").exit_code == 0
        # A run that closed an edition and died before queueing its mail.
        settings = load_config(config).settings
        store = Store(settings.site.database)
        try:
            (closed,) = [e for e in build(store, settings) if e.stream == "links"]
        finally:
            store.close()

        result = digest(config, "mail")

        assert result.exit_code == 0, result.output
        assert "mailed 2 messages" in result.output
        second = server.received[2:]
        assert sorted(r.recipients[0] for r in second) == sorted(READERS)
        assert {r.message["Message-ID"] for r in second} == {
            f"<{closed.path.replace('/', '.')}@links.example.org>"
        }
        assert digest(config, "mail").output == ""  # once


def test_a_recipient_taken_off_mail_to_gets_nothing_more(tmp_path: Path) -> None:
    port = free_port()
    config = demo_with_mail(tmp_path, port)
    assert digest(config, "update").exit_code == 1  # no server yet: both wait
    config.write_text(config.read_text().replace(f", {READERS[1]}]", "]"))

    with smtp_server(port) as server, time_machine.travel(datetime.now(UTC) + timedelta(minutes=5)):
        result = digest(config, "mail")
        status = digest(config, "status")

    assert result.exit_code == 0, result.output
    assert [r.recipients for r in server.received] == [[READERS[0]]]
    assert (
        f"to {READERS[1]}: failed after 1 tries: no longer in streams.links.mail_to"
        in status.output
    )


def mailing_settings(tmp_path: Path, port: int, readers: tuple[str, ...]) -> Settings:
    """A site whose links stream is mailed to `readers` through 127.0.0.1:`port`."""
    return Settings(
        site=SiteSettings(
            title="T",
            base_url="https://example.org/",
            output_dir=tmp_path / "public",
            state_dir=tmp_path / "state",
        ),
        streams={"links": StreamSettings(summary="Links for the day", mail_to=readers)},
        mail=MailSettings.model_validate(
            {
                "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
                "from": "l@example.org",
            }
        ),
    )


def test_two_runners_at_once_send_each_message_once(store: Store, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: the claim gives each message to one runner."""
    port = free_port()
    readers = ("a@example.net", "b@example.net", "c@example.net")
    settings = mailing_settings(tmp_path, port, readers)
    feed = FeedSettings(url="https://a.example/feed", name="A", stream="links")
    feed_id = add_feeds(store, [feed], T0)[feed.url]
    for n in range(3):
        at = T0 + timedelta(hours=n)
        with store.writing() as session:
            store_entries(session, feed_id, [make_entry(f"Story {n}", published=at)], at)
        closed = build(store, settings, at=at + timedelta(minutes=1))
        assert queue_deliveries(store, settings, closed, at) == len(readers)
    other = Store(store.url)
    try:
        with smtp_server(port) as server, ThreadPoolExecutor(2) as pool:
            runs = list(
                pool.map(lambda s: deliver_due(s, settings, T0 + timedelta(days=1)), [store, other])
            )
    finally:
        other.close()

    sent = runs[0].sent + runs[1].sent
    assert len(sent) == len(set(sent)) == 9
    assert len(server.received) == 9
    assert len({(r.recipients[0], r.message["Message-ID"]) for r in server.received}) == 9


def test_a_message_claimed_late_in_a_long_run_is_not_taken_for_dead(
    store: Store, tmp_path: Path
) -> None:
    """A claim's lease runs from the claim, not from the start of the run: in a run longer
    than the lease, the message in flight is not sent again by a runner starting meanwhile."""
    port = free_port()
    readers = ("a@example.net", "b@example.net")
    settings = mailing_settings(tmp_path, port, readers)
    feed = FeedSettings(url="https://a.example/feed", name="A", stream="links")
    feed_id = add_feeds(store, [feed], T0)[feed.url]
    with store.writing() as session:
        store_entries(session, feed_id, [make_entry("Story", published=T0)], T0)
    closed = build(store, settings, at=T0 + timedelta(minutes=1))
    assert queue_deliveries(store, settings, closed, T0) == 2
    lease = timedelta(seconds=2)
    other = Store(store.url)
    start = datetime.now(UTC)
    try:
        with smtp_server(port) as server, ThreadPoolExecutor(1) as pool:
            # Each message takes at least 0.4 s, so the second is claimed 0.4 s or more into
            # the run (however slow the machine: later, never sooner); it is held in flight.
            server.delay = 0.4
            server.hold.clear()
            server.hold_after = 1
            long_run = pool.submit(deliver_due, store, settings, start, lease)
            assert server.in_flight.wait(60), "the second message did not reach the server"
            # Past a lease counted from the start of the run, within one counted from the claim.
            late = deliver_due(other, settings, start + lease + timedelta(seconds=0.2), lease)
            server.hold.set()
            first = long_run.result()
    finally:
        other.close()

    assert late.sent == [] and len(first.sent) == 2
    assert sorted(r.recipients[0] for r in server.received) == list(readers)
    with store.reading() as session:
        tries = session.scalars(select(MailDeliveryRow.attempts))
        assert list(tries) == [1, 1]  # the late runner claimed neither


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_mail_goes_over_tls_to_a_server_whose_certificate_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str
) -> None:
    port = free_port()
    certificate = tls_certificate(tmp_path)
    config = demo_with_mail(tmp_path, port, f", security: {security}").read_text()
    config_path = tmp_path / "examples" / "demo" / "feeds.yaml"
    config_path.write_text(config.replace("security: none, ", ""))
    with smtp_server(port, security=security, certificate=certificate) as server:
        untrusted = digest(config_path, "update")  # the system's CAs do not know it

        assert untrusted.exit_code == 1
        (line,) = untrusted.stderr.splitlines()
        assert line.startswith(f"mail: cannot reach the SMTP server 127.0.0.1:{port}: ")
        assert "CERTIFICATE_VERIFY_FAILED" in line and line.endswith("; 2 messages wait")
        assert server.received == []

        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=5)):
            trusted = digest(config_path, "mail")

        assert trusted.exit_code == 0, trusted.output
        assert len(server.received) == 2


def test_starttls_against_a_server_without_it_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    config = demo_with_mail(tmp_path, port)
    config.write_text(config.read_text().replace("security: none", "security: starttls"))
    with smtp_server(port) as server:
        result = digest(config, "update")

        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            f"mail: 127.0.0.1:{port}: STARTTLS extension not supported by server. (check "
            "mail.smtp.security); 2 messages wait"
        ]
        assert server.received == []
