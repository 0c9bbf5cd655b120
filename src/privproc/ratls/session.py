"""The attested session: TLS 1.3 whose server proves, with evidence bound to the connection's
exporter, which code it runs before the client sends it anything.

    exporter    = TLS-Exporter("EXPORTER-privproc-attestation", "", 32)     (RFC 8446 §7.5)
    report_data = SHA-512("privproc ratls v1" || exporter)                  (64 bytes)
    evidence frame, the server's first application bytes:
        uint32 length (big-endian) || evidence[length]                      (length <= 1 MiB)

The server needs evidence over its report_data; the client computes the same report_data from
its own exporter and has the server's evidence verified over it. A man-in-the-middle who
terminates TLS on both sides has two connections with two different exporters, so evidence
relayed from the genuine server names the wrong report_data.

This core never calls out for evidence or its verification (issue 17): like h11 or aioquic, it
stops and says what it needs, and its caller does the work and feeds the answer back.

    server:  for event in session.receive(data):        # EvidenceNeeded(report_data)
                 session.provide_evidence(provider(event.report_data))
    client:  for event in session.receive(data):        # EvidenceReceived(evidence, report_data)
                 session.accept(verify(event.evidence, event.report_data))  # or .reject(exc)

(`privproc.net.ratls` drives a session with a provider or a verifier that way.)

Rules of this module:
- Sans-IO, on top of `TlsEndpoint`: `receive` (which returns the events that arose),
  `send_pending`, `write`, `read`, `close`, and the answers to the events: the server's
  `provide_evidence` / `withhold_evidence`, the client's `accept` / `reject`. While a session
  waits for its answer, `pending_event` holds the event. The session stores no callable.
- States and their transitions are explicit tables (`CLIENT_TRANSITIONS`, `SERVER_TRANSITIONS`);
  every change of state goes through `transition`, which refuses any move the table lacks.

      client:  HANDSHAKING -> AWAITING_EVIDENCE -> EVIDENCE_RECEIVED -> VERIFIED -> CLOSED
      server:  HANDSHAKING -> EVIDENCE_NEEDED -> EVIDENCE_SENT -> OPEN -> CLOSED
      (either side: every state before CLOSED -> CLOSED or FAILED; CLOSED -> FAILED;
       FAILED is terminal)

  The client is in EVIDENCE_RECEIVED once the evidence frame is complete and VERIFIED only when
  its caller `accept`s it. The server is in EVIDENCE_NEEDED once the handshake is done, in
  EVIDENCE_SENT once its caller's evidence is queued and OPEN once `send_pending` has handed it
  to the transport.
- The client writes and reads application data only when VERIFIED (after it closes, it may
  still read what a verified peer sends); the server writes from EVIDENCE_SENT on, and treats
  any client application data before it is OPEN as a protocol violation.
- Any failure (TLS, framing, evidence the caller provides that is not bytes or too large, the
  peer's conduct) sends close_notify where TLS allows it and moves the session to FAILED; the
  failing call raises the cause, every later call raises `SessionFailedError`, except
  `send_pending`, which still hands out the last records (close_notify or alert) so that the
  peer learns. `reject` and `withhold_evidence` fail the session the same way with the caller's
  cause (they do not raise it). A call made in the wrong state (a client writing before
  VERIFIED, evidence provided twice, an `accept` with nothing received) raises
  `SessionStateError` and changes nothing.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from privproc.errors import (
    CryptoError,
    PrivprocError,
    TooLargeError,
    TruncatedError,
    UsageError,
)
from privproc.ratls.tls import DEFAULT_MAX_BUFFER, ServerIdentity, TlsEndpoint

__all__ = [
    "CLIENT_TRANSITIONS",
    "EXPORTER_LABEL",
    "EXPORTER_LENGTH",
    "MAX_EVIDENCE",
    "REPORT_DATA_PREFIX",
    "SERVER_TRANSITIONS",
    "AttestationError",
    "ClientSession",
    "ClientState",
    "EvidenceNeeded",
    "EvidenceReceived",
    "EvidenceTooLargeError",
    "EvidenceTruncatedError",
    "ProtocolViolationError",
    "RatlsError",
    "ServerSession",
    "ServerState",
    "SessionFailedError",
    "SessionStateError",
    "client_session",
    "encode_evidence_frame",
    "pump",
    "report_data",
    "server_session",
    "transition",
]

EXPORTER_LABEL = b"EXPORTER-privproc-attestation"
EXPORTER_LENGTH = 32
REPORT_DATA_PREFIX = b"privproc ratls v1"
MAX_EVIDENCE = 1 << 20
_LENGTH_SIZE = 4


# --- Errors --------------------------------------------------------------------------------------


class RatlsError(PrivprocError):
    """The attested session failed or cannot do what was asked."""


class SessionStateError(RatlsError):
    """The call, or the change of state, is not allowed in the session's current state."""


