"""Worker benchmark (issue 7): cold polls with 1, 2 and 4 `digest poll` processes on PostgreSQL,
beside one process on SQLite, on the same feeds.

    python -m bench.workers [--feeds 1000] [--entries 50] [--workers 1,2,4] [--all] [--repeat 1]

Every run starts from a fresh database that `digest feeds` has created and filled with the
feeds (untimed), so every feed is due; then the pollers, real `digest poll` processes of this
virtualenv, start together and the clock runs until the last one exits. Not `poll --all`:
it polls what was not polled since *its own* start, so a poller that starts a second late
fetches again what the others polled in that second (`--all` measures exactly that).

A run counts only if every poller exited 0, the server answered exactly one 200 per feed and
every feed stored all its entries: then each feed was fetched once, whatever the split
between the pollers. Exits 1 if a run did not.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from bench.feeds_server import FeedServer, ServerInfo, Source
from bench.pg import postgres, postmaster_pid
from bench.poll import REPO, PeakMemory
from bench.systems import _digest_config
from digest.config import load_config
from digest.store import EntryRow, Store

DIGEST = Path(sys.executable).parent / "digest"
BASELINE = "SQLite, 1 process"
RUN_TIMEOUT = 600.0  # a hung poller ends the benchmark rather than hanging it
POLLED = re.compile(r"^polled (\d+) feeds", re.MULTILINE)


@dataclass
class Run:
    setup: str
    workers: int
    seconds: float = 0.0
    polled: list[int] = field(default_factory=list)  # feeds each poller said it polled
    peak_mb: float = 0.0  # summed RSS of the pollers' process trees
    server_pss_mb: float | None = None  # PostgreSQL's processes, shared buffers split (PSS)
    problems: list[str] = field(default_factory=list)


class PeakMemoryOf(PeakMemory):
    """PeakMemory over several process trees at once: pollers started side by side."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(pids[0])
        self._roots = pids

    def _tree(self) -> list[int]:
        found: list[int] = []
        for root in self._roots:
            self._pid = root  # the walk starts from _pid; only this thread reads it
            found.extend(super()._tree())
        return found


def _environment() -> dict[str, str]:
    return os.environ | {
        # This checkout's digest first, as in bench.poll, unless the caller chose another.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [os.environ.get("PYTHONPATH"), str(REPO / "src")])
        ),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def _write_config(info: ServerInfo, workdir: Path, database: str | None) -> Path:
    config = _digest_config(info)
    if database is not None:
        config["site"] = cast(dict[str, object], config["site"]) | {"database": database}
    path = workdir / "feeds.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def measure(
    info: ServerInfo,
    entries: int,
    workdir: Path,
    setup: str,
    workers: int,
    database: str | None,
    server_pid: int | None,
    every: bool,
) -> Run:
    run = Run(setup, workers)
    workdir.mkdir()
    config = _write_config(info, workdir, database)
    env = _environment()
    base = [str(DIGEST), "--config", str(config)]
    # Schema and feeds first, untimed: the pollers then only poll.
    prepared = subprocess.run(
        [*base, "feeds", "--json"], env=env, capture_output=True, text=True, check=False
    )
    if prepared.returncode != 0:
        run.problems.append(f"`digest feeds` exited {prepared.returncode}: {prepared.stderr}")
        return run
    info.set_mode("etag")  # zeroes the server's counts
    logs = [(workdir / f"poller-{n}.out", workdir / f"poller-{n}.err") for n in range(workers)]
    with_server = PeakMemoryOf([server_pid]) if server_pid is not None else None
    command = [*base, "poll", *(["--all"] if every else [])]
    start = time.perf_counter()
    processes = []
    for out, errors in logs:
        with out.open("wb") as stdout, errors.open("wb") as stderr:
            processes.append(subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr))
    pollers = PeakMemoryOf([process.pid for process in processes])
    for sampler in (pollers, with_server):
        if sampler is not None:
            sampler.start()
    codes = [process.wait(RUN_TIMEOUT) for process in processes]
    run.seconds = time.perf_counter() - start
    for sampler in (pollers, with_server):
        if sampler is not None:
            sampler.stop()
    run.peak_mb = pollers.peak_rss / 2**20
    if with_server is not None:
        run.server_pss_mb = with_server.peak_pss / 2**20

    for code, (out, errors) in zip(codes, logs, strict=True):
        text = out.read_text(encoding="utf-8")
        found = POLLED.search(text)
        run.polled.append(int(found.group(1)) if found else 0)
        if code != 0:
            tail = errors.read_text(encoding="utf-8", errors="replace")[-2000:]
            run.problems.append(f"a poller exited {code}: {text.strip()} {tail}")
    sent = info.counts()
    if sent != {"200": info.feeds}:
        run.problems.append(f"server sent {sent}, expected {{'200': {info.feeds}}}")
    run.problems += _check_entries(config, info.feeds, entries)
    return run


