"""The device's private connection to the enclave, sans-IO: events in, bytes and requests out.

    connection = PrivateConnection(verifier)           # verifier: evidence -> attestation
    connection.send_request("POST", "/v1/tasks/summarize", body)
    while (event := connection.next_event()) is not NEED_DATA or ...:
        NeedToken()            -> connection.use_token(authorization)
        Send(inner, streamed)  -> POST `inner` (a Binary HTTP request) through the relay, then
                                  connection.receive_answer(bytes), or for a streamed one each
                                  piece to receive_data(piece) and its end to end_of_stream()
        SessionOpened / SessionVerified / SessionEnded   -> what the report notes
        AnswerHead / AnswerData / AnswerComplete         -> the enclave's answer, as it comes

One connection carries one attested session at a time (DESIGN.md §2): the first request opens
it (a token, the TLS ClientHello in `POST /v1/sessions`), the handshake runs record by record,
the enclave's evidence is appraised by `verifier` before anything else is sent, then HTTP/1.1
requests go inside TLS one at a time. A session the enclave ends (`connection: close`), loses
(404/502 from the gateway) or that is left mid-answer is forgotten: the next request opens a
new one.

Rules: no socket, no file, no clock, no thread: the shells (`private.py`, blocking; `aio.py`,
asyncio) do every exchange and feed the answers back. Every state change follows `TRANSITIONS`.
An answer is whole only at its HTTP end inside TLS; a stream that ends before it raises
`StreamTruncatedError`. A token is never kept here beyond the refusal that leaves it unspent
(`take_unspent_token`), and none is ever in an event's repr or an error.
"""

from __future__ import annotations

import contextlib
import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import h11

from privproc.errors import (
    DecodeError,
    PeerRejectedError,
    PrivprocError,
    StreamTruncatedError,
    TransportError,
    UsageError,
    parse_retry_after,
)
from privproc.net.ratls import EvidenceVerifier, check_evidence
from privproc.ohttp import bhttp, bhttp_stream
from privproc.ratls.session import ClientSession, ClientState, client_session
from privproc.wire import load_json

__all__ = [
    "NEED_DATA",
    "TRANSITIONS",
    "AnswerComplete",
    "AnswerData",
    "AnswerHead",
    "ConnectionState",
    "EnclaveLostError",
    "NeedToken",
    "PrivateConnection",
    "Send",
    "SessionEnded",
    "SessionOpened",
    "SessionVerified",
    "refused",
]

GATEWAY_AUTHORITY = "https://gateway.invalid"
MAX_ROUNDS = 8  # relay round trips for a handshake, or for one answer that is not streamed


class EnclaveLostError(TransportError):
    """The enclave holding the session is gone; a new request will open a new session."""

    retryable = True


class ConnectionState(enum.Enum):
    IDLE = "idle"  # no session: the next request opens one
    NEED_TOKEN = "waiting for a token"  # noqa: S105 (a state, not a secret)
    OPENING = "opening"  # POST /v1/sessions sent
    HANDSHAKING = "handshaking"  # TLS records and the evidence, round by round
    READY = "ready"  # attested; no request in flight
    WAITING = "waiting for the answer"  # a request sent, its answer not whole yet
    DRAINING = "draining"  # a streamed answer is whole; its stream's own end is still coming


TRANSITIONS: Final[dict[ConnectionState, frozenset[ConnectionState]]] = {
    ConnectionState.IDLE: frozenset({ConnectionState.NEED_TOKEN}),
    ConnectionState.NEED_TOKEN: frozenset({ConnectionState.OPENING, ConnectionState.IDLE}),
    ConnectionState.OPENING: frozenset({ConnectionState.HANDSHAKING, ConnectionState.IDLE}),
    ConnectionState.HANDSHAKING: frozenset({ConnectionState.WAITING, ConnectionState.IDLE}),
    ConnectionState.READY: frozenset({ConnectionState.WAITING, ConnectionState.IDLE}),
    ConnectionState.WAITING: frozenset(
        {ConnectionState.READY, ConnectionState.DRAINING, ConnectionState.IDLE}
    ),
    ConnectionState.DRAINING: frozenset({ConnectionState.READY, ConnectionState.IDLE}),
}


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()  # waiting for the answer to the last `Send`, or for a request


@dataclass(frozen=True)
class NeedToken:
    """A new session must be paid for: answer with `use_token`."""


