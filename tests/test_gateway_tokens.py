"""The gateway's token guard on loopback: challenge, redemption, double spend (one gateway on
SQLite, two gateways sharing Redis), with tokens from the real issuer through the client wallet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from privproc.net.commands import party_state
from privproc.parties.device.issuer import IssuerClient
from privproc.parties.device.wallet import Wallet
from privproc.tokens.auth import TokenChallenge, parse_www_authenticate
from tests.servers import Running, privproc_cli, redis_or_fail
from tests.tokens_stack import add_account, gateway_process, issuer_process, private_request

GATEWAY_NAME = "gateway.example"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, str]]:
    tmp = tmp_path_factory.mktemp("issuer")
    with issuer_process(tmp, "--quota", "100") as (running, state):
        yield running, add_account(state, "gateway-tests")


def _fill_wallet(issuer: tuple[Running, str], wallet_dir: Path, count: int) -> bytes:
    running, secret = issuer
    now = time.time()
    with IssuerClient(running.url, secret) as client:
        key_set = client.key_set()
        token_key = client.directory().preferred(now).token_key
        challenge = TokenChallenge(2, key_set.issuer_name, b"", (GATEWAY_NAME,)).encode()
        Wallet(wallet_dir).refill(
            client, challenge, token_key, key_set, threshold=count, target=count, now=now
        )
    return challenge


def test_a_request_without_a_token_gets_the_gateways_challenge(
    issuer: tuple[Running, str], tmp_path: Path
) -> None:
    running, _ = issuer
    args = ("--state", str(tmp_path), "--name", GATEWAY_NAME)
    with gateway_process(tmp_path, running.url, *args) as gateway:
        answer = private_request(gateway)
    assert answer.status == 401
    assert answer.www_authenticate is not None
    [challenge] = parse_www_authenticate(answer.www_authenticate)
    decoded = challenge.token_challenge()
    with IssuerClient(running.url) as client:
        assert decoded.issuer_name == client.key_set().issuer_name
        # The issuer's key when the gateway asked (a day's epoch may turn between the two).
        verifying = {k.token_key for k in client.key_set().keys}
        assert challenge.token_key in verifying
    assert decoded.origin_info == (GATEWAY_NAME,)
    assert decoded.redemption_context == b""


def test_a_token_is_redeemed_once(issuer: tuple[Running, str], tmp_path: Path) -> None:
    running, _ = issuer
    challenge = _fill_wallet(issuer, tmp_path / "client", 2)
    wallet = Wallet(tmp_path / "client")
    args = ("--state", str(tmp_path / "gw"), "--name", GATEWAY_NAME)
    with gateway_process(tmp_path, running.url, *args) as gateway:
        authorization = wallet.take(challenge, time.time())
        assert authorization is not None
        # Accepted: the gateway has no target yet, so a redeemed request gets 404, not 401.
        assert private_request(gateway, authorization).status == 404
        replay = private_request(gateway, authorization)
        assert replay.status == 401
        assert replay.www_authenticate is not None
        second = wallet.take(challenge, time.time())
        assert second is not None
        assert second != authorization
        assert private_request(gateway, second).status == 404
    # A restarted gateway on the same state still remembers what was spent.
    with gateway_process(tmp_path, running.url, *args) as gateway:
        assert private_request(gateway, authorization).status == 401
        logs = gateway.logs()
    assert authorization.split('"')[1][:24] not in logs


def test_a_token_for_another_gateway_is_refused(
    issuer: tuple[Running, str], tmp_path: Path
) -> None:
    running, _ = issuer
    challenge = _fill_wallet(issuer, tmp_path / "client", 1)
    authorization = Wallet(tmp_path / "client").take(challenge, time.time())
    args = ("--state", str(tmp_path / "gw"), "--name", "other-gateway.example")
    with gateway_process(tmp_path, running.url, *args) as gateway:
        assert private_request(gateway, authorization).status == 401
        assert private_request(gateway, "PrivateToken token=AAAA").status == 401
        assert private_request(gateway, "Bearer nonsense").status == 401


def test_two_gateways_sharing_redis_accept_a_token_once(
    issuer: tuple[Running, str], tmp_path: Path
) -> None:
    running, _ = issuer
    redis_url = redis_or_fail()
    challenge = _fill_wallet(issuer, tmp_path / "client", 1)
    authorization = Wallet(tmp_path / "client").take(challenge, time.time())
    args = ("--spent-store", redis_url, "--name", GATEWAY_NAME)
    with (
        gateway_process(tmp_path, running.url, *args) as first,
        gateway_process(tmp_path, running.url, *args) as second,
    ):
        statuses = [private_request(first, authorization).status]
        statuses.append(private_request(second, authorization).status)
        statuses.append(private_request(first, authorization).status)
    assert statuses == [404, 401, 401]


def test_a_gateway_refuses_to_start_without_its_redis(
    issuer: tuple[Running, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    running, _ = issuer
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "privproc.cli",
            "serve",
            "gateway",
            "--port",
            "0",
            "--issuer",
            running.url,
            "--spent-store",
            "redis://127.0.0.1:1/0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_cli_answers_a_challenge_from_the_devices_wallet(
    issuer: tuple[Running, str], tmp_path: Path
) -> None:
    """`privproc ohttp request --wallet --state DIR`: the 401's challenge is answered with a token
    from DIR's device wallet (DIR/client), which then holds one token fewer."""
    import json

    running, _ = issuer
    device = party_state(tmp_path / "demo", "device")
    challenge = _fill_wallet(issuer, device, 2)
    args = ("--state", str(tmp_path / "demo"), "--name", GATEWAY_NAME)
    with gateway_process(tmp_path, running.url, *args) as gateway:
        request = ["ohttp", "request", "--keys-url", gateway.url, "--gateway", gateway.url,
                   "--url", "https://enclave.invalid/v1/models", "--json"]  # fmt: skip
        without = privproc_cli(*request)
        assert json.loads(without.stdout)["status"] == 401
        assert Wallet(device).count(challenge, time.time()) == 2
        answered = privproc_cli(*request, "--wallet", "--state", str(tmp_path / "demo"))
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["status"] == 404  # redeemed: no target behind it
        assert Wallet(device).count(challenge, time.time()) == 1
        empty = privproc_cli(*request, "--wallet", "--state", str(tmp_path / "other"))
        assert empty.returncode == 1
        assert "privproc tokens fetch" in empty.stderr
