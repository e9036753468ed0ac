"""OPML in and out: `digest import` and `digest export` on real files, the published blogroll,
and an export made by a real feed reader (newsboat) imported."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from lxml import etree

from digest.cli import cli
from digest.store import FeedRow, Store
from tests.validators import require_tool

NS = "{https://example.org/digest#opml}"

HEAD = """\
# The site's config: comments, quotes and layout must survive an import.
site:
  title: Example Links
  base_url: https://links.example.org/
  output_dir: public
  database: sqlite:///digest.db

streams:
  links:
    title: "Links {date:%d/%m/%Y}: {headlines}"   # the edition's title
    summary: Links for the day
    sections: [Leftovers, Science, Security]
  gemini-links:
    title: "Gemini Links {date:%d/%m/%Y}: {headlines}"
    sections: [Gemlogs]
    default_section: Gemlogs

"""

FEEDS = """\
feeds:
  # science first
  - {url: "https://science.example/feed.xml", name: Science Daily, stream: links, section: Science}
  - {url: "https://sec.example/atom", name: "Sec: Ledger", stream: links, section: Security}
  - {url: "https://misc.example/rss", name: Misc, stream: links}
  - {url: "gemini://capsule.example/gemlog/", name: A Capsule, stream: gemini-links}
  - {url: "https://links.example.org/own.xml", name: Our Posts, own: true}
