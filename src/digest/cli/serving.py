"""Serving the site over HTTP and Gemini, and trusting a capsule's new certificate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from digest.cli.app import (
    EXIT_FEEDS_FAILED,
    EXIT_USAGE,
    App,
    cli,
    err,
    pass_app,
)

if TYPE_CHECKING:
    pass


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
