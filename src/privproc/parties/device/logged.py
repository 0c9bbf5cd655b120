"""What the witnessed log vouches for, as the device reads it: the checkpoint (consistent with the
last one this device accepted), the OHTTP key configurations the CDN hands out, and the issuer
token keys. Steps (net/steps.py), run by either client.

    logged = LoggedKeys(config, policy, state_dir, on_step)
    config = yield from logged.key_config()            # the CDN's, refused unless logged
    key = yield from logged.token_key(issuer, directory, now)

Rules: every entry read is proven against the accepted checkpoint; a key the log does not hold,
holds but not for now, or an issuer with more live keys than rotation needs is refused
(`NotLoggedError`, `TargetedKeyError`) before any token is asked for or any request is sent.
The log is read by one run at a time (a background refill reads it too); a step waiting for it
pauses (`Sleep`), never blocks its driver.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from privproc.errors import CryptoError, PrivprocError
from privproc.net.steps import Sleep, Step
from privproc.ohttp.keys import KeyConfig, decode_key_configs
from privproc.parties.device.config import ClientConfig
from privproc.parties.device.logfetch import AcceptedCheckpoint, LogReader, http_steps
from privproc.parties.device.ohttp import choose_config, key_configs_step
from privproc.tlog.client import LogPolicy
from privproc.tlog.entries import IssuerTokenKey, OhttpKeyConfigSet, decode_entry
from privproc.tokens.auth import Token, parse_authorization
from privproc.tokens.directory import IssuerDirectory
from privproc.tokens.issuance import token_key_id

__all__ = [
    "MAX_LIVE_ISSUER_KEYS",
    "LoggedKeys",
    "NotLoggedError",
    "TargetedKeyError",
    "TokenKeyRef",
    "check_token_key",
    "locked",
]

# An issuer has at most three keys live at once: the previous epoch's (still verifying), the
# current one and the next (announced with not-before). More could be keys per user.
MAX_LIVE_ISSUER_KEYS = 3
LOCK_POLL = 0.01  # seconds between looks at a lock another run of this client holds


class NotLoggedError(CryptoError):
    """A key the client was handed is not in the transparency log: it could be for it alone."""


class TargetedKeyError(CryptoError):
    """The log shows the issuer with more live keys than rotation needs: it could be giving
    users keys of their own, to recognise their tokens."""


@dataclass(frozen=True)
class TokenKeyRef:
    """The logged issuer key of a spent token: when it began signing, and its log entry."""

    not_before: int
    log_index: int


@dataclass(frozen=True)
class Logged:
    """What the log holds that the device uses, read at one checkpoint size."""

    size: int
    key_configs: frozenset[bytes]
    token_keys: tuple[IssuerTokenKey, ...]
    key_index: dict[bytes, int]  # issuer key id -> its log index


def locked(lock: threading.Lock) -> Step[None]:
    """Take `lock` (held by another run of this client: a background refill, another task),
    looking again after a pause: a step never blocks its driver."""
    while not lock.acquire(blocking=False):
        yield Sleep(LOCK_POLL)


class LoggedKeys:
    """The module's rules, for one client."""

    def __init__(
        self,
        config: ClientConfig,
        policy: LogPolicy,
        state_dir: Path,
        on_step: Callable[[str], None],
    ) -> None:
        self.config = config
        self._log = LogReader(
            policy,
            http_steps(config.log_url),
            AcceptedCheckpoint(state_dir / "log-checkpoint.json"),
        )
        self._logged: Logged | None = None
        self._lock = threading.Lock()  # a background refill reads the log too
        self.key_config_now: KeyConfig | None = None  # the checked one, once fetched
        self._step = on_step

    def read(self) -> Step[Logged]:
        """What the witnessed log holds: OHTTP key-config documents and issuer token keys.

        The checkpoint must be consistent with the last one this device accepted; every entry
        read is proven against it. (A scan: fine for a log of releases and keys; a large log
        would publish an index.)"""
        yield from locked(self._lock)
        try:
            current = yield from self._log.update_step()
            if self._logged is None or self._logged.size != current.size:
                entries = yield from self._log.entries_step(range(current.size))
                configs: set[bytes] = set()
                token_keys: list[IssuerTokenKey] = []
                key_at: dict[bytes, int] = {}
                for index, raw in enumerate(entries):
                    entry = decode_entry(raw)
                    if isinstance(entry, OhttpKeyConfigSet):
                        configs.add(entry.key_configs)
                    elif isinstance(entry, IssuerTokenKey):
                        token_keys.append(entry)
                        key_at.setdefault(token_key_id(entry.token_key), index)
                self._logged = Logged(current.size, frozenset(configs), tuple(token_keys), key_at)
                cosigners = ", ".join(current.cosigners)
                self._step(f"log checkpoint size {current.size}, cosigned by {cosigners}")
            return self._logged
        finally:
            self._lock.release()

    def key_config(self) -> Step[KeyConfig]:
        if self.key_config_now is None:
            document = yield from key_configs_step(self.config.keys_url)
            if document not in (yield from self.read()).key_configs:
                raise NotLoggedError("the CDN's OHTTP key configurations are not in the log")
            self.key_config_now = choose_config(decode_key_configs(document))
            self._step(f"OHTTP key config {self.key_config_now.key_id} from the CDN, in the log")
        return self.key_config_now

    def token_key(self, issuer: str, directory: IssuerDirectory, now: float) -> Step[bytes]:
        """The key to ask `issuer` for tokens under (`pick_token_key`), checked against the log."""
        current = yield from self.read()
        return pick_token_key(issuer, directory, now, current.token_keys)

    def token_key_of(self, authorization: str) -> Step[TokenKeyRef | None]:
        """The logged key a token was issued under, or None if it cannot be told. Looked up in
        the log this client has read (read again only for a key it has not seen: a token another
        client sharing the wallet fetched under a newer key). Only the key's public facts are
        kept, never the token."""
        try:
            key_id = Token.decode(parse_authorization(authorization)).token_key_id
        except PrivprocError:
            return None
        if self._logged is None or key_id not in self._logged.key_index:
            with contextlib.suppress(PrivprocError):
                yield from self.read()
        logged = self._logged
        if logged is None or key_id not in logged.key_index:
            return None
        entry = next(e for e in logged.token_keys if token_key_id(e.token_key) == key_id)
        return TokenKeyRef(entry.not_before, logged.key_index[key_id])


