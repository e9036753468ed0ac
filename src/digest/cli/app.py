"""What every `digest` command shares: the command group, the config and its database (with
their faults as one line and an exit code), the publish lock, writing the site and reaching
readers after it.

The stages are imported by the commands that run them: `digest --help` and `digest check`
need none of the database and HTTP stacks (about 1.5 s of CPU to import), and neither do
the parser processes of a poll, which import the console script's module again as their
parent's main.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from digest import __version__

if TYPE_CHECKING:
    from digest.config import Config
    from digest.render import RenderReport
    from digest.store import Store

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

        with database_faults(config):
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


@contextmanager
def publishing_turn(config: Config, exit_code: int = EXIT_OK) -> Iterator[None]:
    """Close and render one runner at a time; a runner that waited too long skips, not fails."""
    from digest.locks import LockBusy
    from digest.publish import publishing

    try:
        with writable_state_dir(config), publishing(config.settings):
            yield
    except LockBusy as busy:
        err.print(f"skipped closing and rendering: {busy}; the next run will do it", markup=False)
        raise SystemExit(exit_code) from None


@contextmanager
def writable_state_dir(config: Config) -> Iterator[None]:
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
def database_faults(config: Config) -> Iterator[None]:
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


def write_site(store: Store, config: Config, *, full: bool = False) -> RenderReport:
    from digest.publish import render
    from digest.render import RenderError, TemplateProblem

    try:
        report = render(store, config.settings, full=full)
    except (OSError, RenderError) as error:
        err.print(f"cannot write the site: {error}", markup=False)
        raise SystemExit(EXIT_FEEDS_FAILED) from None
    except TemplateProblem as problem:  # the site's to fix, like a config error
        err.print(f"cannot render the site: template {problem}", markup=False)
        raise SystemExit(EXIT_USAGE) from None
    click.echo(
        f"rendered {len(report.written)} files ({len(report.unchanged)} unchanged) "
        f"into {config.settings.site.output_dir}"
    )
    return report


def reach_readers(store: Store, config: Config) -> bool:
    """After publishing, outside the publish lock: ping the WebSub hubs of changed feeds and
    mail the editions due; False when some mail could not go (it is retried later)."""
    from digest.outreach import reach_out

    result = reach_out(store, config.settings, config.timings.lease)
    for line in result.problems:
        err.print(line, markup=False)
    for line in result.done:
        click.echo(line)
    return not result.mail_undelivered


def some(names: tuple[str, ...], shown: int = 10) -> str:
    """A list of names for a message, cut short when long."""
    if not names:
        return "none"
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", … and {len(names) - shown} more"


def main() -> None:
    try:
        cli.main(prog_name="digest", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
