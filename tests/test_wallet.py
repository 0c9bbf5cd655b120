"""The client's token wallet: private file, refill below a threshold, a token never handed out
twice (also to processes racing for it), expired tokens dropped; and the `tokens` CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from privproc.errors import DecodeError, PeerRejectedError, UsageError
from privproc.parties.device.issuer import IssuerClient, QuotaExhaustedError
from privproc.parties.device.wallet import Wallet
from privproc.tokens.auth import Token, TokenChallenge, b64url_encode, parse_authorization
from privproc.tokens.directory import KeySet
from tests.servers import Running
from tests.tokens_stack import add_account, issuer_process

QUOTA = 12


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    with issuer_process(tmp_path_factory.mktemp("issuer"), "--quota", str(QUOTA)) as pair:
        yield pair


def _setup(running: Running) -> tuple[bytes, bytes, KeySet]:
    with IssuerClient(running.url) as client:
        key_set = client.key_set()
        token_key = client.directory().preferred(time.time()).token_key
    challenge = TokenChallenge(2, key_set.issuer_name, b"", ("gw.example",)).encode()
    return challenge, token_key, key_set


def _take_all(wallet_dir: str, challenge: bytes, out: multiprocessing.Queue[str]) -> None:
    wallet = Wallet(Path(wallet_dir))
    while (authorization := wallet.take(challenge, time.time())) is not None:
        out.put(authorization)
    out.put("done")


def test_refill_take_and_never_reuse(issuer: tuple[Running, Path], tmp_path: Path) -> None:
    running, state = issuer
    secret = add_account(state, "wallet-user")
    challenge, token_key, key_set = _setup(running)
    wallet = Wallet(tmp_path / "client")
    now = time.time()
    with IssuerClient(running.url, secret) as client:
        assert (
            wallet.refill(client, challenge, token_key, key_set, threshold=2, target=6, now=now)
            == 6
        )
        assert (os.stat(wallet.path).st_mode & 0o777) == 0o600
        # At or above the threshold, refill fetches nothing.
        assert (
            wallet.refill(client, challenge, token_key, key_set, threshold=6, target=6, now=now)
            == 0
        )
        assert wallet.count(challenge, now) == 6
        taken = {wallet.take(challenge, now) for _ in range(5)}
        assert len(taken) == 5  # five different tokens
        assert wallet.count(challenge, now) == 1
        # Below the threshold: refill tops up to the target.
        assert (
            wallet.refill(client, challenge, token_key, key_set, threshold=2, target=4, now=now)
            == 3
        )
    for authorization in taken:
        assert authorization is not None
        Token.decode(parse_authorization(authorization))
        assert authorization.split('"')[1] not in wallet.path.read_text()  # gone from the file

    # Two processes empty the wallet at once: every token goes to exactly one of them.
    queue: multiprocessing.Queue[str] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_take_all, args=(str(wallet.state_dir), challenge, queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got, done = [], 0
    while done < 2:
        item = queue.get(timeout=30)
        if item == "done":
            done += 1
        else:
            got.append(item)
    for p in procs:
        p.join()
    assert len(got) == 4
    assert len(set(got)) == 4
    assert wallet.take(challenge, now) is None


def test_quota_refusal_keeps_what_was_fetched(issuer: tuple[Running, Path], tmp_path: Path) -> None:
    running, state = issuer
    secret = add_account(state, "greedy")
    challenge, token_key, key_set = _setup(running)
    wallet = Wallet(tmp_path / "client")
    now = time.time()
    with IssuerClient(running.url, secret) as client:
        got = wallet.refill(client, challenge, token_key, key_set, threshold=20, target=20, now=now)
        assert got == QUOTA
        assert wallet.count(challenge, now) == QUOTA
        other = Wallet(tmp_path / "empty")
        with pytest.raises(QuotaExhaustedError):
            other.refill(client, challenge, token_key, key_set, threshold=1, target=1, now=now)


def test_clients_sharing_an_empty_wallet_fetch_once_and_each_get_a_token(
    issuer: tuple[Running, Path], tmp_path: Path
) -> None:
    """Eight threads of one device find its wallet empty at once: one fetches a batch (keeping
    the first token for itself, never stored), the others wait for it and take theirs. Without
    the refill lock they race: several fetch (more tokens than uses), or one is left with none."""
    running, state = issuer
    secret = add_account(state, "shared-device")
    challenge, token_key, key_set = _setup(running)
    wallet_dir = tmp_path / "device"
    got: list[str] = []
    fetches: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def use() -> None:
        wallet = Wallet(wallet_dir)
        start.wait()
        token = wallet.take(challenge, time.time())
        if token is None:
            with wallet.refilling():
                token = wallet.take(challenge, time.time())
                if token is None:
                    with IssuerClient(running.url, secret) as client:
                        token = wallet.fetch(client, challenge, token_key, key_set, count=8)
                    with lock:
                        fetches.append(1)
        with lock:
            got.append(token)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 8
    assert len(set(got)) == 8  # eight different tokens, each spendable
    for authorization in got:
        Token.decode(parse_authorization(authorization))
    assert fetches == [1]  # one batch for all
    assert Wallet(wallet_dir).count(challenge, time.time()) == 0  # 8 fetched, 8 used


def test_the_fetched_token_never_enters_the_file(
    issuer: tuple[Running, Path], tmp_path: Path
) -> None:
    running, state = issuer
    secret = add_account(state, "one-token")
    challenge, token_key, key_set = _setup(running)
    wallet = Wallet(tmp_path / "client")
    with IssuerClient(running.url, secret) as client:
        authorization = wallet.fetch(client, challenge, token_key, key_set, count=1)
        Token.decode(parse_authorization(authorization))
        assert wallet.count(challenge, time.time()) == 0
        assert not wallet.path.exists() or authorization.split('"')[1] not in (
            wallet.path.read_text()
        )
        with pytest.raises(UsageError):
            wallet.fetch(client, challenge, token_key, key_set, count=0)
        with pytest.raises(UsageError, match="not in the issuer's key set"):
            wallet.fetch(client, challenge, b"another key", key_set, count=1)


def test_expired_tokens_are_dropped_and_corruption_is_reported(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from privproc.tokens import issuance

    key = rsa.generate_private_key(65537, 2048)
    spki = issuance.encode_token_key(key.public_key())
    challenge = TokenChallenge(2, "issuer.example").encode()
    request, state = issuance.begin(challenge, spki)
    token = state.finish(issuance.sign_request(key, request))
    wallet = Wallet(tmp_path / "w")
    wallet.add(challenge, [(token, 1000)])
    assert wallet.count(challenge, 999) == 1
    assert wallet.take(challenge, 1000) is None
    assert wallet.count(challenge, 999) == 0  # dropped for good
    wallet.path.write_text("{not json")
    with pytest.raises(DecodeError, match="corrupt"):
        wallet.count(challenge, 0)
    wallet.path.write_text(json.dumps({"version": 99, "tokens": {}}))
    with pytest.raises(DecodeError, match="unknown format"):
        wallet.count(challenge, 0)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_tokens_cli(issuer: tuple[Running, Path], tmp_path: Path) -> None:
    running, state = issuer
    secret = add_account(state, "cli-user")
    client_state = tmp_path / "client"
    base = ["tokens", "fetch", "--issuer", running.url, "--origin", "gw.example"]
    base += ["--state", str(client_state), "--target", "3"]
    missing = _cli(*base, env={"PRIVPROC_ISSUER_SECRET": ""})
    assert missing.returncode != 0
    assert "PRIVPROC_ISSUER_SECRET" in missing.stderr
    fetched = _cli(*base, env={"PRIVPROC_ISSUER_SECRET": secret})
    assert fetched.returncode == 0, fetched.stderr
    assert "fetched 3 token(s)" in fetched.stdout
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    again = _cli(*base, "--secret-file", str(secret_file))
    assert "fetched 0 token(s); the wallet holds 3" in again.stdout
    shown = _cli("tokens", "show", "--state", str(client_state), "--json")
    [row] = json.loads(shown.stdout)
    assert row["origins"] == ["gw.example"]
    assert row["tokens"] == 3
    wrong = _cli(
        *base, "--threshold", "5", "--target", "5", env={"PRIVPROC_ISSUER_SECRET": "ppa_no"}
    )
    assert wrong.returncode == 1
    assert "401" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    accounts = _cli("issuer", "accounts", "--state", str(state), "--json")
    assert {"name": "cli-user", "used": 3} in json.loads(accounts.stdout)


def test_a_key_that_stops_signing_midway_keeps_what_came(tmp_path: Path) -> None:
    """The issuer's epoch turns in the middle of a batch: its key stops signing (422, unknown
    key). The tokens fetched before are kept and the first is handed out; no error. (The real
    issuer app, its clock turned after the third token request.)"""
    from privproc.parties.issuer.service import create_issuer_app
    from privproc.parties.issuer.store import IssuerStore
    from tests.servers import app_in_thread

    epoch = 3600
    store = IssuerStore(tmp_path / "issuer", epoch_seconds=epoch)
    start = (int(time.time()) // epoch) * epoch + 10
    secret = store.add_account("turning", start)
    store.rotate(start)
    requests = 0
    after_turn = start + epoch + store.skew + 1  # the next epoch, its grace over

    def clock() -> float:
        return start if requests <= 3 else after_turn

    app = create_issuer_app(store, "issuer.example", clock=clock)
    with app_in_thread(app) as url, IssuerClient(url, secret) as client:
        key_set = client.key_set()
        token_key = client.directory().preferred(start).token_key
        challenge = TokenChallenge(2, key_set.issuer_name, b"", ("gw.example",)).encode()

        def counted(challenge: bytes, key: bytes) -> Token:
            nonlocal requests
            requests += 1
            return IssuerClient.fetch_token(client, challenge, key)

        client.fetch_token = counted  # type: ignore[method-assign,assignment]
        wallet = Wallet(tmp_path / "client")
        first = wallet.fetch(client, challenge, token_key, key_set, count=10)
        assert parse_authorization(first)
        assert wallet.count(challenge, start) == 2  # the second and third; then the turn
        assert requests == 4
        other = Wallet(tmp_path / "other")  # an empty wallet asking after the turn: refused
        with pytest.raises(PeerRejectedError) as refused:
            other.fetch(client, challenge, token_key, key_set, count=2)
        assert refused.value.status == 422
    store.close()


# --- Filled ahead, refilled in the background (issue 15, point 3) -----------------------------


def _local_tokens(count: int) -> tuple[bytes, list[Token]]:
    """`count` genuine tokens under a key made here (no issuer needed)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from privproc.tokens import issuance

    key = rsa.generate_private_key(65537, 2048)
    spki = issuance.encode_token_key(key.public_key())
    challenge = TokenChallenge(2, "issuer.example", b"", ("gw.example",)).encode()
    tokens = []
    for _ in range(count):
        request, state = issuance.begin(challenge, spki)
        tokens.append(state.finish(issuance.sign_request(key, request)))
    return challenge, tokens


