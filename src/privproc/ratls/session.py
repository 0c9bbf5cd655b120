"""The attested session: TLS 1.3 whose server proves, with evidence bound to the connection's
exporter, which code it runs before the client sends it anything.

    exporter    = TLS-Exporter("EXPORTER-privproc-attestation", "", 32)     (RFC 8446 §7.5)
    report_data = SHA-512("privproc ratls v1" || exporter)                  (64 bytes)
    evidence frame, the server's first application bytes:
        uint32 length (big-endian) || evidence[length]                      (length <= 1 MiB)

The server asks an `EvidenceProvider` for evidence over its report_data; the client computes
the same report_data from its own exporter and hands both to an `EvidenceVerifier`. A
man-in-the-middle who terminates TLS on both sides has two connections with two different
exporters, so evidence relayed from the genuine server names the wrong report_data.

Rules of this module:
- Sans-IO, on top of `TlsEndpoint`: `receive`, `send_pending`, `write`, `read`, `close`.
- States and their transitions are explicit tables (`CLIENT_TRANSITIONS`, `SERVER_TRANSITIONS`);
  every change of state goes through `transition`, which refuses any move the table lacks.

      client:  HANDSHAKING -> AWAITING_EVIDENCE -> VERIFIED -> CLOSED
      server:  HANDSHAKING -> EVIDENCE_SENT -> OPEN -> CLOSED
      (either side: every state before CLOSED -> CLOSED or FAILED; CLOSED -> FAILED;
       FAILED is terminal)

  The server is in EVIDENCE_SENT once its evidence is queued and OPEN once `send_pending` has
  handed it to the transport.
- The client writes and reads application data only when VERIFIED (after it closes, it may
  still read what a verified peer sends); the server writes from EVIDENCE_SENT on, and treats
  any client application data before it is OPEN as a protocol violation.
- Any failure (TLS, framing, the verifier, the provider, the peer's conduct) sends close_notify
  where TLS allows it and moves the session to FAILED; the failing call raises the cause, every
  later call raises `SessionFailedError`, except `send_pending`, which still hands out the last
  records (close_notify or alert) so that the peer learns. A call made in the wrong state (a
  client writing before VERIFIED) raises `SessionStateError` and changes nothing.
- Verifier and provider errors pass through when they are `PrivprocError`s; anything else they
  raise or return becomes an `AttestationError`.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
from collections.abc import Callable, Mapping
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
    "EvidenceProvider",
    "EvidenceTooLargeError",
    "EvidenceTruncatedError",
    "EvidenceVerifier",
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

EvidenceProvider = Callable[[bytes], bytes]
"""`(report_data) -> evidence`: the enclave's attestation over 64 bytes of report data."""

EvidenceVerifier = Callable[[bytes, bytes], object]
"""`(evidence, report_data) -> attestation`: raises a `PrivprocError` unless the evidence is
genuine, acceptable and over exactly this report_data; returns what it learnt."""


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
    """An evidence frame announces, or a provider returns, more than the allowed size."""


class EvidenceTruncatedError(RatlsError, TruncatedError):
    """The server closed the connection before its evidence frame was complete."""


class AttestationError(RatlsError, CryptoError):
    """The evidence provider or verifier failed outside the `PrivprocError` contract."""


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
    VERIFIED = "verified"
    CLOSED = "closed"
    FAILED = "failed"


class ServerState(enum.Enum):
    HANDSHAKING = "handshaking"
    EVIDENCE_SENT = "evidence sent"
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


_C = ClientState
_S = ServerState

CLIENT_TRANSITIONS: Mapping[ClientState, frozenset[ClientState]] = {
    _C.HANDSHAKING: frozenset({_C.AWAITING_EVIDENCE, _C.CLOSED, _C.FAILED}),
    _C.AWAITING_EVIDENCE: frozenset({_C.VERIFIED, _C.CLOSED, _C.FAILED}),
    _C.VERIFIED: frozenset({_C.CLOSED, _C.FAILED}),
    _C.CLOSED: frozenset({_C.FAILED}),
    _C.FAILED: frozenset(),
}

SERVER_TRANSITIONS: Mapping[ServerState, frozenset[ServerState]] = {
    _S.HANDSHAKING: frozenset({_S.EVIDENCE_SENT, _S.CLOSED, _S.FAILED}),
    _S.EVIDENCE_SENT: frozenset({_S.OPEN, _S.CLOSED, _S.FAILED}),
    _S.OPEN: frozenset({_S.CLOSED, _S.FAILED}),
    _S.CLOSED: frozenset({_S.FAILED}),
    _S.FAILED: frozenset(),
}

State = TypeVar("State", bound=enum.Enum)


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


