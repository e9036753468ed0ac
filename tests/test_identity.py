"""What makes two entries one: the key that names an entry within its feed, and the canonical
URL that folds the spellings of one story across feeds. Both are stored, so neither may drift."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import String

from digest.parse.entry import MAX_KEY_CHARS, entry_key, make_entry
from digest.parse.urls import _canonical_url_full, canonical_url
from digest.store.models import EntryRow
from tests.conftest import examples

MARCH = datetime(2025, 3, 1, 10, tzinfo=UTC)
LONG_ID = "urn:" + "x" * 5000


# Keys as the parse stage made them, and the store stored them, before the store stopped
# hashing keys of its own (it hashed keys over 600 characters, which the parse stage never
# made): a stored key decides whether an entry is new, so these must never change.
@pytest.mark.parametrize(
    ("entry_id", "link", "title", "published", "key"),
    [
        ("id-1", None, "a", None, "id-1"),
        (" id-1\t", "https://example.org/1", "a", None, "id-1"),
        (None, "https://example.org/2", "b", None, "https://example.org/2"),
        ("", "https://example.org/2", "b", None, "https://example.org/2"),
        ("x" * 500, None, "e", None, "x" * 500),
        ("é" * 500, None, "e", None, "é" * 500),  # characters, not bytes
        (None, "https://example.org/" + "p" * 480, "f", None, "https://example.org/" + "p" * 480),
        ("x" * 501, None, "e", None,
         "sha256:92843106ec13c5e565dadd1023f078d3d1fb4dc8cd079bf6b45003f0f65922db"),
        ("é" * 501, None, "e", None,
         "sha256:29010dbad228462606a00b3c7e1beeda5e8e576d9a941f37b6c8c49b96636ae6"),
        ("tag:example.org," + "x" * 584, None, "e", None,  # 600 characters
         "sha256:474315ea60b8f770f3a1a3ecf3a6ce6c7914d4a08688f6b0abf870e2324f4c63"),
        (LONG_ID, None, "e", None,
         "sha256:c65e6712b12c264b90487ef99de0d1474216bb539dbcda85c103516ec319cbbc"),
        (None, "https://example.org/" + "p" * 481, "f", None,
         "sha256:3598fb974d8ff77f7d37ebe5cc13616ca26239ed9717d1395e72d06b3efcc9e6"),
        (None, None, "c", MARCH,
         "sha256:725078250ad90d83c29a21e1b3cc66350e12e9f2cbcf8cd966ad2a7cc0c20cbb"),
        (None, None, "c", None,
         "sha256:7da035da744e066a3c02416f6c34e9ac24918bb842be3aa131760354e242a28c"),
        (" ", None, "Ünïcode ☛ title", MARCH,
         "sha256:2cfcb588093e1e347c3a6d666e045c147a256818964c3ed43def79b697294b35"),
    ],
)  # fmt: skip
def test_entry_keys_never_change(
    entry_id: str | None, link: str | None, title: str, published: datetime | None, key: str
) -> None:
    assert entry_key(entry_id, link, title, published) == key
    entry = make_entry(
        entry_id=entry_id,
        title=title,
        link=link,
        summary="",
        author=None,
        published=published,
        updated=None,
        now=MARCH,
    )
    assert entry is not None and entry.key == key


@given(st.text(), st.text() | st.none(), st.text(max_size=30), st.datetimes(timezones=st.just(UTC)))
def test_entry_keys_fit_the_store(
    entry_id: str, link: str | None, title: str, published: datetime
) -> None:
    """The store stores keys as they are made, in a column of limited length."""
    assert len(entry_key(entry_id * 100, link, title, published)) <= MAX_KEY_CHARS
    column = EntryRow.__table__.c.key.type
    assert isinstance(column, String) and column.length and column.length >= MAX_KEY_CHARS


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://www.example.com/story/", "https://example.com/story"),
        ("https://example.com/story#comments", "https://EXAMPLE.com/story"),
        ("https://example.com/story?utm_source=x&utm_medium=rss", "https://example.com/story"),
        ("https://example.com/s?b=2&a=1&fbclid=zz", "https://example.com/s?a=1&b=2"),
        ("https://example.com:443/s", "https://example.com/s"),
    ],
)
def test_canonical_url_folds_spellings(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://example.com/a", "https://example.com/b"),
        ("https://example.com/s?id=1", "https://example.com/s?id=2"),
        ("https://example.com:8080/s", "https://example.com/s"),
        ("gemini://example.com/s", "https://example.com/s"),
    ],
)
def test_canonical_url_keeps_different_stories_apart(a: str, b: str) -> None:
    assert canonical_url(a) != canonical_url(b)


def _joined(*pieces: str) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=8).map("".join)


# Pieces of feed links: plain ones take the fast path, odd ones must be refused by it.
_PLAIN_HOSTS = _joined("www.", "WWW.", "Ex", "ample", ".com", ".", "-", "_")
_ODD_HOSTS = _joined("Ex", ".com", ":", "443", "80", "%", "@", "[", "]", "é", " ", "\x00")
_PLAIN_PATHS = _joined("/", "//", "a", "..", "%20", ";", "~", "\\")
_ODD_PATHS = _joined("/", "a", "?", "#", "&", "=", "utm_x", "fbclid", "é", " ", "\t", "\n")


@given(
    st.builds("{}://{}{}".format, st.sampled_from(["http", "https"]), _PLAIN_HOSTS, _PLAIN_PATHS)
    | st.builds(
        "{}://{}{}{}".format,
        st.sampled_from(["http", "https", "HTTPS", "gemini", "", "http:"]),
        _PLAIN_HOSTS | _ODD_HOSTS,
        _PLAIN_PATHS | _ODD_PATHS,
        st.sampled_from(["", " ", "\n"]),
    )
    | st.text(max_size=30)
)
@settings(max_examples=examples(500))
def test_canonical_url_fast_path_agrees_with_the_full_path(url: str) -> None:
    try:
        full: str | None = _canonical_url_full(url.strip())
    except ValueError:  # urlsplit refuses some netlocs ("[", non-NFKC): so must canonical_url
        with pytest.raises(ValueError):
            canonical_url(url)
        return
    assert canonical_url(url) == (full if url else None)


@pytest.mark.parametrize(
    "url",
    [
        "https://blog.example.com/2025/03/28/story/",
        "http://WWW.Example.COM",
        "https://www./x",
        "https://www.//x",
        "https://example.com//x//",
        "http://a_b.example-1.org/~me/%20x;y",
    ],
)
def test_canonical_url_fast_path_examples(url: str) -> None:
    assert canonical_url(url) == _canonical_url_full(url)
