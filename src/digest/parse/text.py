"""Plain text from feed text and HTML: the one place that decides what a line of output may hold.

The parse stage makes titles, blurbs and names plain text here; render folds the same way
whatever reaches a page, so the two can never disagree about a control character.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping

import nh3

BLURB_WORDS = 60
BLURB_CHARS = 500  # text without spaces (CJK) would otherwise be one endless "word"

_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_NONCHARACTERS = (
    *range(0xFDD0, 0xFDF0),
    *(plane * 0x10000 + low for plane in range(17) for low in (0xFFFE, 0xFFFF)),
)
# C0 controls and lone surrogates (JSON escapes can carry them; they cannot be encoded).
_CONTROLS = (*range(0x20), 0x7F, *range(0xD800, 0xE000))
# C1 controls never mean themselves in feed text: they are Windows-1252 punctuation (an en
# dash written as &#150;, a curly quote as byte 0x92) that went through a Latin-1 step, and
# browsers read them so. The five bytes Windows-1252 leaves undefined are dropped.
_C1_AS_WINDOWS_1252 = {
    cp: None if char == "\ufffd" else char
    for cp in range(0x80, 0xA0)
    for char in [bytes([cp]).decode("cp1252", "replace")]
}
# Plain text loses the controls, the bidi controls, the noncharacters and the invisible
# byte-order mark (some of these are invalid in XML, the others reorder or hide text); the
# spacing controls (tab, newline, ...) are left for str.split to fold.
_DROP: dict[int, str | None] = {cp: None for cp in _CONTROLS if not chr(cp).isspace()}
_DROP |= {ord(c): None for c in _BIDI_CONTROLS + "\ufeff"} | dict.fromkeys(_NONCHARACTERS)
_DROP |= _C1_AS_WINDOWS_1252
# In HTML tab, newline and carriage return are ordinary; other spacing controls become spaces.
# Bidi controls stay: right-to-left prose needs them, and a block of HTML bounds their reach.
_HTML_CONTROLS = {
    cp: " " if chr(cp).isspace() else None for cp in _CONTROLS if chr(cp) not in "\t\n\r"
} | _C1_AS_WINDOWS_1252


class _Translation:
    """str.translate(table), without its cost on text that is not ASCII.

    There str.translate looks every character up in the dict, 60 ns each: more than nh3 takes
    to sanitize the same description. ASCII text goes through bytes.translate instead (three
    times as fast as str.translate's own ASCII path), any other text through a regex that stops
    only at characters in the table. Proven equal to str.translate in tests/test_parse.py.
    """

    def __init__(self, table: Mapping[int, str | None]) -> None:
        self.table = table
        # An ASCII character may become one ASCII character or none: maketrans refuses more.
        ascii_map = {cp: new for cp, new in table.items() if cp < 0x80}
        mapped = {cp: new for cp, new in ascii_map.items() if new is not None}
        self.ascii_table = bytes.maketrans(bytes(mapped), "".join(mapped.values()).encode())
        self.ascii_delete = bytes(cp for cp, new in ascii_map.items() if new is None)
        self.pattern = re.compile("[" + "".join(_ranges(sorted(table))) + "]")

    def __call__(self, text: str) -> str:
        if text.isascii():
            return text.encode().translate(self.ascii_table, self.ascii_delete).decode()
        return self.pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        return self.table[ord(match[0])] or ""


def _ranges(code_points: list[int]) -> Iterator[str]:
    """A regex character class body for sorted code points, runs written as ranges: a class of
    two thousand single surrogates cost every search far more than two ranges do."""
    start = previous = code_points[0]
    for cp in [*code_points[1:], -1]:
        if cp != previous + 1:
            yield re.escape(chr(start)) + (
                "-" + re.escape(chr(previous)) if previous > start else ""
            )
            start = cp
        previous = cp


drop_controls = _Translation(_DROP)
_drop_html_controls = _Translation(_HTML_CONTROLS)
_ASCII_SPACES = "".join(c for c in map(chr, range(0x80)) if c.isspace())
_ASCII_SPACES_TO_SPACE = bytes.maketrans(_ASCII_SPACES.encode(), b" " * len(_ASCII_SPACES))


def clean_text(text: str) -> str:
    """Text safe for one line of any output: no control or bidi characters, single spaces."""
    if not text.isascii():
        return " ".join(drop_controls(text).split())
    # One bytes.translate drops the controls and makes every space a ' ': split and join are
    # then needed only where spaces run together, which they rarely do once stripped.
    text = text.encode().translate(_ASCII_SPACES_TO_SPACE, drop_controls.ascii_delete).decode()
    text = text.strip(" ")
    return text if "  " not in text else " ".join(text.split())


# Tags that separate words: kept by the first pass only so they can become spaces.
_BREAK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul",
}  # fmt: skip
_TEXT_CLEANER = nh3.Cleaner(
    tags=_BREAK_TAGS,
    attributes={},
    # Elements whose content a browser never shows as text: code, or fallback markup for
    # browsers without frames, embeds or templates (an iframe's content is not its text).
    clean_content_tags={"script", "style", "iframe", "noembed", "noframes", "template"},
    link_rel=None,
)
_TAG = re.compile(r"<[^>]*>")


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment, each entity decoded exactly once."""
    if "<" not in fragment and "&" not in fragment:
        return clean_text(fragment)  # no markup and no entity: what nh3 would give, faster
    # nh3 parses like a browser and escapes all text it outputs, so every '<' left is one of the
    # bare break tags, and the single unescape decodes what the author wrote, never twice.
    kept = _TEXT_CLEANER.clean(_drop_html_controls(fragment))
    return clean_text(html.unescape(_TAG.sub(" ", kept)))


def shorten(text: str, words: int | None, chars: int) -> str:
    """The first words of text (at most chars long), ending with '…' when cut."""
    cut = text
    if words is not None and text.count(" ") >= words:  # more than `words` words
        cut = " ".join(text.split(" ", words)[:words])  # no need to split what is cut off
    if len(cut) > chars:
        cut = cut[:chars].rsplit(" ", 1)[0] if " " in cut[:chars] else cut[:chars]
    return text if cut == text else cut.rstrip(" ,;:") + "…"


# The first slice of HTML read for a blurb; doubled until it yields enough text.
_BLURB_SLICE = 4096
_TABLE = re.compile("<table", re.IGNORECASE)


def html_blurb(fragment: str) -> str:
    """shorten(html_to_text(fragment), BLURB_WORDS, BLURB_CHARS), reading only what it needs.

    A whole article in content:encoded costs nh3 a full parse, and the blurb keeps its first
    sixty words. A slice of the markup gives the text of the whole up to its last word, which
    the cut may have split (in a tag, an entity or the word itself): once the slice's text,
    that last word dropped, holds more words or characters than the blurb keeps, the blurb
    is the same. Proven equal to the whole-article path in tests/test_parse.py.
    """
    size = _BLURB_SLICE
    while size * 2 < len(fragment):  # a slice near the whole would cost as much, and may fail
        piece = fragment[:size]
        if _TABLE.search(piece):
            break  # a parser moves text found inside a table before it: later text comes first
        text = html_to_text(piece)
        whole_words = text.rsplit(" ", 1)[0] if " " in text else ""
        if whole_words.count(" ") >= BLURB_WORDS or len(whole_words) > BLURB_CHARS:
            return shorten(whole_words, BLURB_WORDS, BLURB_CHARS)
        size *= 4
    return shorten(html_to_text(fragment), BLURB_WORDS, BLURB_CHARS)
