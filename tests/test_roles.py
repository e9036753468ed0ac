"""Roles: any number of pollers, one publisher at a time, and a standby that takes over.

The feed server (the `server` fixture) is the daemon tests' harness, tests/daemon_harness.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from digest.store import EditionRow, Store
from tests.daemon_harness import DIGEST, FeedServer, digest_here, wait_for

pytestmark = pytest.mark.slow

TEST_HOOKS = {"DIGEST_TEST_CLOSE_EVERY": "1s", "DIGEST_TEST_LEADER_CHECK": "1s"}


class Node:
    """One `digest run` with a config and state folder of its own, on the shared database."""

    def __init__(self, root: Path, database_url: str, feed_url: str) -> None:
        root.mkdir()
        self.root = root
        self.config = root / "feeds.yaml"
        self.config.write_text(
            "site:\n"
            "  title: Test Links\n"
            "  base_url: https://links.example.org/\n"
            f"  database: {json.dumps(database_url)}\n"
            "  output_dir: public\n"
            "  state_dir: state\n"
            "streams:\n"
            "  links:\n"
            '    title: "Links {date:%d/%m/%Y}: {headlines}"\n'
            "    summary: Links for the day\n"
            '    schedule: "0 0 1 1 *"\n'
            "    lookback: 36500d\n"
            "fetch: {allow_private_networks: true}\n"
            f"feeds:\n  - {{url: {json.dumps(feed_url)}, name: Alpha, stream: links}}\n"
        )
        self.process: subprocess.Popen[str] | None = None

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        return clean | TEST_HOOKS

    def digest(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command on this node's config (a poll, a status), in the test's process."""
        return digest_here(self.config, args, TEST_HOOKS)

    def start(self, role: str) -> None:
        with (self.root / "daemon.log").open("w") as log:
            self.process = subprocess.Popen(
                [DIGEST, "--config", str(self.config), "run", "--role", role],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env=self.env(),
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return (self.root / "daemon.log").read_text()

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@pytest.fixture
def nodes(tmp_path: Path, database_url: str, server: FeedServer) -> Iterator[list[Node]]:
    made = [Node(tmp_path / name, database_url, server.url("alpha")) for name in "ab"]
    yield made
    for node in made:
        node.kill()


def editions(database_url: str) -> list[tuple[str, int]]:
    store = Store(database_url)
    try:
        with store.reading() as session:
            rows = session.execute(
                select(EditionRow.date, EditionRow.number).order_by(EditionRow.id)
            ).all()
    finally:
        store.close()
    return [(str(day), number) for day, number in rows]


def test_one_publisher_closes_and_a_standby_takes_over_when_it_dies(
    nodes: list[Node], server: FeedServer, database_url: str
) -> None:
    a, b = nodes
    server.add("alpha", 3)
    assert a.digest("poll").returncode == 0
    a.start("publish")
    wait_for(lambda: "publisher role taken" in a.log, "node a to take the publisher role")
    b.start("publish")
    wait_for(lambda: "daemon started" in b.log, "node b to start")
    wait_for(lambda: len(editions(database_url)) == 1, "the first edition")
    server.add("alpha", 2)
    assert b.digest("poll", "--all").returncode == 0  # a poller beside the publishers
    wait_for(lambda: len(editions(database_url)) == 2, "the second edition")
    assert "closed links/" in a.log
    assert "publisher role taken" not in b.log and "closed links/" not in b.log

    a.kill()  # the holder dies: its connection (or file lock) goes with it
    server.add("alpha", 2)
    assert b.digest("poll", "--all").returncode == 0
    wait_for(lambda: "publisher role taken" in b.log, "node b to take over", timeout=30)
    wait_for(lambda: len(editions(database_url)) == 3, "an edition closed by node b")
    assert "closed links/" in b.log
    numbers = [number for _, number in editions(database_url)]
    assert numbers == list(range(1, len(numbers) + 1))  # no gap, no double

    status = json.loads(b.digest("status", "--json").stdout)
    roles = sorted(worker["role"] for worker in status["workers"])
    assert "publish" in roles  # node b, now the publisher


def test_a_poll_node_never_publishes(
    nodes: list[Node], server: FeedServer, database_url: str
) -> None:
    a, _ = nodes
    server.add("alpha", 3)
    a.start("poll")
    wait_for(lambda: "polled 1 feeds" in a.log, "node a to poll")
    status = json.loads(a.digest("status", "--json").stdout)
    assert [worker["role"] for worker in status["workers"]] == ["poll"]
    assert editions(database_url) == []
    assert not (a.root / "public").exists()
