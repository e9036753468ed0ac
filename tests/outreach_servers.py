"""Real servers on 127.0.0.1 for the outreach tests: a WebSub hub (aiohttp) that records the
pings it gets, and an SMTP server (aiosmtpd) that records, refuses or holds messages."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.gemini_servers import make_certificate

# --- WebSub --------------------------------------------------------------------------------


@dataclass
class Hub:
    url: str
    pings: list[dict[str, str]] = field(default_factory=list)  # each ping's form and agent
    status: int = 204  # what it answers
    on_ping: Callable[[], None] | None = None  # called with each ping, before the answer


@contextmanager
def websub_hub(port: int) -> Iterator[Hub]:
    """A hub on 127.0.0.1:`port` that records each POST (form fields and User-Agent)."""
    hub = Hub(f"http://127.0.0.1:{port}/hub")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def publish(request: web.Request) -> web.Response:
        form = await request.post()
        hub.pings.append(
            {**{k: str(v) for k, v in form.items()}, "agent": request.headers["User-Agent"]}
        )
        if hub.on_ping is not None:
            hub.on_ping()
        return web.Response(status=hub.status, text="" if hub.status < 300 else "hub trouble")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hub", publish)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the hub did not start"
    try:
        yield hub
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


# --- SMTP ----------------------------------------------------------------------------------


@dataclass
class Received:
    recipients: list[str]
    message: EmailMessage


class MailHandler:
    """Records the messages it takes; can refuse the next N, hold one (the first, or the one
    after `hold_after` others) until released, or take its time over each."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse_next = 0  # messages to refuse at DATA, with this reply:
        self.refusal = "451 4.3.0 Try again later"
        self.hold = threading.Event()  # cleared: DATA waits for it (a message in flight)
        self.hold.set()
        self.hold_after = 0  # with hold cleared: messages taken before the one held
        self.in_flight = threading.Event()  # set when a held message has arrived
        self.delay = 0.0  # seconds each message takes (other sessions are served meanwhile)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refuse_next:
            self.refuse_next -= 1
            return self.refusal
        if not self.hold.is_set() and self.hold_after:
            self.hold_after -= 1
        elif not self.hold.is_set():
            self.in_flight.set()
            # Blocks the server's loop on purpose: the client is killed meanwhile.
            self.hold.wait(60)
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(list(envelope.rcpt_tos), message))
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [r.message for r in self.received if address in r.recipients]


class _Refuse:
    """An authenticator that refuses every login, as a server refuses a wrong password."""

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
        assert isinstance(auth, LoginPassword)
        return AuthResult(success=False, handled=False)


def tls_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA): (certificate, key) files."""
    made = make_certificate(directory, "smtp", trusted_for_ip=True)
    return made.certfile, made.keyfile


@contextmanager
def smtp_server(
    port: int,
    *,
    refuse_logins: bool = False,
    security: str = "none",
    certificate: tuple[Path, Path] | None = None,
) -> Iterator[MailHandler]:
    """An aiosmtpd server on 127.0.0.1:`port`: plain, or with `certificate` offering
    STARTTLS (and requiring it) or speaking TLS from the first byte (`security` as in
    mail.smtp.security); with `refuse_logins` it offers AUTH and refuses every login."""
    handler = MailHandler()
    options: dict[str, Any] = {}
    if refuse_logins:
        options = {"authenticator": _Refuse(), "auth_require_tls": False}
    if security != "none":
        assert certificate is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        if security == "starttls":
            options |= {"tls_context": context, "require_starttls": True}
        else:
            options |= {"ssl_context": context}
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield handler
    finally:
        handler.hold.set()
        controller.stop()
