"""The commands that speak to other programs: OPML import and export, editions by mail."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from digest.cli.app import (
    EXIT_FEEDS_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    App,
    cli,
    err,
    pass_app,
    reach_readers,
)

if TYPE_CHECKING:
    pass


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


@cli.command("mail")
@click.option("--edition", "edition_path", metavar="ID", help="An edition, as links/2025/03/28/1.")
@click.option("--to", "recipient", metavar="ADDR", help="Send it to this address only.")
@pass_app
def mail_command(app: App, edition_path: str | None, recipient: str | None) -> None:
    """Send the editions due to go out by mail; with --edition and --to, one edition to one
    address now, outside the queue (to try a template)."""
    from digest.config import mail_address
    from digest.mail import MailError, find_edition, send_one
    from digest.render import TemplateProblem

    if (edition_path is None) != (recipient is None):
        raise click.UsageError("--edition and --to go together")
    config = app.config
    if config.settings.mail is None:
        err.print(f"{config.path}: no mail: section to send with (see README)", markup=False)
        raise SystemExit(EXIT_USAGE)
    with app.store(config) as store:
        if edition_path is None or recipient is None:
            raise SystemExit(EXIT_OK if reach_readers(store, config) else EXIT_FEEDS_FAILED)
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
        except TemplateProblem as problem:
            err.print(f"mail: template {problem}", markup=False)
            raise SystemExit(EXIT_USAGE) from None
    click.echo(f"sent {edition.path} to {recipient}")
