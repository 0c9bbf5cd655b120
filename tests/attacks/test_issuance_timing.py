"""The operator joins the issuer's records with the gateway's by time (issue 15, point 3).

The issuer knows which account asks for tokens and when; the gateway knows when a token is spent.
A wallet that fetches only when it is empty and spends the first token at once hands the operator
the link: the session that follows an account's fetch is that account's. Here the operator plays
that join against 50 simulated users, each with its own account, state directory, real `Wallet`
and the client's `TokenSupply` (the policy `PrivateProcessingClient` runs), fetching from a real
issuer and spending at a real gateway on loopback.

The simulation runs on a virtual clock (seeded, one event at a time), so that it is a day of use
in seconds and gives the same result on any machine: background refills are scheduled on the
virtual timeline, and the operator's records are stamped with the virtual time at which each
request arrives at its server (the issuer's records are taken at the issuer itself, which
resolves each Bearer secret to its account). Its joins use the order of arrival and those times.

Chance: every user makes the same number of requests, so a guess that ignores time names the
right account for a session with probability 1/50. The operator makes one guess per fetch it
saw, so with G fetches the number of right guesses by chance is Binomial(G, 1/50); the test
allows at most the smallest b with P(X >= b) < 1e-6 (for G = 100, b = 12: at most 11 right) for
each of its strategies, and counts as linked every user one of whose guesses is right.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from privproc.net.drivers import Driver
from privproc.net.steps import Step
from privproc.ohttp import bhttp
from privproc.parties.device.issuer import IssuerClient
from privproc.parties.device.ohttp import OhttpClient, choose_config
from privproc.parties.device.wallet import RefillPolicy, TokenSupply, Wallet
from privproc.parties.issuer.service import REQUEST_PATH, create_issuer_app
from privproc.parties.issuer.store import IssuerStore
from privproc.tokens.auth import Token, TokenChallenge
from tests.servers import Running, app_in_thread
from tests.tokens_stack import gateway_process, issuer_process

USERS = 50
REQUESTS = 12  # per user, at random times over the day
SETUP = 600.0  # users turn their feature on (the wallet is filled) in the first 10 minutes
DAY = 3000.0  # then the requests: 600 sessions in 50 minutes, one every 5 s on average
# The defaults' delay (30 s to 10 min), with a smaller wallet (fewer tokens to sign in a test).
POLICY = RefillPolicy(low_water=5, target=10)
OLD_BATCH = 12  # the old client fetched a batch when empty (16 then), spending its first at once
GATEWAY_NAME = "gateway.example"
ISSUER_NAME = "issuer.example"
WEEK = 7 * 86_400  # the issuer's epoch: its key cannot turn in the middle of a test run


@dataclass
class Operator:
    """What the operator's servers see: token requests (arrival order, virtual time, account),
    and spent tokens (arrival order, virtual time). `truth` is the simulation's, not its."""

    clock: Callable[[], float]
    order: Iterator[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)
    token_requests: list[tuple[int, float, str | None]] = field(default_factory=list)
    sessions: list[tuple[int, float]] = field(default_factory=list)
    truth: list[str] = field(default_factory=list)

    def saw_token_request(self, account: str | None) -> None:
        with self.lock:
            self.token_requests.append((next(self.order), self.clock(), account))

    def saw_session(self, user: str) -> None:
        with self.lock:
            self.sessions.append((next(self.order), self.clock()))
            self.truth.append(user)

    def fetches(self) -> list[tuple[int, float, str]]:
        """One (order, time, account) per batch: the account's consecutive token requests."""
        batches: list[tuple[int, float, str]] = []
        for i, (order, at, account) in enumerate(self.token_requests):
            assert account is not None
            before = self.token_requests[i - 1] if i else None
            if before is None or before[2] != account or before[1] != at:
                batches.append((order, at, account))
        return batches


