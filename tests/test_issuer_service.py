"""`privproc serve issuer` as a real server on loopback: directory, issuance, every refusal, quota
under concurrency, key rotation, and what the issuer keeps (nothing that links a token)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from privproc.errors import PeerRejectedError
from privproc.net.commands import party_state
from privproc.parties.device.issuer import IssuerClient, QuotaExhaustedError
from privproc.tokens import issuance
from privproc.tokens.auth import TokenChallenge, b64url_encode
from privproc.tokens.directory import IssuerDirectory, KeySet
from tests.servers import Running, privproc_process
from tests.tokens_stack import add_account

QUOTA = 4


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    tmp = tmp_path_factory.mktemp("issuer")
    state = tmp / "state"
    args = ["serve", "issuer", "--port", "0", "--state", str(state), "--quota", str(QUOTA)]
    with privproc_process(args, "ready issuer ", tmp) as running:
        yield running, state


def _challenge(running: Running) -> bytes:
    with IssuerClient(running.url) as client:
        name = client.key_set().issuer_name
    return TokenChallenge(2, name, b"", ("gateway.example",)).encode()


def _challenge_and_key(running: Running) -> tuple[bytes, bytes]:
    """A challenge for a made-up gateway and the issuer's current token key."""
    with IssuerClient(running.url) as client:
        key = client.directory().preferred(time.time()).token_key
    return _challenge(running), key


def test_directory(issuer: tuple[Running, Path]) -> None:
    running, _ = issuer
    response = httpx.get(running.url + "/.well-known/private-token-issuer-directory")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/private-token-issuer-directory"
    max_age = int(response.headers["cache-control"].removeprefix("max-age="))
    assert 0 < max_age <= 3600
    doc = response.json()
    assert doc["issuer-request-uri"] == "/token-request"
    current, following = doc["token-keys"]
    assert current["token-type"] == following["token-type"] == 2
    assert current["not-before"] <= time.time() < following["not-before"]
    directory = IssuerDirectory.decode(response.content)
    assert directory.preferred(time.time()).token_key == directory.keys[0].token_key
    # The verifiers' key set holds every key that verifies, with its expiry.
    key_set = KeySet.decode(httpx.get(running.url + "/v1/token-keys").content)
    assert {k.token_key for k in key_set.keys} >= {k.token_key for k in directory.keys}
    assert all(k.expires > time.time() for k in key_set.keys)


def test_tokens_are_issued_until_the_quota_is_spent(issuer: tuple[Running, Path]) -> None:
    running, state = issuer
    secret = add_account(state, "quota-user")
    challenge = _challenge(running)
    with IssuerClient(running.url, secret) as client:
        key = client.directory().preferred(time.time()).token_key
        public_key = issuance.decode_token_key(key)
        for _ in range(QUOTA):
            token = client.fetch_token(challenge, key)
            issuance.verify_token(public_key, token)
        with pytest.raises(QuotaExhaustedError) as err:
            client.fetch_token(challenge, key)
    assert err.value.status == 429
    assert err.value.retry_after is not None
    assert 0 < err.value.retry_after <= 86_400


def test_concurrent_requests_cannot_overshoot_the_quota(issuer: tuple[Running, Path]) -> None:
    running, state = issuer
    secret = add_account(state, "racer")
    challenge, key = _challenge_and_key(running)
    request = issuance.begin(challenge, key)[0].encode()
    headers = {
        "authorization": f"Bearer {secret}",
        "content-type": issuance.MEDIA_TYPE_REQUEST,
    }

    def one(_: int) -> int:
        return httpx.post(
            running.url + "/token-request", content=request, headers=headers
        ).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(one, range(24)))
    assert statuses.count(200) == QUOTA
    assert statuses.count(429) == 24 - QUOTA


def _post(running: Running, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(running.url + "/token-request", content=body, headers=headers)


def test_bad_requests_get_clear_4xx_and_cost_no_quota(issuer: tuple[Running, Path]) -> None:
    running, state = issuer
    secret = add_account(state, "careful")
    challenge, key = _challenge_and_key(running)
    good = issuance.begin(challenge, key)[0]
    auth = {"authorization": f"Bearer {secret}"}
    ctype = {"content-type": issuance.MEDIA_TYPE_REQUEST}
    n = int.from_bytes(
        issuance.decode_token_key(key).public_numbers().n.to_bytes(256, "big"), "big"
    )
    unknown_id = next(i for i in range(256) if i != good.truncated_token_key_id)
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("no secret", good.encode(), ctype, 401),
        ("wrong secret", good.encode(), {**ctype, "authorization": "Bearer ppa_wrong"}, 401),
        ("basic auth", good.encode(), {**ctype, "authorization": "Basic YTpi"}, 401),
        ("media type", good.encode(), {**auth, "content-type": "application/json"}, 415),
        ("oversized", bytes(5000), {**auth, **ctype}, 413),
        ("truncated", good.encode()[:-1], {**auth, **ctype}, 422),
        ("trailing", good.encode() + b"\x00", {**auth, **ctype}, 422),
        ("token type", b"\x00\x01" + good.encode()[2:], {**auth, **ctype}, 422),
        (
            "unknown key",
            issuance.TokenRequest(unknown_id, good.blinded_msg).encode(),
            {**auth, **ctype},
            422,
        ),
        (
            "out of range",
            issuance.TokenRequest(
                good.truncated_token_key_id, (n + 1).to_bytes(256, "big")
            ).encode(),
            {**auth, **ctype},
            422,
        ),
        ("empty", b"", {**auth, **ctype}, 422),
    ]
    for label, body, headers, status in cases:
        response = _post(running, body, headers)
        assert response.status_code == status, label
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(running.url + "/token-request").status_code == 405
    # None of that was charged: the whole quota is still there.
    with IssuerClient(running.url, secret) as client:
        for _ in range(QUOTA):
            client.fetch_token(challenge, key)


