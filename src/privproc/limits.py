"""Every bound more than one party shares, each written once: what a connection may hold
(`net/connections.py` enforces it), how large a request body, a session's records and a
streamed answer may be. Light to import (the command line shows them in its help).

Rules: numbers and their one record; nothing here imports anything of privproc.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HEADER_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_HEADER_BYTES",
    "MAX_RECORDS",
    "MAX_STREAMED",
    "RELAY_MAX_PER_CLIENT",
    "ConnectionLimits",
]

HEADER_TIMEOUT = 10.0  # seconds for a request's headers, or idle between two requests
MAX_CONNECTIONS = 1024  # open at once; beyond, the longest-idle is closed
MAX_HEADER_BYTES = 16 * 1024  # a request's target and header fields, together
RELAY_MAX_PER_CLIENT = 64  # the relay's default cap on one client address

MAX_BODY = 256 * 1024  # bytes of one API request body: the enclave's API, its HTTP, the proxy
MAX_RECORDS = 1 << 20  # bytes of attested-TLS records one request carries, either way
MAX_STREAMED = 64 << 20  # sealed bytes of one streamed answer: the relay's cap and the client's


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_per_client: int | None = None
    max_header_bytes: int = MAX_HEADER_BYTES
