"""How the device pays for a session: a Privacy Pass token from its wallet, fetched from the
issuer under a key the log vouches for. Steps (net/steps.py), run by either client.

    payment = Payment(config, state_dir, logged, schedule, on_step)
    authorization = yield from payment.session_token()    # the wallet's, or a batch fetched
    fetched = yield from payment.fill_wallet()             # ahead of use

Rules: the issuer's public documents are read where they are published (the CDN), so the issuer
sees only token requests; tokens are fetched under a logged key only (logged.py); the wallet is
filled ahead and refilled in the background at a random time (wallet.py's `TokenSupply`, the
shell's `schedule`); a token the gateway did not spend (it was busy) is used next, or given back
to the wallet when the client closes. The account secret is read when a fetch needs it and is
never kept in memory longer, nor said in an error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from privproc.errors import PeerRejectedError, PrivprocError
from privproc.net.steps import Step
from privproc.parties.device.config import ClientConfig
from privproc.parties.device.issuer import IssuerClient
from privproc.parties.device.logged import LoggedKeys
from privproc.parties.device.wallet import RefillPolicy, Schedule, TokenSupply, Wallet
from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, TokenChallenge
from privproc.tokens.directory import KeySet

__all__ = ["CHALLENGE_TTL", "Payment"]

T = TypeVar("T")

CHALLENGE_TTL = 600.0  # seconds before the issuer's name and keys are looked up again


class Payment:
    """The module's rules, for one client."""

    def __init__(
        self,
        config: ClientConfig,
        state_dir: Path,
        logged: LoggedKeys,
        schedule: Schedule,
        on_step: Callable[[str], None],
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.logged = logged
        self.wallet = Wallet(state_dir)
        self.tokens = TokenSupply(
            self.wallet,
            RefillPolicy(),
            fetch=self._fetch_tokens,
            fill=self._fill_tokens,
            schedule=schedule,
        )
        # The issuer's directory and key set come from the CDN (which mirrors them beside the
        # log): the issuer sees only the token requests, not every device that looks at its keys.
        self._documents = IssuerClient(config.issuer_url, published_at=config.log_url)
        self._challenge: tuple[bytes, float] | None = None  # (challenge, when it was learnt)
        # A token the gateway did not spend (it was busy): (challenge, token), used next.
        self.unspent: tuple[bytes, str] | None = None
        self._step = on_step

    def keep_unspent(self, token: str) -> None:
        """The gateway refused a session without spending `token`: use it next."""
        if self._challenge is not None:
            self.unspent = (self._challenge[0], token)

    def give_back(self) -> None:
        """Return the token the gateway did not spend to the wallet (the client is closing)."""
        unspent, self.unspent = self.unspent, None
        if unspent is not None:
            with contextlib.suppress(PrivprocError, OSError):
                self.wallet.put_back(*unspent, time.time())

    def _token_challenge(self, now: float) -> Step[bytes]:
        if self._challenge is None or now - self._challenge[1] > CHALLENGE_TTL:
            key_set = yield from self._documents.key_set_step()
            challenge = TokenChallenge(
                TOKEN_TYPE_BLIND_RSA, key_set.issuer_name, b"", (self.config.gateway_origin,)
            ).encode()
            self._challenge = (challenge, now)
        return self._challenge[0]

    def session_token(self) -> Step[str]:
        now = time.time()
        challenge = yield from self._token_challenge(now)
        unspent, self.unspent = self.unspent, None
        if unspent is not None and unspent[0] == challenge:
            self._step("the token the gateway did not spend last time")
            return unspent[1]
        token = yield from self.tokens.token(challenge, now)
        self._step("a Privacy Pass token from the wallet (unlinkable to the account)")
        return token

    def fill_wallet(self) -> Step[int]:
        """Fill the token wallet ahead of use (to its target, if it is low); how many tokens
        were fetched. Run when a feature is turned on, long before its first request."""
        now = time.time()
        challenge = yield from self._token_challenge(now)
        return (yield from self.tokens.fill_ahead(challenge, now))

    def _fetch_tokens(self, challenge: bytes, now: float, count: int) -> Step[str]:
        """A batch of `count` tokens, in the request's path (the wallet was empty): one to use
        now, the rest kept."""

        def use(issuer: IssuerClient, key: bytes, key_set: KeySet) -> Step[str]:
            issue = lambda: issuer.token_step(challenge, key)  # noqa: E731
            return self.wallet.fetch_step(issue, challenge, key, key_set, count=count, now=now)

        return self._issue(now, use)

    def _fill_tokens(self, challenge: bytes, now: float, threshold: int, target: int) -> Step[int]:
        """Top the wallet up to `target` tokens if it holds fewer than `threshold` (ahead of
        use, or in the background); how many were fetched."""

        def use(issuer: IssuerClient, key: bytes, key_set: KeySet) -> Step[int]:
            issue = lambda: issuer.token_step(challenge, key)  # noqa: E731
            return self.wallet.refill_step(
                issue, challenge, key, key_set, threshold=threshold, target=target, now=now
            )

        return self._issue(now, use)

    def _issue(self, now: float, use: Callable[[IssuerClient, bytes, KeySet], Step[T]]) -> Step[T]:
        """`use(issuer, key, key_set)`: tokens fetched from the issuer under a logged key.

        The key is the directory's current one, or, for a device whose clock is behind the
        issuer's as the key changes, the logged next one. A key refused as unknown (the issuer's
        epoch turned between the directory and the request) is asked once more, with the key the
        directory names then: a client asking at the moment of a key change never fails."""
        issuer = IssuerClient(
            self.config.issuer_url, self._secret(), published_at=self.config.log_url
        )
        try:
            return (yield from self._with_key(issuer, now, use))
        except PeerRejectedError as exc:
            if exc.status != 422:
                raise
        self._step("the issuer's token key changed as it was asked; asking again")
        return (yield from self._with_key(issuer, time.time(), use))

    def _with_key(
        self,
        issuer: IssuerClient,
        now: float,
        use: Callable[[IssuerClient, bytes, KeySet], Step[T]],
    ) -> Step[T]:
        key_set = yield from issuer.key_set_step()
        directory = yield from issuer.directory_step()
        key = yield from self.logged.token_key(key_set.issuer_name, directory, now)
        return (yield from use(issuer, key, key_set))

    def _secret(self) -> str:
        path = self.state_dir / "account.secret"
        try:
            return path.read_text().strip()
        except OSError:
            raise PrivprocError(f"no account secret at {path}") from None
