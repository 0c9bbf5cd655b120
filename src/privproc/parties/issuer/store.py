"""The issuer's state in SQLite: accounts, per-epoch quota counters and the token key schedule.

Rules of this module:
- What is stored is exactly what the issuer must know and nothing that could link a token to an
  account: account names with a hash of their secret, one counter per account and epoch, and the
  keys. No blinded message, signature, nonce or per-token time is ever written.
- Secrets are 256-bit random values, so SHA-256 is a sufficient hash for them (there is no
  dictionary to try); a leaked database gives no usable secret.
- Quota is charged with one UPSERT, atomic under SQLite's write lock, so concurrent requests
  (threads or processes) cannot overshoot it.
- Time is an argument (`now`, Unix seconds), never read here, so every rule is testable.
- Keys follow epochs of `epoch_seconds`: the key of epoch i signs during epoch i (with a grace of
  a tenth of an epoch, at least `MIN_SKEW` and at most `SKEW` seconds, either side, for clients
  whose clocks or cached directories lag, or whose request crosses the turn of the epoch) and
  verifies until the end of epoch i+1; then it is deleted, private half overwritten.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import math
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.errors import PrivprocError, UsageError
from privproc.storage import create_private_file
from privproc.tokens import issuance

__all__ = [
    "DEFAULT_EPOCH_SECONDS",
    "DEFAULT_QUOTA",
    "AccountError",
    "IssuerKey",
    "IssuerStore",
]

DEFAULT_EPOCH_SECONDS = 86_400
DEFAULT_QUOTA = 200
SKEW = 300
# Never no grace: a client that chose the current key a moment before the epoch turned must still
# get its token (with a grace of 0 it was refused as an unknown key; short epochs are for tests).
MIN_SKEW = 1
DB_NAME = "issuer.sqlite3"
SECRET_PREFIX = "ppa_"  # noqa: S105 (a marker that makes leaked secrets easy to scan for)
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    name TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (name, epoch)
);
CREATE TABLE IF NOT EXISTS token_keys (
    epoch INTEGER PRIMARY KEY,
    spki BLOB NOT NULL,
    private_pkcs8 BLOB
);
"""


class AccountError(PrivprocError):
    """An account could not be created or found."""


@dataclass(frozen=True)
class IssuerKey:
    """One token key of the schedule. `private_key` is None once the key no longer signs."""

    epoch: int
    spki: bytes
    not_before: int
    retire_at: int
    expires: int
    skew: int
    private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False, compare=False)

    @property
    def key_id(self) -> bytes:
        return issuance.token_key_id(self.spki)

    @property
    def truncated_id(self) -> int:
        return self.key_id[-1]

    @functools.cached_property
    def modulus(self) -> int:
        return issuance.decode_token_key(self.spki).public_numbers().n

    def signs_at(self, now: float) -> bool:
        return self.not_before - self.skew <= now < self.retire_at + self.skew

    def verifies_at(self, now: float) -> bool:
        return now < self.expires


