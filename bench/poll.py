"""Polling benchmark (issues 3 and 12): digest against its peer `reader` and the floor, on the
same feeds.

    python -m bench.poll [--phase real|synthetic|both] [--feeds 1000] [--entries 50]
                         [--skip-reader] [--repeat 3] [--real-feeds ../shared/realfeeds]

Two phases, each with its own feed server and targets. The real phase (issue 12) serves the
real published feeds of ../shared/realfeeds (RSS, Atom, RDF, JSON Feed), feed i serving file
i mod N; the synthetic phase (issue 3) serves generated RSS of --entries items. In each, every
system runs in its own process (so peak memory is per system) and polls every feed cold, warm
(all 304) and warm without validators (same bytes). The warm phases run three times
(--repeat) and count their best run. Prints feeds per second, ratios and peak memory, then
the targets: as the issue states them, and for issue 3 also scaled by how this machine's
floor compares with the floor the issue measured (a machine that runs feedparser at half the
issue's speed gets half its cold target). Always exits 0: it is a report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.feeds_server import REAL_FEEDS, FeedServer, ServerInfo, Source, real_feeds

REPO = Path(__file__).resolve().parents[1]
ROWS = {
    "floor-fetch": "floor: aiohttp fetch",
    "floor-feedparser": "floor: fetch + feedparser",
    "reader": "reader",
    "digest": "digest",
}
COLUMNS = {"cold": "cold", "warm": "warm (304)", "same": "same bytes (no ETag)"}
EXPECTED_STATUS = {"cold": "200", "warm": "304", "same": "200"}


@dataclass(frozen=True)
class Targets:
    """What digest must reach in one phase of the benchmark, as its issue states it."""

    issue: str
    rates: dict[str, float]  # column -> feeds per second
    reader_times: dict[str, float]  # column -> at least this many times reader's rate
    # The floor each rate was set against, as the issue measured it on its own machine. A
    # machine whose floor differs moves every poller with it, so each target is also shown
    # scaled by floor here / floor there: CPU-bound cold polls follow the parse floor, the
    # others the fetch floor.
    reference_floors: dict[str, tuple[str, float]]
    peak_mb: float = 300.0


TARGETS = {
    "real": Targets("issue 12", {"cold": 200.0, "warm": 3000.0}, {"cold": 5.0}, {}),
    "synthetic": Targets(
        "issue 3",
        {"cold": 200.0, "warm": 3000.0, "same": 2000.0},
        dict.fromkeys(COLUMNS, 1.0),
        {
            "cold": ("floor-feedparser", 125.0),
            "warm": ("floor-fetch", 5000.0),
            "same": ("floor-fetch", 4000.0),
        },
    ),
}
SAMPLE_SECONDS = 0.05
PSS_EVERY = 10  # samples


@dataclass
class Measured:
    rates: dict[str, float]  # phase -> feeds per second
    notes: dict[str, str]
    counts: dict[str, dict[str, int]]
    peak_mb: float  # summed RSS of the process tree (the figure the target is about)
    peak_pss_mb: float


class PeakMemory(threading.Thread):
    """The highest memory of a process and all its descendants together, sampled from /proc.

    Summing the tree matters: digest parses in worker processes, which getrusage's
    RUSAGE_CHILDREN misses (they are the fork server's children, not the poller's). RSS
    counts pages shared between the processes once per process, so the proportional set
    size (PSS, each shared page split between its sharers) is kept too; reading it costs
    more, so it is sampled less often.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._stop_event = threading.Event()
        self.peak_rss = 0
        self.peak_pss = 0
        self.seen: set[int] = set()  # every process of the tree a sample found
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        samples = 0
        while not self._stop_event.wait(SAMPLE_SECONDS):
            pids = self._tree()
            self.seen.update(pids)
            self.peak_rss = max(self.peak_rss, sum(map(self._rss, pids)))
            samples += 1
            if samples % PSS_EVERY == 0:
                self.peak_pss = max(self.peak_pss, sum(map(self._pss, pids)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _tree(self) -> list[int]:
        found = [self._pid]
        for pid in found:  # grows while it is walked: breadth first
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        found.extend(int(child) for child in children.read().split())
            except (FileNotFoundError, ProcessLookupError):
                continue  # it exited meanwhile
        return found

    def _rss(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                return int(statm.read().split()[1]) * self._page
        except (FileNotFoundError, ProcessLookupError):
            return 0

    def _pss(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError):
            pass
        return 0


def measure(name: str, info: ServerInfo, workdir: Path, repeat: int) -> Measured:
    result_path = workdir / f"{name}.json"
    env = os.environ | {
        # The caller's PYTHONPATH first, so another checkout of digest can be measured.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [os.environ.get("PYTHONPATH"), str(REPO), str(REPO / "src")])
        ),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    # digest starts from a script, as its console script does (see bench/digest_main.py).
    entry = (
        [str(REPO / "bench" / "digest_main.py")] if name == "digest" else ["-m", "bench.systems"]
    )
    command = [sys.executable, *entry, name]
    command += ["--ports", ",".join(map(str, info.ports)), "--feeds", str(info.feeds)]
    command += ["--result", str(result_path), "--repeat", str(repeat)]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    sampler = PeakMemory(process.pid)
    sampler.start()
    code = process.wait()
    sampler.stop()
    if code != 0:
        raise RuntimeError(f"{name} exited with status {code}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    phases = result["phases"]
    own_peak = result["maxrss_self_mb"]
    return Measured(
        rates={phase: info.feeds / phases[phase]["seconds"] for phase in phases},
        notes={phase: _note(phases[phase], info.feeds) for phase in phases},
        counts={phase: phases[phase]["counts"] for phase in phases},
        peak_mb=max(sampler.peak_rss / 2**20, own_peak),
        peak_pss_mb=sampler.peak_pss / 2**20,
    )


def _note(phase: dict[str, Any], feeds: int) -> str:
    """The system's own summary, and every run's rate when the phase ran more than once."""
    runs = phase["runs"]
    if len(runs) < 2:
        return str(phase["note"])
    rates = ", ".join(f"{feeds / seconds:,.0f}" for seconds in runs)
    return f"{phase['note']} (best of {len(runs)} runs: {rates} feeds/s)"


def _ratio(mine: float | None, theirs: float | None) -> str:
    if mine is None or theirs is None:
        return "-"
    return f"{mine / theirs:.2f}x"


def report(
    console: Console, feeds: int, phase_name: str, target: Targets, results: dict[str, Measured]
) -> None:
    table = Table(
        title=f"Polling {feeds:,} {phase_name} feeds (feeds per second, higher is better)"
    )
    table.add_column("system")
    for title in COLUMNS.values():
        table.add_column(title, justify="right")
    table.add_column("peak MB (RSS)", justify="right")
    table.add_column("(PSS)", justify="right")
    for name, measured in results.items():
        cells = []
        for phase in COLUMNS:
            # A phase whose responses were not what the mode should give is flagged.
            sent = measured.counts[phase]
            odd = sent.get(EXPECTED_STATUS[phase], 0) != feeds or len(sent) != 1
            cells.append(f"{measured.rates[phase]:,.0f}{' !' if odd else ''}")
        table.add_row(
            ROWS[name], *cells, f"{measured.peak_mb:,.0f}", f"{measured.peak_pss_mb:,.0f}"
        )
    console.print(table)

    for name, measured in results.items():
        for phase in COLUMNS:
            console.print(
                f"  {ROWS[name]:<26} {phase:<5} server sent {measured.counts[phase]}; "
                f"{measured.notes[phase]}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    digest = results.get("digest")
    if digest is None:
        return
    ratios = Table(title="digest compared (digest rate / other rate)")
    ratios.add_column("against")
    for title in COLUMNS.values():
        ratios.add_column(title, justify="right")
    for name in ("reader", "floor-fetch", "floor-feedparser"):
        other = results.get(name)
        if other is not None:
            ratios.add_row(
                ROWS[name],
                *(_ratio(digest.rates[phase], other.rates[phase]) for phase in COLUMNS),
            )
    console.print(ratios)

    targets = Table(title=f"Targets, {phase_name} feeds ({target.issue})")
    targets.add_column("target")
    targets.add_column("measured", justify="right")
    targets.add_column("result")
    rates = [(phase, rate, "") for phase, rate in target.rates.items()]
    scaled_by: list[str] = []
    for phase, (floor_name, reference) in target.reference_floors.items():
        floor = results.get(floor_name)
        if floor is not None:
            scale = floor.rates[phase] / reference
            rates.append((phase, target.rates[phase] * scale, f" (scaled ×{scale:.2f})"))
            scaled_by.append(
                f"{COLUMNS[phase]}: {ROWS[floor_name]} {floor.rates[phase]:,.0f} feeds/s here, "
                f"{reference:,.0f} in {target.issue}"
            )
    for phase, rate, scaled in rates:
        targets.add_row(
            f"{COLUMNS[phase]} ≥ {rate:,.0f} feeds/s{scaled}",
            f"{digest.rates[phase]:,.0f} feeds/s",
            _verdict(digest.rates[phase] >= rate),
        )
    targets.add_row(
        f"peak memory < {target.peak_mb:.0f} MB",
        f"{digest.peak_mb:,.0f} MB",
        _verdict(digest.peak_mb < target.peak_mb),
    )
    reader = results.get("reader")
    for phase, times in target.reader_times.items():
        label = f"{'ahead of' if times == 1 else f'≥ {times:g}×'} reader, {COLUMNS[phase]}"
        if reader is None:
            targets.add_row(label, "-", "not run")
        else:
            ratio = digest.rates[phase] / reader.rates[phase]
            targets.add_row(label, f"{ratio:.2f}x reader", _verdict(ratio >= times))
    console.print(targets)
    for line in scaled_by:
        console.print(f"  scaled by {line}", markup=False, highlight=False)


def _verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def main() -> None:
    parser = argparse.ArgumentParser(description="Polling benchmark: digest vs reader vs floor.")
    parser.add_argument(
        "--phase",
        choices=("real", "synthetic", "both"),
        default="both",
        help="real published feeds (issue 12), synthetic RSS (issue 3), or both in turn (both)",
    )
    parser.add_argument("--feeds", type=int, default=1000, help="number of feeds (1000)")
    parser.add_argument("--entries", type=int, default=50, help="entries per synthetic feed (50)")
    parser.add_argument(
        "--real-feeds",
        type=Path,
        default=REAL_FEEDS,
        help="folder of real feeds ($DIGEST_REAL_FEEDS, else ../shared/realfeeds)",
    )
    parser.add_argument("--skip-reader", action="store_true", help="do not run reader")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each warm phase; the best counts (3)"
    )
    parser.add_argument(
        "--ports",
        type=int,
        default=25,
        help="server ports, each its own origin for per-host limits (25)",
    )
    parser.add_argument(
        "--only", action="append", choices=list(ROWS), help="run only this system (repeatable)"
    )
    args = parser.parse_args()
    names = [name for name in (args.only or ROWS) if not (args.skip_reader and name == "reader")]
    phases = ["real", "synthetic"] if args.phase == "both" else [args.phase]
    sources = {"real": Source(real=args.real_feeds), "synthetic": Source(args.entries)}
    served = {"synthetic": f"RSS feeds of {args.entries} entries"}
    if "real" in phases:  # fails here, with a message, when the folder is missing
        files = real_feeds(args.real_feeds)
        kinds = Counter(feed.content_type for feed in files).most_common()
        served["real"] = (
            f"feeds cycling through the {len(files)} real feeds of {args.real_feeds} "
            f"({', '.join(f'{count} {kind}' for kind, count in kinds)}; "
            f"{sum(len(feed.body) for feed in files) / 2**20:.1f} MB)"
        )
    # Wide enough for the tables when the output goes to a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 120)
    for phase in phases:
        console.print(
            f"[bold]{phase} phase[/bold]: serving {args.feeds:,} {served[phase]} "
            f"on {args.ports} ports; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}",
            highlight=False,
        )
        results: dict[str, Measured] = {}
        with (
            FeedServer(args.feeds, sources[phase], args.ports) as info,
            tempfile.TemporaryDirectory(prefix="bench-poll-") as workdir,
        ):
            for name in names:
                console.print(f"running {ROWS[name]} …")
                results[name] = measure(name, info, Path(workdir), args.repeat)
        report(console, args.feeds, phase, TARGETS[phase], results)


if __name__ == "__main__":
    main()