@dataclass(frozen=True)
class Send:
    """Send `inner` (an encoded Binary HTTP request for the gateway) through the relay. A
    `streamed` one goes as chunked OHTTP and its answer comes piece by piece."""

    inner: bytes = field(repr=False)
    streamed: bool = False


@dataclass(frozen=True)
class SessionOpened:
    """The gateway opened a session and spent the token (this use's session is new)."""

    session_id: str


@dataclass(frozen=True)
class SessionVerified:
    """The enclave's evidence passed: `attestation` is the verifier's report; `evidence` the
    bundle it judged (for the report's provenance)."""

    attestation: Any
    evidence: bytes = field(repr=False)


@dataclass(frozen=True)
class SessionEnded:
    """The session is over (`reason` says why); the next request opens a new one."""

    reason: str


@dataclass(frozen=True)
class AnswerHead:
    status: int
    content_type: str


@dataclass(frozen=True)
class AnswerData:
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class AnswerComplete:
    """The answer ended at its authenticated end (the last HTTP chunk inside TLS)."""


Event = (
    NeedToken | Send | SessionOpened | SessionVerified | SessionEnded | AnswerHead | AnswerData
) | AnswerComplete


def refused(
    what: str, status: int, content: bytes, retry_after: str | None = None
) -> PeerRejectedError:
    """The gateway's refusal, with its reason, whether to retry and when, when it gave them."""
    reason, retry = "", False
    with contextlib.suppress(PrivprocError, AttributeError, KeyError, TypeError):
        doc = load_json(content, "the gateway's refusal")
        reason, retry = f": {doc['error']}", bool(doc.get("retry"))
    hint = "; try again shortly" if retry else ""
    return PeerRejectedError(
        f"{what} ({status}{reason}){hint}",
        status,
        retryable=retry or None,
        retry_after=parse_retry_after(retry_after),
    )


def _inner(method: str, path: str, content: bytes, headers: list[tuple[str, str]]) -> bytes:
    request = bhttp.Request.build(
        method, GATEWAY_AUTHORITY + path, headers=headers, content=content
    )
    return bhttp.encode_request(request, bhttp.Framing.shortest())


