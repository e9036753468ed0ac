"""Config benchmark: wall seconds of `digest check` on a generated config of many feeds
(issue 16, item 6: under 3 s at 20,000 feeds).

    python -m bench.config_load [--feeds 20000] [--repeat 3] [--keep FILE]

Writes a feeds.yaml with --feeds feeds over two streams (block mappings, as people write
them, with names, sections and intervals), runs `digest --config FILE check` --repeat times
as a separate process, start-up included, and prints each run and the median against the
target. The machine is shared, so for figures to quote use farm-bench on the kept file:
`farm-bench -n 3 -- .venv/bin/digest --config FILE check`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 3.0  # issue 16, item 6, at 20,000 feeds
HEADER = """\
site:
  title: Big Links
  base_url: https://links.example.org/
  timezone: Europe/London
  database: sqlite:///big.db
streams:
  links:
    title: "Links {date:%d/%m/%Y}: {headlines}"
    summary: Links for the day
    schedule: "0 12,23 * * *"
    sections: [Leftovers, Science, Security]
  gemini-links:
    summary: Gemini links for the day
feeds:
"""


def big_config(feeds: int) -> str:
    """A valid config of `feeds` feeds, every URL different."""
    parts = [HEADER]
    for index in range(feeds):
        gemini = index % 5 == 0
        url = (
            f"gemini://capsule{index}.example/gemlog/"
            if gemini
            else f"https://site{index}.example.net/feed.xml"
        )
        parts.append(
            f"  - url: {url}\n"
            f"    name: Feed number {index}\n"
            f"    stream: {'gemini-links' if gemini else 'links'}\n"
            f"    section: {('Leftovers', 'Science', 'Security')[index % 3]}\n"
            f"    interval: {1 + index % 12}h\n"
        )
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the config here and keep it")
    args = parser.parse_args()
    digest = Path(sys.executable).with_name("digest")
    with tempfile.TemporaryDirectory() as folder:
        path = args.keep or Path(folder) / "feeds.yaml"
        path.write_text(big_config(args.feeds))
        seconds = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run(
                [str(digest), "--config", str(path), "check"], check=True, stdout=subprocess.DEVNULL
            )
            seconds.append(time.perf_counter() - start)
            print(f"digest check, {args.feeds} feeds: {seconds[-1]:.2f} s", flush=True)
    median = statistics.median(seconds)
    verdict = "met" if median < TARGET_SECONDS else "MISSED"
    print(f"median {median:.2f} s; target under {TARGET_SECONDS:.0f} s at 20,000 feeds: {verdict}")


if __name__ == "__main__":
    main()
