"""How long clients may take and how many may be connected at once, for both servers: a
request's headers (HTTP) or request line (Gemini) must arrive within `header_timeout`, an idle
keep-alive connection closes after `idle_timeout`, and one ConnectionGate caps the open
connections of both below the descriptor limit."""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger("digest.serve")

# The connection cap leaves room for the descriptors a connection may hold besides its socket
# (the file being served), the listening sockets, the database and the log.
_MAX_CONNECTIONS = 512
_RESERVED_DESCRIPTORS = 64


def default_max_connections() -> int:
    """512, or fewer when the process's descriptor limit is low: half of what is left of the
    soft RLIMIT_NOFILE after 64 reserved, since a connection may hold a served file open too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    return max(8, min(_MAX_CONNECTIONS, (soft - _RESERVED_DESCRIPTORS) // 2))


@dataclass(frozen=True)
class Limits:
    """How long clients may take and how many may be connected at once (both servers)."""

    header_timeout: float = 10.0  # seconds to send an HTTP request's headers / the Gemini line
    idle_timeout: float = 60.0  # seconds an HTTP keep-alive connection may sit idle
    max_connections: int | None = None  # None: default_max_connections()


class ConnectionGate:
    """Counts the open connections of both servers and refuses new ones at `limit`. The log
    says "limit reached" once, and once more when the count is back under it (with how many
    were refused meanwhile); the gap between the two levels keeps a server that sits at its
    limit from logging each connection."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the connection limit must be at least 1, not {limit}")
        self.limit = limit
        self.resume_at = limit - max(1, limit // 10)
        self.open = 0
        self.refused = 0
        self.full = False

    def admit(self) -> bool:
        """True, counting the connection in, or False: close it at once."""
        if self.open >= self.limit:
            self.refused += 1
            if not self.full:
                self.full = True
                log.warning("connection limit reached (%d); refusing new connections", self.limit)
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
        if self.full and self.open <= self.resume_at:
            log.warning(
                "accepting connections again (%d open); refused %d at the limit",
                self.open,
                self.refused,
            )
            self.full = False
            self.refused = 0
