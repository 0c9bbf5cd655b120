"""The client's token wallet: tokens fetched ahead of time, each used at most once, and the
policy that keeps it filled without tying a fetch to a request (`TokenSupply`).

    wallet = Wallet(state_dir)
    wallet.refill(issuer, challenge, key, key_set, threshold=5, target=20, now=now)
    authorization = wallet.take(challenge, now)       # None when empty
    with wallet.refilling():                          # one fetcher at a time
        authorization = wallet.take(challenge, now) or wallet.fetch(issuer, ..., count=16)

    supply = TokenSupply(wallet, RefillPolicy(), fetch=fetch_batch, fill=fill_wallet,
                         schedule=in_background(driver))
    driver.run(supply.fill_ahead(challenge, now))     # at enable time, long before a request
    authorization = driver.run(supply.token(challenge, now))  # a refill follows, at random

Fetching is written as steps (net/steps.py: `refill_step`, `fetch_step`, and `TokenSupply`'s), so
the blocking and the asyncio client share it; waiting for the refill lock is a step too (polled,
bounded by `REFILL_LOCK_WAIT`), so an asyncio client never blocks its loop on another's fetch.

Rules of this module:
- Tokens live in `STATE/tokens.json`, mode 0600, keyed by the challenge they answer (RFC 9577
  §2.1.4: a cached token matches one challenge exactly) and stamped with their key's expiry and
  the second their batch was fetched (local only: it never leaves the device).
- A token leaves the file before it is handed out: `take` rewrites the file (write, fsync, rename)
  and only then returns the token, so a crash can lose a token but never reuse one. A lock file
  serialises processes (and threads) that share the state directory.
- `take` hands out the oldest batch's tokens first: a token of a batch is spent only once no
  older token is left, so a batch just fetched is not spent while older ones remain.
- Fetching is serialised too (`refilling`, a second lock held while tokens are fetched): clients
  sharing one wallet that find it empty wait for one of them to fill it instead of racing, and
  the one that fetches keeps the first token for itself (never stored), so it cannot be left
  empty-handed by the others.
- Issuance time must not point at a session (the issuer knows the account and when it asks; the
  gateway knows when a token is spent). So `TokenSupply` fetches ahead: `fill_ahead` fills the
  wallet to `target` when a feature is turned on (or a system started), and a take that leaves
  fewer than `low_water` tokens schedules one background refill (at most one pending) after a
  delay drawn uniformly from `delay`. That refill holds the refill lock, never blocks a request
  (a request needs the lock only when the wallet is empty), and swallows its errors (logged as
  their type alone). A fetch in a request's path remains only as the fallback when the wallet is
  empty: the session still opens (fail open), and that one session is linkable by time.
- The delay hides which session triggered a refill among all the sessions spent in its window:
  the wider the window and the busier the deployment, the better (docs/THREAT_MODEL.md).
- A token handed out but not spent (the gateway answered "busy": it spends a token only for a
  session it opens) is given back (`put_back`) when its client closes, to be taken first.
- Expired tokens are dropped; nothing else about a token (where or when it was used) is recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privproc import logs
from privproc.errors import DecodeError, PeerRejectedError, TransportError, UsageError
from privproc.net.drivers import Driver, run_local
from privproc.net.steps import Sleep, Step, immediate
from privproc.parties.device.issuer import IssuerClient, QuotaExhaustedError
from privproc.storage import write_atomically
from privproc.tokens.auth import (
    Token,
    b64url_decode,
    b64url_encode,
    format_authorization,
    parse_authorization,
)
from privproc.tokens.directory import KeySet
from privproc.tokens.issuance import token_key_id
from privproc.wire import load_json

__all__ = ["RefillPolicy", "TokenSupply", "Wallet", "in_background"]

WALLET_FILE = "tokens.json"
_LOCK_FILE = "tokens.lock"
_REFILL_LOCK_FILE = "tokens.refill.lock"
_MAX_PER_CHALLENGE = 1000
PUT_BACK_TTL = 600  # seconds a token given back unspent is kept (its key's expiry is not known)
# How long a client waits for another that shares the wallet and is fetching, and how often it
# looks: a fetch of a batch takes well under a second a token.
REFILL_LOCK_WAIT = 120.0
REFILL_LOCK_POLL = 0.05
_VERSION = 1


def _entries_ok(entries: object) -> bool:
    """A challenge's tokens: a list of {"token": str, "expires": int, "fetched": int} objects
    ("fetched" absent in wallets written before it existed: such tokens count as the oldest)."""
    return isinstance(entries, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("token"), str)
        and isinstance(e.get("expires"), int)
        and isinstance(e.get("fetched", 0), int)
        for e in entries
    )


class Wallet:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / WALLET_FILE

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """An exclusive lock on STATE/name, against other processes and other threads (each
        holder opens the file anew: flock locks belong to the open file)."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, list[dict[str, Any]]]]:
        """The wallet's contents under an exclusive lock; changes are written back on exit."""
        with self._lock(_LOCK_FILE):
            contents = self._read()
            before = json.dumps(contents, sort_keys=True)
            yield contents
            if json.dumps(contents, sort_keys=True) != before:
                self._write(contents)

    @contextlib.contextmanager
    def refilling(self) -> Iterator[None]:
        """Held while tokens are fetched, so that one client sharing this wallet fetches while
        the others wait (and then find the tokens). Not reentrant: `refill` takes it itself."""
        fd = run_local(self.refill_lock_step())
        try:
            yield
        finally:
            os.close(fd)

    def refill_lock_step(self) -> Step[int]:
        """`refilling`'s lock as a step: the locked file's descriptor (close it to release),
        after at most `REFILL_LOCK_WAIT` seconds of waiting for the client that holds it."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state_dir / _REFILL_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + REFILL_LOCK_WAIT
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TransportError(
                            f"another client sharing the wallet has been fetching tokens for "
                            f"{REFILL_LOCK_WAIT:.0f} s; try again later"
                        ) from None
                yield Sleep(REFILL_LOCK_POLL)
        except BaseException:
            os.close(fd)
            raise

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        try:
            doc = load_json(self.path.read_bytes(), f"the token wallet {self.path}", 64 << 20)
        except FileNotFoundError:
            return {}
        except DecodeError:
            raise DecodeError(f"the token wallet {self.path} is corrupt; delete it") from None
        if not isinstance(doc, dict) or doc.get("version") != _VERSION:
            raise DecodeError(f"the token wallet {self.path} has an unknown format; delete it")
        tokens = doc.get("tokens")
        if not isinstance(tokens, dict) or not all(_entries_ok(v) for v in tokens.values()):
            raise DecodeError(f"the token wallet {self.path} is corrupt; delete it")
        return tokens

    def _write(self, tokens: dict[str, list[dict[str, Any]]]) -> None:
        data = json.dumps({"version": _VERSION, "tokens": tokens}, indent=1).encode()
        write_atomically(self.path, data, private=True)

    @staticmethod
    def _live(entries: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        return [e for e in entries if isinstance(e.get("expires"), int) and now < e["expires"]]

    def count(self, challenge: bytes, now: float) -> int:
        with self._locked() as tokens:
            return len(self._live(tokens.get(b64url_encode(challenge), []), now))

    def counts(self, now: float) -> list[tuple[bytes, int]]:
        """(challenge, usable tokens) for every challenge the wallet holds tokens for."""
        with self._locked() as tokens:
            return [
                (b64url_decode(key, "wallet challenge"), len(self._live(entries, now)))
                for key, entries in sorted(tokens.items())
            ]

    def add(
        self, challenge: bytes, fetched: list[tuple[Token, int]], *, at: float | None = None
    ) -> None:
        """Store tokens for `challenge`, each with the time its key stops verifying, as one batch
        fetched at `at` (Unix seconds; now if None)."""
        stamp = int(time.time() if at is None else at)
        with self._locked() as tokens:
            entries = tokens.setdefault(b64url_encode(challenge), [])
            if len(entries) + len(fetched) > _MAX_PER_CHALLENGE:
                raise UsageError(f"a wallet holds at most {_MAX_PER_CHALLENGE} tokens a challenge")
            entries.extend(
                {"token": b64url_encode(t.encode()), "expires": exp, "fetched": stamp}
                for t, exp in fetched
            )

    def take(self, challenge: bytes, now: float) -> str | None:
        """Remove one live token for `challenge` and return its Authorization value, or None.
        The token comes from the oldest batch held (in the order they were stored, among
        batches fetched in the same second)."""
        with self._locked() as tokens:
            key = b64url_encode(challenge)
            entries = self._live(tokens.get(key, []), now)
            if not entries:
                tokens.pop(key, None)
                return None
            oldest = min(range(len(entries)), key=lambda i: int(entries[i].get("fetched", 0)))
            entry = entries.pop(oldest)
            tokens[key] = entries
        # The lock is released and the file rewritten without this token before it is returned.
        return format_authorization(b64url_decode(entry["token"], "wallet token"))

    def put_back(self, challenge: bytes, authorization: str, now: float) -> None:
        """Return a token that was handed out but not spent (the gateway was busy), to be taken
        first. Its key's expiry is not known here: it is kept `PUT_BACK_TTL` seconds, and should
        its key have expired meanwhile, the gateway refuses it (401) and the next token is used."""
        token = parse_authorization(authorization)
        with self._locked() as tokens:
            entries = tokens.setdefault(b64url_encode(challenge), [])
            if len(entries) < _MAX_PER_CHALLENGE:
                expires = int(now + PUT_BACK_TTL)
                entries.insert(0, {"token": b64url_encode(token), "expires": expires, "fetched": 0})

    def refill(
        self,
        issuer: IssuerClient,
        challenge: bytes,
        token_key: bytes,
        key_set: KeySet,
        *,
        threshold: int,
        target: int,
        now: float,
    ) -> int:
        """Fetch tokens until `target` are held, if fewer than `threshold` are; returns how many.

        `token_key` must be in `key_set`, which says when it expires. If the quota runs out
        midway, the tokens obtained are kept; it raises `QuotaExhaustedError` only when the wallet
        is left empty."""
        return run_local(
            self.refill_step(
                _blocking(issuer, challenge, token_key),
                challenge,
                token_key,
                key_set,
                threshold=threshold,
                target=target,
                now=now,
            )
        )

    def refill_step(
        self,
        issue: Callable[[], Step[Token]],
        challenge: bytes,
        token_key: bytes,
        key_set: KeySet,
        *,
        threshold: int,
        target: int,
        now: float,
    ) -> Step[int]:
        """`refill`, as a step; `issue()` runs one issuance for `challenge` under `token_key`."""
        if not 0 <= threshold <= target <= _MAX_PER_CHALLENGE:
            raise UsageError("0 <= threshold <= target <= 1000")
        fd = yield from self.refill_lock_step()
        try:
            have = self.count(challenge, now)
            if have >= threshold:
                return 0
            expiry = self._expiry(token_key, key_set)
            return (
                yield from self._store_fetched(challenge, issue, expiry, target - have, have, now)
            )
        finally:
            os.close(fd)

    def fetch(
        self,
        issuer: IssuerClient,
        challenge: bytes,
        token_key: bytes,
        key_set: KeySet,
        *,
        count: int,
        now: float | None = None,
    ) -> str:
        """Fetch `count` tokens: the first is returned (its Authorization value; it never enters
        the file), the rest are stored (as fetched at `now`, the present if None). Call it
        holding `refilling()`. If the quota runs out before the first, `QuotaExhaustedError`;
        after it, the tokens obtained are kept."""
        issue = _blocking(issuer, challenge, token_key)
        return run_local(
            self.fetch_step(issue, challenge, token_key, key_set, count=count, now=now)
        )

    def fetch_step(
        self,
        issue: Callable[[], Step[Token]],
        challenge: bytes,
        token_key: bytes,
        key_set: KeySet,
        *,
        count: int,
        now: float | None = None,
    ) -> Step[str]:
        """`fetch`, as a step (its caller holds the refill lock)."""
        if not 1 <= count <= _MAX_PER_CHALLENGE:
            raise UsageError("1 <= count <= 1000")
        expiry = self._expiry(token_key, key_set)  # a key the set lists, before any fetch
        first = yield from issue()
        at = time.time() if now is None else now
        yield from self._store_fetched(challenge, issue, expiry, count - 1, 1, at)
        return format_authorization(first.encode())

    @staticmethod
    def _expiry(token_key: bytes, key_set: KeySet) -> int:
        key_id = token_key_id(token_key)
        expiry = next(
            (k.expires for k in key_set.keys if token_key_id(k.token_key) == key_id), None
        )
        if expiry is None:
            raise UsageError("the token key is not in the issuer's key set")
        return expiry

    def _store_fetched(
        self,
        challenge: bytes,
        issue: Callable[[], Step[Token]],
        expiry: int,
        count: int,
        have: int,
        at: float,
    ) -> Step[int]:
        """Fetch up to `count` tokens into the wallet, one at a time, each stored as it arrives
        (stamped as one batch fetched at `at`): a quota or key refusal midway keeps what came
        (and is raised only if nothing is held at all)."""
        for fetched in range(count):
            try:
                token = yield from issue()
            except QuotaExhaustedError:
                if fetched == 0 and have == 0:
                    raise
                return fetched
            except PeerRejectedError as exc:
                # 422 midway: the key stopped signing (the issuer's epoch turned); what came is
                # good until its expiry, the next batch asks for the new key.
                if exc.status != 422 or (fetched == 0 and have == 0):
                    raise
                return fetched
            self.add(challenge, [(token, expiry)], at=at)
        return count


def _blocking(
    issuer: IssuerClient, challenge: bytes, token_key: bytes
) -> Callable[[], Step[Token]]:
    """One issuance at a time on `issuer`'s own blocking client, as a step that needs nothing."""
    return lambda: immediate(issuer.fetch_token(challenge, token_key))