"""


def digest(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def outlines(opml: bytes) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """Every outline as (the texts of the folders it is in, its attributes), in order."""
    found: list[tuple[tuple[str, ...], dict[str, str]]] = []

    def walk(element: etree._Element, folders: tuple[str, ...]) -> None:
        for child in element.iterchildren("outline"):
            found.append((folders, dict(child.attrib)))
            walk(child, (*folders, child.get("text", "")))

    root = etree.fromstring(opml)
    assert root.tag == "opml" and root.get("version") == "2.0"
    walk(root.find("body"), ())
    return found


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(HEAD + FEEDS)
    return path


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty" / "feeds.yaml"
    path.parent.mkdir()
    path.write_text(HEAD + "feeds: []   # none yet\n")
    return path


def test_export_import_export_gives_the_same_outlines(config: Path, empty: Path) -> None:
    exported = digest(config, "export", "--opml")
    assert exported.exit_code == 0, exported.output
    first = outlines(exported.stdout_bytes)
    (empty.parent / "ours.opml").write_bytes(exported.stdout_bytes)

    imported = digest(empty, "import", str(empty.parent / "ours.opml"))

    assert imported.exit_code == 0, imported.output
    assert "added 5 feeds, skipped 0" in imported.output
    again = digest(empty, "export")
    assert outlines(again.stdout_bytes) == first
    # Streams, sections and the own mark as they were.
    feeds = {attrs["xmlUrl"]: (folders, attrs) for folders, attrs in first if "xmlUrl" in attrs}
    assert feeds["https://science.example/feed.xml"][0] == ("Links", "Science")
    assert feeds["https://misc.example/rss"][0] == ("Links",)
    assert feeds["gemini://capsule.example/gemlog/"][0] == ("Gemini Links",)
    assert feeds["https://links.example.org/own.xml"][1][f"{NS}own"] == "true"
    assert feeds["https://sec.example/atom"][1]["text"] == "Sec: Ledger"


def test_import_keeps_the_file_as_written_and_appends_in_its_style(
    config: Path, tmp_path: Path
) -> None:
    before = config.read_text()
    opml = tmp_path / "new.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head><body>'
        '<outline text="Science"><outline type="rss" text="Nature" xmlUrl="https://nature.example/rss"/>'
        "</outline>"
        '<outline type="rss" text="Plain" xmlUrl="https://plain.example/feed"/>'
        "</body></opml>"
    )

    result = digest(config, "import", str(opml), "--stream", "links")

    assert result.exit_code == 0, result.output
    after = config.read_text()
    assert after.startswith(before)  # every comment, quote and line as it was
    assert after[len(before) :] == (
        '  - {url: "https://nature.example/rss", name: Nature, stream: links, section: Science}\n'
        '  - {url: "https://plain.example/feed", name: Plain, stream: links}\n'
    )
    assert digest(config, "check").exit_code == 0


def test_duplicates_are_skipped_and_reported(config: Path, tmp_path: Path) -> None:
    opml = tmp_path / "dups.opml"
    opml.write_text(
        '<opml version="1.0"><body>'
        '<outline type="rss" title="Again" xmlUrl="https://SCIENCE.example/feed.xml"/>'
        '<outline type="rss" title="New" xmlUrl="https://new.example/feed"/>'
        '<outline type="rss" title="New twice" xmlUrl="https://new.example/feed"/>'
        '<outline type="rss" title="Not a feed" xmlUrl="javascript:alert(1)"/>'
        "</body></opml>"
    )

    result = digest(config, "import", str(opml), "--stream", "links", "--section", "Security")

    assert result.exit_code == 0, result.output
    assert "added 1 feeds, skipped 3" in result.output
    assert "skipped https://SCIENCE.example/feed.xml: already in feeds.yaml" in result.output
    assert "skipped https://new.example/feed: listed twice in the OPML" in result.output
    assert "skipped javascript:alert(1): not a feed URL" in result.output
    text = config.read_text()
    assert text.count("new.example") == 1
    assert '{url: "https://new.example/feed", name: New, stream: links, section: Security}' in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<opml version="2.0"><body><outline xmlUrl="https://a.example/"', "not well-formed XML"),
        ("<rss><channel/></rss>", "not an OPML file (its root element is <rss>)"),
        ('<opml version="2.0"><head/></opml>', "not an OPML file (it has no <body>)"),
        (
            '<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaa">]>'
            '<opml version="2.0"><body><outline text="&a;" xmlUrl="https://a.example/"/></body>'
            "</opml>",
            "declares XML entities",
        ),
        ("", "not well-formed XML"),
    ],
)
def test_a_malformed_opml_is_one_line_and_leaves_feeds_yaml_untouched(
    config: Path, tmp_path: Path, body: str, message: str
) -> None:
    before = config.read_bytes()
    opml = tmp_path / "bad.opml"
    opml.write_text(body)

    result = digest(config, "import", str(opml), "--stream", "links")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"{opml}: ") and message in result.stderr
    assert config.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_feeds_without_a_stream_and_unknown_names_are_errors(config: Path, tmp_path: Path) -> None:
    before = config.read_bytes()
    opml = tmp_path / "loose.opml"
    opml.write_text(
        '<opml version="2.0"><body><outline text="Tech">'
        '<outline type="rss" text="A" xmlUrl="https://a.example/feed"/></outline></body></opml>'
    )

    loose = digest(config, "import", str(opml))
    unknown_stream = digest(config, "import", str(opml), "--stream", "linx")
    unknown_section = digest(config, "import", str(opml), "--stream", "links", "--section", "Art")
    missing = digest(config, "import", str(tmp_path / "nowhere.opml"))

    assert loose.exit_code == 2
    assert loose.stderr == (
        "1 feeds are in no stream's folder (first: https://a.example/feed): "
        "choose one with --stream NAME (known: links, gemini-links)\n"
    )
    assert unknown_stream.exit_code == 2
    assert "--stream: unknown stream 'linx'" in unknown_stream.stderr
    assert unknown_section.exit_code == 2
    assert "--section: 'Art' is not a section of stream links" in unknown_section.stderr
    assert missing.exit_code == 2
    assert "nowhere.opml: cannot read: No such file or directory" in missing.stderr
    assert config.read_bytes() == before


def test_an_export_by_newsboat_imports(empty: Path, tmp_path: Path) -> None:
    newsboat = require_tool("newsboat")
    home = tmp_path / "newsboat"
    home.mkdir()
    (home / "urls").write_text(
        'https://one.example/feed.xml tech "~One Blog"\n'
        "https://two.example/atom.xml science\n"
        'gemini://three.example/gemlog/ "~Three & Co"\n'
    )
    (home / "config").write_text("")
    export = subprocess.run(
        [newsboat, "-e", "-u", "urls", "-c", "cache.db", "-C", "config"],
        cwd=home,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert b"<opml" in export.stdout
    opml = tmp_path / "newsboat.opml"
    opml.write_bytes(export.stdout)

    result = digest(empty, "import", str(opml), "--stream", "links", "--section", "Science")

    assert result.exit_code == 0, result.output
    assert "added 3 feeds, skipped 0" in result.output
    assert digest(empty, "check").exit_code == 0
    feeds = {
        attrs["xmlUrl"]: (folders, attrs["text"])
        for folders, attrs in outlines(digest(empty, "export").stdout_bytes)
        if "xmlUrl" in attrs
    }
    assert feeds == {
        "https://one.example/feed.xml": (("Links", "Science"), "One Blog"),
        "https://two.example/atom.xml": (("Links", "Science"), "two.example"),
        "gemini://three.example/gemlog/": (("Links", "Science"), "Three & Co"),
    }


def test_render_publishes_the_blogroll_with_own_and_disabled_feeds_marked(
    config: Path, tmp_path: Path
) -> None:
    first = digest(config, "render")
    assert first.exit_code == 0, first.output
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    try:
        with store.writing() as session:
            row = session.query(FeedRow).filter_by(config_url="https://misc.example/rss").one()
            row.disabled_reason = "gone (410)"
    finally:
        store.close()

    second = digest(config, "render")

    assert second.exit_code == 0, second.output
    published = (tmp_path / "public" / "feeds.opml").read_bytes()
    assert published == digest(config, "export").stdout_bytes
    attrs = {a["xmlUrl"]: a for _, a in outlines(published) if "xmlUrl" in a}
    assert attrs["https://misc.example/rss"][f"{NS}disabled"] == "gone (410)"
    assert attrs["https://links.example.org/own.xml"][f"{NS}own"] == "true"
    assert f"{NS}disabled" not in attrs["https://science.example/feed.xml"]
    index = (tmp_path / "public" / "index.html").read_text()
    assert '<a href="https://links.example.org/feeds.opml" type="text/x-opml">' in index
    assert (
        "=> https://links.example.org/feeds.opml "
        in (tmp_path / "public" / "index.gmi").read_text()
    )
    # An unchanged feed list is not rewritten.
    assert digest(config, "render").output.startswith("rendered 0 files")


def test_file_feeds_are_named_in_the_blogroll_without_their_paths(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(HEAD + 'feeds:\n  - {url: "file:local.xml", name: Local, stream: links}\n')

    assert digest(path, "render").exit_code == 0

    published = (tmp_path / "public" / "feeds.opml").read_bytes()
    assert str(tmp_path).encode() not in published
    assert ((("Links",), {"text": "Local", "title": "Local", f"{NS}local": "true"})) in outlines(
        published
    )
    assert (tmp_path / "local.xml").as_uri() in digest(path, "export").stdout


def test_digest_serve_names_the_blogroll_as_opml() -> None:
    from digest.serve import content_type

    assert content_type(Path("public/feeds.opml")) == "text/x-opml; charset=utf-8"


def test_the_blogroll_shows_no_paths_or_credentials_of_unnamed_feeds(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        HEAD + "feeds:\n"
        '  - {url: "file:unnamed.xml", stream: links}\n'
        '  - {url: "https://reader:s3cret@private.example/feed", stream: links}\n'
    )

    assert digest(path, "render").exit_code == 0

    published = (tmp_path / "public" / "feeds.opml").read_bytes()
    assert str(tmp_path).encode() not in published
    assert b"s3cret" not in published and b"reader:" not in published
    feeds = [a for _, a in outlines(published) if f"{NS}local" in a or "xmlUrl" in a]
    assert [(a["text"], a.get("xmlUrl")) for a in feeds] == [
        ("unnamed.xml", None),
        ("private.example", "https://private.example/feed"),
    ]
    # Nor do the pages, which name an item's feed the same way.
    pages = [page for page in (tmp_path / "public").rglob("*") if page.is_file()]
    assert not any(b"s3cret" in page.read_bytes() for page in pages)
    # The owner's own export keeps the URLs as configured.
    assert "https://reader:s3cret@private.example/feed" in digest(path, "export").stdout


def test_an_opml_cannot_make_digest_read_local_files(config: Path, tmp_path: Path) -> None:
    """An OPML is someone else's list: its file: URLs would have the server read (and publish,
    if it parses) any file it can open."""
    secret = tmp_path / "private" / "feed.xml"
    opml = tmp_path / "planet.opml"
    opml.write_text(
        '<opml version="2.0"><body>'
        f'<outline type="rss" text="Secret" xmlUrl="{secret.as_uri()}"/>'
        '<outline type="rss" text="Relative" xmlUrl="file:../etc/feed.xml"/>'
        '<outline type="rss" text="Web" xmlUrl="https://web.example/feed"/>'
        "</body></opml>"
    )
    before = config.read_text()

    result = digest(config, "import", str(opml), "--stream", "links")

    assert result.exit_code == 0, result.output
    assert "added 1 feeds, skipped 2" in result.output
    assert f"skipped {secret.as_uri()}: a local file" in result.output
    assert "skipped file:../etc/feed.xml: a local file" in result.output
    assert config.read_text().startswith(before.rstrip("\n"))
    assert "file:" not in config.read_text() and "web.example" in config.read_text()


@pytest.mark.parametrize("layout", ["flow", "block"])
def test_feed_names_yaml_would_read_as_other_values_are_quoted(layout: str, tmp_path: Path) -> None:
    """feeds.yaml is read as YAML 1.1, where yes, on and off are booleans: a feed named so
    must be written quoted, or the import fails on the file it just wrote."""
    path = tmp_path / "feeds.yaml"
    first = (
        '  - {url: "https://a.example/feed", stream: links}\n'
        if layout == "flow"
        else "  - url: https://a.example/feed\n    stream: links\n"
    )
    path.write_text(HEAD + "feeds:\n" + first)
    names = ["Yes", "on", "OFF", "null", "2600", "1.5", "~", "2025-03-28", "#hashtags", "@home"]
    opml = tmp_path / "names.opml"
    opml.write_text(
        '<opml version="2.0"><body>'
        + "".join(
            f'<outline type="rss" text="{name}" xmlUrl="https://{n}.example/feed"/>'
            for n, name in enumerate(names)
        )
        + "</body></opml>"
    )

    result = digest(path, "import", str(opml), "--stream", "links")

    assert result.exit_code == 0, result.output
    assert f"added {len(names)} feeds" in result.output
    from digest.config import load_config

    feeds = load_config(path).settings.feeds[1:]
    assert [feed.name for feed in feeds] == names
    assert path.read_text().startswith(HEAD + "feeds:\n" + first)
