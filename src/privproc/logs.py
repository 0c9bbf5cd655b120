"""Structured, content-free logging.

Rules: a log line is one JSON object built only from the field names in `ALLOWED_FIELDS`, whose
values are numbers, booleans or short identifiers chosen by the code, never by a request. There is
no way to log a body, a header, a token, a key or a client address: asking for a field outside the
allowlist is a programming error and raises at once, so a test run catches it.

Every record carries `ts`, the time to the millisecond, except for a party whose times must stay
coarse (`coarsen_time`): the issuer, which knows the account behind each token request, stamps
its records with the start of the quota epoch alone, so that its log cannot be joined by time
with a gateway's record of when tokens were spent.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from privproc.errors import UsageError

ALLOWED_FIELDS = frozenset(
    {
        "party",
        "event",
        "status",
        "outcome",
        "duration_ms",
        "size",
        "key_id",
        "kem",
        "configs",
        "measures",
    }
)

_logger = logging.getLogger("privproc")
_coarse: dict[str, int] = {}  # party -> the seconds its `ts` is rounded down to


def coarsen_time(party: str, seconds: int) -> None:
    """From now on, stamp `party`'s records with the time rounded down to a multiple of
    `seconds` (the start of the issuer's epoch, for its epoch length)."""
    if seconds < 1:
        raise UsageError("a time granularity is at least one second")
    _coarse[party] = seconds


def configure(level: int = logging.INFO) -> None:
    """Send privproc's structured lines to stderr (idempotent)."""
    if not any(getattr(h, "_privproc", False) for h in _logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._privproc = True  # type: ignore[attr-defined]
        _logger.addHandler(handler)
    _logger.setLevel(level)
    _logger.propagate = False


def event(party: str, name: str, **fields: str | int | float | bool) -> None:
    unknown = set(fields) - ALLOWED_FIELDS
    if unknown:
        raise UsageError(f"log fields outside the allowlist: {sorted(unknown)}")
    for value in fields.values():
        if isinstance(value, str) and len(value) > 200:
            raise UsageError("log values are short identifiers")
    now = time.time()
    coarse = _coarse.get(party)
    ts = round(now, 3) if coarse is None else int(now // coarse) * coarse
    record = {"ts": ts, "party": party, "event": name, **fields}
    _logger.info(json.dumps(record, separators=(",", ":"), sort_keys=True))
