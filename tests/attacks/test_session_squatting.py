"""The squatter: holds the enclave's sessions so that others find no room, as cheaply as it can.

Every party is a real process on loopback (`privproc up`'s System), the enclave with a small
session policy (two sessions, short times, few requests: measured and logged like any build), so
the attacks run in seconds. Each test plays one trick and checks the defence that stops it:

- a full enclave answers "busy" before the gateway spends a token; the refused client keeps its
  token (in memory, and in its wallet when it closes) and it works later;
- records without application data (empty posts) keep no session alive, and under pressure an
  idle session gives way to a new one;
- a session ends after its request budget and after its lifetime, however busy it is kept (its
  last answer says so, so the client's next request opens a new session without a failed try).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from privproc.api import SessionPolicy
from privproc.errors import PeerRejectedError
from privproc.ohttp import bhttp
from privproc.parties.device.ohttp import OhttpClient
from privproc.parties.device.private import EnclaveLostError, PrivateProcessingClient
from privproc.parties.device.wallet import RefillPolicy
from privproc.system import System
from tests.servers import running_system

POLICY = SessionPolicy(
    max_sessions=2, idle_timeout=10.0, lifetime=12.0, max_requests=6, evictable_after=3.0
)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from running_system(tmp_path_factory.mktemp("squat"), sessions=POLICY)


def _client(system: System) -> PrivateProcessingClient:
    client = PrivateProcessingClient.from_state(system.client_dir)
    client.retry_budget = 0.0  # the attack tests look at each answer, untried again
    client.tokens.policy = RefillPolicy(low_water=0)  # no refill in the background: exact counts
    return client


def _gauge(system: System, name: str) -> int:
    """A metric of the gateway's, as its /metrics says."""
    base = system.party("gateway").url.split("/.well-known")[0].rstrip("/")
    text = httpx.get(base + "/metrics").text
    found = re.search(name + r'\{party="gateway"\} ([\d.]+)', text)
    assert found is not None
    return int(float(found.group(1)))


def _spent(system: System) -> int:
    return _gauge(system, "privproc_tokens_spent_total")


def _opened(system: System) -> int:
    """Sessions the enclave has opened so far (its log says so, without content)."""
    return system.party("enclave").logs().count('"session-opened"')


def _use(client: PrivateProcessingClient) -> str:
    """One cheap request that carries application data; the session it went on."""
    status, _ = client.request("GET", "/v1/models")
    assert status == 200
    session = client.path.connection.session_id
    assert session is not None
    return session


def _inner(
    client: PrivateProcessingClient, path: str, headers: list[tuple[str, str]]
) -> bhttp.Response:
    """An empty `POST` of `path` to the gateway through the relay, outside the client's
    session (under the key configuration the client checked against the log)."""
    config = client.path.logged.key_config_now
    assert config is not None
    request = bhttp.Request.build("POST", "https://gateway.invalid" + path, headers=headers)
    with OhttpClient() as ohttp:
        return ohttp.request(client.config.relay_url, config, request)


def _tokens(client: PrivateProcessingClient) -> int:
    return sum(count for _, count in client.wallet.counts(time.time()))


def _free(*clients: PrivateProcessingClient) -> None:
    for client in clients:
        client.close()


def test_a_full_enclave_is_busy_before_a_token_is_spent(system: System) -> None:
    squatters = [_client(system) for _ in range(POLICY.max_sessions)]
    newcomer = _client(system)
    try:
        for squatter in squatters:
            _use(squatter)  # every session taken
        for squatter in squatters:
            _use(squatter)  # and in use moments ago (opening one may take a while on a busy CI)
        spent, tokens = _spent(system), _tokens(newcomer)
        with pytest.raises(PeerRejectedError, match="busy") as busy:
            _use(newcomer)
        assert busy.value.status == 503
        assert busy.value.retryable
        assert busy.value.retry_after == 1.0
        assert _spent(system) == spent  # the gateway spent nothing
        assert newcomer.path.payment.unspent is not None  # the client kept its token
        kept = newcomer.path.payment.unspent[1]
        # The squatters stop; once idle long enough, one gives way, and the kept token works.
        time.sleep(POLICY.evictable_after + 0.5)
        steps: list[str] = []
        newcomer.path.step = steps.append
        _use(newcomer)
        assert "the token the gateway did not spend last time" in steps
        assert _spent(system) == spent + 1
        assert _tokens(newcomer) == tokens - 1  # no other token was taken for it
        assert newcomer.path.payment.unspent is None
        # That token is spent now: a replay of it is refused, and costs the enclave nothing.
        opened = _opened(system)
        replay = _inner(newcomer, "/v1/sessions", [("authorization", kept)])
        assert replay.status == 401
        assert _opened(system) == opened
    finally:
        _free(*squatters, newcomer)


