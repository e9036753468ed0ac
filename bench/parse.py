"""Parse micro-benchmark: CPU per feed of `digest.parse.parse_feed` on the poll benchmark's feeds.

    python -m bench.parse [--feeds 200] [--entries 50] [--repeat 7]

Parses the same bodies `make bench` serves, in this process, and reports the best run in ms
per feed: the machine is shared, so the fastest run is the one least disturbed. A second line
does the same with a few words of every feed made non-ASCII (curly quotes, an accented
letter, a no-break space), as most real feeds are, since text that is not ASCII takes other
paths through the parser.
"""

from __future__ import annotations

import argparse
import time

from bench.feeds_server import feed_body
from digest.parse import parse_feed

HEADERS = {"content-type": "application/rss+xml; charset=utf-8"}
NON_ASCII = {b"device": "dévice".encode(), b"data": "“data”\u00a0".encode()}


def best_ms_per_feed(bodies: list[bytes], repeat: int) -> float:
    urls = [f"http://127.0.0.1:9000/feed/{index}.xml" for index in range(len(bodies))]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for body, url in zip(bodies, urls, strict=True):
            parse_feed(body, url=url, headers=HEADERS)
        best = min(best, time.perf_counter() - start)
    return best / len(bodies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    bodies = [feed_body(index, args.entries) for index in range(args.feeds)]
    print(f"bench feeds: {best_ms_per_feed(bodies, args.repeat):.2f} ms per feed")
    for ascii_word, other in NON_ASCII.items():
        bodies = [body.replace(ascii_word, other) for body in bodies]
    print(f"non-ASCII:   {best_ms_per_feed(bodies, args.repeat):.2f} ms per feed")


if __name__ == "__main__":
    main()