class SessionFailedError(SessionStateError):
    """The session failed earlier; its `__cause__` is what failed."""


class ProtocolViolationError(RatlsError):
    """The peer broke the attested-session protocol (e.g. sent data before the evidence)."""


class EvidenceTooLargeError(RatlsError, TooLargeError):
    """An evidence frame announces, or the server is given, more than the allowed size."""


class EvidenceTruncatedError(RatlsError, TruncatedError):
    """The server closed the connection before its evidence frame was complete."""


class AttestationError(RatlsError, CryptoError):
    """Evidence, or getting or verifying it, failed outside the `PrivprocError` contract."""


# --- Events: what a session needs from its caller ------------------------------------------------


@dataclass(frozen=True)
class EvidenceNeeded:
    """Server: the handshake is done and the evidence must go first. Get evidence over
    `report_data` and answer with `ServerSession.provide_evidence` (or `withhold_evidence`)."""

    report_data: bytes


@dataclass(frozen=True)
class EvidenceReceived:
    """Client: the server's evidence frame is complete. Verify `evidence` over `report_data`
    (this connection's, computed here) and answer with `ClientSession.accept` or `reject`."""

    evidence: bytes = field(repr=False)
    report_data: bytes


# --- Binding and framing -------------------------------------------------------------------------


def report_data(exporter: bytes) -> bytes:
    """SHA-512(`REPORT_DATA_PREFIX` || exporter): the 64 bytes the evidence must be over."""
    if len(exporter) != EXPORTER_LENGTH:
        raise UsageError(f"the attestation exporter is {EXPORTER_LENGTH} bytes")
    return hashlib.sha512(REPORT_DATA_PREFIX + exporter).digest()


def encode_evidence_frame(evidence: bytes, *, max_evidence: int = MAX_EVIDENCE) -> bytes:
    if len(evidence) > max_evidence:
        raise EvidenceTooLargeError(f"evidence is at most {max_evidence} bytes")
    return len(evidence).to_bytes(_LENGTH_SIZE, "big") + evidence


# --- State tables --------------------------------------------------------------------------------


class ClientState(enum.Enum):
    HANDSHAKING = "handshaking"
    AWAITING_EVIDENCE = "awaiting evidence"
    EVIDENCE_RECEIVED = "evidence received"
    VERIFIED = "verified"
    CLOSED = "closed"
    FAILED = "failed"


class ServerState(enum.Enum):
    HANDSHAKING = "handshaking"
    EVIDENCE_NEEDED = "evidence needed"
    EVIDENCE_SENT = "evidence sent"
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


_C = ClientState
_S = ServerState

CLIENT_TRANSITIONS: Mapping[ClientState, frozenset[ClientState]] = {
    _C.HANDSHAKING: frozenset({_C.AWAITING_EVIDENCE, _C.CLOSED, _C.FAILED}),
    _C.AWAITING_EVIDENCE: frozenset({_C.EVIDENCE_RECEIVED, _C.CLOSED, _C.FAILED}),
    _C.EVIDENCE_RECEIVED: frozenset({_C.VERIFIED, _C.CLOSED, _C.FAILED}),
    _C.VERIFIED: frozenset({_C.CLOSED, _C.FAILED}),
    _C.CLOSED: frozenset({_C.FAILED}),
    _C.FAILED: frozenset(),
}

SERVER_TRANSITIONS: Mapping[ServerState, frozenset[ServerState]] = {
    _S.HANDSHAKING: frozenset({_S.EVIDENCE_NEEDED, _S.CLOSED, _S.FAILED}),
    _S.EVIDENCE_NEEDED: frozenset({_S.EVIDENCE_SENT, _S.CLOSED, _S.FAILED}),
    _S.EVIDENCE_SENT: frozenset({_S.OPEN, _S.CLOSED, _S.FAILED}),
    _S.OPEN: frozenset({_S.CLOSED, _S.FAILED}),
    _S.CLOSED: frozenset({_S.FAILED}),
    _S.FAILED: frozenset(),
}

