"""Years of history (issue 15): a busy site simulated day by day, and what each command costs
as its history grows.

    python -m bench.history [--days 365] [--feeds 300] [--per-day 3]
                            [--checkpoints 1,30,90,180,365] [--no-shadow]

The site: --feeds feeds (half in each of two streams), each publishing --per-day new entries a
day (at 08:00, 13:00 and 18:00 UTC), two closings a day (12:00 and 23:00). One entry in five
is a wire story that several feeds of its stream carry, so that, as on a real site, some
entries never go into an edition (the first teller's copy does).

How each part gets there:
- Every ordinary day goes straight into the store, in this process: the day's new items are
  parsed by digest's own parser (`parse_feed`) and stored with `store_entries`; both streams
  close at 12:00 and 23:00 (`close_stream`) and the site is rendered after each
  (`publish.render`); retention prunes once a day as the daemon does. The poll path (HTTP,
  claims, parser processes) is not what these days measure.
- On the checkpoint days the measured commands are real `digest` processes (`bench.at_time`
  sets their clock to the simulated time): `poll` through the real poll path from a local
  feed server (aiohttp on 127.0.0.1, in its own process, serving each feed's latest items),
  `build --at 12:00`, `update` at 23:00 (poll, build, render), `render` with nothing new,
  a full rebuild (`render` after the output folder is moved away) and `db prune --vacuum`
  (what a weekly cron job would run). Each is measured in wall-clock seconds and in CPU
  seconds (user and system), and its peak memory is the resident set of the process and its
  descendants together, its parser and render workers included (see run_digest).

"Without retention": a shadow database gets the same entries and closings and is never
pruned (--no-shadow skips it); the database target compares it, compacted by a VACUUM too,
with the site's database after the VACUUM at the last day. Both keep a published entry's
text once, in its edition's copy (digest.store.entries): that is how digest stores, not
retention. Retention (the site's defaults) deletes unpublished entries after 90 days and packs
editions closed more than 30 days ago (digest.store.packed): their items compressed into
the edition row, their entries retired to key fingerprints. This site's text comes from a
small vocabulary, which compresses better than real writing: on the real feeds of
../shared/realfeeds a day's items pack to about 0.35 of their JSON, here to about 0.23
(measured when packing was added), so a real site's packed editions are about half as
large again as this one's.

Targets (issue 15): every command at the last day within 1.5x of day 30 (the rebuild and the
VACUUM aside: they go through the whole history by nature, so only their memory is held to
the target), judged on CPU seconds, the cost the issue measured: on a busy machine one run's
wall time varies by more than the targets' margin, so it is shown beside, not judged;
peak memory of any command under 300 MB; no page over 200 KB but edition pages;
the database at the last day under a third of its size without retention; the whole run
under 15 minutes. Always exits 0: it is a report.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from html import escape
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.feeds_server import _WORDS
from bench.poll import PeakMemory

START = date(2024, 1, 1)  # day 1 of the simulated site
HOURS = (8, 13, 18)  # when each day's entries are published (UTC), up to --per-day of them
CLOSINGS = (12, 23)
LISTED_DAYS = 7  # a feed lists the items of its last week
STREAMS = ("links", "tech")
COMMANDS = ("poll", "build", "update", "render", "rebuild", "vacuum")
# Commands that go through the whole history by nature: their memory is the target, not time.
WHOLE_HISTORY = ("rebuild", "vacuum")
PEAK_MB = 300.0
PAGE_KB = 200.0


def feed_url(port: int, index: int) -> str:
    return f"http://127.0.0.1:{port}/feeds/{index}.xml"


def item_time(day: int, k: int) -> datetime:
    """Entry k of day `day` (1-based days), at one of HOURS, then every hour after them."""
    hour = HOURS[k] if k < len(HOURS) else HOURS[-1] + k - len(HOURS) + 1
    return datetime.combine(START + timedelta(days=day - 1), datetime.min.time(), UTC).replace(
        hour=min(hour, 22)
    )


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choices(_WORDS, k=words))
    return text[0].upper() + text[1:] + "."


def item_xml(index: int, day: int, k: int) -> str:
    rng = random.Random(index * 1_000_003 + day * 101 + k)
    title = _sentence(rng, rng.randint(6, 11)).rstrip(".")
    site = f"https://blog{index}.example.com"
    published = item_time(day, k)
    if (index + day + k) % 5 == 0:  # a wire story several feeds of the stream carry
        link = f"https://wire.example.com/{day}/{k}/{index % 14}"
    else:
        link = f"{site}/{published:%Y/%m/%d}/{'-'.join(title.lower().split()[:5])}/"
    blurb = " ".join(_sentence(rng, rng.randint(10, 16)) for _ in range(3))
    return (
        f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
        f'<guid isPermaLink="false">{site}/?p={day * 100 + k}</guid>'
        f"<pubDate>{format_datetime(published)}</pubDate>"
        f"<description>{escape(f'<p>{blurb}</p>')}</description></item>"
    )


def feed_xml(index: int, days: range, per_day: int) -> bytes:
    items = "".join(
        item_xml(index, day, k)
        for day in reversed(days)
        if day >= 1
        for k in reversed(range(per_day))
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>Blog {index}</title><link>https://blog{index}.example.com/</link>"
        f"<description>Blog {index}</description>{items}</channel></rss>"
    ).encode()


# --- the feed server -----------------------------------------------------------------------


def _serve(per_day: int, ready: Connection) -> None:
    import asyncio

    from aiohttp import web

    state = {"day": 1}

    async def feed(request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        day = state["day"]
        body = feed_xml(index, range(day - LISTED_DAYS + 1, day + 1), per_day)
        return web.Response(body=body, content_type="application/rss+xml")

    async def set_day(request: web.Request) -> web.Response:
        state["day"] = int(request.match_info["day"])
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/feeds/{index}.xml", feed)
        app.router.add_get("/day/{day}", set_day)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        ready.send(sock.getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


class FeedServer:
    def __init__(self, per_day: int) -> None:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve, args=(per_day, send), daemon=True)
        self.process.start()
        if not receive.poll(60):
            self.process.terminate()
            raise RuntimeError("the feed server did not start")
        self.port: int = receive.recv()

    def set_day(self, day: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/day/{day}") as response:
            response.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# --- the site ------------------------------------------------------------------------------


def write_config(root: Path, port: int, feeds: int, database: str) -> Path:
    lines = [
        "site:",
        "  title: History Links",
        "  base_url: https://links.example.org/",
        "  gemini_base_url: gemini://links.example.org/",
        "  timezone: UTC",
        "  output_dir: public",
        f"  database: {database}",
        "  state_dir: state",
        "streams:",
    ]
    for name in STREAMS:
        lines += [
            f"  {name}:",
            f'    title: "{name.title()} {{date:%d/%m/%Y}}: {{headlines}}"',
            f"    summary: {name.title()} for the day",
            '    schedule: "0 12,23 * * *"',
            "    sections: [Science, Security, Leftovers]",
        ]
    lines += ["fetch:", "  allow_private_networks: true", "feeds:"]
    for index in range(feeds):
        section = ("Science", "Security", "Leftovers")[index % 3]
        lines.append(
            f"  - {{url: '{feed_url(port, index)}', name: Blog {index}, "
            f"stream: {STREAMS[index % 2]}, section: {section}}}"
        )
    path = root / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float
    peak_mb: float
    output: str


def run_digest(config: Path, at: datetime, *args: str) -> Measured:
    """One `digest` process with its clock at `at`: wall time, and the CPU time and peak
    memory of the process and all its descendants.

    Its parser and render workers are the fork server's children, which wait4 does not count
    with it: the peak is the summed memory of the whole tree, sampled from /proc
    (bench.poll.PeakMemory), and the CPU time adds the fork server's own rusage (its workers'
    included), collected as this process is the subreaper that the orphaned server ends under.
    """
    become_subreaper()
    command = [sys.executable, "-m", "bench.at_time", at.isoformat(), "--config", str(config)]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = PeakMemory(process.pid)
    sampler.start()
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    sampler.stop()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        raise RuntimeError(f"digest {' '.join(args)} exited {process.returncode}:\n{output}")
    cpu = usage.ru_utime + usage.ru_stime + orphans_cpu(sampler.seen - {process.pid})
    peak = max(sampler.peak_rss / 2**20, usage.ru_maxrss / 1024)
    return Measured(seconds, cpu, peak, output)


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def become_subreaper() -> None:
    """Orphaned descendants of our children end under this process instead of init, so
    that their resource usage can be collected (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def orphans_cpu(pids: set[int], patience: float = 10.0) -> float:
    """CPU seconds of those of `pids` that ended up as our children (a fork server and what
    it had not reaped), once each has exited; the others were reaped by their parents, whose
    rusage holds them."""
    total = 0.0
    deadline = time.monotonic() + patience
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done, _, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                waiting.discard(pid)  # not ours: reaped by its own parent
                continue
            if done:
                total += usage.ru_utime + usage.ru_stime
                waiting.discard(pid)
        time.sleep(0.01)
    return total


@dataclass
class Checkpoint:
    day: int
    measured: dict[str, Measured] = field(default_factory=dict)
    database_mb: float = 0.0
    shadow_mb: float | None = None
    vacuumed_mb: float = 0.0
    public_mb: float = 0.0
    largest_page: tuple[str, int] = ("", 0)
    largest_other: tuple[str, int] = ("", 0)
    editions: int = 0
    entries: int = 0


def database_bytes(store: Any) -> int:
    """The database's files, its write-ahead log checkpointed into it first."""
    with store.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    path = Path(store.url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def is_edition_page(relative: Path) -> bool:
    # <stream>/YYYY/MM/DD/<n>.html|gmi
    return len(relative.parts) == 5 and relative.parts[3].isdigit()


def survey(public: Path, checkpoint: Checkpoint) -> None:
    total = 0
    for path in public.rglob("*"):
        if not path.is_file():
            continue
        size = path.stat().st_size
        total += size
        relative = path.relative_to(public)
        if size > checkpoint.largest_page[1]:
            checkpoint.largest_page = (str(relative), size)
        if not is_edition_page(relative) and size > checkpoint.largest_other[1]:
            checkpoint.largest_other = (str(relative), size)
    checkpoint.public_mb = total / 2**20


class Simulation:
    """The site and its shadow (the same entries and closings, never pruned)."""

    def __init__(self, root: Path, port: int, feeds: int, per_day: int, shadow: bool) -> None:
        from digest.config import load_config
        from digest.store import Store

        self.root = root
        self.feeds = feeds
        self.per_day = per_day
        self.port = port
        self.database = f"sqlite:///{root / 'digest.db'}"
        self.config_path = write_config(root, port, feeds, self.database)
        self.config = load_config(self.config_path)
        self.settings = self.config.settings
        self.store = Store(self.database)
        self.stores = [self.store]
        self.shadow: Any = None
        if shadow:
            shadow_url = f"sqlite:///{root / 'shadow' / 'shadow.db'}"
            self.shadow = Store(shadow_url)
            self.stores.append(self.shadow)
            # Its own output folder: closings number after the pages they find there.
            site = self.settings.site.model_copy(update={"output_dir": root / "shadow" / "public"})
            self.shadow_settings = self.settings.model_copy(update={"site": site})
        self.feed_ids: list[dict[str, int]] = []
        for store in self.stores:
            self._prepare(store)

    def _prepare(self, store: Any) -> None:
        from sqlalchemy import select

        from digest.store import FeedRow, sync_feeds

        store.upgrade()
        with store.writing() as session:
            sync_feeds(session, self.settings.feeds, datetime.now(UTC))
        with store.reading() as session:
            self.feed_ids.append(dict(session.execute(select(FeedRow.url, FeedRow.id)).all()))

    def store_day(self, day: int, stores: list[Any]) -> None:
        """The day's new items, parsed by digest's parser and stored straight into the store."""
        from digest.parse import parse_feed
        from digest.store import store_entries

        now = item_time(day, self.per_day - 1) + timedelta(minutes=30)
        parsed = []
        for index in range(self.feeds):
            url = feed_url(self.port, index)
            body = feed_xml(index, range(day, day + 1), self.per_day)
            parsed.append((url, parse_feed(body, url=url, now=now).entries))
        for store in stores:
            ids = self.feed_ids[self.stores.index(store)]
            for start in range(0, len(parsed), 50):
                with store.writing() as session:
                    for url, entries in parsed[start : start + 50]:
                        store_entries(session, ids[url], entries, now)

    def close(self, day: int, hour: int, stores: list[Any], render: bool) -> None:
        from digest.publish import close_stream
        from digest.publish import render as render_site

        at = datetime.combine(START + timedelta(days=day - 1), datetime.min.time(), UTC).replace(
            hour=hour
        )
        for store in stores:
            settings = self.settings if store is self.store else self.shadow_settings
            for name in STREAMS:
                close_stream(store, settings, name, at)
        if render:
            render_site(self.store, self.settings)

    def prune(self, day: int) -> None:
        """Retention's daily prune, as the daemon runs it (at the end of the day)."""
        from digest.retention import prune

        prune(
            self.store,
            self.settings,
            datetime.combine(START + timedelta(days=day), datetime.min.time(), UTC),
        )

    def ordinary_day(self, day: int) -> None:
        self.store_day(day, self.stores)
        for hour in CLOSINGS:
            self.close(day, hour, self.stores, render=True)
        self.prune(day)

    def checkpoint_day(self, day: int, server: FeedServer) -> Checkpoint:
        checkpoint = Checkpoint(day)
        server.set_day(day)
        base = datetime.combine(START + timedelta(days=day - 1), datetime.min.time(), UTC)
        config = self.config_path
        checkpoint.measured["poll"] = run_digest(config, base.replace(hour=11), "poll")
        checkpoint.measured["build"] = run_digest(
            config, base.replace(hour=12), "build", "--at", f"{base:%Y-%m-%d} 12:00"
        )
        checkpoint.measured["update"] = run_digest(config, base.replace(hour=23), "update")
        checkpoint.measured["render"] = run_digest(
            config, base.replace(hour=23, minute=5), "render"
        )
        public = self.root / "public"
        aside = self.root / "public-before-rebuild"
        public.rename(aside)
        checkpoint.measured["rebuild"] = run_digest(
            config, base.replace(hour=23, minute=10), "render"
        )
        shutil.rmtree(aside)
        if self.shadow is not None:  # the same entries and closings, by the direct path
            self.store_day(day, [self.shadow])
            for hour in CLOSINGS:
                self.close(day, hour, [self.shadow], render=False)
        self.prune(day)
        checkpoint.database_mb = database_bytes(self.store) / 2**20
        if self.shadow is not None:
            from digest.retention import vacuum

            # Compacted like the site's database below, so that the two differ by what
            # retention deleted, not by free space inside the file (not timed).
            vacuum(self.shadow)
            checkpoint.shadow_mb = database_bytes(self.shadow) / 2**20
        # What a weekly `digest db prune --vacuum` from cron gives back: the daily prune's
        # deletions are scattered among kept rows, so only a VACUUM can shrink the file.
        checkpoint.measured["vacuum"] = run_digest(
            config, base.replace(hour=23, minute=30), "db", "prune", "--vacuum"
        )
        checkpoint.vacuumed_mb = database_bytes(self.store) / 2**20
        survey(public, checkpoint)
        checkpoint.editions, checkpoint.entries = self.counts()
        return checkpoint

    def counts(self) -> tuple[int, int]:
        from sqlalchemy import func, select

        from digest.store import EditionRow, EntryRow

        with self.store.reading() as session:
            editions = session.scalar(select(func.count()).select_from(EditionRow)) or 0
            entries = session.scalar(select(func.count()).select_from(EntryRow)) or 0
        return editions, entries


# --- the report ----------------------------------------------------------------------------


def report(checkpoints: list[Checkpoint], console: Console, elapsed: float, args: Any) -> None:
    table = Table(title=f"digest over {args.days} simulated days ({args.feeds} feeds)")
    table.add_column("day", justify="right")
    for command in COMMANDS:
        table.add_column(f"{command} s / cpu s / MB", justify="right")
    for name in (
        "db MB",
        "after VACUUM MB",
        "no-retention MB",
        "public MB",
        "largest page KB",
        "largest other KB",
    ):
        table.add_column(name, justify="right")
    for cp in checkpoints:
        table.add_row(
            str(cp.day),
            *(
                f"{m.seconds:.2f} / {m.cpu_seconds:.2f} / {m.peak_mb:.0f}"
                for m in (cp.measured[c] for c in COMMANDS)
            ),
            f"{cp.database_mb:.1f}",
            f"{cp.vacuumed_mb:.1f}",
            f"{cp.shadow_mb:.1f}" if cp.shadow_mb is not None else "-",
            f"{cp.public_mb:.1f}",
            f"{cp.largest_page[1] / 1024:.0f}",
            f"{cp.largest_other[1] / 1024:.0f} ({cp.largest_other[0]})",
        )
    console.print(table)
    last = checkpoints[-1]
    console.print(
        f"day {last.day}: {last.editions} editions, {last.entries} entries in rows; "
        f"largest page {last.largest_page[0]}"
    )
    base = next((cp for cp in checkpoints if cp.day == 30), None)
    lines = []
    if base is not None and base is not last:
        for command in COMMANDS:
            now, then = last.measured[command], base.measured[command]
            ratio = now.cpu_seconds / then.cpu_seconds
            ratios = (
                f"{command}: day {last.day} / day 30 = {ratio:.2f}x in CPU time "
                f"({now.seconds / then.seconds:.2f}x wall)"
            )
            if command in WHOLE_HISTORY:
                lines.append(
                    (
                        f"{ratios}, no target: it goes through the whole history; its memory "
                        "is what must stay flat",
                        True,
                    )
                )
                continue
            lines.append((f"{ratios}, target <= 1.5x", ratio <= 1.5))
    peak = max(m.peak_mb for cp in checkpoints for m in cp.measured.values())
    lines.append(
        (f"peak memory of any command: {peak:.0f} MB (target < {PEAK_MB:.0f})", peak < PEAK_MB)
    )
    other = max(cp.largest_other[1] for cp in checkpoints) / 1024
    lines.append(
        (f"largest page but editions: {other:.0f} KB (target <= {PAGE_KB:.0f})", other <= PAGE_KB)
    )
    if last.shadow_mb:
        share = last.vacuumed_mb / last.shadow_mb
        lines.append(
            (
                f"database at day {last.day} (after VACUUM): {last.vacuumed_mb:.1f} MB = "
                f"{share:.2f} of "
                f"{last.shadow_mb:.1f} MB without retention (target < 0.33)",
                share < 1 / 3,
            )
        )
    lines.append((f"whole run: {elapsed / 60:.1f} min (target < 15 for 365 days)", elapsed < 900))
    for text, met in lines:
        console.print(f"  {'met    ' if met else 'NOT MET'}  {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--feeds", type=int, default=300)
    parser.add_argument("--per-day", type=int, default=3)
    parser.add_argument("--checkpoints", default="1,30,90,180,365")
    parser.add_argument("--no-shadow", action="store_true", help="skip the unpruned database")
    parser.add_argument("--keep", type=Path, help="simulate in this folder and keep it")
    args = parser.parse_args()
    wanted = sorted(
        {int(d) for d in args.checkpoints.split(",") if int(d) <= args.days} | {args.days}
    )
    console = Console(highlight=False, width=240)  # the whole table, also in a log file
    root = args.keep or Path(tempfile.mkdtemp(prefix="digest-history-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server = FeedServer(args.per_day)
    checkpoints = []
    try:
        simulation = Simulation(root, server.port, args.feeds, args.per_day, not args.no_shadow)
        for day in range(1, args.days + 1):
            if day in wanted:
                checkpoint = simulation.checkpoint_day(day, server)
                checkpoints.append(checkpoint)
                poll = checkpoint.measured["poll"]
                console.print(
                    f"day {day}: poll {poll.seconds:.2f} s, render "
                    f"{checkpoint.measured['render'].seconds:.2f} s, rebuild "
                    f"{checkpoint.measured['rebuild'].seconds:.2f} s, db "
                    f"{checkpoint.database_mb:.1f} MB ({time.perf_counter() - started:.0f} s in)"
                )
            else:
                simulation.ordinary_day(day)
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    report(checkpoints, console, time.perf_counter() - started, args)


if __name__ == "__main__":
    main()