def test_a_token_refused_as_busy_goes_back_to_the_wallet(system: System) -> None:
    squatters = [_client(system) for _ in range(POLICY.max_sessions)]
    newcomer, later = _client(system), _client(system)  # later: another run of the app
    try:
        for squatter in [*squatters, *squatters]:  # taken, and in use moments ago
            _use(squatter)
        tokens = _tokens(newcomer)
        with pytest.raises(PeerRejectedError, match="busy"):
            _use(newcomer)
        assert newcomer.path.payment.unspent is not None
        kept = newcomer.path.payment.unspent[1]
        newcomer.close()  # the app gives up; the token is not lost
        assert _tokens(newcomer) == tokens
        time.sleep(POLICY.evictable_after + 0.5)
        spent = _spent(system)
        _use(later)
        assert _spent(system) == spent + 1
        assert _tokens(later) == tokens - 1
        # The token it spent was the one given back: that one is spent now.
        replay = _inner(later, "/v1/sessions", [("authorization", kept)])
        assert replay.status == 401
    finally:
        _free(*squatters, newcomer, later)


def test_records_without_application_data_keep_no_session_alive(system: System) -> None:
    squatter = _client(system)
    try:
        session = _use(squatter)
        path = f"/v1/sessions/{session}"
        # Empty posts through the relay, every half second, well past the idle timeout.
        deadline = time.monotonic() + POLICY.idle_timeout + 4
        statuses = []
        while time.monotonic() < deadline and 404 not in statuses:
            statuses.append(_inner(squatter, path, []).status)
            time.sleep(0.5)
        assert statuses[0] == 200
        assert statuses[-1] == 404  # forgotten, however often it was "kept alive"
    finally:
        _free(squatter)


def test_an_idle_session_gives_way_when_the_enclave_is_full(system: System) -> None:
    squatters = [_client(system) for _ in range(POLICY.max_sessions)]
    newcomer = _client(system)
    try:
        held = [_use(s) for s in squatters]
        # The squatters keep "touching" their sessions with empty posts; that is not activity.
        for _ in range(int(POLICY.evictable_after / 0.5) + 2):
            for squatter, session in zip(squatters, held, strict=True):
                _inner(squatter, f"/v1/sessions/{session}", [])
            time.sleep(0.5)
        _use(newcomer)  # room was made: the session idle longest gave way
        # The enclave named the session it evicted; the gateway forgot it at once.
        assert _gauge(system, "privproc_sessions") == POLICY.max_sessions
        gone = [_inner(s, f"/v1/sessions/{i}", []).status for s, i in
                zip(squatters, held, strict=True)]  # fmt: skip
        assert sorted(gone) == [200, 404]
    finally:
        _free(*squatters, newcomer)


def test_a_session_ends_after_its_requests_and_its_lifetime(system: System) -> None:
    client = _client(system)
    try:
        first = _use(client)
        for _ in range(POLICY.max_requests - 2):
            assert _use(client) == first
        # The last request the budget allows: its answer ends the session (connection: close
        # inside TLS), and the enclave and the gateway forget it at once.
        status, _ = client.request("GET", "/v1/models")
        assert status == 200
        assert client.path.connection.session_id is None
        assert _gauge(system, "privproc_sessions") == 0
        # The next request opens a new session (a new token) without a failed try first.
        spent = _spent(system)
        second = _use(client)
        assert second != first
        assert _spent(system) == spent + 1
        # Busy all along, but with fewer requests than its budget, a session still ends at its
        # lifetime: the first answer after it is its last, or, if the session sat idle as its
        # lifetime passed, the enclave has reaped it (the SDK would open a new one at once).
        began, served = time.monotonic(), 1
        while client.path.connection.session_id is not None:
            assert time.monotonic() - began < POLICY.lifetime + 6
            time.sleep(POLICY.lifetime / 3)
            try:
                status, _ = client.request("GET", "/v1/models")
            except EnclaveLostError:
                break
            assert status == 200
            served += 1
        assert served < POLICY.max_requests
        assert time.monotonic() - began >= POLICY.lifetime - 1
    finally:
        _free(client)
