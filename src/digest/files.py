"""Files written whole or not at all, so a web server, rsync or the next run never reads half.

Each write goes to a temporary file beside its target and is renamed over it. A process
killed mid-write leaves only that temporary file behind, which `remove_temporary_files`
recognizes by its name and removes on the next run.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

# tempfile.mkstemp puts 8 characters of [a-z0-9_] between our prefix and suffix.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def write_atomically(
    path: Path, data: bytes, mode: int = 0o644, check: Callable[[Path], None] | None = None
) -> None:
    """Replace `path` (its folders created) with `data`; readers see the old or the new file.

    `check`, given the written temporary file, may raise to leave `path` as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        # mkstemp makes the file private; our files are for the web server to read.
        os.chmod(tmp_name, mode)
        if check is not None:
            check(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def is_temporary_file(name: str) -> bool:
    """Whether a file of this name is one `write_atomically` had not yet renamed into place."""
    return _TEMPORARY.match(name) is not None


def remove_temporary_files(folder: Path) -> list[Path]:
    """Delete the temporary files killed writes left under `folder` (safe only while no write
    runs there, e.g. under the publish lock)."""
    removed = []
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            if is_temporary_file(name):
                path = Path(parent, name)
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