State = TypeVar("State", bound=enum.Enum)
Event = TypeVar("Event", EvidenceNeeded, EvidenceReceived)


def transition(table: Mapping[State, frozenset[State]], current: State, target: State) -> State:
    """`target` if the table allows the move from `current`; `SessionStateError` otherwise."""
    if target not in table[current]:
        raise SessionStateError(f"no transition from {current.name} to {target.name}")
    return target


# --- Sessions ------------------------------------------------------------------------------------


def _check_bounds(max_evidence: int, max_buffer: int) -> None:
    """Both sides' limits: evidence within the protocol's bound, and a buffer that holds it."""
    if not 0 <= max_evidence <= MAX_EVIDENCE:
        raise UsageError(f"max_evidence is at most {MAX_EVIDENCE} bytes")
    if max_buffer < max_evidence + _LENGTH_SIZE:
        raise UsageError("max_buffer must hold a whole evidence frame")


class _Session(Generic[State, Event]):
    """What both sides share: the TLS endpoint, the state, the event waiting for its answer and
    failing closed."""

    _FAILED: State
    _CLOSED: State
    _WAITING: State  # the state in which `pending_event` waits for the caller's answer

    def __init__(
        self,
        tls: TlsEndpoint,
        table: Mapping[State, frozenset[State]],
        initial: State,
        max_evidence: int,
    ) -> None:
        self._tls = tls
        self._table: Mapping[State, frozenset[State]] = table
        self._state: State = initial
        self._max_evidence = max_evidence
        self._report_data: bytes | None = None
        self._pending: Event | None = None
        self._cause: BaseException | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def report_data(self) -> bytes | None:
        """SHA-512 over this connection's exporter, once the handshake has completed."""
        return self._report_data

    @property
    def pending_event(self) -> Event | None:
        """The event `receive` returned that still waits for the caller's answer; else None."""
        return self._pending if self._state is self._WAITING else None

    @property
    def peer_closed(self) -> bool:
        return self._tls.peer_closed

    def send_pending(self) -> bytes:
        """Network bytes out. Never raises, so that a failed session's last records leave."""
        return self._tls.send_pending()

    def receive(self, data: bytes) -> list[Event]:
        """Network bytes in; the events they gave rise to (each also `pending_event` until the
        caller answers it)."""
        self._check_alive()
        try:
            self._tls.receive(data)
            return self._advance()
        except Exception as exc:
            self._fail(exc)
            raise

    def close(self) -> None:
        """Send close_notify (when the handshake allows) and move to CLOSED; idempotent."""
        self._check_alive()
        if self._state is self._CLOSED:
            return
        try:
            self._tls.close()
        except Exception as exc:
            self._fail(exc)
            raise
        self._move(self._CLOSED)

    def exporter(self, label: bytes, length: int) -> bytes:
        """This connection's TLS exporter (RFC 8446 §7.5, empty context)."""
        self._check_alive()
        return self._tls.exporter(label, length)

    def _advance(self) -> list[Event]:
        raise NotImplementedError

    def _move(self, target: State) -> None:
        self._state = transition(self._table, self._state, target)
        if target is not self._WAITING:
            self._pending = None  # answered, or the session ended: nothing waits any more

    def _check_alive(self) -> None:
        if self._state is self._FAILED:
            raise SessionFailedError("the attested session has failed") from self._cause

    def _check_waiting(self, answer: str) -> Event:
        """The pending event, if the session waits for `answer`; `SessionStateError` if not."""
        self._check_alive()
        if self._state is not self._WAITING or self._pending is None:
            raise SessionStateError(f"nothing waits for {answer} (state {self._state.name})")
        return self._pending

    def _wait_for_caller(self, event: Event) -> list[Event]:
        self._pending = event
        self._move(self._WAITING)
        return [event]

    def _fail(self, exc: BaseException) -> None:
        if self._state is self._FAILED:
            return
        self._cause = exc
        with contextlib.suppress(PrivprocError):  # TLS failed already; its alert is queued
            self._tls.close()
        self._move(self._FAILED)

    def _bind(self) -> bytes:
        self._report_data = report_data(self._tls.exporter(EXPORTER_LABEL, EXPORTER_LENGTH))
        return self._report_data


