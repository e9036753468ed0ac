"""Rules: the standing filters of feeds.yaml that keep entries out of editions.

`exclude` and `include` (per stream and per feed) are regular expressions matched
case-insensitively against an entry's title, link and summary; `block_domains` keeps out every
link on those domains and their subdomains, whichever feed carries it. They decide at closing
time, never when entries are stored, so a rule changed today applies from the next edition and
nothing is lost. Pure: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from digest.config import Settings, ascii_host
from digest.patterns import SEARCH_LIMIT, search

BLOCKED = "blocked domain"  # how a reason to hold an entry back names a blocked domain


@dataclass(frozen=True)
class PatternRules:
    """One place's exclude and include patterns, and what a reason calls that place."""

    where: str  # "the stream's", "the feed's"
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()

    def holds(self, texts: tuple[str, ...]) -> str | None:
        """Why these texts stay out, or None. A rule that cannot decide in time holds the
        entry back too, saying so: the editor sees it in the draft and can pin it."""
        for pattern in self.exclude:
            try:
                if search(pattern, texts):
                    return f"excluded by {self.where} rule '{pattern}'"
            except TimeoutError:
                return self._too_slow(pattern)
        slow = None
        for pattern in self.include:
            try:
                if search(pattern, texts):
                    return None
            except TimeoutError:
                slow = slow or pattern
        if slow is not None:
            return self._too_slow(slow)
        return f"matches none of {self.where} include rules" if self.include else None

    def _too_slow(self, pattern: str) -> str:
        return f"{self.where} rule '{pattern}' took over {SEARCH_LIMIT:g} s on it"


@dataclass(frozen=True)
class StreamRules:
    """The rules that apply to one stream's candidates."""

    stream: PatternRules = PatternRules("the stream's")
    feeds: Mapping[str, PatternRules] = field(default_factory=dict)  # by feed URL
    block_domains: tuple[str, ...] = ()

    def blocks(self, link: str | None) -> str | None:
        """Why a link never enters an edition (a blocked domain), or None. An editor's pin
        does not override this: the list names sites that must never be linked."""
        blocked = blocked_domain(link, self.block_domains)
        return f"{BLOCKED} {blocked}" if blocked else None

    def filters(self, *, feed_url: str, title: str, link: str | None, summary: str) -> str | None:
        """Why the exclude and include rules keep an entry out, or None."""
        texts = (title, link or "", summary)
        feed = self.feeds.get(feed_url)
        return (feed.holds(texts) if feed else None) or self.stream.holds(texts)


NO_RULES = StreamRules()


def blocked_domain(link: str | None, domains: tuple[str, ...]) -> str | None:
    """The entry of `domains` that the link's host is, or is under; None if none."""
    if not link or not domains:
        return None
    try:
        host = ascii_host(urlsplit(link).hostname or "").rstrip(".")
    except ValueError:
        return None
    for domain in domains:
        if host == domain or host.endswith("." + domain):
            return domain
    return None


def stream_rules(settings: Settings, name: str) -> StreamRules:
    """The rules of feeds.yaml for stream `name` and its feeds."""
    stream = settings.streams[name]
    return StreamRules(
        stream=PatternRules("the stream's", stream.exclude, stream.include),
        feeds={
            feed.url: PatternRules("the feed's", feed.exclude, feed.include)
            for feed in settings.feeds
            if feed.stream == name and (feed.exclude or feed.include)
        },
        block_domains=settings.block_domains,
    )