@dataclass(frozen=True)
class RefillPolicy:
    """How `TokenSupply` keeps a wallet filled. `low_water`: a take that leaves fewer tokens
    schedules a background refill (0: never; then the wallet is filled only when found empty, in
    the request's path). `target`: how many a fill or refill tops up to (the issuer's quota caps
    it: a refill cut short by the quota keeps what came). `delay`: (shortest, longest) seconds
    between the take and the refill, drawn uniformly."""

    low_water: int = 8
    target: int = 24
    delay: tuple[float, float] = (30.0, 600.0)

    def __post_init__(self) -> None:
        if not 0 <= self.low_water <= self.target or not 1 <= self.target <= _MAX_PER_CHALLENGE:
            raise UsageError("a refill policy needs 0 <= low_water <= target, 1 <= target <= 1000")
        shortest, longest = self.delay
        if not 0 <= shortest <= longest:
            raise UsageError("a refill policy's delay is (shortest, longest), 0 <= shortest")


# (challenge, now, count) -> a step giving a token to use now; `count - 1` more stored. Run
# holding the wallet's refill lock, only when the wallet is empty.
FetchBatch = Callable[[bytes, float, int], Step[str]]
# (challenge, now, threshold, target) -> a step giving how many were fetched (`Wallet.refill`
# under the key the client checked): tops the wallet up to `target` if it holds fewer than
# `threshold`.
Fill = Callable[[bytes, float, int, int], Step[int]]
# (delay, refill) -> a function that cancels the refill if it has not started. The refill is a
# step; the schedule runs it with the client's driver (a daemon thread's timer for the blocking
# client, a task on the loop for the asyncio one).
Schedule = Callable[[float, Callable[[], Step[None]]], Callable[[], None]]


