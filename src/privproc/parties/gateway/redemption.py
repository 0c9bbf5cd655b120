"""The one path for token redemption at the gateway: admit, do the work, spend.

Every token the gateway takes goes through its one `TokenGate`, shared by the token guard
(`service.token_guard`) and the session router (`router.SessionRouter`):

1. `admit(authorization)`: the token is checked (`TokenVerifier.check`, pure), a copy in flight
   (admitted through either path and neither spent nor released yet) is refused, and so is one
   the spent-token store has recorded (`TokenVerifier.refuse_spent`: a replay costs no work). The
   token is then in flight, held by the `Admission` returned.
2. The caller does the work the token pays for (the router places a session on an enclave).
3. `Admission.spend()` spends the token (`TokenVerifier.spend`, the store's one atomic step); or
   `Admission.release()`, or leaving the admission's `with` block, lets it go unspent when the
   work was not done, so that it can be used again.

`redeem(authorization)` is the simple use, with no work between: admit and spend at once (the
spend is then the only question to the store: it refuses a spent copy by itself).

Rules:
- A token is spent at most once, and only by `Admission.spend`, after the caller's work; every
  other outcome leaves it unspent. The in-flight set is this object's alone, so a copy being
  redeemed through one path is refused through the other at the same time.
- A refusal becomes an answer here and nowhere else (a Binary HTTP response to encapsulate): every
  `TokenRejectedError` reason is the same `401` with a fresh `WWW-Authenticate: PrivateToken`
  challenge and `{"error": "token-required", "retry": true}`, so a client learns nothing from which
  check failed; a spent-token store that cannot answer (`StoreUnavailableError`) is `503` with
  `retry-after: 5` and `{"error": "unavailable", "retry": true}` (fail closed; the token is not
  spent).
- Each outcome is logged as a `token` event whose `outcome` is its fixed reason (`redeemed`,
  `missing`, `spent`, `in-flight`, `store-unavailable`, ...), never a byte of the token, and is
  counted: `privproc_tokens_spent_total`, or the error kind `token-<reason>`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from privproc import logs
from privproc.errors import UsageError
from privproc.net.metrics import Metrics
from privproc.parties.gateway.answers import error_answer
from privproc.parties.gateway.spent import StoreUnavailableError
from privproc.parties.gateway.verifier import CheckedToken, TokenRejectedError, TokenVerifier

__all__ = ["Admission", "TokenGate"]

PARTY = "gateway"
RETRY_AFTER_STORE = "5"


class Admission:
    """A token admitted and in flight: `spend` it once the work is done, or `release` it."""

    def __init__(self, gate: TokenGate, checked: CheckedToken, now: float) -> None:
        self._gate = gate
        self._checked = checked
        self._now = now
        self._open = True

    async def spend(self) -> bytes | None:
        """Spend the token and end its flight: None when it is spent, otherwise the refusal's
        answer (`401`: a copy was spent meanwhile elsewhere; `503`: the store cannot answer)."""
        if not self._open:
            raise UsageError("an admission is spent or released once")
        try:
            await self._gate.verifier.spend(self._checked)
        except (TokenRejectedError, StoreUnavailableError) as exc:
            return self._gate._refuse(exc, self._now)
        finally:
            self.release()
        self._gate._spent()
        return None

    def release(self) -> None:
        """End the token's flight unspent (nothing if it has ended already)."""
        if self._open:
            self._open = False
            self._gate._in_flight.discard(self._checked.token_id)  # one set, kept by the gate

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class TokenGate:
    """The gateway's one redemption path over its verifier (see the module's rules)."""

    def __init__(self, verifier: TokenVerifier, clock: Callable[[], float] = time.time) -> None:
        self.verifier = verifier
        self.metrics: Metrics | None = None  # set by the gateway app that serves this gate
        self._clock = clock
        self._in_flight: set[bytes] = set()  # ids of the tokens admitted, not spent or released

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def admit(self, authorization: str | None) -> Admission | bytes:
        """The token in flight, or the answer that refuses it (nothing spent either way)."""
        return await self._admit(authorization, ask_store=True)

    async def redeem(self, authorization: str | None) -> bytes | None:
        """Admit and spend at once: None when the token is spent, otherwise the refusal's
        answer."""
        admitted = await self._admit(authorization, ask_store=False)
        if isinstance(admitted, bytes):
            return admitted
        return await admitted.spend()

    async def _admit(self, authorization: str | None, *, ask_store: bool) -> Admission | bytes:
        now = self._clock()
        try:
            checked = self.verifier.check(authorization, now)
        except TokenRejectedError as exc:
            return self._refuse(exc, now)
        if checked.token_id in self._in_flight:
            return self._refuse(TokenRejectedError("in-flight"), now)
        # In flight from here, before the store is asked: a copy arriving meanwhile is refused.
        admission = Admission(self, checked, now)
        self._in_flight.add(checked.token_id)
        if ask_store:
            try:
                await self.verifier.refuse_spent(checked)
            except (TokenRejectedError, StoreUnavailableError) as exc:
                admission.release()
                return self._refuse(exc, now)
            except BaseException:
                admission.release()
                raise
        return admission

    def _refuse(self, exc: TokenRejectedError | StoreUnavailableError, now: float) -> bytes:
        """The answer to a refused token, logged and counted."""
        if isinstance(exc, StoreUnavailableError):
            reason, status = "store-unavailable", 503
            retry_after = (("retry-after", RETRY_AFTER_STORE),)
            answer = error_answer(status, "unavailable", True, retry_after)
        else:
            reason, status = exc.reason, 401
            challenge = (("www-authenticate", self.verifier.challenge_header(now)),)
            answer = error_answer(status, "token-required", True, challenge)
        logs.event(PARTY, "token", outcome=reason, status=status)
        if self.metrics is not None:
            self.metrics.error(f"token-{reason}")
        return answer

    def _spent(self) -> None:
        """Log and count a token spent."""
        logs.event(PARTY, "token", outcome="redeemed")
        if self.metrics is not None:
            self.metrics.tokens_spent.labels(PARTY).inc()
