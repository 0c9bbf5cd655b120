"""The gateway's one redemption path (`TokenGate`) over real tokens and a real SQLite store:
admit, work, spend or release; the in-flight set shared by the token guard and the session
router; one answer, one log line and one count per refusal, with no token byte in the log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.errors import UsageError
from privproc.net.metrics import Metrics
from privproc.ohttp import bhttp
from privproc.parties.gateway.redemption import Admission, TokenGate
from privproc.parties.gateway.router import SessionRouter
from privproc.parties.gateway.service import token_guard
from privproc.parties.gateway.spent import SqliteSpentStore, StoreUnavailableError
from privproc.parties.gateway.verifier import TokenVerifier
from privproc.tokens import issuance
from privproc.tokens.auth import Token, TokenChallenge, format_authorization, parse_authorization
from privproc.tokens.directory import VerificationKey

KEY = rsa.generate_private_key(65537, 2048)
SPKI = issuance.encode_token_key(KEY.public_key())
CHALLENGE = TokenChallenge(2, "issuer.example", b"", ("gateway.example",))
NOW = 1_700_000_000.0
ENCLAVE = "http://enclave.invalid"


def _token(challenge: TokenChallenge = CHALLENGE, key: rsa.RSAPrivateKey = KEY) -> Token:
    spki = issuance.encode_token_key(key.public_key())
    request, state = issuance.begin(challenge.encode(), spki)
    return state.finish(issuance.sign_request(key, request))


class Store:
    """A real SQLite store that counts its calls and can be taken down, one call kind at a time."""

    def __init__(self, path: Path) -> None:
        self.real = SqliteSpentStore(path)
        self.down: set[str] = set()
        self.calls = {"spend": 0, "is_spent": 0}
        self.slow: asyncio.Event | None = None  # when set, `is_spent` waits for it

    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        self.calls["spend"] += 1
        if "spend" in self.down:
            raise StoreUnavailableError("the store is down")
        return await self.real.spend(token_id, expires_at)

    async def is_spent(self, token_id: bytes) -> bool:
        self.calls["is_spent"] += 1
        if self.slow is not None:
            await self.slow.wait()
        if "is_spent" in self.down:
            raise StoreUnavailableError("the store is down")
        return await self.real.is_spent(token_id)

    async def aclose(self) -> None:
        await self.real.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "spent.sqlite3")
    try:
        yield s
    finally:
        await s.aclose()


def _gate(store: Store, expires: float = NOW + 3600) -> TokenGate:
    key = VerificationKey(SPKI, int(NOW) - 10, int(expires))
    gate = TokenGate(TokenVerifier([CHALLENGE], store, [key]), clock=lambda: NOW)
    gate.metrics = Metrics("gateway", set())
    return gate


def _counted(gate: TokenGate, kind: str) -> float:
    """The gate's count of tokens spent (`spent-total`), or of one error kind."""
    assert gate.metrics is not None
    if kind == "spent-total":
        name, labels = "privproc_tokens_spent_total", {"party": "gateway"}
    else:
        name, labels = "privproc_errors_total", {"party": "gateway", "kind": kind}
    return gate.metrics.registry.get_sample_value(name, labels) or 0.0


def _refused(answer: Admission | bytes | None, status: int) -> bhttp.Response:
    assert isinstance(answer, bytes), answer
    response = bhttp.decode_response(answer)
    assert response.status == status
    return response


async def _spent(store: Store, authorization: str) -> bool:
    token_id = _gate(store).verifier.check(authorization, NOW).token_id
    return await store.real.is_spent(token_id)


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """Every privproc log line written during the test."""
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage())

    logger = logging.getLogger("privproc")
    handler, level = Capture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- The gate itself ---------------------------------------------------------------------------


async def test_a_token_whose_work_failed_is_not_spent_and_can_be_used_again(store: Store) -> None:
    gate = _gate(store)
    authorization = format_authorization(_token())
    admission = await gate.admit(authorization)
    assert isinstance(admission, Admission)
    with pytest.raises(RuntimeError), admission:
        raise RuntimeError("the enclave could not take the session")
    assert gate.in_flight == 0
    assert store.calls["spend"] == 0
    assert not await _spent(store, authorization)
    again = await gate.admit(authorization)
    assert isinstance(again, Admission)
    with again:
        assert await again.spend() is None
    assert await _spent(store, authorization)
    assert _counted(gate, "spent-total") == 1
    with pytest.raises(UsageError):
        await again.spend()  # an admission is spent once


async def test_a_released_admission_goes_back_unspent(store: Store) -> None:
    gate = _gate(store)
    authorization = format_authorization(_token())
    admission = await gate.admit(authorization)
    assert isinstance(admission, Admission)
    admission.release()
    admission.release()  # once is enough; twice does nothing more
    assert gate.in_flight == 0
    assert await gate.redeem(authorization) is None