def in_background(driver: Driver) -> Schedule:
    """A schedule that runs each refill with `driver` in a daemon thread after its delay (it dies
    with the process)."""

    def schedule(delay: float, refill: Callable[[], Step[None]]) -> Callable[[], None]:
        timer = threading.Timer(delay, lambda: driver.run(refill()))
        timer.daemon = True
        timer.name = "wallet-refill"
        timer.start()
        return timer.cancel

    return schedule


class TokenSupply:
    """A session's token, from a wallet kept filled ahead of use (the module's rules).

    `fetch` and `fill` talk to the issuer (the client's, under the key it checked against the
    log); `schedule`, `clock` and `rng` are the background, the time and the randomness, given
    by tests that play a day in a second."""

    def __init__(
        self,
        wallet: Wallet,
        policy: RefillPolicy,
        *,
        fetch: FetchBatch,
        fill: Fill,
        schedule: Schedule,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.wallet = wallet
        self.policy = policy
        self._fetch = fetch
        self._fill = fill
        self._schedule = schedule
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        self._pending: Callable[[], None] | None = None  # cancels the scheduled refill
        self._closed = False

    @property
    def refill_pending(self) -> bool:
        return self._pending is not None

    def token(self, challenge: bytes, now: float) -> Step[str]:
        """A token for `challenge`: the wallet's oldest, or, when it is empty, the first of a
        batch fetched now (the fallback). Schedules a refill when it leaves the wallet low."""
        token = self.wallet.take(challenge, now)
        if token is None:
            # One client of a shared wallet fetches; the others wait for it, then take theirs.
            fd = yield from self.wallet.refill_lock_step()
            try:
                token = self.wallet.take(challenge, now)
                if token is None:
                    token = yield from self._fetch(challenge, now, self.policy.target)
            finally:
                os.close(fd)
        self._schedule_refill(challenge, now)
        return token

    def fill_ahead(self, challenge: bytes, now: float) -> Step[int]:
        """Fill the wallet to `target` now if it holds fewer than `low_water` (at least one),
        long before a request needs a token (a feature turned on, a system started); gives how
        many were fetched. Errors are the caller's."""
        return self._fill(challenge, now, max(1, self.policy.low_water), self.policy.target)

    def close(self) -> None:
        """Cancel a refill that has not started; schedule no more."""
        with self._lock:
            self._closed = True
            cancel, self._pending = self._pending, None
        if cancel is not None:
            cancel()

    def _schedule_refill(self, challenge: bytes, now: float) -> None:
        if self.policy.low_water == 0 or self.wallet.count(challenge, now) >= self.policy.low_water:
            return

        def placeholder() -> None:  # marks the refill being scheduled
            pass

        with self._lock:
            if self._pending is not None or self._closed:
                return  # one pending refill at a time
            self._pending = placeholder
            delay = self._rng.uniform(*self.policy.delay)
        cancel = self._schedule(delay, functools.partial(self._refill, challenge))
        with self._lock:
            if self._pending is placeholder:
                self._pending = cancel  # (not if the refill already ran, or close came between)
            elif self._closed:
                cancel()

    def _refill(self, challenge: bytes) -> Step[None]:
        """The background refill: it must never raise (nothing would catch it) nor say more
        than the type of what failed."""
        try:
            yield from self._fill(
                challenge, self._clock(), self.policy.low_water, self.policy.target
            )
        except Exception as exc:  # a quota spent, an issuer down, a client closed: any
            logs.event("client", "wallet-refill", outcome=type(exc).__name__)
        finally:
            with self._lock:
                self._pending = None
