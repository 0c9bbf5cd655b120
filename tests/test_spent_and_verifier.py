"""Spent-token stores against real SQLite and real Redis, and the verifier over real tokens."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.errors import UsageError
from privproc.parties.gateway.spent import (
    REDIS_PREFIX,
    RedisSpentStore,
    SpentTokenStore,
    SqliteSpentStore,
    StoreUnavailableError,
    open_spent_store,
)
from privproc.parties.gateway.verifier import TokenRejectedError, TokenVerifier
from privproc.tokens import issuance
from privproc.tokens.auth import Token, TokenChallenge, format_authorization
from privproc.tokens.directory import VerificationKey
from tests.servers import redis_or_fail

KEY = rsa.generate_private_key(65537, 2048)
SPKI = issuance.encode_token_key(KEY.public_key())
CHALLENGE = TokenChallenge(2, "issuer.example", b"", ("gateway.example",))


def _token(challenge: TokenChallenge = CHALLENGE, key: rsa.RSAPrivateKey = KEY) -> Token:
    spki = issuance.encode_token_key(key.public_key())
    request, state = issuance.begin(challenge.encode(), spki)
    return state.finish(issuance.sign_request(key, request))


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SpentTokenStore]:
    if request.param == "sqlite":
        s: SpentTokenStore = SqliteSpentStore(tmp_path / "spent.sqlite3")
    else:
        s = await open_spent_store(redis_or_fail())
    try:
        yield s
    finally:
        await s.aclose()


async def test_a_token_id_is_spent_once(store: SpentTokenStore) -> None:
    token_id = secrets.token_bytes(32)
    expires = time.time() + 60
    assert await store.is_spent(token_id) is False  # reading spends nothing
    assert await store.is_spent(token_id) is False
    assert await store.spend(token_id, expires) is True
    assert await store.is_spent(token_id) is True
    assert await store.spend(token_id, expires) is False
    assert await store.spend(secrets.token_bytes(32), expires) is True


async def test_concurrent_spends_of_one_id_succeed_once(store: SpentTokenStore) -> None:
    token_id = secrets.token_bytes(32)
    results = await asyncio.gather(*(store.spend(token_id, time.time() + 60) for _ in range(50)))
    assert results.count(True) == 1


async def test_two_redis_stores_share_what_is_spent() -> None:
    url = redis_or_fail()
    first, second = RedisSpentStore(url), RedisSpentStore(url)
    try:
        token_id = secrets.token_bytes(32)
        outcomes = await asyncio.gather(
            first.spend(token_id, time.time() + 60), second.spend(token_id, time.time() + 60)
        )
        assert sorted(outcomes) == [False, True]
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_entries_expire_with_the_key() -> None:
    url = redis_or_fail()
    store = RedisSpentStore(url)
    token_id = secrets.token_bytes(32)
    expires = time.time() + 120
    try:
        assert await store.spend(token_id, expires)
    finally:
        await store.aclose()
    client = redis.Redis.from_url(url)
    try:
        ttl = client.ttl(REDIS_PREFIX + token_id.hex())
    finally:
        client.close()
    assert 100 <= int(ttl) <= 121


async def test_an_absent_redis_is_a_clear_error() -> None:
    with pytest.raises(
        StoreUnavailableError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"
    ):
        await open_spent_store("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailableError) as err:
        await open_spent_store("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(err.value)


async def test_a_redis_that_dies_fails_closed() -> None:
    store = RedisSpentStore("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailableError):
            await store.spend(secrets.token_bytes(32), time.time() + 60)
        with pytest.raises(StoreUnavailableError):
            await store.is_spent(secrets.token_bytes(32))
    finally:
        await store.aclose()


async def test_store_specs(tmp_path: Path) -> None:
    for bad in ("sqlite:", "memcached://x", "/tmp/file"):
        with pytest.raises(UsageError):
            await open_spent_store(bad)
    store = await open_spent_store(f"sqlite:{tmp_path / 'deep' / 'spent.sqlite3'}")
    await store.aclose()
    assert (os.stat(tmp_path / "deep" / "spent.sqlite3").st_mode & 0o777) == 0o600


async def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    token_id = secrets.token_bytes(32)
    first = SqliteSpentStore(tmp_path / "spent.sqlite3")
    assert await first.spend(token_id, time.time() + 60)
    await first.aclose()
    second = SqliteSpentStore(tmp_path / "spent.sqlite3")
    try:
        assert not await second.spend(token_id, time.time() + 60)
    finally:
        await second.aclose()


# --- The verifier ------------------------------------------------------------------------------


def _verifier(store: SpentTokenStore, expires: int | None = None) -> TokenVerifier:
    key = VerificationKey(SPKI, int(time.time()) - 10, expires or int(time.time()) + 3600)
    return TokenVerifier([CHALLENGE], store, [key])


async def test_verifier_redeems_a_token_once(store: SpentTokenStore) -> None:
    verifier = _verifier(store)
    authorization = format_authorization(_token())
    await verifier.redeem(authorization, time.time())
    with pytest.raises(TokenRejectedError) as err:
        await verifier.redeem(authorization, time.time())
    assert err.value.reason == "spent"


async def test_two_verifiers_sharing_redis_accept_a_token_once() -> None:
    url = redis_or_fail()
    stores = [RedisSpentStore(url), RedisSpentStore(url)]
    try:
        verifiers = [_verifier(s) for s in stores]
        authorization = format_authorization(_token())
        outcomes = await asyncio.gather(
            *(v.redeem(authorization, time.time()) for v in verifiers), return_exceptions=True
        )
        assert outcomes.count(None) == 1
        rejected = [o for o in outcomes if o is not None]
        assert isinstance(rejected[0], TokenRejectedError)
        assert rejected[0].reason == "spent"
    finally:
        for s in stores:
            await s.aclose()


async def test_verifier_rejections_name_the_failed_check(tmp_path: Path) -> None:
    store = SqliteSpentStore(tmp_path / "spent.sqlite3")
    try:
        verifier = _verifier(store)
        now = time.time()
        good = _token()
        other_key = rsa.generate_private_key(65537, 2048)
        forged = Token(**{**good.__dict__, "authenticator": bytes(256)})
        cases = {
            "missing": None,
            "malformed": "PrivateToken token=AAAA",
            "challenge": format_authorization(_token(TokenChallenge(2, "issuer.example"))),
            "unknown-key": format_authorization(_token(key=other_key)),
            "signature": format_authorization(forged),
        }
        for reason, authorization in cases.items():
            with pytest.raises(TokenRejectedError) as err:
                await verifier.redeem(authorization, now)
            assert err.value.reason == reason
        # Nothing rejected reached the store: the good token still redeems.
        await verifier.redeem(format_authorization(good), now)
    finally:
        await store.aclose()


async def test_a_token_of_another_type_is_refused_for_its_type(tmp_path: Path) -> None:
    """A well-formed type 0x0001 (VOPRF) token for this gateway's challenge and key id: refused
    at once for its type, not later as a bad signature (this fails if the type check goes)."""
    store = SqliteSpentStore(tmp_path / "spent.sqlite3")
    try:
        good = _token()
        voprf = Token(1, good.nonce, good.challenge_digest, good.token_key_id, bytes(48))
        with pytest.raises(TokenRejectedError) as err:
            await _verifier(store).redeem(format_authorization(voprf), time.time())
        assert err.value.reason == "token-type"
    finally:
        await store.aclose()


async def test_expired_keys_stop_verifying(tmp_path: Path) -> None:
    store = SqliteSpentStore(tmp_path / "spent.sqlite3")
    try:
        expires = int(time.time()) + 100
        verifier = _verifier(store, expires)
        authorization = format_authorization(_token())
        with pytest.raises(TokenRejectedError) as err:
            await verifier.redeem(authorization, expires)
        assert err.value.reason == "expired-key"
        await verifier.redeem(authorization, expires - 1)
    finally:
        await store.aclose()


def test_challenge_header_offers_the_current_key() -> None:
    from privproc.tokens.auth import parse_www_authenticate

    class NoStore:
        async def spend(self, token_id: bytes, expires_at: float) -> bool:
            raise AssertionError("not reached")

        async def is_spent(self, token_id: bytes) -> bool:
            raise AssertionError("not reached")

        async def aclose(self) -> None:
            return None

    now = int(time.time())
    newer = rsa.generate_private_key(65537, 2048)
    newer_spki = issuance.encode_token_key(newer.public_key())
    verifier = TokenVerifier(
        [CHALLENGE],
        NoStore(),
        [
            VerificationKey(SPKI, now - 100, now + 100),
            VerificationKey(newer_spki, now - 10, now + 200),
        ],
    )
    [offered] = parse_www_authenticate(verifier.challenge_header(now))
    assert offered.challenge == CHALLENGE.encode()
    assert offered.token_key == newer_spki
    # A key whose not-before is still ahead is not offered yet.
    [early] = parse_www_authenticate(verifier.challenge_header(now - 50))
    assert early.token_key == SPKI