def _watched(app: Any, store: IssuerStore, operator: Operator) -> Any:
    """The issuer as the operator runs it, noting who asks for a token and when (a log it need
    not keep: its server sees each request arrive)."""

    async def watching(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == REQUEST_PATH:
            value = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            operator.saw_token_request(store.authenticate(value.partition(" ")[2].strip()))
        await app(scope, receive, send)

    return watching


class VirtualTime:
    """A virtual clock and its events, run one at a time in order."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def at(self, when: float, run: Callable[[], None]) -> Callable[[], None]:
        cancelled = False

        def event() -> None:
            if not cancelled:
                run()

        def cancel() -> None:
            nonlocal cancelled
            cancelled = True

        heapq.heappush(self._events, (when, next(self._order), event))
        return cancel

    def schedule(self, delay: float, run: Callable[[], None]) -> Callable[[], None]:
        return self.at(self.now + delay, run)

    def run(self) -> None:
        while self._events:
            self.now, _, event = heapq.heappop(self._events)
            event()


@dataclass
class Stack:
    issuer_url: str
    store: IssuerStore
    gateway: Running
    operator: Operator


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("timing")
    store = IssuerStore(tmp / "issuer", epoch_seconds=WEEK, quota=1_000_000)
    store.rotate(time.time())
    operator = Operator(time.time)  # each simulation sets its virtual clock
    app = _watched(create_issuer_app(store, ISSUER_NAME), store, operator)
    with app_in_thread(app) as issuer_url:
        args = ("--name", GATEWAY_NAME, "--state", str(tmp / "gateway"))
        with gateway_process(tmp, issuer_url, *args) as gateway:
            yield Stack(issuer_url, store, gateway, operator)
    store.close()


def _simulate(
    stack: Stack, tmp: Path, policy: RefillPolicy, *, fill_ahead: bool, seed: int
) -> Operator:
    """50 users through a virtual day; returns what the operator saw (and the truth)."""
    rng = random.Random(seed)
    virtual = VirtualTime(time.time())
    operator = stack.operator
    operator.clock = lambda: virtual.now
    operator.token_requests.clear()
    operator.sessions.clear()
    operator.truth.clear()
    http = httpx.Client(timeout=30)
    driver = Driver(http)
    ohttp = OhttpClient(http=http)
    config = choose_config(ohttp.fetch_key_configs(stack.gateway.url))
    with IssuerClient(stack.issuer_url, http=http) as public:
        key_set = public.key_set()
        key = public.directory().preferred(time.time()).token_key
    challenge = TokenChallenge(2, key_set.issuer_name, b"", (GATEWAY_NAME,)).encode()
    prefix = f"s{seed}-{'ahead' if fill_ahead else 'empty'}"

    def user(index: int) -> None:
        name = f"{prefix}-{index}"
        issuer = IssuerClient(stack.issuer_url, stack.store.add_account(name, 0), http=http)
        wallet = Wallet(tmp / name)

        def issue() -> Step[Token]:
            return issuer.token_step(challenge, key)

        def fetch(challenge: bytes, now: float, count: int) -> Step[str]:
            return wallet.fetch_step(issue, challenge, key, key_set, count=count, now=now)

        def fill(challenge: bytes, now: float, threshold: int, target: int) -> Step[int]:
            return wallet.refill_step(
                issue, challenge, key, key_set, threshold=threshold, target=target, now=now
            )

        def schedule(delay: float, refill: Callable[[], Step[None]]) -> Callable[[], None]:
            return virtual.schedule(delay, lambda: driver.run(refill()))

        supply = TokenSupply(
            wallet,
            policy,
            fetch=fetch,
            fill=fill,
            schedule=schedule,
            clock=lambda: virtual.now,
            rng=random.Random(rng.random()),
        )

        def request() -> None:
            token = driver.run(supply.token(challenge, virtual.now))
            inner = bhttp.Request.build(
                "GET", "https://enclave.invalid/v1/models", headers=[("authorization", token)]
            )
            operator.saw_session(name)
            # Accepted (no enclave behind this gateway: 404, not 401): a real, unspent token.
            assert ohttp.request(stack.gateway.url, config, inner).status == 404

        def turn_on() -> None:  # `privproc settings enable`: the wallet is filled
            driver.run(supply.fill_ahead(challenge, virtual.now))

        if fill_ahead:
            virtual.at(virtual.now + rng.uniform(0, SETUP), turn_on)
        for _ in range(REQUESTS):
            virtual.at(virtual.now + SETUP + rng.uniform(0, DAY), request)

    try:
        for index in range(USERS):
            user(index)
        virtual.run()
    finally:
        http.close()
    assert len(operator.sessions) == USERS * REQUESTS
    return operator


# --- The operator's joins: one guess per fetch, "this account opened that session" -----------


def _guesses(operator: Operator, strategy: str) -> list[tuple[str, int]]:
    orders = [order for order, _ in operator.sessions]
    times = [at for _, at in operator.sessions]
    middle = sum(POLICY.delay) / 2
    guesses = []
    for order, at, account in operator.fetches():
        after = bisect.bisect(orders, order)  # the first session to arrive after the fetch
        if strategy == "next":  # the old wallet: fetch, then spend the first token at once
            candidates, aim = range(after, min(after + 1, len(orders))), at
        elif strategy == "previous":  # a refill right after the session that left it low
            candidates, aim = range(max(0, after - 1), after), at
        elif strategy == "nearest":  # whichever session is closest in time
            candidates, aim = range(max(0, after - 1), min(after + 1, len(orders))), at
        else:  # "delay": the session that came one mean refill delay before the fetch
            candidates, aim = range(after), at - middle
        if candidates:
            guesses.append((account, min(candidates, key=lambda i: abs(times[i] - aim))))
    return guesses


STRATEGIES = ("next", "previous", "nearest", "delay")


def _linked(operator: Operator, strategy: str) -> tuple[int, int, int]:
    """(users linked, right guesses, guesses) for one strategy."""
    guesses = _guesses(operator, strategy)
    right = [(account, s) for account, s in guesses if operator.truth[s] == account]
    return len({account for account, _ in right}), len(right), len(guesses)


def _chance_bound(guesses: int, p: float = 1 / USERS, tail: float = 1e-6) -> int:
    """The smallest b with P(Binomial(guesses, p) >= b) < tail: more right guesses than b - 1
    are not chance."""

    def at_least(b: int) -> float:
        return sum(
            math.comb(guesses, k) * p**k * (1 - p) ** (guesses - k) for k in range(b, guesses + 1)
        )

    b = 0
    while at_least(b) >= tail:
        b += 1
    return b


def _report(label: str, operator: Operator) -> dict[str, tuple[int, int, int]]:
    figures = {strategy: _linked(operator, strategy) for strategy in STRATEGIES}
    print(label, json.dumps(figures))  # the measured figures, with -s
    return figures


def test_the_operator_links_no_more_users_than_chance(stack: Stack, tmp_path: Path) -> None:
    """Filled ahead, refilled in the background at a random delay: whichever way the operator
    joins its two records, it names no more users than a guess that ignores time would."""
    operator = _simulate(stack, tmp_path, POLICY, fill_ahead=True, seed=15)
    fetches = len(operator.fetches())
    assert USERS < fetches <= 3 * USERS  # a fill each, and refills
    bound = _chance_bound(fetches)
    for strategy, (users, right, guesses) in _report("defended", operator).items():
        assert guesses <= fetches
        assert right < bound, f"{strategy}: {right} right guesses of {guesses} (chance < {bound})"
        assert users <= right


def test_the_old_wallet_hands_the_operator_every_user(stack: Stack, tmp_path: Path) -> None:
    """The control that shows the join can fail the test above: the old wallet (filled only when
    empty, in the request's path, its first token spent at once; no background refill) links
    every user by the first session after its fetch."""
    old = RefillPolicy(low_water=0, target=OLD_BATCH)
    operator = _simulate(stack, tmp_path, old, fill_ahead=False, seed=15)
    fetches = len(operator.fetches())
    users, right, guesses = _report("old wallet", operator)["next"]
    assert fetches == guesses == right == USERS  # one batch each, each spent at once
    assert users == USERS > _chance_bound(fetches)


# --- The issuer's own records -----------------------------------------------------------------


def test_the_issuers_records_keep_no_time_finer_than_its_epoch(tmp_path: Path) -> None:
    """A copy of the issuer's log (a backup, a log shipper, a subpoena) must not be joinable
    with the gateway's by time: each of its records carries the start of the quota epoch, not
    the moment of the request. Its state is its owner's alone (0700 directories, 0600 files),
    even when it is started with a permissive umask."""
    from privproc.parties.device.issuer import IssuerClient
    from tests.tokens_stack import add_account

    epoch = 3600
    previous = os.umask(0o022)
    try:
        with issuer_process(tmp_path, "--epoch-seconds", str(epoch)) as (running, state):
            secret = add_account(state, "timed")
            with IssuerClient(running.url, secret) as client:
                key = client.directory().preferred(time.time()).token_key
                challenge = TokenChallenge(2, client.key_set().issuer_name).encode()
                for _ in range(3):
                    client.fetch_token(challenge, key)
                    time.sleep(0.01)
            deadline = time.monotonic() + 10
            while running.logs().count('"token-request"') < 3:
                assert time.monotonic() < deadline, "the issuer did not log its token requests"
                time.sleep(0.05)
            records = [json.loads(line) for line in running.logs().splitlines() if "{" in line]
    finally:
        os.umask(previous)
    issued = [r for r in records if r.get("event") == "token-request"]
    assert len(issued) == 3
    for record in records:
        assert record["ts"] % epoch == 0, record
        assert time.time() - 2 * epoch < record["ts"] <= time.time()
    for path in [state, *state.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
