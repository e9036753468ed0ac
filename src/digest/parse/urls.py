"""Links a page may carry: which schemes are safe, and how a feed's links become absolute."""

from __future__ import annotations

import functools
import re
import urllib.parse
from urllib.parse import urljoin, urlsplit

from digest.parse.text import drop_controls

# Anything else (javascript:, data:, file:, mailto:, relative) becomes plain text or nothing.
SAFE_SCHEMES = frozenset({"http", "https", "gemini"})

# urljoin resolves relative references only for schemes it knows; gemini URLs resolve like http.
for _known in (urllib.parse.uses_relative, urllib.parse.uses_netloc):
    if "gemini" not in _known:
        _known.append("gemini")

_URL_SPACE = re.compile(r"\s")
# Every character plain text loses or replaces is dropped from URLs, and tab, CR and LF too.
_URL_DROP = dict.fromkeys([*drop_controls.table, *map(ord, "\t\n\r")])


def _visible_ascii_but(excluded: str) -> str:
    return (
        "[" + re.escape("".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in excluded)) + "]"
    )


# An absolute http(s) URL that urljoin gives back exactly as written, whatever the base:
# lower-case scheme, a plain host and port, and none of what urlparse would split off and put
# back otherwise (";" params, an empty query or fragment). Most feed links look like this, and
# urljoin cost more than any other step of reading an entry. Proven against urljoin in
# tests/test_parse.py.
PLAIN_ABSOLUTE_URL = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?"
    rf"(?:/{_visible_ascii_but('?#;')}*)?"
    rf"(?:\?{_visible_ascii_but('#')}+)?"
    rf"(?:#{_visible_ascii_but('')}+)?",
    re.ASCII,
)


def absolute_url(raw: str | None, base: str) -> str | None:
    """raw resolved against base, or None unless it is an http, https or gemini URL."""
    if not raw:
        return None
    if PLAIN_ABSOLUTE_URL.fullmatch(raw):
        return raw
    resolved = resolve(raw, base)
    try:
        parts = urlsplit(resolved)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if parts.scheme.lower() not in SAFE_SCHEMES or not host:
        return None
    return resolved


def resolve(raw: str, base: str) -> str:
    """raw resolved against base as browsers do, whatever its scheme; raw as written when
    it cannot be resolved (an unclosed IPv6 bracket)."""
    if PLAIN_ABSOLUTE_URL.fullmatch(raw):
        return raw
    # Trim, drop tabs, newlines and controls, percent-encode any other space.
    cleaned = raw.translate(_URL_DROP).strip()
    if _URL_SPACE.search(cleaned):
        cleaned = _URL_SPACE.sub(lambda m: urllib.parse.quote(m.group()), cleaned)
    try:
        return urljoin(base, cleaned)
    except ValueError:
        return cleaned


@functools.lru_cache(maxsize=256)
def join_base(base: str, relative: str) -> str:
    """urljoin for xml:base values, remembered: the entries of a feed usually share one."""
    return urljoin(base, relative)


def safe_url(url: str | None) -> str | None:
    """The URL when it is an absolute http/https/gemini URL a page may link to, else None."""
    if not url or url != url.strip() or url.translate(_URL_DROP) != url or _URL_SPACE.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in SAFE_SCHEMES and parts.netloc else None
