"""Fuzzing the rest: the enclave API (`parties/enclave/handler.py` `handle`, which must always
answer, never
raise), the attested-TLS evidence frame (`ratls/session.py`), server-sent events
(`parties/device/sse.py`)
and the client's state files (settings.json, report.jsonl, tokens.json). HTTP inside the attested
TLS session (`parties/enclave/connection.py`) cannot be reached without TLS and is not fuzzed
here."""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from privproc.api import ModelCard
from privproc.parties.device.controls import Settings, UsageReport
from privproc.parties.device.sse import data_events
from privproc.parties.device.wallet import Wallet
from privproc.parties.enclave.handler import ApiResponse, ApiStream, handle
from privproc.parties.enclave.inference.backends import Completion, Delta, Message
from privproc.ratls.session import (
    ClientSession,
    ClientState,
    EvidenceReceived,
    client_session,
    pump,
)
from privproc.ratls.tls import ServerIdentity, TlsEndpoint
from tests.fuzz.support import fuzz, mutated, parses

# --- parties/enclave/handler.py -------------------------------------------------------------------


class EchoBackend:
    """A model stand-in that answers at once, converting its arguments as a real backend would."""

    model = "fuzz-model"
    card = ModelCard("fuzz-model", "", "", "", "a stand-in", False)

    def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Completion:
        return Completion(messages[-1].content[:10], self.model, 1, 1, "stop")

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Iterator[Delta]:
        yield Delta("x", "stop")


BACKEND = EchoBackend()
ROUTES = {
    "/v1/chat/completions": b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,'
    b'"temperature":0.5,"stream":false}',
    "/v1/tasks/summarize": b'{"chat":[{"sender":"a","time":"10:00","text":"lunch?"}]}',
    "/v1/tasks/rewrite": b'{"text":"hello there","style":"formal"}',
    "/v1/models": b"",
}


def _answer(method: str, path: str, body: bytes) -> None:
    result = parses(lambda b: handle(BACKEND, method, path, b), body)
    assert result is not None, "handle raised a PrivprocError instead of answering"
    if isinstance(result, ApiStream):
        assert result.status == 200
        for _ in result.chunks:
            pass
    else:
        assert isinstance(result, ApiResponse)
        # 422: the model's answer was unusable (empty, an echo, or not borne out by the chat).
        assert result.status in (200, 400, 404, 405, 422), result
        doc = json.loads(result.body)
        if result.status != 200:
            assert set(doc) == {"error"}


@fuzz()
@given(st.sampled_from(list(ROUTES)), st.data())
def test_api_mutated_bodies(path: str, data: st.DataObject) -> None:
    method = "GET" if path == "/v1/models" else "POST"
    _answer(method, path, data.draw(mutated(ROUTES[path])))


@fuzz()
@given(
    st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), st.text(max_size=8)),
    st.one_of(st.sampled_from([*ROUTES, *(p + "?x=1" for p in ROUTES)]), st.text(max_size=30)),
    st.binary(max_size=200),
)
def test_api_random_requests(method: str, path: str, body: bytes) -> None:
    _answer(method, path, body)


# --- ratls/session.py: the evidence frame, from a server that completed TLS ---------------------

IDENTITY = ServerIdentity.generate()


@fuzz(0.25)
@given(st.binary(max_size=64), st.integers(0, 64), st.booleans())
def test_evidence_frames(payload: bytes, announced: int, close: bool) -> None:
    client: ClientSession = client_session(max_evidence=32)
    rogue = TlsEndpoint.server(IDENTITY)
    pump(client, rogue)
    rogue.write(announced.to_bytes(4, "big") + payload)
    if close:
        rogue.close()
    events = parses(client.receive, rogue.send_pending())
    whole = announced <= 32 and len(payload) >= announced
    # A whole frame within the bound, and only one, gives exactly its evidence, over the
    # client's own report_data; what follows it waits until the caller accepts.
    assert bool(events) == whole
    if events:
        assert events == [EvidenceReceived(payload[:announced], client.report_data or b"")]
        assert client.state is ClientState.EVIDENCE_RECEIVED
        client.accept(None)  # the verdict is not what is fuzzed
        assert client.read() == payload[announced:]


@fuzz(0.25)
@given(st.binary(max_size=400))
def test_random_records_before_the_handshake(data: bytes) -> None:
    client = client_session()
    client.send_pending()
    parses(client.receive, data)


# --- parties/device/sse.py ------------------------------------------------------------------------