def _secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class IssuerStore:
    """All of the issuer's persistent state, in `STATE/issuer.sqlite3` (mode 0600)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        epoch_seconds: int = DEFAULT_EPOCH_SECONDS,
        quota: int = DEFAULT_QUOTA,
    ) -> None:
        if epoch_seconds < 1:
            raise UsageError("an epoch lasts at least one second")
        if quota < 1:
            raise UsageError("the quota is at least one token per epoch")
        self.epoch_seconds = epoch_seconds
        self.skew = max(MIN_SKEW, min(SKEW, epoch_seconds // 10))
        self.quota = quota
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / DB_NAME
        if not path.exists():
            # Create it private before SQLite opens it: it holds private keys.
            create_private_file(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._locked() as db:
            db.execute("PRAGMA journal_mode=WAL")
            # A quota charge survives a crash of the process without a disk flush per token; a
            # power cut can forget the last few charges (a few extra tokens, never a reused one).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            # Deleted private keys are overwritten, not left in free pages.
            db.execute("PRAGMA secure_delete=ON")
            db.executescript(_SCHEMA)
        self._keys: dict[int, IssuerKey] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    # --- Accounts ------------------------------------------------------------------------------

    def add_account(self, name: str, now: float) -> str:
        """Create an account and return its secret, which is shown this once and never stored."""
        if not _ACCOUNT_NAME.fullmatch(name):
            raise AccountError(
                "an account name is 1-64 letters, digits, '.', '_', '@' or '-', starting with "
                "a letter or digit"
            )
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._locked() as db:
                db.execute(
                    "INSERT INTO accounts (name, secret_sha256, created) VALUES (?, ?, ?)",
                    (name, _secret_hash(secret), int(now)),
                )
        except sqlite3.IntegrityError:
            raise AccountError(f"an account named {name!r} exists already") from None
        return secret

    def remove_account(self, name: str) -> None:
        with self._locked() as db:
            if db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError(f"no account named {name!r}")

    def accounts(self, now: float) -> list[tuple[str, int]]:
        """(name, tokens used this epoch) for every account, by name."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT a.name, COALESCE(u.used, 0) FROM accounts a "
                "LEFT JOIN usage u ON u.name = a.name AND u.epoch = ? ORDER BY a.name",
                (self.epoch_of(now),),
            ).fetchall()
        return [(str(n), int(u)) for n, u in rows]

    def authenticate(self, secret: str) -> str | None:
        """The account a bearer secret belongs to, or None."""
        if not secret.startswith(SECRET_PREFIX) or len(secret) > 128:
            return None
        digest = _secret_hash(secret)
        with self._locked() as db:
            row = db.execute(
                "SELECT name, secret_sha256 FROM accounts WHERE secret_sha256 = ?", (digest,)
            ).fetchone()
        if row is None or not hmac.compare_digest(bytes(row[1]), digest):
            return None
        return str(row[0])

    # --- Quota ---------------------------------------------------------------------------------

    def epoch_of(self, now: float) -> int:
        return int(now // self.epoch_seconds)

    def seconds_to_next_epoch(self, now: float) -> int:
        return max(1, math.ceil((self.epoch_of(now) + 1) * self.epoch_seconds - now))

    def charge(self, account: str, now: float) -> bool:
        """Count one token against the account's quota for this epoch; False if it is spent."""
        with self._locked() as db:
            cursor = db.execute(
                "INSERT INTO usage (name, epoch, used) VALUES (?, ?, 1) "
                "ON CONFLICT (name, epoch) DO UPDATE SET used = used + 1 WHERE used < ?",
                (account, self.epoch_of(now), self.quota),
            )
            return cursor.rowcount == 1

    def refund(self, account: str, now: float) -> None:
        """Undo a charge for a token that was not issued after all (an internal failure)."""
        with self._locked() as db:
            db.execute(
                "UPDATE usage SET used = used - 1 WHERE name = ? AND epoch = ? AND used > 0",
                (account, self.epoch_of(now)),
            )

    # --- Keys ----------------------------------------------------------------------------------

    def _window(self, epoch: int) -> tuple[int, int, int, int]:
        start = epoch * self.epoch_seconds
        return start, start + self.epoch_seconds, start + 2 * self.epoch_seconds, self.skew

    def rotate(self, now: float) -> bool:
        """Make sure the keys of this epoch and the next two exist and expired ones are gone.

        Returns whether anything changed. Key generation is slow (~0.1 s): call it off the loop."""
        current = self.epoch_of(now)
        changed = False
        with self._locked() as db:
            # Expired keys stop verifying: forget them entirely, private half included.
            gone = db.execute("DELETE FROM token_keys WHERE epoch < ?", (current - 1,)).rowcount
            # The previous epoch's key still verifies; it signs only during the grace period.
            in_grace = now - current * self.epoch_seconds < self.skew
            signing_floor = current - 1 if in_grace else current
            retired = db.execute(
                "UPDATE token_keys SET private_pkcs8 = NULL "
                "WHERE epoch < ? AND private_pkcs8 IS NOT NULL",
                (signing_floor,),
            ).rowcount
            db.execute("DELETE FROM usage WHERE epoch < ?", (current - 1,))
            changed = gone + retired > 0
            if changed:
                # Old page images in the write-ahead log could still hold a deleted key.
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            have = {int(r[0]) for r in db.execute("SELECT epoch FROM token_keys")}
        # One epoch ahead of what the directory shows, so that "next" exists the moment an
        # epoch begins (generating a key takes a moment the directory cannot wait for).
        for epoch in (current, current + 1, current + 2):
            if epoch not in have:
                self._generate(epoch)
                changed = True
        if changed or not self._keys:
            self._load()
        return changed

    def _generate(self, epoch: int) -> None:
        taken = {k.truncated_id for k in self._load_rows() if k.epoch >= epoch - 2}
        while True:
            private_key = rsa.generate_private_key(65537, issuance.MODULUS_BITS)
            spki = issuance.encode_token_key(private_key.public_key())
            # RFC 9578 §6.5: keep truncated ids of keys in rotation distinct.
            if issuance.token_key_id(spki)[-1] not in taken:
                break
        pkcs8 = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with self._locked() as db:
            db.execute(
                "INSERT OR IGNORE INTO token_keys (epoch, spki, private_pkcs8) VALUES (?, ?, ?)",
                (epoch, spki, pkcs8),
            )

    def _load_rows(self) -> list[IssuerKey]:
        with self._locked() as db:
            rows = db.execute(
                "SELECT epoch, spki, private_pkcs8 FROM token_keys ORDER BY epoch"
            ).fetchall()
        keys = []
        for epoch, spki, pkcs8 in rows:
            private_key = None
            if pkcs8 is not None:
                loaded = serialization.load_der_private_key(bytes(pkcs8), None)
                assert isinstance(loaded, rsa.RSAPrivateKey)
                private_key = loaded
            keys.append(IssuerKey(int(epoch), bytes(spki), *self._window(int(epoch)), private_key))
        return keys

    def _load(self) -> None:
        self._keys = {k.epoch: k for k in self._load_rows()}

    def keys(self, now: float) -> list[IssuerKey]:
        """Every key that still verifies, oldest first."""
        return [k for k in self._keys.values() if k.verifies_at(now)]

    def directory_keys(self, now: float) -> list[IssuerKey]:
        """The current key, then the next one (RFC 9578 §4 lists keys by preference)."""
        current = self.epoch_of(now)
        return [self._keys[e] for e in (current, current + 1) if e in self._keys]

    def signing_keys(self, truncated_id: int, now: float) -> list[IssuerKey]:
        return [
            k
            for k in self._keys.values()
            if k.truncated_id == truncated_id and k.private_key is not None and k.signs_at(now)
        ]
