"""Real clients read what the render stage publishes: newsboat subscribes to the Atom feeds,
Chromium lays the pages out on a 400px phone screen, w3m reads them as text.

Each test skips without its program, except in CI (CI=true) where it fails.
"""

from __future__ import annotations

import functools
import html
import json
import re
import sqlite3
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from digest.editions import Edition, EditionItem, EditionSection
from digest.parse.text import clean_text
from digest.parse.urls import safe_url
from digest.render import render_site
from digest.views import SiteContent, StreamContent
from tests.site_content import sample_content
from tests.validators import newsboat_reload, require_tool

# End to end: real clients (Chromium, newsboat) read the published site.
pytestmark = pytest.mark.slow


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its URL (ending in "/")."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def content_at(base_url: str) -> SiteContent:
    return replace(sample_content(), base_url=base_url)


# --- newsboat ---------------------------------------------------------------------------


def newsboat_items(home: Path, feeds: list[str]) -> dict[str, list[tuple[str, str, str, str]]]:
    """Run `newsboat -x reload` on the feeds; the cache's items per feed URL."""
    newsboat_reload(home, feeds)
    with sqlite3.connect(home / "cache.db") as db:
        rows = db.execute(
            "SELECT feedurl, guid, title, url, content FROM rss_item ORDER BY pubDate DESC"
        ).fetchall()
    items: dict[str, list[tuple[str, str, str, str]]] = {url: [] for url in feeds}
    for feedurl, guid, title, url, body in rows:
        items[feedurl].append((guid, title, url, body))
    return items


