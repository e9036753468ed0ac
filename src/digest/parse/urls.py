"""Links a page may carry: which schemes are safe, how a feed's links become absolute, and
the canonical spelling that tells copies of one story apart."""

from __future__ import annotations

import functools
import re
import urllib.parse
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

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


# Query parameters that only say where a reader came from, not what they read.
_TRACKING_PARAMS = frozenset(
    {"fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "igshid", "yclid", "ref_src"}
)

# A URL that is already plain (http(s), a bare host name, no port, query or fragment) needs
# none of urlsplit's work: most feed links look like this, and the full path cost about 15% of
# storing a feed. Anything else, or anything odd, takes the full path below.
_PLAIN_URL = re.compile(r"https?://([A-Za-z0-9._-]+)(/[!-\x7e]*)?", re.ASCII)


def canonical_url(url: str | None) -> str | None:
    """The same story under another spelling of its URL maps to the same string.

    Stored with each entry, so an edition counts a story linked by several feeds once.
    """
    if not url:
        return None
    url = url.strip()
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None and "?" not in url and "#" not in url:
        host = plain[1].lower().removeprefix("www.")
        if host:  # "www." alone leaves no host, where urlunsplit reads the path differently
            return "https://" + host + (plain[2] or "").rstrip("/")
    return _canonical_url_full(url)


def _canonical_url_full(url: str) -> str:
    """canonical_url for any URL: scheme, www., default port, trailing slash, fragment and
    tracking parameters folded; the other parameters sorted."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("http", "https") else parts.scheme
    host = (parts.hostname or "").lower().removeprefix("www.")
    if parts.port and not (
        (parts.scheme == "http" and parts.port == 80)
        or (parts.scheme == "https" and parts.port == 443)
    ):
        host = f"{host}:{parts.port}"
    path = parts.path.rstrip("/") or ""
    query = urlencode(
        sorted(
            (key, value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if not key.lower().startswith("utm_") and key.lower() not in _TRACKING_PARAMS
        )
    )
    return urlunsplit((scheme, host, path, query, ""))
