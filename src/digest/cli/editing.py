"""The editor's desk (digest.desk): draft, hide/unhide, pin/unpin, headline and title shape the
next edition; amend corrects a closed one. A choice that cannot be made: one line, exit 2,
nothing changed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from digest.cli.app import (
    EXIT_USAGE,
    App,
    cli,
    err,
    pass_app,
    publishing_turn,
    some,
    write_site,
)

if TYPE_CHECKING:
    from digest.config import Config, Settings
    from digest.desk import Target
    from digest.store import Store


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
        with publishing_turn(config):
            amended = amend_edition(
                store, config.settings, edition, hide_handles, words, datetime.now(UTC)
            )
            write_site(store, config)
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
            f"unknown stream {stream!r} (known: {some(tuple(known))})", param_hint="STREAM"
        )
    if stream is not None:
        return [stream]
    if needed and len(known) != 1:
        raise click.BadParameter(
            f"name the stream to edit ({some(tuple(known))})", param_hint="STREAM"
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
