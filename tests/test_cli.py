"""The `digest` command end to end on the demo feeds: what a user runs from cron."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from digest.cli import cli
from digest.store import EditionRow, EntryRow, Store
from tests.validators import check_gemtext, html_safety_problems, validate_atom

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """The demo, copied two folders deep so its ../../public and ../../build land in tmp_path."""
    target = tmp_path / "examples" / "demo"
    shutil.copytree(DEMO, target)
    return target / "feeds.yaml"


def digest(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def counts(db: Path) -> tuple[int, int]:
    store = Store(f"sqlite:///{db}")
    try:
        with store.reading() as session:
            entries = session.scalar(select(func.count()).select_from(EntryRow)) or 0
            editions = session.scalar(select(func.count()).select_from(EditionRow)) or 0
    finally:
        store.close()
    return entries, editions


def test_update_publishes_the_demo_site(demo: Path, tmp_path: Path) -> None:
    result = digest("--config", str(demo), "update")
    assert result.exit_code == 0, result.output
    assert "polled 7 feeds: 7 fetched" in result.output
    public = tmp_path / "public"
    for name in ("index.html", "index.gmi", "feed.xml", "links/feed.xml", "gemini-links/index.gmi"):
        assert (public / name).is_file(), name
    for stream in ("links", "gemini-links"):
        assert list((public / stream).glob("*/*/*/1.html")), stream
        assert list((public / stream).glob("*/*/*/1.gmi")), stream
    validate_atom(public / "feed.xml")
    validate_atom(public / "links" / "feed.xml")
    index = (public / "index.html").read_text()
    assert "Links for the day" in index
    assert "Ten Years of Daily Links" in index  # an own post among the recent posts
    # Stored, but the demo blocks its domain (block_domains): no page links it.
    assert counts(tmp_path / "build" / "demo.db") == (31, 2)
    assert not [p for p in public.rglob("*.*") if b"content-farm.example" in p.read_bytes()]


def test_a_second_update_on_unchanged_feeds_adds_nothing(demo: Path, tmp_path: Path) -> None:
    assert digest("--config", str(demo), "update").exit_code == 0
    before = counts(tmp_path / "build" / "demo.db")
    again = digest("--config", str(demo), "poll", "--all")
    assert "0 new entries" in again.output and again.exit_code == 0
    result = digest("--config", str(demo), "update")
    assert result.exit_code == 0
    assert "no new editions" in result.output
    assert "rendered 0 files" in result.output  # nothing new: no file rewritten
    assert counts(tmp_path / "build" / "demo.db") == before


def test_hostile_feed_text_is_harmless_in_every_format(demo: Path, tmp_path: Path) -> None:
    hostile = Path(__file__).parent / "data" / "parse" / "hostile.xml"
    shutil.copy(hostile, demo.parent / "feeds" / "misc.xml")
    result = digest("--config", str(demo), "update")
    assert result.exit_code == 0, result.output
    public = tmp_path / "public"
    for page in public.rglob("*.html"):
        problems = html_safety_problems(page.read_text())
        assert problems == [], (page, problems)
    for page in public.rglob("*.gmi"):
        lines = check_gemtext(page.read_text())  # no preformat, absolute links, no controls
        for line in lines:
            # a hostile title may sit in a link label, never make a line of its own
            if line.kind == "link":
                assert "evil.example" not in (line.url or ""), (page, line)
            if line.kind == "heading":
                assert "Fake heading" not in line.text, (page, line)
    validate_atom(public / "links" / "feed.xml")


def test_config_errors_exit_2_with_lines_and_write_nothing(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "site:\n"
        "  title: T\n"
        "  base_url: https://example.org/\n"
        "  colour: blue\n"
        "streams:\n"
        "  links: {summary: Links, min_items: many}\n"
        "feeds:\n"
        "  - {url: 'https://example.net/feed', stream: linx}\n"
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "update"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{config}:4: site.colour: unknown key",
        f"{config}:6: streams.links.min_items: Input should be a valid integer, unable to parse "
        "string as an integer",
        f"{config}:8: feeds[0].stream: unknown stream 'linx' (known: links)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feeds.yaml"]


def test_check_reports_what_it_found(demo: Path) -> None:
    result = digest("--config", str(demo), "check")
    assert result.exit_code == 0
    assert "stream links: 4 feeds" in result.output
    assert "stream gemini-links: 2 feeds" in result.output
    assert "own feeds: 1" in result.output


def test_a_bad_test_hook_in_the_environment_is_one_line_and_exit_2(demo: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(demo), "check"], env={"DIGEST_TEST_LEASE": "soon"}
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "environment variable DIGEST_TEST_LEASE='soon': "
        "expected a duration such as 30m, 2h or 1d, got 'soon'\n"
    )


def test_a_broken_feed_is_reported_and_the_others_go_on(demo: Path, tmp_path: Path) -> None:
    (demo.parent / "feeds" / "misc.xml").unlink()
    (demo.parent / "feeds" / "speech.atom").write_text("<html><body>Not a feed</body></html>")
    result = digest("--config", str(demo), "update")
    assert result.exit_code == 1
    assert "2 failed" in result.output
    assert "The Leftover Bin <file://" in result.stderr and "file not found" in result.stderr
    feeds = json.loads(digest("--config", str(demo), "feeds", "--json").output)
    by_name = {feed["name"]: feed for feed in feeds}
    assert {"name", "url", "stream", "entries", "last_ok", "last_error", "disabled"} <= set(
        by_name["Security Ledger"]
    )
    assert by_name["Security Ledger"]["entries"] == 7 and by_name["Security Ledger"]["last_ok"]
    assert "file not found" in by_name["The Leftover Bin"]["last_error"]
    assert by_name["Free Speech Watch"]["last_error"].startswith("not a feed")
    assert by_name["The Leftover Bin"]["last_ok"] is None
    assert (tmp_path / "public" / "links" / "feed.xml").is_file()  # the rest was published


def test_feeds_table_and_db_upgrade(demo: Path) -> None:
    assert digest("--config", str(demo), "db", "upgrade").exit_code == 0
    result = digest("--config", str(demo), "feeds")
    assert result.exit_code == 0
    assert "Security Ledger" in result.output and "never polled" in result.output


def test_the_console_script_runs_with_digest_config_from_the_environment(demo: Path) -> None:
    script = Path(sys.executable).parent / "digest"
    done = subprocess.run(
        [str(script), "check"],
        capture_output=True,
        text=True,
        env={"DIGEST_CONFIG": str(demo)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    usage = subprocess.run([str(script), "frobnicate"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2


# --- issue 16, item 8: one line and exit 2 where a traceback was -------------------------


def test_a_config_that_is_not_utf8_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_bytes((DEMO / "feeds.yaml").read_text().encode("utf-16"))
    result = CliRunner().invoke(cli, ["--config", str(config), "check"])
    assert result.exit_code == 2, result.output
    assert result.output == f"{config}: the file is UTF-16 (or has NUL bytes): save it as UTF-8\n"


def test_an_unwritable_state_dir_exits_2_with_one_line(demo: Path, tmp_path: Path) -> None:
    # A file where the folder should be: as unusable as a read-only folder, also for root.
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    text = demo.read_text().replace("state_dir: ../../build/state", f"state_dir: {blocked}/state")
    demo.write_text(text)
    result = CliRunner().invoke(cli, ["--config", str(demo), "update"])
    assert result.exit_code == 2, result.output
    assert f"{demo}: site.state_dir {blocked}/state: cannot write there (Not a directory)" in (
        result.output
    )


def test_a_broken_site_template_is_one_line_with_its_line_and_half_publishes_nothing(
    demo: Path, tmp_path: Path
) -> None:
    """A template of site.templates is the site's input like feeds.yaml: an error in it names
    the file and line (exit 2) and the pages published stay as they were (a template that does
    not compile stops the render before it writes anything) until it is fixed."""
    assert digest("--config", str(demo), "update").exit_code == 0
    public = tmp_path / "public"
    before = {p: p.read_bytes() for p in public.rglob("*") if p.is_file()}
    mine = demo.parent / "mine"
    mine.mkdir()
    demo.write_text(demo.read_text().replace("\nsite:\n", "\nsite:\n  templates: mine\n", 1))
    page = mine / "edition.html"
    cases = {
        "{% extends 'base.html' %}\n{% block main %}\n{% if %}\n{% endblock %}\n": (
            f"{page}:3: Expected an expression, got 'end of statement block'"
        ),
        "{% extends 'base.html' %}\n{% block main %}\n\n{{ edition.nope }}\n{% endblock %}\n": (
            f"{page}:4: 'digest.views.EditionView object' has no attribute 'nope'"
        ),
        "\xff{{ edition.title }}\n": "edition.html is not UTF-8",
    }
    for text, said in cases.items():
        page.write_bytes(text.encode("latin-1"))
        result = digest("--config", str(demo), "render", "--full")
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"cannot render the site: template {said}")
    assert {p: p.read_bytes() for p in public.rglob("*") if p.is_file()} == before

    page.write_text("{% extends 'base.html' %}\n{% block main %}<p id=mine>{% endblock %}\n")
    result = digest("--config", str(demo), "render")
    assert result.exit_code == 0, result.output
    edition = next((public / "links").glob("*/*/*/1.html"))
    assert "<p id=mine>" in edition.read_text()