def test_a_fresh_batch_waits_until_every_older_token_is_spent(tmp_path: Path) -> None:
    """Whatever order batches were stored in, the oldest batch is spent first; tokens from a
    wallet written before batches were stamped count as the oldest."""
    challenge, tokens = _local_tokens(5)
    wallet = Wallet(tmp_path / "w")
    far = 2**40
    wallet.add(challenge, [(tokens[0], far), (tokens[1], far)], at=5000)  # fresh
    wallet.add(challenge, [(tokens[2], far)], at=1000)  # older, stored after it
    doc = json.loads(wallet.path.read_text())
    [entries] = doc["tokens"].values()
    assert [e["fetched"] for e in entries] == [5000, 5000, 1000]
    entries.append({"token": b64url_encode(tokens[3].encode()), "expires": far})  # no stamp
    wallet.path.write_text(json.dumps(doc))
    spent = [parse_authorization(wallet.take(challenge, 6000) or "") for _ in range(4)]
    assert spent == [t.encode() for t in (tokens[3], tokens[2], tokens[0], tokens[1])]
    assert wallet.take(challenge, 6000) is None


def test_a_token_given_back_unspent_is_taken_first_for_a_while(tmp_path: Path) -> None:
    from privproc.parties.device.wallet import PUT_BACK_TTL

    challenge, tokens = _local_tokens(3)
    wallet = Wallet(tmp_path / "w")
    wallet.add(challenge, [(tokens[0], 2**40), (tokens[1], 2**40)], at=1000)
    busy = wallet.take(challenge, 2000)  # the gateway answered "busy": not spent
    assert busy is not None
    wallet.put_back(challenge, busy, 2000)
    assert wallet.count(challenge, 2000) == 2
    assert wallet.take(challenge, 2001) == busy  # first, before the batch's other token
    wallet.put_back(challenge, busy, 2000)
    assert wallet.count(challenge, 2000 + PUT_BACK_TTL) == 1  # then it is dropped
    with pytest.raises(DecodeError):
        wallet.put_back(challenge, "Bearer nonsense", 2000)


