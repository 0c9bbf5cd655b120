"""The client's token wallet: tokens fetched ahead of time, each used at most once.

    wallet = Wallet(state_dir)
    wallet.refill(issuer, challenge, key, key_set, threshold=5, target=20, now=now)
    authorization = wallet.take(challenge, now)       # None when empty
    with wallet.refilling():                          # one fetcher at a time
        authorization = wallet.take(challenge, now) or wallet.fetch(issuer, ..., count=16)

Rules of this module:
- Tokens live in `STATE/tokens.json`, mode 0600, keyed by the challenge they answer (RFC 9577
  §2.1.4: a cached token matches one challenge exactly) and stamped with their key's expiry.
- A token leaves the file before it is handed out: `take` rewrites the file (write, fsync, rename)
  and only then returns the token, so a crash can lose a token but never reuse one. A lock file
  serialises processes (and threads) that share the state directory.
- Fetching is serialised too (`refilling`, a second lock held while tokens are fetched): clients
  sharing one wallet that find it empty wait for one of them to fill it instead of racing, and
  the one that fetches keeps the first token for itself (never stored), so it cannot be left
  empty-handed by the others.
- Expired tokens are dropped; nothing else about a token (where or when it was used) is recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from privproc.client.issuer import IssuerClient, QuotaExhaustedError
from privproc.errors import DecodeError, PeerRejectedError, UsageError
from privproc.storage import write_atomically
from privproc.tokens.auth import Token, b64url_decode, b64url_encode, format_authorization
from privproc.tokens.directory import KeySet
from privproc.tokens.issuance import token_key_id
from privproc.wire import load_json

__all__ = ["Wallet"]

WALLET_FILE = "tokens.json"
_LOCK_FILE = "tokens.lock"
_REFILL_LOCK_FILE = "tokens.refill.lock"
_MAX_PER_CHALLENGE = 1000
_VERSION = 1


def _entries_ok(entries: object) -> bool:
    """A challenge's tokens: a list of {"token": str, "expires": int} objects."""
    return isinstance(entries, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("token"), str)
        and isinstance(e.get("expires"), int)
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
        with self._lock(_REFILL_LOCK_FILE):
            yield

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

    def add(self, challenge: bytes, fetched: list[tuple[Token, int]]) -> None:
        """Store tokens for `challenge`, each with the time its key stops verifying."""
        with self._locked() as tokens:
            entries = tokens.setdefault(b64url_encode(challenge), [])
            if len(entries) + len(fetched) > _MAX_PER_CHALLENGE:
                raise UsageError(f"a wallet holds at most {_MAX_PER_CHALLENGE} tokens a challenge")
            entries.extend(
                {"token": b64url_encode(t.encode()), "expires": exp} for t, exp in fetched
            )

    def take(self, challenge: bytes, now: float) -> str | None:
        """Remove one live token for `challenge` and return its Authorization value, or None."""
        with self._locked() as tokens:
            key = b64url_encode(challenge)
            entries = self._live(tokens.get(key, []), now)
            if not entries:
                tokens.pop(key, None)
                return None
            entry = entries.pop(0)
            tokens[key] = entries
        # The lock is released and the file rewritten without this token before it is returned.
        return format_authorization(b64url_decode(entry["token"], "wallet token"))

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
        if not 0 <= threshold <= target <= _MAX_PER_CHALLENGE:
            raise UsageError("0 <= threshold <= target <= 1000")
        with self.refilling():
            have = self.count(challenge, now)
            if have >= threshold:
                return 0
            expiry = self._expiry(token_key, key_set)
            fetch_one = functools.partial(issuer.fetch_token, challenge, token_key)
            return self._store_fetched(challenge, fetch_one, expiry, target - have, have)

    def fetch(
        self,
        issuer: IssuerClient,
        challenge: bytes,
        token_key: bytes,
        key_set: KeySet,
        *,
        count: int,
    ) -> str:
        """Fetch `count` tokens: the first is returned (its Authorization value; it never enters
        the file), the rest are stored. Call it holding `refilling()`. If the quota runs out
        before the first, `QuotaExhaustedError`; after it, the tokens obtained are kept."""
        if not 1 <= count <= _MAX_PER_CHALLENGE:
            raise UsageError("1 <= count <= 1000")
        expiry = self._expiry(token_key, key_set)  # a key the set lists, before any fetch
        fetch_one = functools.partial(issuer.fetch_token, challenge, token_key)
        first = fetch_one()
        self._store_fetched(challenge, fetch_one, expiry, count - 1, 1)
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
        self, challenge: bytes, fetch_one: Callable[[], Token], expiry: int, count: int, have: int
    ) -> int:
        """Fetch up to `count` tokens into the wallet, one at a time, each stored as it arrives:
        a quota or key refusal midway keeps what came (and is raised only if nothing is held at
        all)."""
        for fetched in range(count):
            try:
                token = fetch_one()
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
            self.add(challenge, [(token, expiry)])
        return count
