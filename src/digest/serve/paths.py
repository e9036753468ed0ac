"""What file a URL path names, and its type: one rule for both servers. No ``..``, no empty
or hidden (dot) segments, symlinks only when they stay inside the folder, a directory serves
its index file, and no directory is ever listed."""

from __future__ import annotations

import enum
import mimetypes
import os
from pathlib import Path

# Text types carry their charset so no client guesses; feed.xml is Atom, other XML is not.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".gmi": "text/gemini; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",  # feeds.opml: what feed readers expect to import
}
ATOM_TYPE = "application/atom+xml; charset=utf-8"


class Redirect(enum.Enum):
    """The path names a directory without its trailing slash."""

    ADD_SLASH = "add-slash"


def content_type(path: Path) -> str:
    """The Content-Type (HTTP) or MIME meta (Gemini) for a served file."""
    if path.name == "feed.xml":
        return ATOM_TYPE
    known = _CONTENT_TYPES.get(path.suffix.lower())
    return known or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def resolve_path(root: Path, url_path: str, index: str) -> Path | Redirect | None:
    """The file a decoded URL path names under `root`, `Redirect.ADD_SLASH` for a directory
    asked without its slash, or None (not found, or outside the folder: both look the same)."""
    if not url_path.startswith("/") or "\x00" in url_path:
        return None
    parts = url_path[1:].split("/")
    *folders, last = parts
    # Empty segments would turn "//evil.example" into a protocol-relative redirect.
    if any(not name or name.startswith(".") for name in folders) or last.startswith("."):
        return None
    try:
        # Resolved per request, so a deploy that swaps a symlinked folder is seen at once.
        base = Path(os.path.realpath(root))
        target = Path(os.path.realpath(base.joinpath(*parts)))
        if not target.is_relative_to(base):
            return None
        if target.is_dir():
            if last:
                return Redirect.ADD_SLASH
            target = Path(os.path.realpath(target / index))
            if not target.is_relative_to(base):
                return None
        elif not last:
            return None
        return target if target.is_file() else None
    except (OSError, ValueError):
        return None
