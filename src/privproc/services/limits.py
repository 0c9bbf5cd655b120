"""The limits every privproc server puts on connections (`services.connections` enforces them),
in one place, and light to import (the command line shows them in its help).

Rules: numbers and their one record; nothing here imports a server.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HEADER_TIMEOUT", "MAX_CONNECTIONS", "RELAY_MAX_PER_CLIENT", "ConnectionLimits"]

HEADER_TIMEOUT = 10.0  # seconds for a request's headers, or idle between two requests
MAX_CONNECTIONS = 1024  # open at once; beyond, the longest-idle is closed
RELAY_MAX_PER_CLIENT = 64  # the relay's default cap on one client address


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_per_client: int | None = None