class PrivateConnection:
    """The module's rules; one instance per client, one request at a time."""

    def __init__(self, verifier: EvidenceVerifier) -> None:
        self._verifier = verifier
        self.state = ConnectionState.IDLE
        self._events: deque[Event] = deque()
        self._tls: ClientSession | None = None
        self._http: h11.Connection | None = None
        self._session_id = ""
        # The HTTP request (method, path, headers, body) waiting for the session to be attested.
        self._pending_request: tuple[h11.Request, bytes] | None = None
        self._streamed = False
        self._rounds = 0
        self._token: str | None = None  # while POST /v1/sessions is in flight
        self._unspent: str | None = None
        self._stream: bhttp_stream.ResponseStreamDecoder | None = None
        self._stream_status = 0
        self._stream_detail = b""
        self._answer_done = False

    # --- What the shell calls ---------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The current session's id at the gateway, if one is open."""
        return self._session_id if self.state not in _NO_SESSION else None

    def send_request(
        self, method: str, path: str, body: bytes, *, streamed: bool = False, content_type: str = ""
    ) -> None:
        """Queue one API request for the enclave (opening a session first if there is none)."""
        if self.state not in (ConnectionState.IDLE, ConnectionState.READY):
            raise UsageError(f"a request is already under way ({self.state.value})")
        headers = [("host", "enclave"), ("content-length", str(len(body)))]
        if content_type:
            headers.insert(1, ("content-type", content_type))
        try:  # h11 checks the method, target and fields as it builds the request
            request = h11.Request(method=method, target=path, headers=headers)
        except h11.LocalProtocolError as exc:  # a path no HTTP request can carry
            raise UsageError(f"the request cannot be sent: {exc}") from None
        self._pending_request = (request, body)
        self._streamed = streamed
        if self.state is ConnectionState.READY:
            self._write_request()
            return
        self._move(ConnectionState.NEED_TOKEN)
        self._tls = client_session()
        self._events.append(NeedToken())

    def use_token(self, authorization: str) -> None:
        """Pay for the new session with `authorization` (a Privacy Pass token)."""
        if self.state is not ConnectionState.NEED_TOKEN or self._tls is None:
            raise UsageError("no session is waiting for a token")
        self._move(ConnectionState.OPENING)
        self._token = authorization
        hello = self._tls.send_pending()
        headers = [("authorization", authorization)]
        self._events.append(Send(_inner("POST", "/v1/sessions", hello, headers)))

    def take_unspent_token(self) -> str | None:
        """The token of a session the gateway refused without spending it (it was busy), once."""
        token, self._unspent = self._unspent, None
        return token

    def next_event(self) -> Event | _NeedData:
        return self._events.popleft() if self._events else NEED_DATA

    def receive_answer(self, data: bytes) -> None:
        """The gateway's answer (a Binary HTTP response) to the last, not streamed, `Send`."""
        answer = bhttp.decode_response(data)
        if self.state is ConnectionState.OPENING:
            self._opened(answer)
        elif self.state is ConnectionState.HANDSHAKING:
            self._session_answer(answer)
            self._handshake()
        elif self.state is ConnectionState.WAITING and not self._streamed:
            self._session_answer(answer)
            self._read_http()
            if self.state is ConnectionState.WAITING:
                self._round("the enclave did not answer in time")
        else:
            raise UsageError(f"no answer is awaited ({self.state.value})")

    def receive_data(self, piece: bytes) -> None:
        """A piece of the answer to a streamed `Send`, as chunked OHTTP delivered it."""
        if self._stream is None:
            if self._answer_done:
                return  # the session ended with a whole answer: the rest is not read
            raise UsageError("no streamed answer is awaited")
        try:
            events = self._stream.receive(piece)
        except DecodeError:
            self._cut()
        for event in events:
            if isinstance(event, bhttp_stream.Head):
                self._stream_status = event.status
            elif isinstance(event, bhttp_stream.Content) and self._stream_status == 200:
                self._records(event.data)
            elif isinstance(event, bhttp_stream.Content):
                self._stream_detail = (self._stream_detail + event.data)[:4096]

    def end_of_stream(self) -> None:
        """The streamed answer's authenticated end arrived (chunked OHTTP's final chunk)."""
        if self._stream is None:
            if self._answer_done:
                return
            raise UsageError("no streamed answer is awaited")
        try:
            self._stream.close()
        except DecodeError:
            self._cut()
        self._stream = None
        status = self._stream_status
        if status in (404, 502):
            self._lose()
        if status != 200:
            self._end("the gateway refused the stream")
            raise refused("the gateway refused the stream", status, self._stream_detail)
        if self.state is ConnectionState.DRAINING:
            self._move(ConnectionState.READY)
        elif self.state is ConnectionState.WAITING:
            self._cut()

    def stream_broken(self) -> bool:
        """The stream broke off before its end: the session is forgotten. True if the answer
        was already whole (only the stream's own end was lost); False if it is cut, which the
        caller raises as the `StreamTruncatedError` it met."""
        self._stream = None
        whole = self._answer_done
        self._end("its stream broke off")
        return whole

    def close_session(self) -> bytes | None:
        """Forget the session (the next request opens a new one): the `DELETE` to send for it,
        if one was open, best effort."""
        session = self.session_id
        if self.state is not ConnectionState.IDLE:
            self._end("closed by the device")
        return None if session is None else _inner("DELETE", f"/v1/sessions/{session}", b"", [])

    # --- Inside -------------------------------------------------------------------------------

    def _move(self, target: ConnectionState) -> None:
        if target is not self.state and target not in TRANSITIONS[self.state]:
            raise UsageError(f"a connection cannot go from {self.state.value} to {target.value}")
        self.state = target

    def _end(self, reason: str) -> None:
        had = self.state not in _NO_SESSION
        self._move(ConnectionState.IDLE)
        self._tls, self._http, self._stream, self._token = None, None, None, None
        # What was still to be sent is void; what arrived (an answer's end) is still handed out.
        kept = [e for e in self._events if not isinstance(e, (Send, NeedToken))]
        self._events = deque(kept)
        if had:
            self._events.append(SessionEnded(reason))

    def _lose(self) -> None:
        self._end("the enclave holding it is gone")
        raise EnclaveLostError("the enclave holding this session is gone; retry")

    def _cut(self) -> None:
        self._end("its answer was cut")
        raise StreamTruncatedError(
            "the enclave's answer ended before its authenticated end (the last HTTP chunk inside "
            "TLS); what arrived is not the whole answer"
        )

    def _opened(self, answer: bhttp.Response) -> None:
        token, self._token = self._token, None
        if answer.status != 201:
            if answer.status != 401:
                self._unspent = token  # the gateway spends a token only for a session it opens
            self._end("the gateway refused it")
            raise refused(
                "the gateway refused a new session",
                answer.status,
                answer.content,
                answer.header("retry-after"),
            )
        assert self._tls is not None
        self._session_id = answer.header("session-id") or ""
        self._http = h11.Connection(h11.CLIENT)
        self._move(ConnectionState.HANDSHAKING)
        self._events.append(SessionOpened(self._session_id))
        self._rounds = 0
        self._tls.receive(answer.content)
        self._handshake()

    def _handshake(self) -> None:
        assert self._tls is not None
        received = self._tls.pending_event
        try:
            check_evidence(self._tls, self._verifier)  # once received: VERIFIED, or it raises
        except PrivprocError:
            self._end("its evidence was refused")
            raise
        if self._tls.state is ClientState.VERIFIED:
            evidence = received.evidence if received is not None else b""
            self._events.append(SessionVerified(self._tls.attestation, evidence))
            self._write_request()
            return
        self._round("the enclave did not complete the attested handshake")

    def _round(self, late: str) -> None:
        """Another round trip: what TLS has queued (maybe nothing), for what is still to come."""
        assert self._tls is not None
        self._rounds += 1
        if self._rounds > MAX_ROUNDS:
            self._end(late)
            raise TransportError(late)
        self._events.append(Send(self._session_send(self._tls.send_pending())))

    def _session_send(self, records: bytes) -> bytes:
        return _inner("POST", f"/v1/sessions/{self._session_id}", records, [])

    def _session_answer(self, answer: bhttp.Response) -> None:
        if answer.status in (404, 502):
            self._lose()
        if answer.status != 200:
            self._end("the gateway refused a record")
            raise PeerRejectedError(f"the gateway answered {answer.status}", answer.status)
        assert self._tls is not None
        self._tls.receive(answer.content)

    def _write_request(self) -> None:
        assert self._tls is not None
        assert self._http is not None
        assert self._pending_request is not None
        request, body = self._pending_request
        self._pending_request = None
        data = self._http.send(request) or b""
        data += self._http.send(h11.Data(data=body)) or b""
        data += self._http.send(h11.EndOfMessage()) or b""
        self._tls.write(data)
        self._move(ConnectionState.WAITING)
        self._rounds = 0
        self._answer_done = False
        records = self._session_send(self._tls.send_pending())
        if self._streamed:
            self._stream = bhttp_stream.ResponseStreamDecoder()
            self._stream_status, self._stream_detail = 0, b""
        self._events.append(Send(records, self._streamed))

    def _records(self, data: bytes) -> None:
        if self._tls is None:
            return  # the session ended with its answer; what follows is not read
        self._tls.receive(data)
        if self.state is ConnectionState.WAITING:
            self._read_http()

    def _read_http(self) -> None:
        """The HTTP events in what TLS has decrypted so far."""
        assert self._tls is not None
        assert self._http is not None
        data = self._tls.read()
        try:
            if data:
                self._http.receive_data(data)
            while (event := self._http.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    kind = dict(event.headers).get(b"content-type", b"").decode("latin-1")
                    self._events.append(AnswerHead(event.status_code, kind))
                elif isinstance(event, h11.Data):
                    self._events.append(AnswerData(bytes(event.data)))
                elif isinstance(event, h11.EndOfMessage):
                    self._answer_done = True
                    self._events.append(AnswerComplete())
                    self._next_cycle()
                    return
        except h11.ProtocolError:
            self._end("its HTTP answer was malformed")
            raise TransportError("the enclave's HTTP answer is malformed") from None

    def _next_cycle(self) -> None:
        """A whole answer: ready for the next request, unless the enclave said this was its
        last (`connection: close`: its budget or lifetime is spent, and it forgot the session)."""
        assert self._http is not None
        if self._http.their_state is h11.MUST_CLOSE:
            self._end("the enclave ended it with this answer")
            return
        self._http.start_next_cycle()
        self._move(ConnectionState.DRAINING if self._streamed else ConnectionState.READY)


_NO_SESSION = frozenset({ConnectionState.IDLE, ConnectionState.NEED_TOKEN, ConnectionState.OPENING})