@fuzz()
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_sse(pieces: list[bytes]) -> None:
    events = parses(lambda p: list(data_events(p)), pieces)
    if events is not None:
        assert all(isinstance(e, str) for e in events)


# --- The client's state files ------------------------------------------------------------------

SETTINGS = b'{"features": {"summaries": true, "chat": false}, "private_chats": ["c1", "c2"]}'
REPORT = (
    b'{"time": 1700000000.5, "feature": "chat", "outcome": "ok", "measurement": "ab",'
    b' "log_index": 3, "checkpoint_size": 9}\n'
)
WALLET = b'{"version": 1, "tokens": {"AAIAAA==": [{"token": "AAIAAA==", "expires": 99999999999}]}}'


def _in_state_dir(name: str, data: bytes) -> Path:
    state = Path(tempfile.mkdtemp(prefix="privproc-fuzz-"))
    (state / name).write_bytes(data)
    return state


@fuzz(0.5)
@given(st.one_of(mutated(SETTINGS), st.binary(max_size=100)))
def test_settings_file(data: bytes) -> None:
    parses(Settings.load, _in_state_dir("settings.json", data))


@fuzz(0.5)
@given(st.one_of(mutated(REPORT), st.binary(max_size=100)))
def test_report_file(data: bytes) -> None:
    parses(lambda d: UsageReport(d).entries(), _in_state_dir("report.jsonl", data))


@fuzz(0.5)
@given(st.one_of(mutated(WALLET), st.binary(max_size=100)))
def test_wallet_file(data: bytes) -> None:
    wallet = Wallet(_in_state_dir("tokens.json", data))
    parses(lambda c: wallet.counts(0), b"")
    parses(lambda c: wallet.take(c, 0), b"\x00\x02\x00\x00")


# --- Regressions found by these tests (fixed; kept so that they stay fixed) -------------------


def test_regression_api_deeply_nested_body() -> None:
    # Fixed (fuzz, issue 8): parties/enclave/handler.py `_load`: json.loads raises RecursionError
    # on deep
    # nesting, which escapes `handle` (it must answer 400). 5000 bytes, under MAX_BODY.
    _answer("POST", "/v1/chat/completions", b"[" * 5000)


def test_regression_api_huge_temperature() -> None:
    # Fixed (fuzz, issue 8): parties/enclave/handler.py `_chat_completion` does float(temperature);
    # an integer
    # above ~1.8e308 raises OverflowError, which escapes `handle` (both streamed and not).
    for stream in (b"false", b"true"):
        body = b'{"messages":[{"role":"user","content":"x"}],"temperature":1%s,"stream":%s}' % (
            b"0" * 400,
            stream,
        )
        _answer("POST", "/v1/chat/completions", body)


def test_regression_settings_of_the_wrong_shape() -> None:
    # Fixed (fuzz, issue 8): parties/device/controls.py `Settings.load`: `features` not an object
    # gives
    # AttributeError, `private_chats` not a list gives TypeError, deep nesting RecursionError.
    for body in (b'{"features": []}', b'{"private_chats": 5}', b"[" * 5000):
        assert parses(Settings.load, _in_state_dir("settings.json", body)) is None


def test_regression_report_with_huge_time() -> None:
    # Fixed (fuzz, issue 8): parties/device/controls.py `UsageReport.entries`: float() of a
    # 400-digit
    # integer raises OverflowError (not caught); deep nesting raises RecursionError; a file that
    # is not UTF-8 raises UnicodeDecodeError from read_text(), outside the try.
    for body in (
        b'{"time": 1' + b"0" * 400 + b', "feature": "a", "outcome": "b"}',
        b"[" * 5000,
        b"\x80",
    ):
        state = _in_state_dir("report.jsonl", body + b"\n")
        assert parses(lambda d: UsageReport(d).entries(), state) is None


def test_regression_wallet_of_the_wrong_shape() -> None:
    # Fixed (fuzz, issue 8): parties/device/wallet.py: entries that are not lists of objects give
    # AttributeError in `_live`; an entry without "token" gives KeyError in `take`; deep nesting
    # gives RecursionError in `_read`.
    for body in (
        b'{"version": 1, "tokens": {"AAIAAA==": "x"}}',
        b'{"version": 1, "tokens": {"AAIAAA==": [5]}}',
        b'{"version": 1, "tokens": {"AAIAAA==": [{"expires": 99999999999}]}}',
        b"[" * 5000,
    ):
        take = functools.partial(Wallet(_in_state_dir("tokens.json", body)).take, now=0)
        assert parses(take, b"\x00\x02\x00\x00") is None