def test_newsboat_reads_every_edition_and_keeps_ids_stable(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = served
    content = content_at(url)
    render_site(content, root)
    home = tmp_path / "home"
    home.mkdir()
    feeds = [url + "links/feed.xml", url + "gemini-links/feed.xml", url + "feed.xml"]

    items = newsboat_items(home, feeds)

    for stream in content.streams:
        got = items[f"{url}{stream.name}/feed.xml"]
        page_urls = [f"{url}{edition.path}.html" for edition in stream.editions]
        assert [(guid, title, link) for guid, title, link, _ in got] == [
            (page, clean_text(edition.title), page)
            for page, edition in zip(page_urls, stream.editions, strict=True)
        ]
        for (_, _, _, body), edition in zip(got, stream.editions, strict=True):
            assert "<script" not in body.lower()
            for section in edition.sections:
                assert html.escape(clean_text(section.name), quote=False) in body
    assert [title for _, title, _, _ in items[url + "feed.xml"]] == [
        clean_text(post.title) for post in content.recent if safe_url(post.url)
    ]

    # A new edition later: subscribers see exactly one more item, no duplicates.
    links, gemini = content.streams
    t = datetime(2025, 6, 3, 12, tzinfo=UTC)
    new = Edition(
        "links",
        date(2025, 6, 3),
        1,
        "Links 03/06/2025: Next",
        "Links for the day",
        t,
        (EditionSection("Science", (EditionItem("A", "B", "https://a.example/", "C", t),)),),
    )
    later = replace(
        content,
        streams=[StreamContent("links", "Links", links.summary, [new, *links.editions]), gemini],
    )
    render_site(later, root)
    again = newsboat_items(home, feeds)
    assert len(again[url + "links/feed.xml"]) == len(links.editions) + 1
    assert again[url + "links/feed.xml"][0][:3] == (
        f"{url}links/2025/06/03/1.html",
        "Links 03/06/2025: Next",
        f"{url}links/2025/06/03/1.html",
    )
    assert again[url + "gemini-links/feed.xml"] == items[url + "gemini-links/feed.xml"]


# --- Chromium ---------------------------------------------------------------------------

PAGES = ["links/2025/03/28/1.html", "links/index.html", "index.html", "gemini-links/index.html"]

# Test-only page (our pages carry no script): loads each page in a 400px iframe from the same
# origin and writes what it measured into the DOM, which --dump-dom prints.
HARNESS = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>layout harness</title></head>
<body><pre id="result">pending</pre>
<script>
const pages = %s;
const results = {};
let left = pages.length;
for (const page of pages) {
  const frame = document.createElement("iframe");
  frame.style.cssText = "width: 400px; height: 900px; border: 0";
  frame.onload = () => {
    const doc = frame.contentDocument;
    const width = doc.documentElement.clientWidth;
    const blocks = Array.from(doc.querySelectorAll("h1, h2, .item, li, blockquote"));
    results[page] = {
      scrollWidth: doc.documentElement.scrollWidth,
      clientWidth: width,
      bodyMaxWidth: getComputedStyle(doc.body).maxWidth,
      scripts: doc.scripts.length,
      blocks: blocks.length,
      hidden: blocks.filter(e => {
        const r = e.getBoundingClientRect();
        return r.width <= 0 || r.height <= 0 || r.left < 0 || r.right > width;
      }).map(e => e.outerHTML.slice(0, 120)),
    };
    if (--left === 0) document.getElementById("result").textContent = JSON.stringify(results);
  };
  frame.src = "public/" + page;
  document.body.appendChild(frame);
}
</script></body></html>
"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("chromium")
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=400,900",
            "--virtual-time-budget=10000",
            *args,
        ],
        env={"HOME": str(profile), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_chromium_lays_pages_out_on_a_phone_without_horizontal_scroll(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = served
    render_site(content_at(url + "public/"), root / "public")
    (root / "harness.html").write_text(HARNESS % json.dumps(PAGES))

    result = chromium(tmp_path / "profile", "--dump-dom", url + "harness.html")

    match = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, re.S)
    assert match and match.group(1) != "pending", result.stdout[-2000:] + result.stderr[-2000:]
    measured = json.loads(html.unescape(match.group(1)))
    assert sorted(measured) == sorted(PAGES)
    for page, m in measured.items():
        assert m["scripts"] == 0, page
        assert m["bodyMaxWidth"] != "none", f"{page}: style.css not applied"
        assert 300 < m["clientWidth"] <= 400, page
        assert m["scrollWidth"] <= m["clientWidth"], f"{page} scrolls sideways: {m}"
        assert m["blocks"] > 0 and m["hidden"] == [], f"{page}: {m['hidden']}"
    # The edition page shows every item: 2 + 10 + 2 + 1 in the sample.
    assert measured[PAGES[0]]["blocks"] >= 15


def test_chromium_screenshot_at_phone_width(served: tuple[Path, str], tmp_path: Path) -> None:
    """Saves tmp/edition-400px.png to look at; checks it is a real 400px-wide picture."""
    root, url = served
    render_site(content_at(url), root)
    shot = tmp_path / "edition-400px.png"

    result = chromium(tmp_path / "profile", f"--screenshot={shot}", url + PAGES[0])

    assert shot.is_file(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (400, 900)
    assert len(data) > 10_000  # a blank page compresses to almost nothing


# --- text browser -----------------------------------------------------------------------


def test_text_browser_reads_an_edition_in_order(tmp_path: Path) -> None:
    w3m = require_tool("w3m")
    content = sample_content()
    render_site(content, tmp_path)
    page = tmp_path / "links/2025/03/28/1.html"

    result = subprocess.run(
        [w3m, "-dump", "-cols", "80", "-T", "text/html", "-O", "UTF-8", str(page)],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    text = result.stdout
    edition = content.streams[0].editions[2]
    wanted = [
        clean_text(edition.title),
        "28 March 2025, 12:00 GMT",
        "Contents",
        *(clean_text(s.name) for s in edition.sections),
        "Example Net ☛ A Comet",
        "It is bright.",
        "Source 0 ☛ <script>alert(1)</script>",
        "No Link Site ☛ No link here",
    ]
    position = 0
    for piece in wanted:
        found = text.find(piece, position)
        assert found >= 0, f"{piece!r} missing or out of order in:\n{text}"
        position = found + len(piece)
