"""The commands that show what digest knows: feeds and their health, stored entries, the
daemon's and the site's status."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from digest.cli.app import (
    App,
    cli,
    database_faults,
    pass_app,
    some,
)

if TYPE_CHECKING:
    pass

DEFAULT_ENTRIES_LIMIT = 50  # `digest entries` without --limit


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@pass_app
def feeds(app: App, as_json: bool) -> None:
    """List the feeds and their health."""
    from rich.table import Table

    from digest.store import feed_health

    config = app.config
    with app.store(config) as store, store.reading() as session:
        health = feed_health(session)
    if as_json:
        click.echo(json.dumps([feed.as_json() for feed in health], indent=2))
        return
    table = Table("name", "stream", "entries", "last ok", "status", "fails", "next poll", "problem")
    for feed in health:
        problem = f"disabled: {feed.disabled_reason}" if feed.disabled else (feed.last_error or "")
        table.add_row(
            feed.name,
            feed.stream or "(own)",
            str(feed.entries),
            _when(feed.last_ok),
            feed.last_status or "never polled",
            str(feed.failures),
            _when(feed.next_poll),
            problem,
            style="red" if feed.disabled or feed.failures else None,
        )
    # Piped (cron mail, grep): wide enough that rows are not wrapped mid-name.
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)


@cli.command("entries")
@click.option(
    "--feed",
    "feed_name",
    metavar="NAME",
    help="Only this feed: its name as in feeds.yaml, or its URL.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_ENTRIES_LIMIT,
    show_default=True,
    help="List at most this many entries.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_app
def entries_command(app: App, feed_name: str | None, limit: int, as_json: bool) -> None:
    """List the stored entries, newest first: what digest made of each feed (an entry an
    edition took, as the edition published it)."""
    from rich.table import Table
    from rich.text import Text

    from digest.store import UnknownFeed, recent_entries

    config = app.config
    with app.store(config) as store, store.reading() as session:
        try:
            found = recent_entries(session, feed=feed_name, limit=limit)
        except UnknownFeed as unknown:
            raise click.BadParameter(
                f"unknown feed {unknown.name!r} (known: {some(unknown.known)})",
                ctx=click.get_current_context(),
                param_hint="--feed",
            ) from None
    if as_json:
        click.echo(json.dumps({"entries": [entry.as_json() for entry in found]}, indent=2))
        return
    table = Table("handle", "published", "feed", "title", "link")
    table.columns[4].overflow = "fold"  # a link cut short with an ellipsis is no use
    for entry in found:
        # Text, not str: feed text is never read as rich markup ("[/]" in a title).
        table.add_row(
            entry.handle,
            _when(entry.published),
            Text(entry.feed),
            Text(entry.title),
            Text(entry.link or ""),
        )
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Say whether the daemon runs, when feeds were polled, which fail, and what closes next."""
    from digest.status import site_status
    from digest.store import Store

    config = app.config
    with database_faults(config):
        store = Store(config.database_url, config.settings.site.busy_timeout)
        try:
            store.upgrade()
            report = site_status(store, config, datetime.now(UTC))
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    daemon = report["daemon"]
    click.echo(
        f"daemon: running (pid {daemon['pid']})" if daemon["running"] else "daemon: not running"
    )
    click.echo(f"last poll: {_when_text(report['last_poll'])}")
    failing = report["failing_feeds"]
    click.echo(f"feeds: {report['feeds']}, failing: {len(failing)}")
    for feed in failing:
        problem = f"disabled: {feed['disabled_reason']}" if feed["disabled"] else feed["last_error"]
        click.echo(f"  {feed['name']} <{feed['url']}>: {problem} ({feed['failures']} failures)")
    for feed in report["next_poll_out_of_reach"]:
        click.echo(
            f"  {feed['name']}: next poll set for {_when_text(feed['next_poll'])}, further "
            "ahead than its interval allows (was the clock ahead?); the next poll takes it"
        )
    for name, stream in report["streams"].items():
        last = stream["last_edition"]
        click.echo(f"stream {name} ('{stream['schedule']}'):")
        click.echo(
            f"  last edition: {last['path']} at {_when_text(last['closed_at'])}: {last['title']}"
            if last
            else "  last edition: none yet"
        )
        click.echo(f"  next closing: {_when_text(stream['next_closing'])}")
        if chosen := _chosen(stream["choices"]):
            click.echo(f"  editor's choices: {chosen} (digest draft {name} shows them)")
    mail = report["mail_waiting"]
    if mail:
        click.echo(f"mail not delivered: {len(mail)}")
    for delivery in mail:
        when = (
            f", next try {_when_text(delivery['next_attempt'])}"
            if delivery["state"] != "failed"
            else ""
        )
        click.echo(
            f"  {delivery['edition']} to {delivery['to']}: {delivery['state']} "
            f"after {delivery['attempts']} tries{when}"
            + (f": {delivery['last_error']}" if delivery["last_error"] else "")
        )
    if report["websub_waiting"]:
        click.echo(f"WebSub pings waiting for the next run: {len(report['websub_waiting'])}")
    for ping in report["websub_waiting"]:
        click.echo(f"  {ping['hub']} of {ping['feed']}: {ping['last_error']}")
    click.echo(f"workers seen in the last 2 minutes: {len(report['workers'])}")
    for worker in report["workers"]:
        click.echo(
            f"  {worker['id']} ({worker['role']}): last heartbeat "
            f"{_when_text(worker['heartbeat_at'])}, holds {worker['feeds_held']} feeds"
        )


def _chosen(choices: dict[str, Any]) -> str:
    parts = []
    if choices["hidden"]:
        parts.append(f"{len(choices['hidden'])} hidden")
    if choices["pinned"]:
        parts.append(f"{len(choices['pinned'])} pinned")
    if choices["headlines"]:
        parts.append(f"headlines {' '.join(choices['headlines'])}")
    if choices["title"] is not None:
        parts.append(f"title {choices['title']!r}")
    return ", ".join(parts)


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else "-"


def _when_text(iso: str | None) -> str:
    return _when(datetime.fromisoformat(iso)) if iso else "never"