def pick_token_key(
    issuer: str, directory: IssuerDirectory, now: float, logged: tuple[IssuerTokenKey, ...]
) -> bytes:
    """The key to ask tokens for: the directory's preferred one (RFC 9578 §4: the first whose
    not-before has passed). If the log holds it but says it no longer verifies (a directory
    mirror that lags the issuer), the newest begun key of the directory that the log holds
    live instead; if no key has begun by this device's clock (it lags the issuer's), the
    directory's first key when the log holds it as the next one. `check_token_key` then
    refuses whatever the log does not vouch for (an unlogged preferred key included)."""
    mine = [e for e in logged if e.issuer == issuer]
    begun = [k for k in directory.keys if k.not_before is None or k.not_before <= now]
    if begun:
        key = begun[0].token_key
        live = {e.token_key for e in mine if e.not_before <= now < e.expires}
        newest = [k for k in begun if k.token_key in live]
        if newest and any(e.token_key == key for e in mine):
            key = max(newest, key=lambda k: k.not_before or 0).token_key
    else:
        key = directory.keys[0].token_key
        upcoming = sorted((e for e in mine if now < e.not_before), key=lambda e: e.not_before)
        if not upcoming or upcoming[0].token_key != key:
            raise NotLoggedError(
                "the issuer's token key is neither live now nor the logged next one"
            )
        now = upcoming[0].not_before  # checked as of the moment it begins
    check_token_key(issuer, key, now, mine)
    return key


def check_token_key(issuer: str, key: bytes, now: float, entries: list[IssuerTokenKey]) -> None:
    """The issuer's key must be logged, live now, and one of the few the issuer has live:
    an issuer that logged a key per user (to recognise their tokens) shows as too many."""
    mine = [e for e in entries if e.token_key == key]
    if not mine:
        raise NotLoggedError("the issuer's token key is not in the log")
    if not any(e.not_before <= now < e.expires for e in mine):
        raise NotLoggedError("the issuer's token key is logged, but not for now")
    live = {e.token_key for e in entries if e.not_before <= now < e.expires}
    if len(live) > MAX_LIVE_ISSUER_KEYS:
        raise TargetedKeyError(
            f"the log holds {len(live)} keys of {issuer} live at once (at most "
            f"{MAX_LIVE_ISSUER_KEYS} are needed for rotation): keys that could single users "
            "out; no token is fetched"
        )