async def test_a_token_admitted_twice_at_once_is_refused_the_second_time(store: Store) -> None:
    gate = _gate(store)
    authorization = format_authorization(_token())
    # The store answers slowly: the second copy arrives while the first is still being admitted.
    store.slow = asyncio.Event()
    first = asyncio.ensure_future(gate.admit(authorization))
    await asyncio.sleep(0)
    second = await gate.admit(authorization)
    store.slow.set()
    admission = await first
    assert isinstance(admission, Admission)
    _refused(second, 401)
    assert store.calls["is_spent"] == 1  # the copy in flight never reached the store
    # The simple use is refused too while the first is in flight, and it spends nothing.
    _refused(await gate.redeem(authorization), 401)
    assert store.calls["spend"] == 0
    with admission:
        assert await admission.spend() is None
    assert gate.in_flight == 0
    assert _counted(gate, "token-in-flight") == 2
    _refused(await gate.admit(authorization), 401)
    assert _counted(gate, "token-spent") == 1


async def test_a_spent_token_is_refused_before_any_work(store: Store) -> None:
    gate = _gate(store)
    authorization = format_authorization(_token())
    assert await gate.redeem(authorization) is None
    assert store.calls == {"spend": 1, "is_spent": 0}  # the simple use asks the store once
    answer = await gate.admit(authorization)
    _refused(answer, 401)  # so no work is done for it: there is no admission to do it with
    assert store.calls == {"spend": 1, "is_spent": 1}
    _refused(await gate.redeem(authorization), 401)
    assert gate.in_flight == 0
    assert _counted(gate, "token-spent") == 2
    assert _counted(gate, "spent-total") == 1


async def test_a_store_failure_at_admit_is_503_and_spends_nothing(store: Store) -> None:
    gate = _gate(store)
    authorization = format_authorization(_token())
    store.down = {"is_spent"}
    answer = _refused(await gate.admit(authorization), 503)
    assert answer.header("retry-after") == "5"
    assert answer.header("www-authenticate") is None
    assert json.loads(answer.content) == {"error": "unavailable", "retry": True}
    assert store.calls["spend"] == 0
    assert gate.in_flight == 0
    assert _counted(gate, "token-store-unavailable") == 1
    store.down = set()
    assert await gate.redeem(authorization) is None  # the token was not burnt


async def test_a_store_failure_at_spend_is_503_and_spends_nothing(store: Store) -> None:
    gate = _gate(store)
    authorization = format_authorization(_token())
    admission = await gate.admit(authorization)
    assert isinstance(admission, Admission)
    store.down = {"spend"}
    with admission:
        answer = _refused(await admission.spend(), 503)
    assert answer.header("retry-after") == "5"
    assert gate.in_flight == 0
    assert not await _spent(store, authorization)
    _refused(await gate.redeem(authorization), 503)  # the simple use: the same answer
    assert not await _spent(store, authorization)
    assert _counted(gate, "token-store-unavailable") == 2
    assert _counted(gate, "spent-total") == 0
    store.down = set()
    assert await gate.redeem(authorization) is None
    assert _counted(gate, "spent-total") == 1


async def test_every_refusal_is_one_answer_logged_by_reason_without_token_bytes(
    store: Store, lines: list[str]
) -> None:
    gate = _gate(store, expires=NOW + 100)
    good = _token()
    forged = Token(**{**good.__dict__, "authenticator": bytes(256)})
    voprf = Token(1, good.nonce, good.challenge_digest, good.token_key_id, bytes(48))
    spent = format_authorization(_token())
    assert await gate.redeem(spent) is None
    in_flight = format_authorization(_token())
    held = await gate.admit(in_flight)
    assert isinstance(held, Admission)
    cases = {
        "missing": None,
        "malformed": "PrivateToken token=AAAA",
        "token-type": format_authorization(voprf),
        "challenge": format_authorization(_token(TokenChallenge(2, "issuer.example"))),
        "unknown-key": format_authorization(_token(key=rsa.generate_private_key(65537, 2048))),
        "signature": format_authorization(forged),
        "spent": spent,
        "in-flight": in_flight,
    }
    answers = set()
    lines.clear()
    for reason, authorization in cases.items():
        answer = await gate.admit(authorization)
        response = _refused(answer, 401)
        assert response.header("www-authenticate") == gate.verifier.challenge_header(NOW)
        assert json.loads(response.content) == {"error": "token-required", "retry": True}
        answers.add(answer)
        assert _counted(gate, f"token-{reason}") == 1
    assert len(answers) == 1  # the same answer for every reason
    expired = _gate(store, expires=NOW)  # a key that expires now: the token is refused for it
    _refused(await expired.admit(format_authorization(good)), 401)
    store.down = {"is_spent"}
    _refused(await gate.admit(format_authorization(good)), 503)
    held.release()
    store.down = set()
    assert await gate.redeem(format_authorization(good)) is None

    records = [json.loads(line) for line in lines]
    outcomes = [r["outcome"] for r in records if r["event"] == "token"]
    assert outcomes == [*cases, "expired-key", "store-unavailable", "redeemed"]
    assert {r["status"] for r in records if r["outcome"] != "redeemed"} == {401, 503}
    log = "\n".join(lines)
    for authorization in [*cases.values(), format_authorization(good)]:
        if authorization is None or authorization == "PrivateToken token=AAAA":
            continue
        raw = parse_authorization(authorization)
        signed = raw[: len(raw) - len(Token.decode(raw).authenticator)]
        token_id = hashlib.sha256(signed).digest()  # what the store keeps
        for text in (
            authorization.split('"')[1],
            base64.urlsafe_b64encode(raw).decode(),
            raw.hex(),
            token_id.hex(),
            base64.urlsafe_b64encode(token_id).decode(),
        ):
            assert text[4:20] not in log


