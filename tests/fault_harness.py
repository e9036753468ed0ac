"""Running digest where root's powers would hide a fault: a site folder `nobody` may write,
feeds read from files, and the command run in a forked child (fork, not exec, keeps the
imports: `nobody` cannot run our Python), as `nobody` or with a file size limit that fails a
write half way like a full disk does."""

from __future__ import annotations

import codecs
import os
import resource
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.cli import cli
from tests.daemon_harness import FeedServer, Site

NOBODY = 65534


@pytest.fixture
def world_site() -> Iterator[Site]:
    """A site in a folder `nobody` may write (pytest's tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="digest-faults-"))
    top.chmod(0o755)
    root = top / "site"
    root.mkdir()
    root.chmod(0o777)
    made = Site(root, feeds=[])
    yield made
    made.cleanup()
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    subprocess.run(["rm", "-rf", str(top)], check=True)


def file_feeds(site: Site, feeds: FeedServer, *names: str) -> None:
    """Feeds read from files beside the config (so a forked child needs no server)."""
    for name in names:
        (site.root / f"{name}.xml").write_bytes(feeds.rss(name))
    site.feeds = [
        {"url": f"file:{name}.xml", "name": name.title(), "stream": "links", "interval": "1s"}
        for name in names
    ]
    site.write_config()


def digest_in_child(
    site: Site, *args: str, as_nobody: bool = False, max_file_size: int | None = None
) -> tuple[int, str, str]:
    """Run the digest command in a forked child; its exit code, stdout and stderr."""
    out, err = site.root / "child.out", site.root / "child.err"
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            sys.stdout = open(out, "w", encoding="utf-8")  # noqa: SIM115
            sys.stderr = open(err, "w", encoding="utf-8")  # noqa: SIM115
            for name in [name for name in os.environ if name.startswith("DIGEST_")]:
                del os.environ[name]
            if as_nobody:
                # Python's own modules may be out of `nobody`'s reach too (under /root): the
                # codec Jinja's lexer decodes template strings with, imported lazily, is
                # imported here, or the child's first template fails when no earlier test of
                # this worker made one.
                codecs.lookup("unicode-escape")
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            if max_file_size is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
                hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, hard))
            try:
                cli.main(["--config", str(site.config), *args], prog_name="digest")
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()
