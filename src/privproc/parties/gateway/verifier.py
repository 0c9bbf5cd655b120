"""Token verification and redemption at the gateway (RFC 9577 §2.2.3, RFC 9578 §6.4).

The gateway redeems tokens through one path only, `redemption.TokenGate`, which uses these steps
in this order: `check`, `refuse_spent` (or nothing, when the spend follows at once), the caller's
work, `spend`. This module gives verdicts; the gate keeps the tokens in flight and turns a verdict
into an answer.

Rules of this module:
- `check` is pure: it parses an Authorization value and proves the token is a type 0x0002 token
  for one of this verifier's own challenges, signed by an issuer key that has not expired. Only
  then does `spend` (or `redeem`, both at once) ask the spent-token store, so garbage never fills
  the store. A caller may do work between `check` and `spend` (the gateway places an enclave
  session) so that a token is spent only for a request that will be served; `refuse_spent` only
  reads the store, so a replay is refused before that work.
- Every refusal is a `TokenRejectedError` whose `reason` is a short fixed identifier (for logs and
  metrics); the gate answers every reason alike (401 with a fresh challenge), so a client learns
  nothing from which check failed.
- Keys come from the issuer's key set and can be replaced at any time (`update_keys`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.errors import PrivprocError, UsageError
from privproc.parties.gateway.spent import SpentTokenStore
from privproc.tokens import blindrsa, issuance
from privproc.tokens.auth import (
    TOKEN_TYPE_BLIND_RSA,
    PrivateTokenChallenge,
    Token,
    TokenChallenge,
    format_www_authenticate,
    parse_authorization,
)
from privproc.tokens.directory import VerificationKey

__all__ = ["CheckedToken", "TokenRejectedError", "TokenVerifier"]


class TokenRejectedError(PrivprocError):
    """A presented token is not acceptable; `reason` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token rejected: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class CheckedToken:
    """A token that passed every check but the spent-token store."""

    token_id: bytes  # SHA-256 of the authenticator input: what the store remembers
    expires: int


@dataclass(frozen=True)
class _Key:
    public_key: rsa.RSAPublicKey
    token_key: bytes
    not_before: int
    expires: int


class TokenVerifier:
    """Verifies tokens for this gateway's challenges and spends each one once."""

    def __init__(
        self,
        challenges: Sequence[TokenChallenge],
        store: SpentTokenStore,
        keys: Iterable[VerificationKey] = (),
    ) -> None:
        if not challenges:
            raise UsageError("a verifier needs at least one challenge")
        self.challenges = tuple(challenges)
        self._digests = frozenset(c.digest() for c in challenges)
        self._store = store
        self._keys: dict[bytes, _Key] = {}
        self.update_keys(keys)

    def update_keys(self, keys: Iterable[VerificationKey]) -> None:
        table = {}
        for k in keys:
            table[issuance.token_key_id(k.token_key)] = _Key(
                issuance.decode_token_key(k.token_key), k.token_key, k.not_before, k.expires
            )
        self._keys = table  # one assignment: readers see the old table or the new one

    def challenge_header(self, now: float) -> str:
        """WWW-Authenticate for a 401: each challenge with the key clients should use now."""
        usable = [k for k in self._keys.values() if k.not_before <= now < k.expires]
        current = max(usable, key=lambda k: k.not_before, default=None)
        token_key = current.token_key if current is not None else None
        return format_www_authenticate(
            [PrivateTokenChallenge(c.encode(), token_key) for c in self.challenges]
        )

    def check(self, authorization: str | None, now: float) -> CheckedToken:
        if authorization is None:
            raise TokenRejectedError("missing")
        try:
            raw = parse_authorization(authorization)
            token = Token.decode(raw)
        except PrivprocError:
            raise TokenRejectedError("malformed") from None
        if token.token_type != TOKEN_TYPE_BLIND_RSA:
            raise TokenRejectedError("token-type")
        if token.challenge_digest not in self._digests:
            raise TokenRejectedError("challenge")
        key = self._keys.get(token.token_key_id)
        if key is None:
            raise TokenRejectedError("unknown-key")
        if now >= key.expires:
            raise TokenRejectedError("expired-key")
        # The authenticator input is the token up to its authenticator (RFC 9577 §2.2.3).
        signed = raw[: len(raw) - len(token.authenticator)]
        try:
            blindrsa.verify(key.public_key, issuance.VARIANT, signed, token.authenticator)
        except PrivprocError:
            raise TokenRejectedError("signature") from None
        return CheckedToken(hashlib.sha256(signed).digest(), key.expires)

    async def spend(self, checked: CheckedToken) -> None:
        """Spend a checked token; raises `TokenRejectedError` unless this is its first use.

        A store failure propagates as `StoreUnavailableError`: the token is refused (fail closed)
        but not burnt, and the caller answers 503."""
        if not await self._store.spend(checked.token_id, checked.expires):
            raise TokenRejectedError("spent")

    async def refuse_spent(self, checked: CheckedToken) -> None:
        """`TokenRejectedError("spent")` if the token has been spent (spends nothing)."""
        if await self._store.is_spent(checked.token_id):
            raise TokenRejectedError("spent")

    async def redeem(self, authorization: str | None, now: float) -> None:
        """Check the token and spend it (`check`, then `spend`): the bare verdict, with no
        in-flight mark and no answer (the gateway redeems through `TokenGate.redeem`)."""
        await self.spend(self.check(authorization, now))
