"""The device's private connection, sans-IO (parties/device/connection.py), driven in memory
against a gateway and an enclave played here with the real attested TLS server session and a
real HTTP/1.1 server (h11) inside it: no socket, no thread, no clock.

What must hold: a request opens a session only with a token; the evidence is judged before the
request is written; an answer is handed out as it arrives and is whole only at its HTTP end
inside TLS; a session the enclave ends, loses or leaves half-answered is never reused; a token
the gateway did not spend comes back once; every move follows the transition table; misuse is
a `UsageError`, never a silent state change; no token appears in an event or an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import pytest

from privproc.errors import PeerRejectedError, PrivprocError, StreamTruncatedError, UsageError
from privproc.ohttp import bhttp, bhttp_stream
from privproc.parties.device.connection import (
    NEED_DATA,
    TRANSITIONS,
    AnswerComplete,
    AnswerData,
    AnswerHead,
    ConnectionState,
    EnclaveLostError,
    NeedToken,
    PrivateConnection,
    Send,
    SessionEnded,
    SessionOpened,
    SessionVerified,
)
from privproc.ratls.session import ServerSession, server_session
from tests.test_ratls import (
    IDENTITY,
    FakeAttestation,
    FakeEvidenceError,
    fake_provider,
    fake_verifier,
)

TOKEN = "PrivateToken token=c2VjcmV0LXRva2VuLWJ5dGVz"


@dataclass
class Enclave:
    """One enclave session: attested TLS, HTTP/1.1 inside, answering every request with `answer`
    (status, headers, body)."""

    tls: ServerSession = field(default_factory=lambda: server_session(IDENTITY))
    http: h11.Connection = field(default_factory=lambda: h11.Connection(h11.SERVER))
    answer: tuple[int, list[tuple[str, str]], bytes] = (200, [], b'{"ok": true}')
    requests: list[bytes] = field(default_factory=list)

    def records(self, data: bytes) -> bytes:
        self.tls.receive(data)
        if self.tls.pending_event is not None:
            self.tls.provide_evidence(fake_provider(self.tls.pending_event.report_data))
        out = self.tls.send_pending()
        try:
            plain = self.tls.read()
        except PrivprocError:
            plain = b""
        if plain:
            self.http.receive_data(plain)
            body = b""
            while (event := self.http.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self.requests.append(body)
                    status, headers, content = self.answer
                    headers = [*headers, ("content-length", str(len(content)))]
                    data = self.http.send(h11.Response(status_code=status, headers=headers)) or b""
                    data += self.http.send(h11.Data(data=content)) or b""
                    data += self.http.send(h11.EndOfMessage()) or b""
                    self.tls.write(data)
                    if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
                        self.http.start_next_cycle()
            out += self.tls.send_pending()
        return out


@dataclass
class Gateway:
    """The gateway's session API, in memory: opens a session for a token, forwards records."""

    open_status: int = 201
    record_status: int = 200
    sessions: dict[str, Enclave] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    enclave_answer: tuple[int, list[tuple[str, str]], bytes] = (200, [], b'{"ok": true}')

    def handle(self, inner: bytes) -> bytes:
        request = bhttp.decode_request(inner)
        if request.path == "/v1/sessions":
            token = request.header("authorization") or ""
            self.tokens.append(token)
            if self.open_status != 201:
                content = b'{"error": "busy", "retry": true}'
                return _response(self.open_status, content)
            enclave = Enclave(answer=self.enclave_answer)
            session_id = f"{len(self.sessions):032x}"
            self.sessions[session_id] = enclave
            records = enclave.records(request.content)
            return _response(201, records, [("session-id", session_id)])
        session_id = request.path.rsplit("/", 1)[-1]
        if request.method == "DELETE":
            self.sessions.pop(session_id, None)
            return _response(204, b"")
        if self.record_status != 200 or session_id not in self.sessions:
            return _response(404 if session_id not in self.sessions else self.record_status, b"")
        return _response(200, self.sessions[session_id].records(request.content))

    def streamed(self, inner: bytes, keep: int | None = None) -> bytes:
        """The same answer as a streamed one (Binary HTTP, indeterminate length); `keep`: only
        that many bytes of the enclave's records, in a stream that still ends properly."""
        answer = bhttp.decode_response(self.handle(inner))
        head = bhttp_stream.encode_head(answer.status, [])
        records = answer.content if keep is None else answer.content[:keep]
        return head + bhttp_stream.encode_content(records) + bhttp_stream.encode_end()


