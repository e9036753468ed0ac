"""Media RSS (http://search.yahoo.com/mrss/): the one thing of it we read, and what we do not.

`media:title` and `media:description` inside `media:content` or `media:thumbnail` describe a
photo or a video (a caption, alt text): never an item's title or blurb. Directly in an item,
or in the `media:group` that stands for the item's one video (YouTube's Atom feeds), a
`media:description` describes the item itself, and is its blurb when it has no text of its own.
"""

from __future__ import annotations

from typing import Any

from digest.parse.text import BLURB_CHARS, BLURB_WORDS, clean_text, html_blurb, shorten
from digest.parse.xml import inner_text

MEDIA = "http://search.yahoo.com/mrss/"
_DESCRIPTION = f"{{{MEDIA}}}description"
_GROUP = f"{{{MEDIA}}}group"


def media_blurb(item: Any) -> str:
    """The blurb of an item's own media:description (or its media:group's); '' without one."""
    for holder in (item, next(item.iterchildren(_GROUP), None)):
        if holder is None:
            continue
        description = next(holder.iterchildren(_DESCRIPTION), None)
        if description is not None:
            text = inner_text(description)
            if description.get("type") == "html":
                return html_blurb(text)
            return shorten(clean_text(text), BLURB_WORDS, BLURB_CHARS)
    return ""
