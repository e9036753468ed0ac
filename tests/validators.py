"""Checks shared by the tests: Atom against the RELAX NG schema and feedparser, gemtext line
types, HTML through the Nu Html Checker, and no script vectors in HTML.

External programs are optional on a developer machine (the test skips) but required in CI
(CI=true: the test fails), so a CI image that lost a tool cannot pass by skipping.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NoReturn

import feedparser
import pytest
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
ATOM_RNG = Path(__file__).resolve().parent / "schemas" / "atom.rng"  # RFC 4287, Appendix B
VNU_JAR = REPO / ".tools" / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"


def tool_missing(what: str) -> NoReturn:
    """Skip without the tool, except in CI where a missing tool is a broken image."""
    message = f"{what} is not installed (run .ci/system-deps.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The path of program `name`, or skip/fail as tool_missing says."""
    path = shutil.which(name)
    if path is None:
        tool_missing(name)
    return path


# --- Atom -------------------------------------------------------------------------------


@cache
def _atom_schema() -> Any:
    return etree.RelaxNG(etree.parse(str(ATOM_RNG)))


def validate_atom(source: Path | bytes) -> Any:
    """Assert the feed is valid Atom 1.0 and feedparser reads it cleanly; return the parse."""
    data = source.read_bytes() if isinstance(source, Path) else source
    schema = _atom_schema()
    document = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False))
    if not schema.validate(document):
        errors = "\n".join(str(error) for error in schema.error_log)
        raise AssertionError(f"Atom does not match atom.rng:\n{errors}")
    parsed = feedparser.parse(io.BytesIO(data))
    assert parsed.bozo == 0, f"feedparser bozo: {parsed.get('bozo_exception')!r}"
    assert parsed.version == "atom10", parsed.version
    return parsed


# --- gemtext ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GemLine:
    kind: str  # text, link, heading, list, quote, preformat-toggle, preformatted
    text: str  # the whole line
    url: str | None = None  # link lines
    label: str | None = None  # link lines


_LINK = re.compile(r"=>[ \t]*(\S+)(?:[ \t]+(.*))?")


def classify_gemtext(text: str) -> list[GemLine]:
    """Each line's type as a client following the gemtext spec reads it."""
    lines: list[GemLine] = []
    preformatted = False
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        if line.startswith("```"):
            preformatted = not preformatted
            lines.append(GemLine("preformat-toggle", line))
        elif preformatted:
            lines.append(GemLine("preformatted", line))
        elif line.startswith("=>"):
            match = _LINK.fullmatch(line)
            assert match, f"malformed link line: {line!r}"
            lines.append(GemLine("link", line, match.group(1), match.group(2) or ""))
        elif line.startswith("#"):
            lines.append(GemLine("heading", line))
        elif line.startswith("* "):
            lines.append(GemLine("list", line))
        elif line.startswith(">"):
            lines.append(GemLine("quote", line))
        else:
            lines.append(GemLine("text", line))
    return lines


_BAD_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def check_gemtext(
    text: str,
    expected_links: Sequence[tuple[str, str]] | None = None,
    *,
    expected_headings: Sequence[str] | None = None,
    expected_quotes: Sequence[str] | None = None,
    expected_list: Sequence[str] | None = None,
) -> list[GemLine]:
    """Assert the page's lines are exactly the structure we meant: every link, heading, quote
    and list line listed (in order) when expected_*, so a feed text that turned into a line of
    its own fails; no preformatting at all; absolute link URLs; no control or bidi characters."""
    assert text.endswith("\n"), "gemtext must end with a newline"
    assert "\r" not in text, "bare CR in gemtext"
    bad = _BAD_CHARS.search(text)
    assert bad is None, f"control or bidi character {bad.group()!r} in gemtext"
    lines = classify_gemtext(text)

    def of(kind: str) -> list[GemLine]:
        return [line for line in lines if line.kind == kind]

    assert not of("preformat-toggle"), "unexpected preformat toggle"
    for link in of("link"):
        assert link.url and re.match(r"(gemini|https?)://[^/\s]", link.url), link.text
    if expected_links is not None:
        assert [(line.url, line.label) for line in of("link")] == list(expected_links)
    if expected_headings is not None:
        assert [line.text for line in of("heading")] == list(expected_headings)
    if expected_quotes is not None:
        assert [line.text for line in of("quote")] == list(expected_quotes)
    if expected_list is not None:
        assert [line.text for line in of("list")] == list(expected_list)
    return lines


# --- HTML -------------------------------------------------------------------------------


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "iframe", "object", "embed", "form", "base"}:
            self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"event handler attribute {name}= on <{tag}>")
            if name in {"href", "src", "action", "formaction", "srcset", "xlink:href"} and value:
                scheme = re.sub(r"[\x00-\x20]", "", value).split(":", 1)[0].lower()
                if ":" in value and scheme in {"javascript", "data", "vbscript"}:
                    self.problems.append(f"{scheme}: URL in {name}= on <{tag}>")


def html_safety_problems(html: str) -> list[str]:
    """Script vectors in a page: script-like elements, on*= handlers, javascript:/data: URLs."""
    scan = _Scan()
    scan.feed(html)
    scan.close()
    return scan.problems


def run_vnu(paths: Iterable[Path]) -> None:
    """Assert the Nu Html Checker finds no error in the pages."""
    java = require_tool("java")
    if not VNU_JAR.is_file():
        tool_missing(f"vnu.jar ({VNU_JAR})")
    files = [str(path) for path in paths]
    assert files, "no HTML files to check"
    result = subprocess.run(
        [java, "-jar", str(VNU_JAR), "--errors-only", "--format", "gnu", *files],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"vnu found errors:\n{result.stderr}{result.stdout}"


def newsboat_reload(home: Path, feeds: Sequence[str]) -> Path:
    """One `newsboat -x reload` of `feeds` with its files in `home`; returns its cache file."""
    newsboat = require_tool("newsboat")
    (home / "urls").write_text("".join(f"{url}\n" for url in feeds))
    (home / "config").write_text("")
    result = subprocess.run(
        [newsboat, "-x", "reload", "-u", "urls", "-c", "cache.db", "-C", "config"],
        cwd=home,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return home / "cache.db"
