"""A small site for the editor's desk tests: RSS files read through file: URLs, a feeds.yaml
the test shapes (rules, sections, the database), and `digest` run in-process by click's
runner, as a user runs it from a shell."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from click.testing import CliRunner, Result

from digest.cli import cli

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Story:
    title: str
    link: str
    summary: str = ""
    published: datetime = field(default_factory=lambda: NOW - timedelta(hours=1))


@dataclass
class DeskSite:
    root: Path
    database: str = ""  # default: an SQLite file in root
    stream_extra: str = ""  # more keys of streams.links, indented by four spaces
    top_extra: str = ""  # more top-level keys
    feeds: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (section, extra)

    @property
    def config(self) -> Path:
        return self.root / "feeds.yaml"

    @property
    def public(self) -> Path:
        return self.root / "public"

    def feed(
        self, name: str, stories: list[Story], section: str = "Science", extra: str = ""
    ) -> None:
        """Write (or rewrite) feed `name` with these stories, and list it in the config."""
        items = "".join(
            f"<item><guid>{escape(story.link)}</guid><title>{escape(story.title)}</title>"
            f"<link>{escape(story.link)}</link><description>{escape(story.summary)}</description>"
            f"<pubDate>{format_datetime(story.published)}</pubDate></item>"
            for story in stories
        )
        (self.root / f"{name}.xml").write_text(
            "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>{name}</title><link>https://{name}.example/</link>"
            f"<description>d</description>{items}</channel></rss>"
        )
        self.feeds[name] = (section, extra)
        self.write_config()

    def write_config(self) -> None:
        feeds = "".join(
            f"  - {{url: 'file:{name}.xml', name: {name}, stream: links, section: {section}"
            f"{', ' + extra if extra else ''}}}\n"
            for name, (section, extra) in self.feeds.items()
        )
        database = self.database or "sqlite:///digest.db"
        self.config.write_text(
            "site:\n"
            "  title: Desk Links\n"
            "  base_url: https://links.example.org/\n"
            "  timezone: UTC\n"
            "  output_dir: public\n"
            f"  database: '{database}'\n"
            "  state_dir: state\n"
            f"{self.top_extra}"
            "streams:\n"
            "  links:\n"
            '    title: "Links {date:%d/%m/%Y}: {headlines}"\n'
            "    summary: Links for the day\n"
            "    sections: [Leftovers, Science, Security]\n"
            "    lookback: 2d\n"
            f"{self.stream_extra}"
            f"feeds:\n{feeds}"
        )

    def digest(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            cli, ["--config", str(self.config), *args], env=env, catch_exceptions=False
        )

    def ok(self, *args: str) -> Result:
        result = self.digest(*args)
        assert result.exit_code == 0, result.output
        return result

    def draft(self) -> dict[str, Any]:
        """The links stream's draft, as `digest draft --json` prints it."""
        streams = json.loads(self.ok("draft", "--json").stdout)["streams"]
        (links,) = [stream for stream in streams if stream["stream"] == "links"]
        assert isinstance(links, dict)
        return links

    def handle(self, title: str) -> str:
        """The handle of the item or held-back entry with this title in the draft."""
        draft = self.draft()
        found = [e["handle"] for e in draft["items"] + draft["held_back"] if e["title"] == title]
        assert len(found) == 1, (title, draft)
        return str(found[0])

    def titles(self) -> list[str]:
        return [item["title"] for item in self.draft()["items"]]

    def held(self) -> dict[str, str]:
        return {entry["title"]: entry["reason"] for entry in self.draft()["held_back"]}
