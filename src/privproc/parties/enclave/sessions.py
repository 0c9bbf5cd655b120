"""The enclave's session table: which attested sessions exist, how long each may live, and which
one gives way when a new session needs room.

Rules of this module:
- Sans-IO: time is an argument (`now`, monotonic seconds), never read here; whether a session is
  in use (an exchange under way) is the caller's answer to `in_use(value)`.
- Only application data counts as activity: the caller calls `touch` only for an exchange whose
  records carried application bytes. Handshake records, empty posts and partial records keep
  nothing alive, so a squatter must send real requests, which `max_requests` counts.
- A session ends when it has been idle `idle_timeout`, when it is `lifetime` old, or once it has
  served `max_requests` requests. The answer that reaches the request budget, or the first one
  after the lifetime, is the session's last (`last_answer`: the service closes the connection
  with it, so the client opens a new session at once); an idle session's next exchange is
  refused (`idle`), and the client opens a new one then.
- At most `max_sessions` exist. A new session that finds the table full takes the place of the
  one idle longest, if that one has been idle at least `evictable_after` and is not in use;
  otherwise it is refused (`SessionsBusyError`), and the caller answers "busy".
- A session in use is never evicted or reaped; it is judged again at its next exchange.
- The policy is part of the enclave's measured configuration (`config()`): another policy is
  another build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from privproc.api import SessionPolicy
from privproc.errors import PrivprocError, UsageError

__all__ = ["SessionTable", "SessionsBusyError"]

T = TypeVar("T")


class SessionsBusyError(PrivprocError):
    """Every session is taken and none has been idle long enough to give way: try later."""

    retryable = True


@dataclass
class _Entry(Generic[T]):
    value: T
    opened: float
    active: float  # the last exchange that carried application data (or the opening)
    requests: int = 0


class SessionTable(Generic[T]):
    """Session id -> the caller's value (its connection), under a `SessionPolicy`."""

    def __init__(self, policy: SessionPolicy, in_use: Callable[[T], bool]) -> None:
        self.policy = policy
        self._in_use = in_use
        self._entries: dict[str, _Entry[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def get(self, session_id: str) -> T | None:
        entry = self._entries.get(session_id)
        return None if entry is None else entry.value

    def open(self, session_id: str, value: T, now: float) -> str | None:
        """Add a session; returns the id of the session evicted to make room, if one was.
        Raises `SessionsBusyError` when the table is full and nothing may give way."""
        if session_id in self._entries:
            raise UsageError("the session exists already")
        evicted = None
        if len(self._entries) >= self.policy.max_sessions:
            evicted = self._evictable(now)
            if evicted is None:
                raise SessionsBusyError("every enclave session is taken")
            del self._entries[evicted]
        self._entries[session_id] = _Entry(value, now, now)
        return evicted

    def _evictable(self, now: float) -> str | None:
        """The session idle longest, if it has been idle at least `evictable_after`."""
        cutoff = now - self.policy.evictable_after
        idle = (
            (entry.active, session_id)
            for session_id, entry in self._entries.items()
            if entry.active <= cutoff and not self._in_use(entry.value)
        )
        oldest = min(idle, default=None)
        return None if oldest is None else oldest[1]

    def ended(self, session_id: str, now: float) -> str | None:
        """Why the session is over and may be dropped while nobody uses it ("idle", "lifetime",
        "requests"), or None (also when there is no such session). A session in use past its
        lifetime still gets its last answer (`last_answer`); only `idle` refuses an exchange."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        policy = self.policy
        if self.idle(session_id, now):
            return "idle"
        if now - entry.opened >= policy.lifetime:
            return "lifetime"
        if entry.requests >= policy.max_requests:
            return "requests"
        return None

    def idle(self, session_id: str, now: float) -> bool:
        """Whether the session has been idle `idle_timeout` (it may carry no more exchanges)."""
        entry = self._entries.get(session_id)
        return entry is not None and now - entry.active >= self.policy.idle_timeout

    def last_answer(self, session_id: str, now: float) -> bool:
        """Whether the next answer is the session's last: it reaches the request budget, or the
        session has lived its lifetime."""
        entry = self._entries.get(session_id)
        if entry is None:
            return False
        policy = self.policy
        return entry.requests + 1 >= policy.max_requests or now - entry.opened >= policy.lifetime

    def touch(self, session_id: str, now: float, requests: int) -> None:
        """An exchange carried application data, completing `requests` requests."""
        entry = self._entries.get(session_id)
        if entry is not None:
            entry.active = now
            entry.requests += requests

    def remove(self, session_id: str) -> bool:
        return self._entries.pop(session_id, None) is not None

    def expired(self, now: float) -> Iterator[tuple[str, str]]:
        """(id, reason) of each session that has ended and is not in use (the reaper drops
        them)."""
        for session_id, entry in list(self._entries.items()):
            reason = self.ended(session_id, now)
            if reason is not None and not self._in_use(entry.value):
                yield session_id, reason

    def clear(self) -> None:
        self._entries.clear()