def _check_entries(config: Path, feeds: int, entries: int) -> list[str]:
    store = Store(load_config(config).database_url)
    try:
        with store.reading() as session:
            per_feed = session.execute(
                select(EntryRow.feed_id, func.count()).group_by(EntryRow.feed_id)
            ).all()
    finally:
        store.close()
    total = sum(count for _feed, count in per_feed)
    short = sum(1 for _feed, count in per_feed if count != entries)
    if total == feeds * entries and len(per_feed) == feeds and not short:
        return []
    return [
        f"stored {total} entries in {len(per_feed)} feeds ({short} not {entries} each), "
        f"expected {feeds * entries} in {feeds}"
    ]


def report(console: Console, feeds: int, runs: list[Run], command: str) -> None:
    baseline = next((run for run in runs if run.setup == "SQLite"), None)
    table = Table(title=f"Cold poll of {feeds:,} feeds, `{command}` processes together")
    for column in ("setup", "workers", "seconds", "feeds/s", "ratio", "feeds per poller"):
        table.add_column(column, justify="left" if column == "setup" else "right")
    table.add_column("peak MB pollers (RSS)", justify="right")
    table.add_column("PostgreSQL (PSS)", justify="right")
    for run in runs:
        rate = feeds / run.seconds if run.seconds else 0.0
        ratio = f"{baseline.seconds / run.seconds:.2f}x" if baseline and run.seconds else "-"
        table.add_row(
            run.setup,
            str(run.workers),
            f"{run.seconds:.2f}",
            f"{rate:,.0f}{' !' if run.problems else ''}",
            ratio,
            "/".join(map(str, run.polled)),
            f"{run.peak_mb:,.0f}",
            "-" if run.server_pss_mb is None else f"{run.server_pss_mb:,.0f}",
            style="red" if run.problems else None,
        )
    console.print(table)
    cores = os.cpu_count() or 1
    for line in (
        f"Ratios are against {BASELINE} (feeds/s over its feeds/s).",
        f"This machine has {cores} cores: each poller parses in a pool of {cores} processes, "
        f"so beyond {cores} pollers the figures mostly show contention for the cores.",
        "Timed: from starting the pollers to the last exit, process start-up included; "
        "creating the database and syncing the feeds (`digest feeds`) is not.",
        "Peak pollers: RSS of all poller trees summed (parsers included); the PostgreSQL "
        "server is counted apart, by PSS so its shared buffers count once.",
    ):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for run in runs:
        for problem in run.problems:
            console.print(
                f"[red]{run.setup}, {run.workers} workers:[/red] {problem}",
                highlight=False,
                soft_wrap=True,
            )


def _fastest(runs: list[Run]) -> Run:
    """The least disturbed run, carrying every run's problems: one bad run spoils the figure."""
    fastest = min(runs, key=lambda run: run.seconds)
    fastest.problems = [problem for run in runs for problem in run.problems]
    return fastest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", type=int, default=1000, help="number of feeds (1000)")
    parser.add_argument("--entries", type=int, default=50, help="entries per feed (50)")
    parser.add_argument(
        "--workers", default="1,2,4", help="PostgreSQL poller counts, comma-separated (1,2,4)"
    )
    parser.add_argument(
        "--all", action="store_true", help="run `digest poll --all` (see above) instead"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; each figure is the fastest (1)"
    )
    parser.add_argument("--ports", type=int, default=25, help="server ports (25), as bench.poll")
    args = parser.parse_args()
    if not DIGEST.exists():
        raise SystemExit(f"{DIGEST} is missing: run this with the virtualenv's python")
    plan = [("SQLite", 1)] + [("PostgreSQL", int(n)) for n in args.workers.split(",")]
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(
        f"Serving {args.feeds:,} RSS feeds of {args.entries} entries on {args.ports} ports; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}",
        highlight=False,
    )
    tries: list[list[Run]] = [[] for _ in plan]
    with (
        FeedServer(args.feeds, Source(args.entries), args.ports) as info,
        tempfile.TemporaryDirectory(prefix="bench-workers-") as workdir,
        postgres() as server,
    ):
        # Round by round, so that a burst of other load on the machine hits every setup alike.
        for round_ in range(args.repeat):
            for number, (setup, workers) in enumerate(plan):
                console.print(f"round {round_ + 1}: {setup}, {workers} workers …", highlight=False)
                fresh = nullcontext(None) if setup == "SQLite" else server.database()
                with fresh as database:
                    tries[number].append(
                        measure(
                            info,
                            args.entries,
                            Path(workdir) / f"run-{round_}-{number}",
                            setup,
                            workers,
                            database,
                            None if database is None else postmaster_pid(server),
                            args.all,
                        )
                    )
    console.print(f"load average after: {os.getloadavg()[0]:.2f}", highlight=False)
    runs = [_fastest(runs) for runs in tries]
    report(console, args.feeds, runs, "digest poll --all" if args.all else "digest poll")
    console.print(f"Each figure is the fastest of {args.repeat} run(s).", highlight=False)
    if any(run.problems for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
