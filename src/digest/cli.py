"""The `digest` command: each subcommand runs one or more pipeline stages.

Exit codes: 0 success, 1 the run completed but some feeds failed (or it could not work on its
database: locked, read-only, damaged, full, unknown schema), 2 usage or config error.
Progress bars appear on a terminal only, so cron mails stay short.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from digest import __version__

# The stages are imported by the commands that run them: `digest --help` and `digest check`
# need none of the database and HTTP stacks (about 1.5 s of CPU to import), and neither do
# the parser processes of a poll, which import this module again as their parent's main.
if TYPE_CHECKING:
    from digest.config import Config, Settings
    from digest.desk import Target
    from digest.editions import Edition
    from digest.poll import PollSummary
    from digest.render import RenderReport
    from digest.store import Store

DEFAULT_ENTRIES_LIMIT = 50  # `digest entries` without --limit

EXIT_OK, EXIT_FEEDS_FAILED, EXIT_USAGE = 0, 1, 2

err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class App:
    """What every subcommand needs: the validated config and its database.

    `store` reports a database digest cannot work on in one line (exit 1), for the whole
    `with` block: a disk that fills during a poll is reported like one full at the start.
    """

    config_path: Path

    @property
    def config(self) -> Config:
        from digest.config import ConfigError, Timings, load_config

        try:
            return load_config(self.config_path, Timings.from_environment(os.environ))
        except ConfigError as error:
            for problem in error.problems:
                err.print(problem, markup=False)
            raise SystemExit(EXIT_USAGE) from None

    @contextmanager
    def store(self, config: Config) -> Iterator[Store]:
        from digest.store import Store, sync_feeds

        with _database_faults(config):
            store = Store(config.database_url, config.settings.site.busy_timeout)
            try:
                store.upgrade()
                with store.writing() as session:
                    sync_feeds(session, config.settings.feeds, datetime.now(UTC))
                yield store
            finally:
                store.close()


def _default_config() -> str:
    return os.environ.get("DIGEST_CONFIG") or "feeds.yaml"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=_default_config,
    show_default="$DIGEST_CONFIG, else ./feeds.yaml",
    help="The feeds.yaml to use.",
)
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """Poll feeds, close dated digest editions, publish them as HTML, gemtext and Atom."""
    ctx.obj = App(config_path)


pass_app = click.make_pass_decorator(App)


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


@cli.command("import")
@click.argument("opml_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--stream", metavar="NAME", help="The stream the feeds go to (default: by folder).")
@click.option("--section", metavar="NAME", help="The section they go in (default: by folder).")
@pass_app
def import_command(app: App, opml_file: Path, stream: str | None, section: str | None) -> None:
    """Add the feeds of an OPML file (a feed reader's export) to feeds.yaml."""
    from digest.config import ConfigError
    from digest.opml import OpmlError, import_opml

    config = app.config
    try:
        plan = import_opml(config, opml_file, stream=stream, section=section)
    except (OpmlError, ConfigError) as error:
        for line in str(error).splitlines():
            err.print(line, markup=False)
        raise SystemExit(EXIT_USAGE) from None
    click.echo(f"{config.path}: added {len(plan.added)} feeds, skipped {len(plan.skipped)}")
    for feed in plan.added:
        where = "own" if feed.get("own") else f"stream {feed['stream']}"
        where += f", section {feed['section']}" if "section" in feed else ""
        click.echo(f"  added {feed['url']} ({where})")
    for skipped in plan.skipped:
        click.echo(f"  skipped {skipped.url}: {skipped.reason}")


@cli.command("export")
@click.option("--opml", "as_opml", is_flag=True, default=True, help="As OPML 2.0 (the default).")
@pass_app
def export_command(app: App, as_opml: bool) -> None:
    """Write the feed list as OPML 2.0 to standard output, own and disabled feeds marked."""
    from digest.opml import export_opml
    from digest.store import disabled_feeds

    config = app.config
    with app.store(config) as store, store.reading() as session:
        disabled = disabled_feeds(session)
    sys.stdout.buffer.write(export_opml(config.settings, disabled))
    sys.stdout.buffer.flush()


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Upgrade the database schema to the newest version (digest also does this on start)."""
    from digest.store import Store

    config = app.config
    with _database_faults(config):
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
    """Delete unpublished entries older than retention.unpublished and gone workers' rows."""
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
        with _publishing(config):
            _build(store, config, at)
            _render(store, config)
        delivered = _reach_out(store, config)
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
        with _publishing(config):
            _render(store, config, full=full)
        delivered = _reach_out(store, config)
    raise SystemExit(EXIT_OK if delivered else EXIT_FEEDS_FAILED)


@cli.command()
@pass_app
def update(app: App) -> None:
    """Poll, build and render in one go (for cron)."""
    config = app.config
    with app.store(config) as store:
        summary = _poll(store, config, every=False)
        exit_code = EXIT_FEEDS_FAILED if summary.failed else EXIT_OK
        with _publishing(config, exit_code):
            _build(store, config, None)
            _render(store, config)
        if not _reach_out(store, config):
            exit_code = EXIT_FEEDS_FAILED
    raise SystemExit(exit_code)


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
    """List the stored entries, newest first: what digest made of each feed."""
    from rich.table import Table
    from rich.text import Text

    from digest.store import UnknownFeed, recent_entries

    config = app.config
    with app.store(config) as store, store.reading() as session:
        try:
            found = recent_entries(session, feed=feed_name, limit=limit)
        except UnknownFeed as unknown:
            raise click.BadParameter(
                f"unknown feed {unknown.name!r} (known: {_some(unknown.known)})",
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
@click.argument("stream", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--edit", is_flag=True, help="Edit the STREAM's draft in $VISUAL or $EDITOR.")
@pass_app
def draft(app: App, stream: str | None, as_json: bool, edit: bool) -> None:
    """Show the edition each stream (or STREAM) would close now: its title, its items with
    their handles, and the entries held back, with why. Closes and writes nothing."""
    from digest.desk import drafts, edit_draft, format_draft

    config = app.config
    names = _stream_names(config, stream, needed=edit)
    now = datetime.now(UTC)
    with app.store(config) as store, _desk_errors():
        if edit:
            click.echo(edit_draft(store, config.settings, names[0], now, click.edit))
            return
        found = drafts(store, config.settings, names, now)
    if as_json:
        click.echo(json.dumps({"streams": [d.as_json() for d in found]}, indent=2))
        return
    for shown in found:
        click.echo("\n".join(format_draft(shown)))


@cli.command()
@click.argument("handles", nargs=-1, required=True)
@pass_app
def hide(app: App, handles: tuple[str, ...]) -> None:
    """Keep entries (by HANDLE, from `digest draft`) out of every edition."""
    from digest.desk import hide as hide_entries

    _choose(app, "hidden", lambda store, _, now: hide_entries(store, handles, now))


@cli.command()
@click.argument("handles", nargs=-1, required=True)
@pass_app
def unhide(app: App, handles: tuple[str, ...]) -> None:
    """Let hidden entries into editions again."""
    from digest.desk import hide as hide_entries

    _choose(app, "unhidden", lambda store, _, now: hide_entries(store, handles, now, hidden=False))


@cli.command()
@click.argument("handles", nargs=-1, required=True)
@click.option("--section", metavar="NAME", help="Put them in this section of the edition.")
@pass_app
def pin(app: App, handles: tuple[str, ...], section: str | None) -> None:
    """Put entries into their stream's next edition, however old, whatever the exclude and
    include rules say (--section: into that section)."""
    from digest.desk import pin as pin_entries

    _choose(
        app,
        "pinned" + (f" into {section}" if section else ""),
        lambda store, settings, now: pin_entries(store, settings, handles, section, now),
    )


@cli.command()
@click.argument("handles", nargs=-1, required=True)
@pass_app
def unpin(app: App, handles: tuple[str, ...]) -> None:
    """Take back pins: the entries go in (or not) as usual."""
    from digest.desk import pin as pin_entries

    _choose(
        app,
        "unpinned",
        lambda store, settings, now: pin_entries(store, settings, handles, None, now, pinned=False),
    )


@cli.command()
@click.argument("stream")
@click.argument("handles", nargs=-1)
@pass_app
def headline(app: App, stream: str, handles: tuple[str, ...]) -> None:
    """Choose the items whose headlines make the STREAM's next title, in this order
    (no HANDLES: the most prominent, as usual)."""
    from digest.desk import headline as choose_headlines

    _choose(
        app,
        f"the headlines of {stream}'s next edition",
        lambda store, settings, now: choose_headlines(store, settings, stream, handles, now),
    )


@cli.command()
@click.argument("stream")
@click.argument("text")
@pass_app
def title(app: App, stream: str, text: str) -> None:
    """Give the STREAM's next edition the words of its title ({headlines} in the pattern),
    verbatim; "" goes back to headlines."""
    from digest.desk import title as choose_title

    config = app.config
    with app.store(config) as store, _desk_errors():
        shown = choose_title(store, config.settings, stream, text, datetime.now(UTC))
    click.echo(
        f"next title of {stream}: {shown}" if text.strip() else f"{stream}: title from headlines"
    )


@cli.command()
@click.argument("edition")
@click.option("--hide", "hide_handles", multiple=True, metavar="HANDLE", help="Take this item out.")
@click.option("--title", "words", metavar="TEXT", help="New words for the title's {headlines}.")
@pass_app
def amend(app: App, edition: str, hide_handles: tuple[str, ...], words: str | None) -> None:
    """Correct a closed EDITION (links/2026/12/02/1): its pages and feed entries are
    rewritten with the same ids and a new updated time. Without options: list its items."""
    from digest.desk import amend as amend_edition
    from digest.desk import edition_items

    config = app.config
    with app.store(config) as store, _desk_errors():
        if not hide_handles and words is None:
            shown, items = edition_items(store, edition)
            click.echo(f"{shown.path}: {shown.title}")
            for handle, section, text in items:
                click.echo(f"  {handle}  [{section}] {text}")
            return
        with _publishing(config):
            amended = amend_edition(
                store, config.settings, edition, hide_handles, words, datetime.now(UTC)
            )
            _render(store, config)
    for hidden in amended.hidden:
        click.echo(f"taken out: {hidden}")
    for warning in amended.warnings:
        err.print(f"note: {warning}", markup=False)
    click.echo(f"amended {amended.edition.path}: {amended.edition.title}")


def _stream_names(config: Config, stream: str | None, *, needed: bool = False) -> list[str]:
    """The streams a command is about: STREAM, else all (or the only one, when one is needed)."""
    known = list(config.settings.streams)
    if stream is not None and stream not in known:
        raise click.BadParameter(
            f"unknown stream {stream!r} (known: {_some(tuple(known))})", param_hint="STREAM"
        )
    if stream is not None:
        return [stream]
    if needed and len(known) != 1:
        raise click.BadParameter(
            f"name the stream to edit ({_some(tuple(known))})", param_hint="STREAM"
        )
    return known


def _choose(
    app: App, done: str, action: Callable[[Store, Settings, datetime], list[Target]]
) -> None:
    """Run one of the desk's choices; say what it did to which entries."""
    config = app.config
    with app.store(config) as store, _desk_errors():
        targets = action(store, config.settings, datetime.now(UTC))
    for target in targets:
        click.echo(f"{target.handle} {done}: {target.title}")
    if not targets:
        click.echo(f"{done}: cleared")


@contextmanager
def _desk_errors() -> Iterator[None]:
    """What an editor asked for that cannot be done: one line each, exit 2, nothing changed."""
    from digest.desk import DeskError
    from digest.draft_file import DraftFileError

    try:
        yield
    except (DeskError, DraftFileError) as error:
        for problem in error.problems:
            err.print(problem, markup=False)
        err.print("nothing changed", markup=False)
        raise SystemExit(EXIT_USAGE) from None


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
            _writable_state_dir(config),
            daemon_lock(config.settings.site.state_dir),
            app.store(config) as store,
        ):
            run_daemon(store, config, role)
    except LockBusy as busy:
        err.print(f"not started: a daemon is already running: {busy}", markup=False)
        raise SystemExit(EXIT_FEEDS_FAILED) from None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Say whether the daemon runs, when feeds were polled, which fail, and what closes next."""
    from digest.status import site_status
    from digest.store import Store

    config = app.config
    with _database_faults(config):
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


@cli.command("mail")
@click.option("--edition", "edition_path", metavar="ID", help="An edition, as links/2025/03/28/1.")
@click.option("--to", "recipient", metavar="ADDR", help="Send it to this address only.")
@pass_app
def mail_command(app: App, edition_path: str | None, recipient: str | None) -> None:
    """Send the editions due to go out by mail; with --edition and --to, one edition to one
    address now, outside the queue (to try a template)."""
    from digest.config import mail_address
    from digest.mail import MailError, find_edition, send_one

    if (edition_path is None) != (recipient is None):
        raise click.UsageError("--edition and --to go together")
    config = app.config
    if config.settings.mail is None:
        err.print(f"{config.path}: no mail: section to send with (see README)", markup=False)
        raise SystemExit(EXIT_USAGE)
    with app.store(config) as store:
        if edition_path is None or recipient is None:
            raise SystemExit(EXIT_OK if _reach_out(store, config) else EXIT_FEEDS_FAILED)
        try:
            mail_address(recipient)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--to") from None
        edition = find_edition(store, edition_path.strip("/"))
        if edition is None:
            err.print(f"no edition {edition_path} (as `digest status` names them)", markup=False)
            raise SystemExit(EXIT_USAGE)
        try:
            send_one(config.settings, edition, recipient)
        except MailError as error:
            err.print(str(error), markup=False)
            raise SystemExit(EXIT_FEEDS_FAILED) from None
    click.echo(f"sent {edition.path} to {recipient}")


@cli.command()
@click.argument("host")
@pass_app
def trust(app: App, host: str) -> None:
    """Accept the new certificate a Gemini HOST (host or host:port) now offers."""
    from digest.store.hosts import trust_host

    config = app.config
    target = host if ":" in host else f"{host}:1965"
    with app.store(config) as store, store.writing() as session:
        accepted = trust_host(session, target)
    if not accepted:
        err.print(f"{target}: no changed certificate is waiting to be trusted", markup=False)
        raise SystemExit(EXIT_FEEDS_FAILED)
    click.echo(f"{target}: new certificate trusted")


@cli.command()
@click.option(
    "--http",
    "http_listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="Address for the web server; 'off' to disable.",
)
@click.option(
    "--gemini",
    "gemini_listen",
    default="127.0.0.1:1965",
    show_default=True,
    help="Address for the Gemini server; 'off' to disable.",
)
@click.option(
    "--cert",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TLS certificate for Gemini (default: generated into the state folder).",
)
@click.option(
    "--key", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Its private key."
)
@pass_app
def serve(
    app: App, http_listen: str, gemini_listen: str, cert: Path | None, key: Path | None
) -> None:
    """Serve the published site over HTTP and Gemini (with conditional GETs and TOFU TLS)."""
    import logging
    from urllib.parse import urlsplit

    from digest.serve import parse_listen
    from digest.serve import serve as run_servers

    def listen(text: str, option: str) -> tuple[str, int] | None:
        try:
            return None if text == "off" else parse_listen(text)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=option) from None

    settings = app.config.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    hostname = urlsplit(settings.site.gemini_base_url or settings.site.base_url).hostname
    try:
        run_servers(
            Path(settings.site.output_dir),
            http=listen(http_listen, "--http"),
            gemini=listen(gemini_listen, "--gemini"),
            hostname=hostname or "localhost",
            cert=cert,
            key=key,
            state_dir=settings.site.state_dir,
        )
    except (ValueError, OSError) as error:
        err.print(f"cannot serve: {error}", markup=False)
        code = EXIT_USAGE if isinstance(error, ValueError) else EXIT_FEEDS_FAILED
        raise SystemExit(code) from None


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


def _render(store: Store, config: Config, *, full: bool = False) -> RenderReport:
    from digest.publish import render
    from digest.render import RenderError

    try:
        report = render(store, config.settings, full=full)
    except (OSError, RenderError) as error:
        err.print(f"cannot write the site: {error}", markup=False)
        raise SystemExit(EXIT_FEEDS_FAILED) from None
    click.echo(
        f"rendered {len(report.written)} files ({len(report.unchanged)} unchanged) "
        f"into {config.settings.site.output_dir}"
    )
    return report


def _reach_out(store: Store, config: Config) -> bool:
    """After publishing, outside the publish lock: ping the WebSub hubs of changed feeds and
    mail the editions due; False when some mail could not go (it is retried later)."""
    from digest.outreach import reach_out

    result = reach_out(store, config.settings, config.timings.lease)
    for line in result.problems:
        err.print(line, markup=False)
    for line in result.done:
        click.echo(line)
    return not result.mail_undelivered


@contextmanager
def _publishing(config: Config, exit_code: int = EXIT_OK) -> Iterator[None]:
    """Close and render one runner at a time; a runner that waited too long skips, not fails."""
    from digest.locks import LockBusy
    from digest.publish import publishing

    try:
        with _writable_state_dir(config), publishing(config.settings):
            yield
    except LockBusy as busy:
        err.print(f"skipped closing and rendering: {busy}; the next run will do it", markup=False)
        raise SystemExit(exit_code) from None


@contextmanager
def _writable_state_dir(config: Config) -> Iterator[None]:
    """A site.state_dir this user cannot write (its lock files): one line on what to change,
    exit 2 as for other config errors, instead of a traceback."""
    state_dir = config.settings.site.state_dir
    try:
        yield
    except OSError as error:
        if not error.filename or not Path(error.filename).is_relative_to(state_dir):
            raise
        err.print(
            f"{config.path}: site.state_dir {state_dir}: cannot write there "
            f"({error.strerror or error}): make it writable for this user or set "
            "site.state_dir to a folder it can write",
            markup=False,
        )
        raise SystemExit(EXIT_USAGE) from None


@contextmanager
def _database_faults(config: Config) -> Iterator[None]:
    """A database digest cannot work on (locked by another program past the busy timeout,
    read-only, damaged, on a full disk, unreachable, at an unknown schema revision): one line
    naming it and what to do, exit 1, no traceback. Other errors pass unchanged."""
    from digest.store.db import database_problem

    try:
        yield
    except Exception as error:
        message = database_problem(error, config.database_url)
        if message is None:
            raise
        err.print(message, markup=False)
        raise SystemExit(EXIT_FEEDS_FAILED) from None


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


def _some(names: tuple[str, ...], shown: int = 10) -> str:
    """A list of names for a message, cut short when long."""
    if not names:
        return "none"
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", … and {len(names) - shown} more"


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else "-"


def _when_text(iso: str | None) -> str:
    return _when(datetime.fromisoformat(iso)) if iso else "never"


def main() -> None:
    try:
        cli.main(prog_name="digest", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
