"""WebSub: published Atom feeds name their hubs, and a real hub on 127.0.0.1 is pinged once
per changed feed after a render, never for an unchanged one; a hub that is down or refuses
fails nothing and is told on the next run."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from lxml import etree

from digest.cli import cli
from digest.config import Settings, SiteSettings, StreamSettings
from digest.store import Store
from digest.websub import pending_pings, record_pings, send_pings
from tests.gemini_servers import free_port
from tests.outreach_servers import websub_hub
from tests.validators import validate_atom

# End to end: the CLI publishing the demo site to a real hub.
pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://links.example.org/"
FEEDS = [BASE + "feed.xml", BASE + "gemini-links/feed.xml", BASE + "links/feed.xml"]


def digest(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def demo_with_hubs(tmp_path: Path, *hubs: str) -> Path:
    """The demo (offline, file: feeds) with these WebSub hubs."""
    target = tmp_path / "examples" / "demo"
    shutil.copytree(DEMO, target)
    config = target / "feeds.yaml"
    text = config.read_text()
    hub_list = ", ".join(f'"{hub}"' for hub in hubs)
    config.write_text(text.replace("\nsite:\n", f"\nsite:\n  websub_hubs: [{hub_list}]\n", 1))
    return config


def test_each_changed_feed_is_pinged_once_and_an_unchanged_render_pings_nothing(
    tmp_path: Path,
) -> None:
    with websub_hub(free_port()) as hub, websub_hub(free_port()) as second:
        config = demo_with_hubs(tmp_path, hub.url, second.url)

        first = digest(config, "update")

        assert first.exit_code == 0, first.output
        assert "WebSub: 6 pings sent" in first.output
        for each in (hub, second):
            assert sorted(ping["hub.url"] for ping in each.pings) == FEEDS
            assert {ping["hub.mode"] for ping in each.pings} == {"publish"}
            assert all(ping["agent"].startswith("digest/") for ping in each.pings)

        again = digest(config, "update")
        rerender = digest(config, "render")

        assert again.exit_code == 0 and rerender.exit_code == 0
        assert "WebSub" not in again.output + rerender.output
        assert len(hub.pings) == len(second.pings) == 3


def test_every_atom_feed_names_its_hubs_and_itself(tmp_path: Path) -> None:
    hubs = ("https://hub.example/", "https://pubsubhubbub.example/publish")
    config = demo_with_hubs(tmp_path, *hubs)

    result = digest(config, "render")

    assert result.exit_code == 0, result.output
    assert "WebSub hub https://hub.example/ not told" in result.stderr  # no such host
    for url in FEEDS:
        path = tmp_path / "public" / url.removeprefix(BASE)
        validate_atom(path)
        links = etree.parse(str(path)).getroot().findall(f"{ATOM}link")
        assert [link.get("href") for link in links if link.get("rel") == "hub"] == list(hubs)
        assert [link.get("href") for link in links if link.get("rel") == "self"] == [url]


def test_a_hub_that_is_down_fails_nothing_and_is_told_on_the_next_run(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet
    config = demo_with_hubs(tmp_path, f"http://127.0.0.1:{port}/hub")

    down = digest(config, "update")

    assert down.exit_code == 0, down.output
    assert (tmp_path / "public" / "links" / "feed.xml").is_file()
    problems = down.stderr.splitlines()
    assert len(problems) == 3
    assert all(
        line.startswith(f"WebSub hub http://127.0.0.1:{port}/hub not told of https://")
        and line.endswith("; retried next run")
        for line in problems
    )
    status = digest(config, "status")
    assert "WebSub pings waiting for the next run: 3" in status.output

    with websub_hub(port) as hub:
        hub.status = 503  # up, but refusing: still waiting
        refused = digest(config, "render")
        assert refused.exit_code == 0
        assert refused.stderr.count("HTTP 503: hub trouble; retried next run") == 3

        hub.status = 202
        later = digest(config, "render")  # nothing changed: only the waiting pings

        assert later.exit_code == 0, later.output
        assert "WebSub: 3 pings sent" in later.output
        assert sorted(ping["hub.url"] for ping in hub.pings) == sorted(FEEDS * 2)  # 503, 202
        assert digest(config, "render").output.count("WebSub") == 0
    assert "WebSub pings waiting" not in digest(config, "status").output


@pytest.mark.parametrize("hub", ["ftp://hub.example/", "hub.example"])
def test_a_hub_that_is_no_http_url_is_a_config_error(tmp_path: Path, hub: str) -> None:
    config = demo_with_hubs(tmp_path, hub)

    result = digest(config, "check")

    assert result.exit_code == 2
    assert f"site.websub_hubs: expected an http or https URL of a WebSub hub, got {hub!r}" in (
        result.stderr
    )


def test_a_hub_taken_out_of_the_config_drops_its_waiting_pings(tmp_path: Path) -> None:
    port = free_port()
    config = demo_with_hubs(tmp_path, f"http://127.0.0.1:{port}/hub")
    assert digest(config, "update").exit_code == 0
    assert "WebSub pings waiting for the next run: 3" in digest(config, "status").output
    config.write_text(config.read_text().replace(f'"http://127.0.0.1:{port}/hub"', ""))

    result = digest(config, "render")

    assert result.exit_code == 0 and result.stderr == ""
    assert "WebSub" not in digest(config, "status").output


def test_pings_queue_once_per_hub_and_feed_on_both_databases(store: Store, tmp_path: Path) -> None:
    output = tmp_path / "public"
    with websub_hub(free_port()) as hub:
        settings = Settings(
            site=SiteSettings(title="T", base_url=BASE, output_dir=output, websub_hubs=(hub.url,)),
            streams={"links": StreamSettings()},
        )
        written = [output / "links" / "feed.xml", output / "index.html", output / "feed.xml"]
        now = datetime.now(UTC)

        with store.writing() as session:
            assert record_pings(session, settings, written, now) == 2
        with store.writing() as session:  # already queued: kept once
            assert record_pings(session, settings, written[:1], now) == 1
        assert [(p.hub, p.topic) for p in pending_pings(store)] == [
            (hub.url, BASE + "feed.xml"),
            (hub.url, BASE + "links/feed.xml"),
        ]
        summary = send_pings(store, settings)

    assert sorted(ping.topic for ping in summary.sent) == [
        BASE + "feed.xml",
        BASE + "links/feed.xml",
    ]
    assert summary.failed == ()
    assert sorted(p["hub.url"] for p in hub.pings) == [BASE + "feed.xml", BASE + "links/feed.xml"]
    assert pending_pings(store) == []


def test_a_feed_changed_again_while_its_ping_is_in_flight_is_pinged_again(
    store: Store, tmp_path: Path
) -> None:
    """The hub may have read the feed before the second change: its ping does not count for
    it, so the feed is still queued afterwards."""
    output = tmp_path / "public"
    with websub_hub(free_port()) as hub:
        settings = Settings(
            site=SiteSettings(title="T", base_url=BASE, output_dir=output, websub_hubs=(hub.url,)),
            streams={"links": StreamSettings()},
        )
        written = [output / "links" / "feed.xml"]
        with store.writing() as session:
            record_pings(session, settings, written, datetime.now(UTC))

        def render_meanwhile() -> None:  # a render that changes the feed again
            with store.writing() as session:
                record_pings(session, settings, written, datetime.now(UTC))

        hub.on_ping = render_meanwhile
        first = send_pings(store, settings)
        assert [ping.topic for ping in first.sent] == [BASE + "links/feed.xml"]
        assert [p.topic for p in pending_pings(store)] == [BASE + "links/feed.xml"]

        hub.on_ping = None
        second = send_pings(store, settings)

    assert [ping.topic for ping in second.sent] == [BASE + "links/feed.xml"]
    assert len(hub.pings) == 2
    assert pending_pings(store) == []


def test_a_render_killed_before_its_records_still_pings_the_feeds_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after writing a changed feed, before committing the records (and its pings):
    the next render finds the feed on disk as it would make it and writes nothing, but the
    hubs were never told of the change."""
    from digest import publish

    with websub_hub(free_port()) as hub:
        config = demo_with_hubs(tmp_path, hub.url)
        assert digest(config, "update").exit_code == 0
        assert sorted(ping["hub.url"] for ping in hub.pings) == FEEDS
        before = {url: (tmp_path / "public" / url.removeprefix(BASE)).read_bytes() for url in FEEDS}
        config.write_text(config.read_text().replace("title: Example Links\n", "title: Links!\n"))

        def killed(*_args: object) -> None:
            raise SystemExit(137)  # as kill -9 would: after the files, before the commit

        with monkeypatch.context() as patch:
            patch.setattr(publish, "record_pages", killed)
            assert digest(config, "render").exit_code == 137
        changed = sorted(
            url
            for url in FEEDS
            if (tmp_path / "public" / url.removeprefix(BASE)).read_bytes() != before[url]
        )
        assert changed  # the site's title is in the feeds

        again = digest(config, "render")

    assert again.exit_code == 0, again.output
    assert sorted(ping["hub.url"] for ping in hub.pings[len(FEEDS) :]) == changed
