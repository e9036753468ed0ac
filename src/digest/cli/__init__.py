"""The `digest` command: each subcommand runs one or more pipeline stages.

app.py holds the command group and what every command shares (the config, the database, the
publish lock, exit codes); the commands live by what they are for: pipeline.py runs the
stages (check, poll, build, render, update, run, db), reports.py shows what digest knows
(feeds, entries, status), editing.py is the editor's desk (draft, hide, pin, headline, title,
amend), outreach.py speaks to other programs (import, export, mail), serving.py serves the
site (serve, trust).

Exit codes: 0 success, 1 the run completed but some feeds failed (or it could not work on its
database: locked, read-only, damaged, full, unknown schema), 2 usage or config error.
Progress bars appear on a terminal only, so cron mails stay short.
"""

from digest.cli import editing, outreach, pipeline, reports, serving
from digest.cli.app import App, cli, main

# Imported for the commands they add to `cli`.
COMMAND_MODULES = (pipeline, reports, editing, outreach, serving)

__all__ = ["App", "cli", "main"]