class _Session(Generic[State]):
    """What both sides share: the TLS endpoint, the state and failing closed."""

    _FAILED: State
    _CLOSED: State

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
        self._cause: BaseException | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def report_data(self) -> bytes | None:
        """SHA-512 over this connection's exporter, once the handshake has completed."""
        return self._report_data

    @property
    def peer_closed(self) -> bool:
        return self._tls.peer_closed

    def send_pending(self) -> bytes:
        """Network bytes out. Never raises, so that a failed session's last records leave."""
        return self._tls.send_pending()

    def receive(self, data: bytes) -> None:
        """Network bytes in."""
        self._check_alive()
        try:
            self._tls.receive(data)
            self._advance()
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

    def _advance(self) -> None:
        raise NotImplementedError

    def _move(self, target: State) -> None:
        self._state = transition(self._table, self._state, target)

    def _check_alive(self) -> None:
        if self._state is self._FAILED:
            raise SessionFailedError("the attested session has failed") from self._cause

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


class ClientSession(_Session[ClientState]):
    """The client side: verifies the server's evidence before any application data."""

    _FAILED = ClientState.FAILED
    _CLOSED = ClientState.CLOSED

    def __init__(
        self,
        verifier: EvidenceVerifier,
        *,
        max_evidence: int = MAX_EVIDENCE,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        _check_bounds(max_evidence, max_buffer)
        super().__init__(
            TlsEndpoint.client(max_buffer=max_buffer),
            CLIENT_TRANSITIONS,
            ClientState.HANDSHAKING,
            max_evidence,
        )
        self._verifier = verifier
        self._frame = bytearray()
        self._verified = False
        self.attestation: object = None
        """What the verifier returned, once VERIFIED."""

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

    def _advance(self) -> None:
        tls = self._tls
        if self._state is ClientState.HANDSHAKING and tls.handshake_done:
            self._bind()
            self._move(ClientState.AWAITING_EVIDENCE)
        if self._state is ClientState.AWAITING_EVIDENCE:
            self._frame += tls.read()
            self._try_verify()
        elif self._state is ClientState.CLOSED and not self._verified:
            tls.read()  # unverified bytes after close are dropped, never delivered

    def _try_verify(self) -> None:
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
                self._verify(evidence)
                return
        if self._tls.peer_closed:
            raise EvidenceTruncatedError("the server closed before its evidence was complete")

    def _verify(self, evidence: bytes) -> None:
        assert self._report_data is not None
        try:
            attestation = self._verifier(evidence, self._report_data)
        except PrivprocError:
            raise
        except Exception as exc:
            raise AttestationError("the evidence verifier failed unexpectedly") from exc
        self.attestation = attestation
        self._verified = True
        self._move(ClientState.VERIFIED)


class ServerSession(_Session[ServerState]):
    """The server side: sends evidence over its report_data before anything else."""

    _FAILED = ServerState.FAILED
    _CLOSED = ServerState.CLOSED

    def __init__(
        self,
        identity: ServerIdentity,
        provider: EvidenceProvider,
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
        self._provider = provider
        self._opened = False

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

    def _advance(self) -> None:
        tls = self._tls
        if self._state is ServerState.HANDSHAKING and tls.handshake_done:
            self._refuse_early_data()
            self._send_evidence(self._bind())
        elif self._state is ServerState.EVIDENCE_SENT:
            self._refuse_early_data()
        elif self._state is ServerState.CLOSED and not self._opened:
            tls.read()  # nothing from the client counts before the evidence left

    def _refuse_early_data(self) -> None:
        if self._tls.read():
            raise ProtocolViolationError("the client sent application data before the evidence")

    def _send_evidence(self, data: bytes) -> None:
        try:
            evidence = self._provider(data)
        except PrivprocError:
            raise
        except Exception as exc:
            raise AttestationError("the evidence provider failed unexpectedly") from exc
        if not isinstance(evidence, bytes):
            raise AttestationError("the evidence provider returned something other than bytes")
        self._tls.write(encode_evidence_frame(evidence, max_evidence=self._max_evidence))
        self._move(ServerState.EVIDENCE_SENT)


def client_session(
    verifier: EvidenceVerifier,
    *,
    max_evidence: int = MAX_EVIDENCE,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> ClientSession:
    """A client session; its ClientHello is waiting in `send_pending`."""
    return ClientSession(verifier, max_evidence=max_evidence, max_buffer=max_buffer)


def server_session(
    identity: ServerIdentity,
    provider: EvidenceProvider,
    *,
    max_evidence: int = MAX_EVIDENCE,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> ServerSession:
    """A server session for one connection; share `identity` across connections."""
    return ServerSession(identity, provider, max_evidence=max_evidence, max_buffer=max_buffer)


# --- Testing aid ---------------------------------------------------------------------------------


class Peer(Protocol):
    """Anything with sans-IO network ends: sessions and bare `TlsEndpoint`s."""

    def receive(self, data: bytes) -> None: ...

    def send_pending(self) -> bytes: ...


def pump(a: Peer, b: Peer, *, max_rounds: int = 100) -> int:
    """Move bytes both ways between two in-memory peers until neither has anything to send;
    return how many bytes moved. Errors from either side's `receive` propagate."""
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
