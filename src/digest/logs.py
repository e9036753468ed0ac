"""Log output: to stderr (journald or the terminal), one line per event, as text or JSON."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # One event, one line: a traceback is folded onto it.
        return super().format(record).replace("\n", "\\n")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def configure_logging(log_format: str, level: str) -> None:
    """Logs go to stderr (journald or the terminal), one line per event."""
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler says "job skipped: already running" at each tick of a long poll; our jobs log
    # what they do themselves.
    if root.level > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