class ClientSession(_Session[ClientState, EvidenceReceived]):
    """The client side: has the server's evidence verified before any application data."""

    _FAILED = ClientState.FAILED
    _CLOSED = ClientState.CLOSED
    _WAITING = ClientState.EVIDENCE_RECEIVED

    def __init__(
        self, *, max_evidence: int = MAX_EVIDENCE, max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> None:
        _check_bounds(max_evidence, max_buffer)
        super().__init__(
            TlsEndpoint.client(max_buffer=max_buffer),
            CLIENT_TRANSITIONS,
            ClientState.HANDSHAKING,
            max_evidence,
        )
        self._frame = bytearray()
        self._verified = False
        self.attestation: object = None
        """What the caller's verification returned (given to `accept`), once VERIFIED."""

    def accept(self, attestation: object) -> None:
        """The received evidence is genuine, acceptable and over this session's report_data:
        EVIDENCE_RECEIVED -> VERIFIED. `attestation` is kept as `self.attestation`."""
        self._check_waiting("accept")
        self.attestation = attestation
        self._verified = True
        self._move(ClientState.VERIFIED)

    def reject(self, cause: Exception) -> None:
        """The received evidence failed verification: close_notify goes out, the session is
        FAILED, and later calls raise `SessionFailedError` from `cause`. It does not raise
        `cause`: the caller does."""
        self._check_waiting("reject")
        self._fail(cause)

    def write(self, data: bytes) -> None:
        """Application bytes to the attested server; only when VERIFIED."""
        self._check_alive()
        if self._state is not ClientState.VERIFIED:
            raise SessionStateError(
                f"no application data before the evidence is verified (state {self._state.name})"
            )
        try:
            self._tls.write(data)
        except Exception as exc:
            self._fail(exc)
            raise

    def read(self) -> bytes:
        """Application bytes from the attested server; only once VERIFIED."""
        self._check_alive()
        if not self._verified:
            raise SessionStateError(
                f"no application data before the evidence is verified (state {self._state.name})"
            )
        early, self._frame = bytes(self._frame), bytearray()
        return early + self._tls.read()

    def _advance(self) -> list[EvidenceReceived]:
        tls = self._tls
        if self._state is ClientState.HANDSHAKING and tls.handshake_done:
            self._bind()
            self._move(ClientState.AWAITING_EVIDENCE)
        if self._state is ClientState.AWAITING_EVIDENCE:
            self._frame += tls.read()
            evidence = self._take_evidence()
            if evidence is not None:
                assert self._report_data is not None
                return self._wait_for_caller(EvidenceReceived(evidence, self._report_data))
        elif self._state is ClientState.CLOSED and not self._verified:
            tls.read()  # unverified bytes after close are dropped, never delivered
        # In EVIDENCE_RECEIVED, what follows the evidence stays in TLS (bounded by max_buffer)
        # until the caller accepts.
        return []

    def _take_evidence(self) -> bytes | None:
        """The evidence, once its frame is complete (what follows stays for `read`)."""
        frame = self._frame
        if len(frame) >= _LENGTH_SIZE:
            length = int.from_bytes(frame[:_LENGTH_SIZE], "big")
            if length > self._max_evidence:
                raise EvidenceTooLargeError(
                    f"the evidence frame announces more than {self._max_evidence} bytes"
                )
            end = _LENGTH_SIZE + length
            if len(frame) >= end:
                evidence = bytes(frame[_LENGTH_SIZE:end])
                del frame[:end]  # what follows is application data, delivered once verified
                return evidence
        if self._tls.peer_closed:
            raise EvidenceTruncatedError("the server closed before its evidence was complete")
        return None


class ServerSession(_Session[ServerState, EvidenceNeeded]):
    """The server side: sends its caller's evidence over its report_data before anything else."""

    _FAILED = ServerState.FAILED
    _CLOSED = ServerState.CLOSED
    _WAITING = ServerState.EVIDENCE_NEEDED

    def __init__(
        self,
        identity: ServerIdentity,
        *,
        max_evidence: int = MAX_EVIDENCE,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        _check_bounds(max_evidence, max_buffer)
        super().__init__(
            TlsEndpoint.server(identity, max_buffer=max_buffer),
            SERVER_TRANSITIONS,
            ServerState.HANDSHAKING,
            max_evidence,
        )
        self._opened = False

    def provide_evidence(self, evidence: bytes) -> None:
        """The evidence over `pending_event.report_data`: framed and queued as the first
        application bytes, EVIDENCE_NEEDED -> EVIDENCE_SENT. Evidence that is not bytes
        (`AttestationError`) or larger than `max_evidence` (`EvidenceTooLargeError`) fails the
        session."""
        self._check_waiting("evidence")
        try:
            if not isinstance(evidence, bytes):
                raise AttestationError("the evidence is not bytes")
            self._tls.write(encode_evidence_frame(evidence, max_evidence=self._max_evidence))
        except Exception as exc:
            self._fail(exc)
            raise
        self._move(ServerState.EVIDENCE_SENT)

    def withhold_evidence(self, cause: Exception) -> None:
        """No evidence can be had (the provider failed): close_notify goes out without any,
        the session is FAILED and later calls raise `SessionFailedError` from `cause`. It does
        not raise `cause`: the caller does."""
        self._check_waiting("evidence")
        self._fail(cause)

    def send_pending(self) -> bytes:
        out = self._tls.send_pending()
        if out and self._state is ServerState.EVIDENCE_SENT:
            self._move(ServerState.OPEN)
            self._opened = True
        return out

    def write(self, data: bytes) -> None:
        """Application bytes to the client; from EVIDENCE_SENT on (they follow the evidence)."""
        self._check_alive()
        if self._state not in (ServerState.EVIDENCE_SENT, ServerState.OPEN):
            raise SessionStateError(
                f"application data follows the evidence (state {self._state.name})"
            )
        try:
            self._tls.write(data)
        except Exception as exc:
            self._fail(exc)
            raise

    def read(self) -> bytes:
        """Application bytes from the client; only once OPEN."""
        self._check_alive()
        if not self._opened:
            state = self._state.name
            raise SessionStateError(f"no client data before the evidence is sent (state {state})")
        return self._tls.read()

    def _advance(self) -> list[EvidenceNeeded]:
        tls = self._tls
        if self._state is ServerState.HANDSHAKING and tls.handshake_done:
            self._refuse_early_data()
            return self._wait_for_caller(EvidenceNeeded(self._bind()))
        if self._state in (ServerState.EVIDENCE_NEEDED, ServerState.EVIDENCE_SENT):
            self._refuse_early_data()
        elif self._state is ServerState.CLOSED and not self._opened:
            tls.read()  # nothing from the client counts before the evidence left
        return []

    def _refuse_early_data(self) -> None:
        if self._tls.read():
            raise ProtocolViolationError("the client sent application data before the evidence")


def client_session(
    *, max_evidence: int = MAX_EVIDENCE, max_buffer: int = DEFAULT_MAX_BUFFER
) -> ClientSession:
    """A client session; its ClientHello is waiting in `send_pending`."""
    return ClientSession(max_evidence=max_evidence, max_buffer=max_buffer)


def server_session(
    identity: ServerIdentity,
    *,
    max_evidence: int = MAX_EVIDENCE,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> ServerSession:
    """A server session for one connection; share `identity` across connections."""
    return ServerSession(identity, max_evidence=max_evidence, max_buffer=max_buffer)


# --- Testing aid ---------------------------------------------------------------------------------


class Peer(Protocol):
    """Anything with sans-IO network ends: sessions and bare `TlsEndpoint`s."""

    def receive(self, data: bytes) -> object: ...

    def send_pending(self) -> bytes: ...


def pump(a: Peer, b: Peer, *, max_rounds: int = 100) -> int:
    """Move bytes both ways between two in-memory peers until neither has anything to send;
    return how many bytes moved. Errors from either side's `receive` propagate; the events it
    returns are dropped (a session keeps the one it waits on in `pending_event`), so a pump
    stops where a session waits for its caller (`privproc.net.ratls.pump_attested` answers)."""
    moved = 0
    for _ in range(max_rounds):
        out_a = a.send_pending()
        if out_a:
            b.receive(out_a)
        out_b = b.send_pending()
        if out_b:
            a.receive(out_b)
        if not out_a and not out_b:
            return moved
        moved += len(out_a) + len(out_b)
    raise UsageError(f"the peers were still talking after {max_rounds} rounds")
