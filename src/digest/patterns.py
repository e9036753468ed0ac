"""Rule patterns (feeds.yaml `exclude` and `include`): one way to compile them, where the
config is checked and where closings apply them, and a time limit on each search.

A rule is the site's own, but the text it reads comes from feeds: a pattern that backtracks
without end on some text (`^(a|aa)+$` against a long run of a's) must not hang a closing. The
standard library's `re` cannot stop a search; the `regex` module (same syntax, version 0) can,
and it also avoids much of the backtracking `re` would do.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import regex

SEARCH_LIMIT = 0.1  # seconds one pattern may take over one text of an entry


@functools.lru_cache(maxsize=4096)
def compile_rule(pattern: str) -> regex.Pattern[str]:
    """The pattern as rules match it (case-insensitive); ValueError saying why if it is not
    one."""
    import regex  # here: a site without rules does not load it at each start

    try:
        return regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)
    except regex.error as error:
        raise ValueError(str(error)) from None


def search(pattern: str, texts: tuple[str, ...]) -> bool:
    """Whether the pattern is found in any of the texts; TimeoutError past SEARCH_LIMIT."""
    compiled = compile_rule(pattern)
    return any(compiled.search(text, timeout=SEARCH_LIMIT) for text in texts)