def _response(status: int, content: bytes, headers: list[tuple[str, str]] | None = None) -> bytes:
    response = bhttp.Response.build(status, headers=headers or [], content=content)
    return bhttp.encode_response(response, bhttp.Framing.shortest())


@dataclass
class Run:
    """What one request gave: its events in order, and the answer they carried."""

    events: list[object]
    status: int = 0
    body: bytes = b""


def serve(
    connection: PrivateConnection,
    gateway: Gateway,
    token: str = TOKEN,
    split: Callable[[bytes], list[bytes]] | None = None,
) -> Run:
    """Play the shell: answer the connection's events until it waits for nothing."""
    run = Run([])
    while (event := connection.next_event()) is not NEED_DATA:
        run.events.append(event)
        if isinstance(event, NeedToken):
            connection.use_token(token)
        elif isinstance(event, Send) and event.streamed:
            stream = gateway.streamed(event.inner)
            for piece in (split or (lambda data: [data]))(stream):
                connection.receive_data(piece)
            connection.end_of_stream()
        elif isinstance(event, Send):
            connection.receive_answer(gateway.handle(event.inner))
        elif isinstance(event, AnswerHead):
            run.status = event.status
        elif isinstance(event, AnswerData):
            run.body += event.data
    return run


def state(connection: PrivateConnection) -> ConnectionState:
    """Read afresh (mypy would otherwise keep an earlier narrowing)."""
    return connection.state


def kinds(run: Run) -> list[str]:
    return [type(e).__name__ for e in run.events]


def test_a_request_opens_an_attested_session_and_the_next_reuses_it() -> None:
    connection, gateway = PrivateConnection(fake_verifier), Gateway()
    connection.send_request("POST", "/v1/tasks/echo", b'{"x": 1}', content_type="application/json")
    assert state(connection) is ConnectionState.NEED_TOKEN
    first = serve(connection, gateway)
    assert kinds(first)[:3] == ["NeedToken", "Send", "SessionOpened"]
    assert "SessionVerified" in kinds(first)
    assert kinds(first)[-2:] == ["AnswerData", "AnswerComplete"]
    verified = next(e for e in first.events if isinstance(e, SessionVerified))
    assert isinstance(verified.attestation, FakeAttestation)
    assert verified.evidence.startswith(b"FAKE")
    assert (first.status, first.body) == (200, b'{"ok": true}')
    assert gateway.tokens == [TOKEN]
    [enclave] = gateway.sessions.values()
    assert enclave.requests == [b'{"x": 1}']
    assert state(connection) is ConnectionState.READY
    assert connection.session_id == next(iter(gateway.sessions))
    connection.send_request("GET", "/v1/models", b"")
    second = serve(connection, gateway)
    assert kinds(second) == ["Send", "AnswerHead", "AnswerData", "AnswerComplete"]
    assert gateway.tokens == [TOKEN]  # no second token: the same session
    assert len(enclave.requests) == 2


def test_the_evidence_is_judged_before_the_request_is_written() -> None:
    def refusing(evidence: bytes, report_data: bytes) -> object:
        raise FakeEvidenceError("not this enclave")

    connection, gateway = PrivateConnection(refusing), Gateway()
    connection.send_request("POST", "/v1/tasks/echo", b"secret prompt")
    with pytest.raises(FakeEvidenceError):
        serve(connection, gateway)
    [enclave] = gateway.sessions.values()
    assert enclave.requests == []  # nothing of the request left the device
    assert state(connection) is ConnectionState.IDLE
    assert isinstance(connection.next_event(), SessionEnded)
    assert connection.next_event() is NEED_DATA  # nothing left queued for the dead session


