"""Parse micro-benchmark: CPU per feed of `digest.parse.parse_feed`, on the poll benchmark's
synthetic feeds and on the real published feeds of ../shared/realfeeds.

    python -m bench.parse [--feeds 200] [--entries 50] [--repeat 7] [--real-feeds DIR]

Parses the same bodies `make bench` serves, in this process, and reports the best run in ms
per feed: the machine is shared, so the fastest run is the one least disturbed. A second line
does the same with a few words of every feed made non-ASCII (curly quotes, an accented
letter, a no-break space), as most real feeds are, since text that is not ASCII takes other
paths through the parser. Then each real feed is parsed by digest and by `feedparser.parse`
(as the poll benchmark's floor calls it), best of --repeat runs per file: the median per feed
and the total over the files, and digest's time as a multiple of feedparser's. feedparser
does not read JSON Feed, so the XML files are also compared alone.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import feedparser

from bench.feeds_server import REAL_FEEDS, RealFeed, feed_body, real_feeds
from digest.parse import parse_feed

HEADERS = {"content-type": "application/rss+xml; charset=utf-8"}
NON_ASCII = {b"device": "dévice".encode(), b"data": "“data”\u00a0".encode()}
NOW = datetime(2025, 3, 28, 12, 0, tzinfo=UTC)


def best_ms_per_feed(bodies: list[bytes], repeat: int) -> float:
    urls = [f"http://127.0.0.1:9000/feed/{index}.xml" for index in range(len(bodies))]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for body, url in zip(bodies, urls, strict=True):
            parse_feed(body, url=url, headers=HEADERS)
        best = min(best, time.perf_counter() - start)
    return best / len(bodies) * 1000


def _digest(feed: RealFeed) -> int:
    url = f"http://127.0.0.1:9000/feed/{feed.name}"
    parsed = parse_feed(feed.body, url=url, headers={"content-type": feed.content_type}, now=NOW)
    return len(parsed.entries)


def _feedparser(feed: RealFeed) -> int:
    headers = {"content-type": feed.content_type}
    return len(feedparser.parse(io.BytesIO(feed.body), response_headers=headers).entries)


def best_ms_each(
    parse: Callable[[RealFeed], int], feeds: list[RealFeed], repeat: int
) -> tuple[list[float], list[str]]:
    """Best time of each feed in ms, and the feeds that failed or gave no entries."""
    best = [float("inf")] * len(feeds)
    empty: list[str] = []
    for run in range(repeat):
        for index, feed in enumerate(feeds):
            start = time.perf_counter()
            try:
                entries = parse(feed)
            except Exception as error:  # a parse error is a result here, not a crash
                entries, reason = 0, f" ({type(error).__name__}: {error})"[:80]
            else:
                reason = ""
            best[index] = min(best[index], (time.perf_counter() - start) * 1000)
            if run == 0 and entries == 0:
                empty.append(feed.name + reason)
    return best, empty


def compare_real(feeds: list[RealFeed], repeat: int) -> None:
    digest, digest_empty = best_ms_each(_digest, feeds, repeat)
    other, other_empty = best_ms_each(_feedparser, feeds, repeat)
    xml = [i for i, feed in enumerate(feeds) if "json" not in feed.content_type]
    print(
        f"real feeds ({len(feeds)} files), ms, best of {repeat} runs per file "
        "(digest/fp: digest's time over feedparser's, lower is better):"
    )
    heads = f"{'digest':>8} {'feedparser':>10} {'digest/fp':>11}"
    print(f"{'':<16}{'median per feed':^31}   {'total over the files':^31}")
    print(f"{'':<16}{heads}   {heads}")
    for label, chosen in (("all", range(len(feeds))), ("XML only", xml)):
        mine, theirs = [digest[i] for i in chosen], [other[i] for i in chosen]
        cells = [
            f"{total(mine):8.2f} {total(theirs):10.2f} {total(mine) / total(theirs):10.2f}x"
            for total in (statistics.median, sum)
        ]
        print(f"  {f'{label} ({len(mine)})':<14}{cells[0]}   {cells[1]}")
    for name, empty in (("digest", digest_empty), ("feedparser", other_empty)):
        if empty:
            print(f"  {name} read no entries from {len(empty)}: {', '.join(empty)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--real-feeds", type=Path, default=REAL_FEEDS)
    args = parser.parse_args()
    real = real_feeds(args.real_feeds)  # before the long runs: a missing folder fails now

    bodies = [feed_body(index, args.entries) for index in range(args.feeds)]
    print(f"bench feeds: {best_ms_per_feed(bodies, args.repeat):.2f} ms per feed")
    for ascii_word, other in NON_ASCII.items():
        bodies = [body.replace(ascii_word, other) for body in bodies]
    print(f"non-ASCII:   {best_ms_per_feed(bodies, args.repeat):.2f} ms per feed")
    compare_real(real, args.repeat)


if __name__ == "__main__":
    main()
