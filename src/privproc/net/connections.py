"""What every privproc HTTP server does about connections that cost it without asking anything:
a flood of slow or idle connections must not deny service to the others.

- A connection that has no request under way (before its first request's headers are complete,
  or idle between requests) is closed `header_timeout` seconds after it became so, however slowly
  it keeps sending bytes (uvicorn's own keep-alive timer restarts at every byte).
- At most `max_connections` are open: a new connection beyond that closes, of the client address
  holding the most connections, the one that has been without a request the longest; only if
  every one has a request under way is the new one closed instead. So slow clients are shed
  first, the greediest address first, and a new client still gets in.
- With `max_per_client` (the relay, which sees client addresses), one address holds at most that
  many: beyond it, its own longest-idle connection is closed (or the new one).
- A request's target and header fields together are at most `max_header_bytes`: beyond, the
  connection gets 400 and is closed, however the bytes arrive.
- Bodies have their own deadline where they are read (`net/http.py`'s `read_body`).

Rules: a subclass of uvicorn's httptools protocol (llhttp's parser: issue 18 measured it at a
fifth of the h11 protocol's cost a request, bench/bench_http.py), configured by
`ConnectionLimits` (whose numbers live in `privproc.limits`); it reads nothing of a request but
the sizes of its target and fields, and logs no address.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from privproc.limits import ConnectionLimits

__all__ = ["ConnectionLimits", "guarded_protocol"]


class HeadersTooLargeError(Exception):
    """Raised from a parser callback: the parser stops, uvicorn answers 400 and closes."""


class _GuardedProtocol(HttpToolsProtocol):
    limits: ConnectionLimits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_since = time.monotonic()
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            raise HeadersTooLargeError  # the parser's error: 400, and the connection closes

    @property
    def busy(self) -> bool:
        """Whether a request is under way (its headers complete, its answer not yet sent)."""
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._became_idle()
        self._shed(self.connections, self.limits.max_connections)
        if self.limits.max_per_client is not None and self.client is not None and self.alive:
            address = self.client[0]
            same = {c for c in self.connections if _address(c) == address}
            self._shed(same, self.limits.max_per_client)

    @property
    def alive(self) -> bool:
        return not self.transport.is_closing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._became_idle()
        super().on_response_complete()

    def _became_idle(self) -> None:
        self.idle_since = time.monotonic()
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if not self.busy:  # busy: a request is under way, its own deadlines apply; its answer's
            self.transport.close()  # end starts a new timer (`on_response_complete`)

    def _shed(self, group: set[Any], limit: int) -> None:
        """Keep `group` (connections, this new one among them) within `limit`: close, of the
        address holding the most connections, the one without a request the longest; or this new
        one if all others are busy. (By address first: a burst of new connections from one
        address, accepted together, must not shed another client's before it could send a byte.)"""
        if len(group) <= limit:  # the common case, on every new connection: nothing to scan
            return
        open_ = [c for c in group if c.alive]
        while len(open_) > limit:
            idle = [c for c in open_ if c is not self and not c.busy]
            if not idle:
                self.transport.close()
                return
            held = collections.Counter(_address(c) for c in open_)
            most = max(held[_address(c)] for c in idle)
            victim = min((c for c in idle if held[_address(c)] == most), key=lambda c: c.idle_since)
            victim.transport.close()
            open_.remove(victim)


def _address(connection: Any) -> str | None:
    client = getattr(connection, "client", None)
    return client[0] if client else None


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol under `limits` (a class per server: uvicorn makes one per
    connection)."""
    return type("GuardedProtocol", (_GuardedProtocol,), {"limits": limits})