def test_refill_policies_are_checked() -> None:
    from privproc.parties.device.wallet import RefillPolicy

    RefillPolicy(low_water=0, target=1, delay=(0, 0))
    for bad in (
        {"low_water": 9, "target": 8},
        {"low_water": -1},
        {"target": 0, "low_water": 0},
        {"target": 1001},
        {"delay": (5.0, 1.0)},
        {"delay": (-1.0, 1.0)},
    ):
        with pytest.raises(UsageError):
            RefillPolicy(**bad)


class _Later:
    """A scheduler that only notes what it was asked to run."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, Callable[[], Any]]] = []
        self.cancelled = 0

    def __call__(self, delay: float, run: Callable[[], Any]) -> Callable[[], None]:
        self.runs.append((delay, run))

        def cancel() -> None:
            self.cancelled += 1

        return cancel


def test_a_low_wallet_is_refilled_once_later_and_never_in_the_requests_path(
    tmp_path: Path,
) -> None:
    """A take that leaves the wallet below its low-water mark schedules one refill, at a delay
    drawn from the policy's range; more takes meanwhile schedule no other. The refill tops the
    wallet up to the target; a failing refill says only the type of its failure; close cancels
    a refill that has not run. An empty wallet fetches in the request's path (the fallback)."""
    import logging
    import random

    from privproc.net.drivers import run_local
    from privproc.net.steps import Step, immediate
    from privproc.parties.device.wallet import RefillPolicy, TokenSupply

    challenge, tokens = _local_tokens(6)
    wallet = Wallet(tmp_path / "w")
    wallet.add(challenge, [(t, 2**40) for t in tokens[:2]], at=100)
    fills: list[tuple[float, int, int]] = []
    fetches: list[int] = []

    def fill(ch: bytes, now: float, threshold: int, target: int) -> Step[int]:
        assert ch == challenge
        fills.append((now, threshold, target))
        if len(fills) == 2:
            raise PeerRejectedError("the issuer answered 503 for secret ppa_xyz", 503)
        added = tokens[2:5] if len(fills) == 1 else tokens[5:]
        wallet.add(ch, [(t, 2**40) for t in added], at=now)
        return immediate(len(added))

    def fetch(ch: bytes, now: float, count: int) -> Step[str]:
        fetches.append(count)
        return immediate("PrivateToken token=fetched-now")

    later = _Later()
    policy = RefillPolicy(low_water=3, target=8, delay=(10.0, 20.0))
    supply = TokenSupply(
        wallet,
        policy,
        fetch=fetch,
        fill=fill,
        schedule=later,
        clock=lambda: 777.0,
        rng=random.Random(1),
    )
    assert run_local(supply.fill_ahead(challenge, 200)) == 3  # 2 held, below the mark: filled
    assert fills == [(200, 3, 8)]
    assert run_local(supply.token(challenge, 300))  # 5 -> 4 left: no refill
    assert run_local(supply.token(challenge, 300))  # 3 left: none
    assert later.runs == []
    assert run_local(supply.token(challenge, 300))  # 2 left: below the mark
    assert run_local(supply.token(challenge, 300))  # 1 left: still the one refill
    [(delay, run)] = later.runs
    assert 10.0 <= delay <= 20.0
    assert supply.refill_pending
    assert fetches == []  # nothing fetched in a request's path
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("privproc").addHandler(handler)
    logging.getLogger("privproc").setLevel(logging.INFO)
    try:
        run_local(run())
        assert fills[-1] == (777.0, 3, 8)  # it failed: swallowed, said by its type alone
    finally:
        logging.getLogger("privproc").removeHandler(handler)
    assert not supply.refill_pending
    [line] = records
    assert '"outcome":"PeerRejectedError"' in line
    assert "ppa_" not in line
    assert wallet.count(challenge, 300) == 1
    assert run_local(supply.token(challenge, 300))  # the last one, and a new refill scheduled
    assert len(later.runs) == 2
    fallback = run_local(supply.token(challenge, 300))  # empty: fetched in the request's path
    assert fallback == "PrivateToken token=fetched-now"
    assert fetches == [8]
    supply.close()
    assert later.cancelled == 1
    assert not supply.refill_pending
    run_local(later.runs[1][1]())  # a refill that ran anyway (it had begun) still fills the wallet
    assert wallet.count(challenge, 300) == 1
    assert run_local(supply.token(challenge, 300))
    assert len(later.runs) == 2  # closed: nothing more is scheduled


def test_the_background_refill_runs_in_a_daemon_thread(tmp_path: Path) -> None:
    from privproc.net.drivers import Driver
    from privproc.net.steps import Step
    from privproc.parties.device.wallet import in_background

    def setting(event: threading.Event) -> Callable[[], Step[None]]:
        def refill() -> Step[None]:
            event.set()
            return
            yield

        return refill

    schedule = in_background(Driver(None))
    ran = threading.Event()
    cancel = schedule(0.01, setting(ran))
    assert ran.wait(10)
    cancel()  # after the run: harmless
    never = threading.Event()
    schedule(0.5, setting(never))()
    assert not never.wait(1)
    assert all(t.daemon for t in threading.enumerate() if t.name == "wallet-refill")