def test_a_busy_gateway_leaves_the_token_unspent_once_and_a_refused_token_is_gone() -> None:
    connection = PrivateConnection(fake_verifier)
    busy = Gateway(open_status=503)
    connection.send_request("GET", "/v1/models", b"")
    with pytest.raises(PeerRejectedError, match="busy") as refused:
        serve(connection, busy)
    assert refused.value.retryable
    assert TOKEN not in str(refused.value)
    assert connection.take_unspent_token() == TOKEN
    assert connection.take_unspent_token() is None  # once
    assert state(connection) is ConnectionState.IDLE
    connection.send_request("GET", "/v1/models", b"")
    with pytest.raises(PeerRejectedError):
        serve(connection, Gateway(open_status=401))
    assert connection.take_unspent_token() is None  # a refused token was judged: spent or bad


def test_a_lost_enclave_ends_the_session_and_the_next_request_opens_a_new_one() -> None:
    connection, gateway = PrivateConnection(fake_verifier), Gateway()
    connection.send_request("GET", "/v1/models", b"")
    serve(connection, gateway)
    gateway.sessions.clear()  # the enclave is gone
    connection.send_request("GET", "/v1/models", b"")
    with pytest.raises(EnclaveLostError) as lost:
        serve(connection, gateway)
    assert lost.value.retryable
    assert state(connection) is ConnectionState.IDLE
    assert isinstance(connection.next_event(), SessionEnded)
    connection.send_request("GET", "/v1/models", b"")
    again = serve(connection, gateway)
    assert kinds(again)[0] == "NeedToken"
    assert again.status == 200


def test_an_answer_with_connection_close_ends_the_session() -> None:
    connection = PrivateConnection(fake_verifier)
    gateway = Gateway(enclave_answer=(200, [("connection", "close")], b"last"))
    connection.send_request("GET", "/v1/models", b"")
    run = serve(connection, gateway)
    assert run.body == b"last"
    assert kinds(run)[-2:] == ["AnswerComplete", "SessionEnded"]
    assert state(connection) is ConnectionState.IDLE
    assert connection.session_id is None


def test_a_streamed_answer_comes_piece_by_piece_and_is_whole_only_at_its_end() -> None:
    connection, gateway = PrivateConnection(fake_verifier), Gateway()
    connection.send_request("GET", "/v1/models", b"")
    serve(connection, gateway)  # a session, opened by a plain request

    def bytewise(data: bytes) -> list[bytes]:
        return [data[i : i + 1] for i in range(len(data))]

    connection.send_request("POST", "/v1/chat/completions", b"{}", streamed=True)
    run = serve(connection, gateway, split=bytewise)
    assert run.body == b'{"ok": true}'
    assert kinds(run)[-1] == "AnswerComplete"
    assert state(connection) is ConnectionState.READY  # the stream's own end came: reusable


