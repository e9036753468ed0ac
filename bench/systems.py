"""The pollers under test, one per process: `python -m bench.systems NAME ...`.

Each system polls every feed three times on the same feeds and the same database: cold
(nothing known), warm (the server answers 304 to its validators) and same bytes (the server
sends the unchanged body with no validators). Only the poll itself is timed; setup such as
creating the database and adding the feeds is not. The result goes to a JSON file, since
the libraries under test may write to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import feedparser
import yaml

from bench.feeds_server import ServerInfo

# (phase, server mode): the order matters, each phase starts from the state the last one left.
PHASES = (("cold", "etag"), ("warm", "etag"), ("same", "noetag"))
FLOOR_CONCURRENCY = 50
READER_WORKERS = 20


class System(Protocol):
    def poll(self) -> str:
        """Poll every feed once; say what happened, in the system's own words."""

    def close(self) -> None: ...


@dataclass
class PhaseResult:
    seconds: float  # the fastest run
    counts: dict[str, int]  # responses the server sent in the last run, by status
    note: str
    runs: list[float] = field(default_factory=list)  # seconds of every run, in order


@dataclass
class RunResult:
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    maxrss_self_mb: float = 0.0
    maxrss_children_mb: float = 0.0


class Floor:
    """A bare aiohttp loop: the most any poller could do on this machine and these feeds."""

    def __init__(self, info: ServerInfo, *, parse: bool) -> None:
        self._urls = info.feed_urls
        self._parse = parse
        self._etags: dict[str, str] = {}

    def poll(self) -> str:
        return asyncio.run(self._poll())

    async def _poll(self) -> str:
        slots = asyncio.Semaphore(FLOOR_CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=FLOOR_CONCURRENCY)
        statuses: dict[int, int] = {}
        entries = 0
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(url: str) -> None:
                nonlocal entries
                etag = self._etags.get(url)
                async with slots:
                    headers = {"If-None-Match": etag} if etag else {}
                    async with session.get(url, headers=headers) as response:
                        body = await response.read()
                        status = response.status
                        kind = response.headers.get("Content-Type", "")
                        if status == 200:
                            self._etags.pop(url, None)
                            if "ETag" in response.headers:
                                self._etags[url] = response.headers["ETag"]
                statuses[status] = statuses.get(status, 0) + 1
                if self._parse and status == 200:
                    # In-process, on the loop: the simplest poller a user could write.
                    parsed = feedparser.parse(
                        io.BytesIO(body), response_headers={"content-type": kind}
                    )
                    entries += len(parsed.entries)

            await asyncio.gather(*(one(url) for url in self._urls))
        parsed_note = f", {entries} entries parsed" if self._parse else ""
        return f"statuses {dict(sorted(statuses.items()))}{parsed_note}"

    def close(self) -> None:
        pass


class Reader:
    """The peer, lemon24/reader, driven as its docs say, with its own SQLite database."""

    def __init__(self, info: ServerInfo, workdir: Path) -> None:
        from reader import make_reader

        self._reader = make_reader(str(workdir / "reader.sqlite"))
        for url in info.feed_urls:
            self._reader.add_feed(url)

    def poll(self) -> str:
        from reader import UpdatedFeed

        # update_feeds() is this loop plus error grouping; the iterator lets us count.
        new = modified = errors = 0
        for _url, value in self._reader.update_feeds_iter(workers=READER_WORKERS, scheduled=False):
            if isinstance(value, Exception):
                errors += 1
            elif isinstance(value, UpdatedFeed):
                new += value.new
                modified += value.modified
        total = self._reader.get_entry_counts().total
        return f"{new} new, {modified} modified entries, {errors} errors, {total} stored"

    def close(self) -> None:
        self._reader.close()


class Digest:
    """digest as a user runs it: a feeds.yaml, `digest poll --all`'s store and Poller."""

    def __init__(self, info: ServerInfo, workdir: Path) -> None:
        from digest.cli import App
        from digest.poll import Poller

        config_path = workdir / "feeds.yaml"
        config_path.write_text(yaml.safe_dump(_digest_config(info)), encoding="utf-8")
        app = App(config_path)
        config = app.config
        self._stack = ExitStack()
        store = self._stack.enter_context(app.store(config))
        # One poller for every run, keeping its parser processes, as the daemon does.
        self._poller = Poller(
            store, config.settings.fetch, lease=config.timings.lease, keep_parsers=True
        )
        self._stack.callback(self._poller.close)

    def poll(self) -> str:
        return self._poller.run(every=True).line()

    def close(self) -> None:
        self._stack.close()


def _digest_config(info: ServerInfo) -> dict[str, object]:
    return {
        "site": {
            "title": "Bench Links",
            "base_url": "https://bench.example.org/",
            "database": "sqlite:///digest.db",
        },
        "streams": {"links": {"title": "Links {date:%d/%m/%Y}: {headlines}"}},
        "fetch": {"allow_private_networks": True},
        "feeds": [
            {"url": url, "name": f"Bench blog {index}", "stream": "links", "interval": "1m"}
            for index, url in enumerate(info.feed_urls)
        ],
    }


SYSTEMS: dict[str, Callable[[ServerInfo, Path], System]] = {
    "floor-fetch": lambda info, _workdir: Floor(info, parse=False),
    "floor-feedparser": lambda info, _workdir: Floor(info, parse=True),
    "reader": Reader,
    "digest": Digest,
}


def run(name: str, info: ServerInfo, workdir: Path, repeat: int = 1) -> RunResult:
    info.set_mode("etag")
    system = SYSTEMS[name](info, workdir)
    result = RunResult()
    try:
        for phase, mode in PHASES:
            # A cold poll changes the state it starts from, so it runs once; the warm phases
            # leave it as they found it, and their best of several runs is less at the mercy
            # of whatever else the machine does in one half-second.
            runs = []
            for _ in range(1 if phase == "cold" else repeat):
                info.set_mode(mode)
                start = time.perf_counter()
                note = system.poll()
                runs.append(time.perf_counter() - start)
            result.phases[phase] = PhaseResult(min(runs), info.counts(), note, runs)
    finally:
        system.close()
    # Linux reports ru_maxrss in KiB; children: the largest single child waited for.
    result.maxrss_self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.maxrss_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--ports", required=True, help="comma-separated feed server ports")
    parser.add_argument("--feeds", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each warm phase")
    args = parser.parse_args()
    info = ServerInfo(ports=tuple(int(port) for port in args.ports.split(",")), feeds=args.feeds)
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.system}-") as workdir:
        result = run(args.system, info, Path(workdir), args.repeat)
    args.result.write_text(json.dumps(asdict(result)), encoding="utf-8")


if __name__ == "__main__":
    main()