def test_wrong_secret_is_a_typed_client_error(issuer: tuple[Running, Path]) -> None:
    running, _ = issuer
    with IssuerClient(running.url, "ppa_" + "x" * 43) as client:
        key = client.directory().preferred(time.time()).token_key
        with pytest.raises(PeerRejectedError) as err:
            client.fetch_token(_challenge(running), key)
    assert err.value.status == 401
    assert "x" * 10 not in str(err.value)


def test_the_issuer_keeps_nothing_that_links_a_token(issuer: tuple[Running, Path]) -> None:
    """Unlinkability: neither the issuer's files nor its logs hold any byte of what it signed
    (blinded message, blind signature) or of the token the client ends up with."""
    running, state = issuer
    secret = add_account(state, "private-person")
    challenge = _challenge(running)
    seen: list[bytes] = []
    with IssuerClient(running.url, secret) as client:
        key = client.directory().preferred(time.time()).token_key
        for _ in range(2):
            request, st = issuance.begin(challenge, key)
            response = _post(
                running,
                request.encode(),
                {
                    "authorization": f"Bearer {secret}",
                    "content-type": issuance.MEDIA_TYPE_REQUEST,
                },
            )
            assert response.status_code == 200
            token = st.finish(response.content)
            seen += [request.blinded_msg, response.content, token.nonce, token.authenticator]
    files = [p for p in party_state(state, "issuer").iterdir() if p.is_file()]
    assert any(p.name.endswith(".sqlite3") for p in files)  # the issuer's own folder, read
    stored = b"".join(p.read_bytes() for p in files)
    logs = running.logs().encode()
    assert b"private-person" in stored  # the account is known, by design
    for value in seen:
        for needle in (
            value[:16],
            value[-16:],
            b64url_encode(value)[:22].encode(),
            value.hex()[:32].encode(),
        ):
            assert needle not in stored
            assert needle not in logs
    assert b"private-person" not in logs
    assert secret.encode() not in stored + logs


def test_keys_rotate_by_epoch(tmp_path: Path) -> None:
    state = tmp_path / "state"
    epoch = 3
    args = ["serve", "issuer", "--port", "0", "--state", str(state), "--epoch-seconds", str(epoch)]
    with (
        privproc_process(args, "ready issuer ", tmp_path) as running,
        IssuerClient(running.url) as client,
    ):
        before = client.directory()
        start = before.keys[0].not_before
        assert start is not None
        assert before.keys[1].not_before == start + epoch
        time.sleep(max(0.0, start + epoch + 1.5 - time.time()))
        after = client.directory()
        key_set = client.key_set()
    # The key that was next is now current, a new one is next, the old one still verifies.
    assert after.keys[0].token_key == before.keys[1].token_key
    assert after.keys[1].not_before == start + 2 * epoch
    expiries = {k.token_key: k.expires for k in key_set.keys}
    assert expiries[before.keys[0].token_key] == start + 2 * epoch


def test_random_input_never_gets_a_server_error(issuer: tuple[Running, Path]) -> None:
    running, state = issuer
    secret = add_account(state, "fuzzer")
    rng = random.Random(9577)
    with httpx.Client() as http:
        for _ in range(60):
            length = rng.choice([0, 1, 3, 258, 259, 260, rng.randrange(1024)])
            body = bytes(rng.randrange(256) for _ in range(length))
            if length == 259 and rng.random() < 0.5:
                body = b"\x00\x02" + body[2:]
            headers = {
                "content-type": rng.choice([issuance.MEDIA_TYPE_REQUEST, "text/plain", ""]),
                "authorization": rng.choice(
                    [f"Bearer {secret}", "Bearer", "bearer  " + secret, "PrivateToken x=1", ""]
                ),
            }
            status = http.post(running.url + "/token-request", content=body, headers=headers)
            assert status.status_code in {200, 401, 413, 415, 422, 429}, (length, headers)