# --- Both callers through one gate -------------------------------------------------------------


class Enclave:
    """A stand-in enclave behind httpx.MockTransport: a session's PUT waits for `go`, then is
    answered `status`."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.placing = asyncio.Event()  # set when a session's PUT has arrived
        self.status = 200
        self.puts = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.puts += 1
            self.placing.set()
            await self.go.wait()
            return httpx.Response(self.status, content=b"server-hello")
        return httpx.Response(200)


async def _router(gate: TokenGate, enclave: Enclave) -> SessionRouter:
    router = SessionRouter([ENCLAVE], gate)
    await router.http.aclose()
    router.http = httpx.AsyncClient(transport=httpx.MockTransport(enclave))
    return router


def _open_session(authorization: str) -> bytes:
    request = bhttp.Request.build(
        "POST",
        "https://gateway.example/v1/sessions",
        headers=[("authorization", authorization)],
        content=b"client-hello",
    )
    return bhttp.encode_request(request)


async def _not_reached(inner: bytes) -> bytes:
    raise AssertionError("the inner handler ran for a refused token")


async def test_a_token_being_placed_cannot_be_redeemed_through_the_guard(store: Store) -> None:
    gate, enclave = _gate(store), Enclave()
    router = await _router(gate, enclave)
    guard = token_guard(gate, _not_reached)
    inner = _open_session(format_authorization(_token()))
    try:
        placing = asyncio.ensure_future(router.handle(inner))
        await asyncio.wait_for(enclave.placing.wait(), 10)
        _refused(await guard(inner), 401)  # the same token, the other path, at the same time
        _refused(await router.handle(inner), 401)  # and the same path
        assert enclave.puts == 1
        enclave.go.set()
        opened = bhttp.decode_response(await placing)
        assert opened.status == 201
        assert opened.content == b"server-hello"
        _refused(await guard(inner), 401)  # spent now
    finally:
        await router.aclose()
    assert _counted(gate, "token-in-flight") == 2
    assert _counted(gate, "spent-total") == 1


async def test_a_session_not_placed_leaves_its_token_for_the_next_try(store: Store) -> None:
    gate, enclave = _gate(store), Enclave()
    router = await _router(gate, enclave)
    authorization = format_authorization(_token())
    enclave.go.set()
    enclave.status = 503  # busy
    try:
        busy = bhttp.decode_response(await router.handle(_open_session(authorization)))
        assert busy.status == 503
        assert busy.header("retry-after") == "1"
        assert gate.in_flight == 0
        assert not await _spent(store, authorization)
        enclave.status = 200
        opened = bhttp.decode_response(await router.handle(_open_session(authorization)))
        assert opened.status == 201
        assert router.session_count == 1
    finally:
        await router.aclose()
    assert await _spent(store, authorization)


async def test_a_token_spent_elsewhere_while_placing_closes_the_session(store: Store) -> None:
    gate, enclave = _gate(store), Enclave()
    router = await _router(gate, enclave)
    authorization = format_authorization(_token())
    inner = _open_session(authorization)
    try:
        placing = asyncio.ensure_future(router.handle(inner))
        await asyncio.wait_for(enclave.placing.wait(), 10)
        # Another gateway sharing the store spends the same token meanwhile.
        other = _gate(store)
        assert await other.redeem(authorization) is None
        enclave.go.set()
        refused = bhttp.decode_response(await placing)
        assert refused.status == 401
        assert refused.header("www-authenticate") is not None
        assert router.session_count == 0
        assert gate.in_flight == 0
    finally:
        await router.aclose()
    assert _counted(gate, "token-spent") == 1
    assert _counted(gate, "spent-total") == 0


async def test_the_guard_spends_the_token_before_its_handler_runs(store: Store) -> None:
    gate = _gate(store)
    authorization = format_authorization(_token())
    seen: list[bool] = []

    async def handler(inner: bytes) -> bytes:
        seen.append(await _spent(store, authorization))
        return bhttp.encode_response(bhttp.Response.build(404))

    guard = token_guard(gate, handler)
    inner = _open_session(authorization)
    assert bhttp.decode_response(await guard(inner)).status == 404
    assert seen == [True]
    refused = _refused(await guard(inner), 401)
    assert json.loads(refused.content) == {"error": "token-required", "retry": True}
    assert seen == [True]
    assert bhttp.decode_response(await guard(b"\xff")).status == 400
