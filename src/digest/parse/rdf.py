"""RSS 1.0 and 0.90: RDF documents whose items stand beside the channel, not inside it.

Their elements have RSS's names in a namespace of their own; rdf:about is no identity of its
own (it repeats the link), so an item is read as an RSS item is (rss.read_channel).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from digest.parse.entry import ParsedFeed
from digest.parse.rss import read_channel
from digest.parse.xml import base_of, local_name, namespace

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS_NAMESPACES = frozenset({"http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/"})


def read_rdf(root: Any, *, base: str, now: datetime) -> ParsedFeed:
    """An `<rdf:RDF>` document; its RSS namespace is the channel's (or the first item's)."""
    base = base_of(root, base)
    children = [child for child in root if namespace(child) in RSS_NAMESPACES]
    channel = next((child for child in children if local_name(child) == "channel"), None)
    items = [child for child in children if local_name(child) == "item"]
    if channel is not None:  # some generators put the items inside the channel
        items += [child for child in channel if local_name(child) == "item"]
    first = channel if channel is not None else next(iter(items), None)
    ns = namespace(first) if first is not None else None
    channel_base = base if channel is None else base_of(channel, base)
    return read_channel(channel, items, ns=ns, base=channel_base, now=now)