def test_a_stream_that_ends_before_the_answer_is_cut() -> None:
    connection, gateway = PrivateConnection(fake_verifier), Gateway()
    connection.send_request("GET", "/v1/models", b"")
    serve(connection, gateway)
    connection.send_request("POST", "/v1/chat/completions", b"{}", streamed=True)
    send = connection.next_event()
    assert isinstance(send, Send)
    assert send.streamed
    stream = gateway.streamed(send.inner)
    connection.receive_data(stream[: len(stream) // 2])
    with pytest.raises(StreamTruncatedError):
        connection.end_of_stream()
    assert state(connection) is ConnectionState.IDLE  # a session left half-answered is not reused
    # A stream that ends properly (chunked OHTTP's and Binary HTTP's ends) but carries only part
    # of the enclave's records: the HTTP answer inside TLS never ended, so it is cut all the same.
    connection.send_request("GET", "/v1/models", b"")
    serve(connection, gateway)
    connection.send_request("POST", "/v1/chat/completions", b"{}", streamed=True)
    send = connection.next_event()
    assert isinstance(send, Send)
    connection.receive_data(gateway.streamed(send.inner, keep=40))
    with pytest.raises(StreamTruncatedError):
        connection.end_of_stream()
    assert state(connection) is ConnectionState.IDLE
    # The same cut as a broken transport: the caller raises what it met; nothing is reused.
    connection.send_request("GET", "/v1/models", b"")
    serve(connection, gateway)
    connection.send_request("POST", "/v1/chat/completions", b"{}", streamed=True)
    send = connection.next_event()
    assert isinstance(send, Send)
    connection.receive_data(gateway.streamed(send.inner)[:5])
    assert connection.stream_broken() is False
    assert state(connection) is ConnectionState.IDLE


def test_a_stream_broken_after_its_whole_answer_loses_only_the_session() -> None:
    connection, gateway = PrivateConnection(fake_verifier), Gateway()
    connection.send_request("POST", "/v1/chat/completions", b"{}", streamed=True)
    events: list[object] = []
    while not isinstance(event := connection.next_event(), Send) or not event.streamed:
        events.append(event)
        if isinstance(event, NeedToken):
            connection.use_token(TOKEN)
        elif isinstance(event, Send):
            connection.receive_answer(gateway.handle(event.inner))
    answer = gateway.streamed(event.inner)
    connection.receive_data(answer[:-1])  # all but the stream's own end
    drained = []
    while (late := connection.next_event()) is not NEED_DATA:
        drained.append(late)
    assert isinstance(drained[-1], AnswerComplete)
    assert state(connection) is ConnectionState.DRAINING
    assert connection.stream_broken() is True  # the answer was whole
    assert state(connection) is ConnectionState.IDLE


def test_misuse_is_refused_and_changes_nothing() -> None:
    connection = PrivateConnection(fake_verifier)
    with pytest.raises(UsageError):
        connection.use_token(TOKEN)  # nothing waits for a token
    with pytest.raises(UsageError):
        connection.receive_answer(_response(200, b""))
    with pytest.raises(UsageError):
        connection.receive_data(b"x")
    with pytest.raises(UsageError, match="cannot be sent"):
        connection.send_request("GET", "/v1/models with spaces", b"")
    assert state(connection) is ConnectionState.IDLE
    connection.send_request("GET", "/v1/models", b"")
    with pytest.raises(UsageError, match="already under way"):
        connection.send_request("GET", "/v1/models", b"")
    assert state(connection) is ConnectionState.NEED_TOKEN


def test_every_move_is_in_the_transition_table() -> None:
    moves: list[tuple[ConnectionState, ConnectionState]] = []

    class Watched(PrivateConnection):
        def _move(self, target: ConnectionState) -> None:
            moves.append((self.state, target))
            super()._move(target)

    connection, gateway = Watched(fake_verifier), Gateway()
    for streamed in (False, True, False):
        connection.send_request("GET", "/v1/models", b"", streamed=streamed)
        serve(connection, gateway)
    gateway.sessions.clear()
    connection.send_request("GET", "/v1/models", b"")
    with pytest.raises(EnclaveLostError):
        serve(connection, gateway)
    assert moves
    for before, after in moves:
        assert after is before or after in TRANSITIONS[before], (before, after)
    # And a move the table does not hold is refused.
    fresh = PrivateConnection(fake_verifier)
    with pytest.raises(UsageError, match="cannot go from idle to ready"):
        fresh._move(ConnectionState.READY)
    assert set(TRANSITIONS) == set(ConnectionState)


def test_no_event_or_error_shows_the_token() -> None:
    connection = PrivateConnection(fake_verifier)
    connection.send_request("GET", "/v1/models", b"")
    run = serve(connection, Gateway())
    for event in run.events:
        assert "c2VjcmV0" not in repr(event)
    refused = PrivateConnection(fake_verifier)
    refused.send_request("GET", "/v1/models", b"")
    with pytest.raises(PrivprocError) as failed:
        serve(refused, Gateway(open_status=503))
    assert "c2VjcmV0" not in repr(failed.value)
    assert isinstance(run.events[2], SessionOpened)
    assert all(not isinstance(e, NeedToken) or repr(e) == "NeedToken()" for e in run.events)
