"""The commands that run the pipeline's stages: check, poll, build, render, update (all three,
for cron), run (the daemon) and db (schema upgrades, retention)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from digest.cli.app import (
    EXIT_FEEDS_FAILED,
    EXIT_OK,
    App,
    cli,
    database_faults,
    err,
    pass_app,
    publishing_turn,
    reach_readers,
    writable_state_dir,
    write_site,
)

if TYPE_CHECKING:
    from digest.config import Config
    from digest.editions import Edition
    from digest.poll import PollSummary
    from digest.store import Store


@cli.command()
@pass_app
def check(app: App) -> None:
    """Validate the config and say what it holds."""
    config = app.config
    settings = config.settings
    own = sum(1 for feed in settings.feeds if feed.own)
    click.echo(f"{config.path}: OK")
    click.echo(f"  site: {settings.site.title} <{settings.site.base_url}>")
    for name, stream in settings.streams.items():
        count = sum(1 for feed in settings.feeds if feed.stream == name)
        click.echo(f"  stream {name}: {count} feeds, closes at '{stream.schedule}'")
    click.echo(f"  own feeds: {own}")
    click.echo(f"  output: {settings.site.output_dir}")
    if settings.site.websub_hubs:
        click.echo(f"  WebSub hubs: {', '.join(settings.site.websub_hubs)}")
    if settings.mail is not None:
        smtp = settings.mail.smtp
        click.echo(
            f"  mail: from {settings.mail.sender} via {smtp.host}:{smtp.effective_port} "
            f"({smtp.security}) to "
            + (
                ", ".join(
                    f"{name}: {len(stream.mail_to)} addresses"
                    for name, stream in settings.streams.items()
                    if stream.mail_to
                )
                or "no one yet (streams.<name>.mail_to)"
            )
        )


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Upgrade the database schema to the newest version (digest also does this on start)."""
    from digest.store import Store

    config = app.config
    with database_faults(config):
        store = Store(config.database_url, config.settings.site.busy_timeout)
        try:
            store.upgrade()
        finally:
            store.close()
    click.echo("database is at the newest schema")


@db.command("prune")
@click.option(
    "--vacuum", is_flag=True, help="Then give the freed space back to the file system (VACUUM)."
)
@pass_app
def db_prune(app: App, vacuum: bool) -> None:
    """Delete unpublished entries older than retention.unpublished and gone workers' rows;
    pack editions older than retention.published."""
    from digest.retention import prune
    from digest.retention import vacuum as vacuum_database

    config = app.config
    with app.store(config) as store:
        report = prune(store, config.settings, datetime.now(UTC))
        click.echo(report.line())
        if vacuum:
            vacuum_database(store)
            click.echo("database vacuumed")


@cli.command()
@click.option("--all", "every", is_flag=True, help="Poll every feed, due or not.")
@pass_app
def poll(app: App, every: bool) -> None:
    """Fetch the feeds that are due and store their new entries."""
    config = app.config
    with app.store(config) as store:
        summary = _poll(store, config, every)
    raise SystemExit(EXIT_FEEDS_FAILED if summary.failed else EXIT_OK)


@cli.command("build")
@click.option(
    "--at",
    "at_text",
    metavar="'YYYY-MM-DD HH:MM'",
    help="Close as of this local time instead of now (for back-filling).",
)
@pass_app
def build_command(app: App, at_text: str | None) -> None:
    """Close one edition per stream from the entries that arrived since its last one."""
    config = app.config
    at = _parse_at(at_text, config) if at_text else None
    with app.store(config) as store:
        with publishing_turn(config):
            _build(store, config, at)
            write_site(store, config)
        delivered = reach_readers(store, config)
    raise SystemExit(EXIT_OK if delivered else EXIT_FEEDS_FAILED)


@cli.command("render")
@click.option(
    "--full",
    is_flag=True,
    help="Make every file again and compare it with the one in the output folder (after "
    "editing files there by hand); a changed template or setting needs no --full.",
)
@pass_app
def render_command(app: App, full: bool) -> None:
    """Write what changed in the site into the output folder."""
    config = app.config
    with app.store(config) as store:
        with publishing_turn(config):
            write_site(store, config, full=full)
        delivered = reach_readers(store, config)
    raise SystemExit(EXIT_OK if delivered else EXIT_FEEDS_FAILED)


@cli.command()
@pass_app
def update(app: App) -> None:
    """Poll, build and render in one go (for cron)."""
    config = app.config
    with app.store(config) as store:
        summary = _poll(store, config, every=False)
        exit_code = EXIT_FEEDS_FAILED if summary.failed else EXIT_OK
        with publishing_turn(config, exit_code):
            _build(store, config, None)
            write_site(store, config)
        if not reach_readers(store, config):
            exit_code = EXIT_FEEDS_FAILED
    raise SystemExit(exit_code)


@cli.command()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines on stderr as text or as one JSON object each.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--role",
    type=click.Choice(["all", "poll", "publish"]),
    default="all",
    show_default=True,
    help="poll: only poll feeds; publish: only close editions and render (one node at a "
    "time holds this role, the others stand by); all: both.",
)
@pass_app
def run(app: App, log_format: str, log_level: str, role: str) -> None:
    """Run as a daemon: poll feeds as they fall due and close editions on each stream's schedule.

    SIGHUP (or saving feeds.yaml) reloads the config; SIGTERM stops it cleanly.
    """
    from digest.daemon import run_daemon
    from digest.locks import LockBusy, daemon_lock
    from digest.logs import configure_logging

    config = app.config
    configure_logging(log_format, log_level)
    try:
        with (
            writable_state_dir(config),
            daemon_lock(config.settings.site.state_dir),
            app.store(config) as store,
        ):
            run_daemon(store, config, role)
    except LockBusy as busy:
        err.print(f"not started: a daemon is already running: {busy}", markup=False)
        raise SystemExit(EXIT_FEEDS_FAILED) from None


def _poll(store: Store, config: Config, every: bool) -> PollSummary:
    from digest.poll import PULLED_BACK, Poller, PollTerminated

    poller = Poller(store, config.settings.fetch, lease=config.timings.lease)
    try:
        with _progress("polling") as advance:
            summary = poller.run(every=every, progress=advance)
    except PollTerminated as stopped:
        # Stopped cleanly: what was polled is stored, the rest is polled by the next run.
        err.print(f"{stopped}: the feeds not finished are polled next run", markup=False)
        raise SystemExit(128 + stopped.signum) from None
    for failure in summary.failures:
        err.print(f"{failure.name} <{failure.url}>: {failure.error}", markup=False)
    for feed in summary.pulled_back:
        err.print(f"{feed.name}: {PULLED_BACK.format(when=feed.next_poll_at)}", markup=False)
    click.echo(summary.line())
    return summary


def _build(store: Store, config: Config, at: datetime | None) -> list[Edition]:
    from digest.publish import build

    editions = build(store, config.settings, at)
    for edition in editions:
        click.echo(f"closed {edition.path}: {edition.title}")
    if not editions:
        click.echo("no new editions")
    if config.settings.mail is not None:
        from digest.mail import queue_deliveries

        # Queued before rendering: a render that fails does not lose an edition's mail.
        queue_deliveries(store, config.settings, editions, datetime.now(UTC))
    return editions


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance


def _parse_at(text: str, config: Config) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"expected 'YYYY-MM-DD HH:MM', got {text!r}", param_hint="--at"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=config.settings.site.zone)
    return moment.astimezone(UTC)
