"""Attested TLS: TLS 1.3 endpoints over memory BIOs, the evidence binding to the exporter, the
session state tables, and every way a session must fail closed with a typed error.

Evidence here is a stand-in: an HMAC over the report data under a test key. It is bound the
same way real evidence is (through report_data), which is all these tests are about."""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from OpenSSL import SSL

from privproc.errors import PrivprocError, TooLargeError, TruncatedError, UsageError
from privproc.net.ratls import check_evidence, pump_attested, supply_evidence
from privproc.ratls.session import (
    CLIENT_TRANSITIONS,
    MAX_EVIDENCE,
    SERVER_TRANSITIONS,
    AttestationError,
    ClientSession,
    ClientState,
    EvidenceNeeded,
    EvidenceReceived,
    EvidenceTooLargeError,
    EvidenceTruncatedError,
    Peer,
    ProtocolViolationError,
    ServerSession,
    ServerState,
    SessionFailedError,
    SessionStateError,
    client_session,
    encode_evidence_frame,
    pump,
    report_data,
    server_session,
    transition,
)
from privproc.ratls.tls import (
    ALPN,
    ServerIdentity,
    TlsAlertError,
    TlsEndpoint,
    TlsError,
    TlsLimitError,
    TlsProtocolError,
    TlsStateError,
)

IDENTITY = ServerIdentity.generate()
OTHER_IDENTITY = ServerIdentity.generate()
LABEL = b"EXPORTER-privproc-attestation"

# --- A stand-in for evidence --------------------------------------------------------------------

TEST_KEY = b"privproc ratls test key (stands in for the AMD signing chain)"
MEASUREMENT = hashlib.sha256(b"the enclave image").digest()
MAGIC = b"FAKE"


class FakeEvidenceError(PrivprocError):
    """What a real verifier raises when evidence does not check out."""


@dataclass(frozen=True)
class FakeAttestation:
    measurement: bytes
    report_data: bytes


def fake_provider(data: bytes) -> bytes:
    assert len(data) == 64
    return MAGIC + MEASUREMENT + hmac.new(TEST_KEY, MEASUREMENT + data, "sha256").digest()


def fake_verifier(evidence: bytes, data: bytes) -> FakeAttestation:
    if len(evidence) != 4 + 32 + 32 or not evidence.startswith(MAGIC):
        raise FakeEvidenceError("the evidence is malformed")
    measurement, mac = evidence[4:36], evidence[36:]
    if not hmac.compare_digest(mac, hmac.new(TEST_KEY, measurement + data, "sha256").digest()):
        raise FakeEvidenceError("the evidence is not over this connection's report data")
    return FakeAttestation(measurement, data)


class Recorder:
    """A provider that remembers what it was asked and what it answered."""

    def __init__(self, inner: Callable[[bytes], bytes] = fake_provider) -> None:
        self.inner = inner
        self.asked: list[bytes] = []
        self.answered: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        self.asked.append(data)
        evidence = self.inner(data)
        self.answered.append(evidence)
        return evidence


def state(session: ClientSession | ServerSession) -> ClientState | ServerState:
    """The session's state, read afresh (mypy would otherwise keep an earlier narrowing)."""
    return session.state


def drive(
    client: Peer,
    server: Peer,
    provider: Callable[[bytes], Any] = fake_provider,
    verifier: Callable[[bytes, bytes], object] = fake_verifier,
) -> None:
    """`pump`, answering the sessions among the two (the other may be a bare or rogue peer)
    with `provider` and `verifier`, as a party's shell does, until nothing moves."""
    for _ in range(10):
        pump(client, server)
        if isinstance(server, ServerSession) and supply_evidence(server, provider):
            continue
        if isinstance(client, ClientSession) and check_evidence(client, verifier):
            continue
        return
    raise AssertionError("the sessions kept asking")


def attested_pair(
    provider: Callable[[bytes], bytes] = fake_provider,
    identity: ServerIdentity = IDENTITY,
) -> tuple[ClientSession, ServerSession]:
    client = client_session()
    server = server_session(identity)
    pump_attested(client, server, provider, fake_verifier)
    return client, server


def waiting_pair() -> tuple[ClientSession, ServerSession]:
    """A pair whose server sent its evidence and whose client has it, not yet answered."""
    client, server = client_session(), server_session(IDENTITY)
    pump(client, server)
    assert supply_evidence(server, fake_provider)
    pump(client, server)
    assert state(client) is ClientState.EVIDENCE_RECEIVED
    return client, server


def needing_server() -> tuple[TlsEndpoint, ServerSession]:
    """A server that completed the handshake with a bare TLS client and waits for evidence."""
    bare = TlsEndpoint.client()
    server = server_session(IDENTITY)
    pump(bare, server)
    assert state(server) is ServerState.EVIDENCE_NEEDED
    return bare, server


def rogue_server(client: ClientSession) -> TlsEndpoint:
    """A bare TLS server that completes the handshake with `client` and sends nothing yet."""
    rogue = TlsEndpoint.server(OTHER_IDENTITY)
    pump(client, rogue)
    assert rogue.handshake_done
    assert state(client) is ClientState.AWAITING_EVIDENCE
    return rogue


def assert_failed_for_good(session: ClientSession | ServerSession) -> None:
    calls: list[Callable[[], object]] = [
        lambda: session.receive(b"\x17\x03\x03\x00\x01x"),
        lambda: session.write(b"more"),
        session.read,
        session.close,
        lambda: session.exporter(LABEL, 32),
    ]
    if isinstance(session, ClientSession):
        calls += [lambda: session.accept(None), lambda: session.reject(FakeEvidenceError("x"))]
    else:
        calls += [
            lambda: session.provide_evidence(b"late"),
            lambda: session.withhold_evidence(FakeEvidenceError("x")),
        ]
    assert session.pending_event is None
    for call in calls:
        with pytest.raises(SessionFailedError):
            call()
    session.send_pending()  # never raises: the last records (close_notify, alert) still leave
    assert session.send_pending() == b""


# --- TLS endpoints ------------------------------------------------------------------------------


def tls_pair() -> tuple[TlsEndpoint, TlsEndpoint]:
    client, server = TlsEndpoint.client(), TlsEndpoint.server(IDENTITY)
    pump(client, server)
    return client, server


def test_tls13_handshake_and_application_data_both_ways() -> None:
    client, server = tls_pair()
    assert client.handshake_done
    assert server.handshake_done
    assert client.cipher == server.cipher
    assert client.cipher is not None
    assert client.cipher.startswith("TLS_")
    # OpenSSL 4.0's default groups put the hybrid X25519MLKEM768 first: post-quantum key exchange.
    assert client.group == server.group
    assert client.group is not None
    assert "MLKEM" in client.group
    client.write(b"ping")
    server.write(b"pong" * 100_000)
    pump(client, server)
    assert server.read() == b"ping"
    assert client.read() == b"pong" * 100_000
    assert server.read() == b""
    assert client.read() == b""


def test_exporters_agree_across_the_connection_and_differ_between_connections() -> None:
    client, server = tls_pair()
    other_client, other_server = tls_pair()
    mine = client.exporter(LABEL, 32)
    assert len(mine) == 32
    assert server.exporter(LABEL, 32) == mine
    assert other_client.exporter(LABEL, 32) == other_server.exporter(LABEL, 32) != mine
    assert client.exporter(b"EXPORTER-another-label", 32) != mine
    assert client.exporter(LABEL, 64)[:32] != mine  # the length is part of HKDF-Expand-Label
    # In TLS 1.3 "no context" is "empty context": pyOpenSSL's context=None gives the same bytes.
    assert client._conn.export_keying_material(LABEL, 32) == mine


def test_exporter_refuses_before_the_handshake_and_bad_arguments() -> None:
    client = TlsEndpoint.client()
    with pytest.raises(TlsStateError):
        client.exporter(LABEL, 32)
    client, _ = tls_pair()
    with pytest.raises(UsageError):
        client.exporter(b"", 32)
    with pytest.raises(UsageError):
        client.exporter(b"x" * 250, 32)
    with pytest.raises(UsageError):
        client.exporter(LABEL, 0)
    with pytest.raises(UsageError):
        client.exporter(LABEL, 255 * 32 + 1)


def test_close_notify_both_ways() -> None:
    client, server = tls_pair()
    server.write(b"last words")
    server.close()
    pump(client, server)
    assert client.peer_closed
    assert not server.peer_closed
    assert client.read() == b"last words"
    client.close()
    pump(client, server)
    assert server.peer_closed
    with pytest.raises(TlsStateError):
        client.write(b"after close")


def test_contexts_are_shared() -> None:
    a, b = TlsEndpoint.client(), TlsEndpoint.client()
    assert a._conn.get_context() is b._conn.get_context()
    s, t = TlsEndpoint.server(IDENTITY), TlsEndpoint.server(IDENTITY)
    assert s._conn.get_context() is t._conn.get_context()
    assert TlsEndpoint.server(OTHER_IDENTITY)._conn.get_context() is not s._conn.get_context()


def test_ed25519_identity() -> None:
    identity = ServerIdentity.generate("ed25519")
    client, server = attested_pair(identity=identity)
    assert state(client) is ClientState.VERIFIED
    assert state(server) is ServerState.OPEN


def test_endpoint_construction_is_checked() -> None:
    from privproc.ratls.tls import Role

    with pytest.raises(UsageError):
        TlsEndpoint(Role.SERVER)
    with pytest.raises(UsageError):
        TlsEndpoint(Role.CLIENT, IDENTITY)
    with pytest.raises(UsageError):
        TlsEndpoint.client(max_buffer=1000)
    with pytest.raises(UsageError):
        ServerIdentity.generate("rsa")  # type: ignore[arg-type]


class RawPeer:
    """A pyOpenSSL connection with its own context, for peers unlike ours."""

    def __init__(self, context: SSL.Context, *, server: bool) -> None:
        self.conn = SSL.Connection(context)
        if server:
            self.conn.set_accept_state()
        else:
            self.conn.set_connect_state()
        self.error: SSL.Error | None = None
        self._step()

    def _step(self) -> None:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            self.error = exc

    def receive(self, data: bytes) -> None:
        self.conn.bio_write(data)
        self._step()

    def send_pending(self) -> bytes:
        return self.drain(self.conn)

    @staticmethod
    def drain(conn: SSL.Connection) -> bytes:
        out = b""
        while True:
            try:
                out += conn.bio_read(65536)
            except SSL.WantReadError:
                return out


def test_tls12_only_client_is_refused() -> None:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.set_alpn_protos([ALPN])
    old = RawPeer(context, server=False)
    server = server_session(IDENTITY)
    with pytest.raises(TlsProtocolError) as info:
        pump(old, server)
    assert info.value.alert == 70  # protocol_version
    assert state(server) is ServerState.FAILED
    old.receive(server.send_pending())
    assert old.error is not None  # it got the alert


def test_tls12_only_server_is_refused() -> None:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate(IDENTITY.certificate)
    context.use_privatekey(IDENTITY.private_key)
    old = RawPeer(context, server=True)
    client = client_session()
    with pytest.raises(TlsAlertError) as info:
        pump(client, old)
    assert info.value.alert == 70
    assert state(client) is ClientState.FAILED
    assert client.attestation is None


@pytest.mark.parametrize("offer", [None, [b"h2", b"http/1.1"]])
def test_a_client_without_our_alpn_is_refused(offer: list[bytes] | None) -> None:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if offer is not None:
        context.set_alpn_protos(offer)
    foreign = RawPeer(context, server=False)
    server = server_session(IDENTITY)
    with pytest.raises(TlsProtocolError, match="ALPN"):
        pump(foreign, server)
    assert state(server) is ServerState.FAILED


def test_a_server_without_our_alpn_is_refused() -> None:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(IDENTITY.certificate)
    context.use_privatekey(IDENTITY.private_key)
    foreign = RawPeer(context, server=True)
    client = client_session()
    with pytest.raises(TlsProtocolError, match="ALPN"):
        pump(client, foreign)
    assert state(client) is ClientState.FAILED


def test_sessions_are_never_resumed() -> None:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_alpn_protos([ALPN])
    context.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
    first = RawPeer(context, server=False)
    full_hello = first.send_pending()
    server = TlsEndpoint.server(IDENTITY)
    server.receive(full_hello)
    full_flight = server.send_pending()
    first.receive(full_flight)
    pump(first, server)
    with pytest.raises(SSL.WantReadError):
        first.conn.recv(1)  # takes in whatever tickets the server sent
    session = first.conn.get_session()
    assert session is not None

    again = SSL.Connection(context)
    again.set_session(session)
    again.set_connect_state()
    with pytest.raises(SSL.WantReadError):
        again.do_handshake()
    hello = RawPeer.drain(again)
    assert len(hello) > len(full_hello)  # it offers a pre-shared key
    fresh = TlsEndpoint.server(IDENTITY)
    fresh.receive(hello)
    # A full handshake again: the flight carries a certificate and its signature.
    assert len(fresh.send_pending()) >= len(full_flight) - 64


def test_tampered_application_record_is_a_typed_error() -> None:
    client, server = attested_pair()
    client.write(b"a private prompt")
    record = bytearray(client.send_pending())
    record[-5] ^= 0x01
    with pytest.raises(TlsProtocolError) as info:
        server.receive(bytes(record))
    assert info.value.alert == 20  # bad_record_mac
    assert state(server) is ServerState.FAILED
    with pytest.raises(TlsAlertError) as peer:
        client.receive(server.send_pending())
    assert peer.value.alert == 20
    assert_failed_for_good(server)
    assert_failed_for_good(client)


@pytest.mark.parametrize("flight", range(4))
def test_any_flipped_handshake_byte_is_a_typed_error(flight: int) -> None:
    """Flights: ClientHello; the server's flight; client Finished; tickets and the evidence."""
    outcomes: set[str] = set()
    for position in range(0, 1800, 11):
        client = client_session()
        server = server_session(IDENTITY)
        sent = 0
        try:
            for _ in range(10):
                moved = False
                for source, sink in ((client, server), (server, client)):
                    data = source.send_pending()
                    if not data:
                        continue
                    moved = True
                    if sent == flight:
                        flipped = bytearray(data)
                        flipped[position % len(flipped)] ^= 0x01
                        data = bytes(flipped)
                    sent += 1
                    sink.receive(data)
                    supply_evidence(server, fake_provider)  # as the enclave's shell does
                    check_evidence(client, fake_verifier)
                if not moved:
                    break
        except TlsError as exc:
            outcomes.add(type(exc).__name__)
        # Either a typed error, or a length field grew and a side still waits: never verified.
        assert state(client) is not ClientState.VERIFIED
    assert outcomes


# --- The attested session -----------------------------------------------------------------------


def test_genuine_session_verifies_and_data_flows_both_ways() -> None:
    recorder = Recorder()
    client, server = attested_pair(recorder)
    assert state(client) is ClientState.VERIFIED
    assert state(server) is ServerState.OPEN
    assert isinstance(client.attestation, FakeAttestation)
    assert client.attestation.measurement == MEASUREMENT
    # The binding, computed independently of the module.
    exporter = server.exporter(LABEL, 32)
    expected = hashlib.sha512(b"privproc ratls v1" + exporter).digest()
    assert recorder.asked == [expected]
    assert client.report_data == server.report_data == expected == report_data(exporter)
    assert client.attestation.report_data == expected

    client.write(b"prompt")
    pump(client, server)
    assert server.read() == b"prompt"
    server.write(b"completion" * 50_000)
    pump(client, server)
    assert client.read() == b"completion" * 50_000

    client.close()
    pump(client, server)
    assert state(client) is ClientState.CLOSED
    assert server.peer_closed
    server.close()
    pump(client, server)
    assert state(server) is ServerState.CLOSED
    assert client.peer_closed


def test_report_data_differs_between_sessions() -> None:
    a, _ = attested_pair()
    b, _ = attested_pair()
    assert a.report_data is not None
    assert b.report_data is not None
    assert a.report_data != b.report_data


def test_evidence_frame_on_the_wire() -> None:
    recorder = Recorder()
    bare, server = needing_server()
    assert bare.read() == b""  # nothing before the evidence
    drive(bare, server, recorder)
    evidence = recorder.answered[0]
    assert bare.read() == len(evidence).to_bytes(4, "big") + evidence
    assert encode_evidence_frame(evidence) == len(evidence).to_bytes(4, "big") + evidence


def test_server_data_right_behind_the_evidence_is_delivered_after_verification() -> None:
    client = client_session()
    server = server_session(IDENTITY)
    assert server.receive(client.send_pending()) == []
    assert client.receive(server.send_pending()) == []
    assert state(client) is ClientState.AWAITING_EVIDENCE
    needed = server.receive(client.send_pending())  # the client's Finished: evidence needed
    assert state(server) is ServerState.EVIDENCE_NEEDED
    assert needed == [EvidenceNeeded(server.report_data or b"")]
    assert server.pending_event == needed[0]
    with pytest.raises(SessionStateError):
        server.write(b"before the evidence")
    evidence = fake_provider(needed[0].report_data)
    server.provide_evidence(evidence)
    assert state(server) is ServerState.EVIDENCE_SENT
    assert server.pending_event is None
    server.write(b"hello, verified client")
    received = client.receive(server.send_pending())  # evidence and data in one chunk
    assert state(server) is ServerState.OPEN
    assert state(client) is ClientState.EVIDENCE_RECEIVED
    # The event names the client's own report_data, which it computed from its exporter.
    assert received == [EvidenceReceived(evidence, client.report_data or b"")]
    assert client.report_data == server.report_data
    assert client.pending_event == received[0]
    with pytest.raises(SessionStateError):
        client.read()  # the data behind the evidence waits for the verdict
    assert client.receive(b"") == []  # the event is not repeated
    client.accept(fake_verifier(received[0].evidence, received[0].report_data))
    assert state(client) is ClientState.VERIFIED
    assert client.pending_event is None
    assert isinstance(client.attestation, FakeAttestation)
    assert client.read() == b"hello, verified client"


def test_replayed_evidence_fails_before_any_application_data() -> None:
    first = Recorder()
    attested_pair(first)
    stale = first.answered[0]
    client = client_session()
    server = server_session(IDENTITY)
    with pytest.raises(FakeEvidenceError):
        drive(client, server, lambda _data: stale)
    assert state(client) is ClientState.FAILED
    assert client.attestation is None
    with pytest.raises(SessionFailedError):
        client.write(b"a private prompt")
    pump(client, server)  # the client's close_notify reaches the server
    assert server.peer_closed
    assert server.read() == b""  # the server received nothing


def test_verifier_failure_closes_the_session() -> None:
    def refusing(_evidence: bytes, _data: bytes) -> object:
        raise FakeEvidenceError("measurement not in the transparency log")

    client = client_session()
    server = server_session(IDENTITY)
    with pytest.raises(FakeEvidenceError):
        drive(client, server, verifier=refusing)
    assert state(client) is ClientState.FAILED
    goodbye = client.send_pending()
    assert goodbye  # close_notify
    server.receive(goodbye)
    assert server.peer_closed
    assert server.read() == b""
    with pytest.raises(SessionFailedError) as info:
        client.receive(b"")
    assert isinstance(info.value.__cause__, FakeEvidenceError)
    assert_failed_for_good(client)


def test_unexpected_verifier_exception_becomes_attestation_error() -> None:
    def broken(_evidence: bytes, _data: bytes) -> object:
        raise ValueError("a bug in the verifier")

    client = client_session()
    with pytest.raises(AttestationError) as info:
        pump_attested(client, server_session(IDENTITY), fake_provider, broken)
    assert isinstance(info.value.__cause__, ValueError)
    assert state(client) is ClientState.FAILED
    with pytest.raises(SessionFailedError) as failed:
        client.write(b"a private prompt")
    assert failed.value.__cause__ is info.value


def test_man_in_the_middle_relaying_genuine_evidence_fails() -> None:
    # The attacker even holds the genuine server's TLS key: the exporter still differs, because
    # it comes from each connection's own key exchange.
    upstream, genuine = needing_server()
    drive(upstream, genuine)
    relayed = upstream.read()
    assert fake_verifier(relayed[4:], report_data(upstream.exporter(LABEL, 32)))  # genuine

    victim = client_session()
    downstream = TlsEndpoint.server(IDENTITY)
    pump(victim, downstream)
    assert state(victim) is ClientState.AWAITING_EVIDENCE
    assert downstream.exporter(LABEL, 32) != upstream.exporter(LABEL, 32)
    downstream.write(relayed)
    pump(victim, downstream)
    received = victim.pending_event
    assert received is not None
    assert received.evidence == relayed[4:]
    assert received.report_data == report_data(downstream.exporter(LABEL, 32))  # not upstream's
    with pytest.raises(FakeEvidenceError):
        drive(victim, downstream)
    assert state(victim) is ClientState.FAILED
    pump(victim, downstream)
    assert downstream.read() == b""
    assert downstream.peer_closed


@pytest.mark.parametrize(
    ("frame", "close", "error"),
    [
        (b"\x00\x00", True, EvidenceTruncatedError),  # a partial length
        (b"", True, EvidenceTruncatedError),  # nothing at all
        ((100).to_bytes(4, "big") + b"x" * 50, True, EvidenceTruncatedError),
        ((MAX_EVIDENCE + 1).to_bytes(4, "big"), False, EvidenceTooLargeError),
        (b"\xff\xff\xff\xff" + b"x" * 100, False, EvidenceTooLargeError),
        (encode_evidence_frame(b""), False, FakeEvidenceError),
        (encode_evidence_frame(b"garbage" * 10), False, FakeEvidenceError),
        (encode_evidence_frame(MAGIC + b"\x00" * 64), False, FakeEvidenceError),
    ],
)
def test_bad_evidence_frames_fail_with_typed_errors(
    frame: bytes, close: bool, error: type[PrivprocError]
) -> None:
    client = client_session()
    rogue = rogue_server(client)
    if frame:
        rogue.write(frame)
    if close:
        rogue.close()
    with pytest.raises(error):
        drive(client, rogue)
    assert state(client) is ClientState.FAILED
    assert_failed_for_good(client)


def test_frame_errors_are_also_the_generic_decode_errors() -> None:
    assert issubclass(EvidenceTruncatedError, TruncatedError)
    assert issubclass(EvidenceTooLargeError, TooLargeError)


def test_incomplete_frame_waits_and_write_is_refused() -> None:
    client = client_session()
    rogue = rogue_server(client)
    rogue.write((100).to_bytes(4, "big") + b"x" * 50)
    pump(client, rogue)
    assert state(client) is ClientState.AWAITING_EVIDENCE
    with pytest.raises(SessionStateError):
        client.write(b"too early")
    with pytest.raises(SessionStateError):
        client.read()
    assert state(client) is ClientState.AWAITING_EVIDENCE  # refused, not failed
    assert client.pending_event is None


def test_client_limit_on_evidence_size() -> None:
    client = client_session(max_evidence=16)
    server = server_session(IDENTITY)
    with pytest.raises(EvidenceTooLargeError):
        drive(client, server)
    assert state(client) is ClientState.FAILED


@pytest.mark.parametrize(
    ("provider", "error"),
    [
        (lambda _data: b"x" * (MAX_EVIDENCE + 1), EvidenceTooLargeError),
        (lambda _data: "not bytes", AttestationError),
        (lambda _data: 1 // 0, AttestationError),
    ],
)
def test_provider_failures_fail_the_server(
    provider: Callable[[bytes], bytes], error: type[PrivprocError]
) -> None:
    client = client_session()
    server = server_session(IDENTITY)
    with pytest.raises(error):
        drive(client, server, provider)
    assert state(server) is ServerState.FAILED
    # The client sees a close without evidence.
    with pytest.raises(EvidenceTruncatedError):
        client.receive(server.send_pending())
    assert_failed_for_good(server)


def test_server_refuses_client_data_in_the_finished_flight() -> None:
    bare = TlsEndpoint.client()
    server = server_session(IDENTITY)
    server.receive(bare.send_pending())
    bare.receive(server.send_pending())
    assert bare.handshake_done  # a TLS 1.3 client may write now; an attested one must not
    bare.write(b"early prompt")
    with pytest.raises(ProtocolViolationError):
        server.receive(bare.send_pending())
    assert state(server) is ServerState.FAILED
    bare.receive(server.send_pending())
    assert bare.read() == b""  # no evidence went out
    assert bare.peer_closed


@pytest.mark.parametrize("provided", [False, True], ids=["evidence needed", "evidence queued"])
def test_server_refuses_client_data_before_its_evidence_left(provided: bool) -> None:
    bare = TlsEndpoint.client()
    server = server_session(IDENTITY)
    server.receive(bare.send_pending())
    bare.receive(server.send_pending())
    server.receive(bare.send_pending())
    assert state(server) is ServerState.EVIDENCE_NEEDED
    if provided:
        server.provide_evidence(fake_provider(server.report_data or b""))
        assert state(server) is ServerState.EVIDENCE_SENT  # queued, not yet handed out
    with pytest.raises(SessionStateError):
        server.read()
    bare.write(b"early prompt")
    with pytest.raises(ProtocolViolationError):
        server.receive(bare.send_pending())
    assert state(server) is ServerState.FAILED
    assert_failed_for_good(server)


def test_closing_before_verification_delivers_nothing() -> None:
    client = client_session()
    server = server_session(IDENTITY)
    server.receive(client.send_pending())
    client.receive(server.send_pending())
    client.close()
    assert state(client) is ClientState.CLOSED
    drive(client, server)  # the server's evidence arrives after the close
    assert state(server) is ServerState.OPEN
    assert state(client) is ClientState.CLOSED
    assert client.pending_event is None
    assert client.attestation is None
    with pytest.raises(SessionStateError):
        client.read()
    client.close()  # idempotent


# --- Answering the session's events -------------------------------------------------------------


def test_each_event_is_returned_once_and_waits_until_answered() -> None:
    _, server = needing_server()
    needed = server.pending_event
    assert needed == EvidenceNeeded(server.report_data or b"")
    assert server.receive(b"") == []  # not repeated
    assert server.pending_event == needed
    assert server.send_pending() == b""  # nothing goes out while the server waits
    client = client_session()
    rogue = rogue_server(client)
    rogue.write(encode_evidence_frame(b"evidence"))
    received = client.receive(rogue.send_pending())
    assert received == [EvidenceReceived(b"evidence", client.report_data or b"")]
    assert client.receive(b"") == []
    assert client.pending_event == received[0]
    assert "evidence=" not in repr(received[0])  # evidence bundles are large: not in reprs


def test_providing_evidence_twice_or_in_the_wrong_state_is_refused_and_changes_nothing() -> None:
    server = server_session(IDENTITY)
    early: list[Callable[[], None]] = [
        lambda: server.provide_evidence(b"too early"),
        lambda: server.withhold_evidence(FakeEvidenceError("too early")),
    ]
    for call in early:
        with pytest.raises(SessionStateError) as info:
            call()
        assert not isinstance(info.value, SessionFailedError)
        assert state(server) is ServerState.HANDSHAKING
        assert server.send_pending() == b""
    bare, server = needing_server()
    evidence = fake_provider(server.report_data or b"")
    server.provide_evidence(evidence)
    assert state(server) is ServerState.EVIDENCE_SENT
    for call in (
        lambda: server.provide_evidence(b"a second frame"),
        lambda: server.withhold_evidence(FakeEvidenceError("too late")),
    ):
        with pytest.raises(SessionStateError):
            call()
        assert state(server) is ServerState.EVIDENCE_SENT
    pump(bare, server)
    assert bare.read() == encode_evidence_frame(evidence)  # exactly one frame left
    assert state(server) is ServerState.OPEN
    with pytest.raises(SessionStateError):
        server.provide_evidence(evidence)
    assert state(server) is ServerState.OPEN
    server.write(b"still usable")
    pump(bare, server)
    assert bare.read() == b"still usable"
    server.close()
    with pytest.raises(SessionStateError):
        server.provide_evidence(evidence)
    assert state(server) is ServerState.CLOSED


def test_a_server_closed_while_evidence_is_needed_takes_none() -> None:
    bare, server = needing_server()
    server.close()
    assert state(server) is ServerState.CLOSED
    assert server.pending_event is None
    with pytest.raises(SessionStateError):
        server.provide_evidence(fake_provider(server.report_data or b""))
    pump(bare, server)
    assert bare.peer_closed
    assert bare.read() == b""  # no evidence, no data


def test_evidence_too_large_at_provide_evidence_fails_the_server() -> None:
    _, fits = needing_server()
    fits.provide_evidence(b"x" * MAX_EVIDENCE)  # the bound itself is allowed
    assert state(fits) is ServerState.EVIDENCE_SENT
    client = client_session()
    server = server_session(IDENTITY, max_evidence=100)
    pump(client, server)
    with pytest.raises(EvidenceTooLargeError):
        server.provide_evidence(b"x" * 101)
    assert state(server) is ServerState.FAILED
    with pytest.raises(EvidenceTruncatedError):  # the client sees a close without evidence
        client.receive(server.send_pending())
    assert_failed_for_good(server)
    _, server = needing_server()
    with pytest.raises(AttestationError):
        server.provide_evidence("not bytes")  # type: ignore[arg-type]
    assert state(server) is ServerState.FAILED


def test_withholding_evidence_fails_the_server_with_the_callers_cause() -> None:
    client = client_session()
    server = server_session(IDENTITY)
    pump(client, server)
    cause = FakeEvidenceError("the platform gave no report")
    server.withhold_evidence(cause)  # it does not raise: the caller does
    assert state(server) is ServerState.FAILED
    with pytest.raises(EvidenceTruncatedError):
        client.receive(server.send_pending())
    with pytest.raises(SessionFailedError) as info:
        server.receive(b"")
    assert info.value.__cause__ is cause
    assert_failed_for_good(server)


def test_accept_or_reject_in_the_wrong_state_is_refused_and_changes_nothing() -> None:
    client = client_session()
    hello = client.send_pending()
    rogue = TlsEndpoint.server(OTHER_IDENTITY)
    for step in ("handshaking", "awaiting", "verified"):
        if step == "awaiting":
            rogue.receive(hello)
            pump(client, rogue)
            assert state(client) is ClientState.AWAITING_EVIDENCE
        elif step == "verified":
            rogue.write(encode_evidence_frame(b"evidence") + b"data")
            pump(client, rogue)
            client.accept("first verdict")
        before = state(client)
        answers: list[Callable[[], None]] = [
            lambda: client.accept("a verdict"),
            lambda: client.reject(FakeEvidenceError("a verdict")),
        ]
        for call in answers:
            with pytest.raises(SessionStateError) as info:
                call()
            assert not isinstance(info.value, SessionFailedError)
            assert state(client) is before
            assert client.send_pending() == b""  # no close_notify, no alert
        assert client.attestation == ("first verdict" if step == "verified" else None)
    assert client.read() == b"data"
    client.write(b"still usable")
    pump(client, rogue)
    assert rogue.read() == b"still usable"


def test_a_client_that_never_accepts_cannot_write_or_read() -> None:
    client, server = waiting_pair()
    server.write(b"hello, client")
    pump(client, server)
    assert state(client) is ClientState.EVIDENCE_RECEIVED
    with pytest.raises(SessionStateError):
        client.write(b"a private prompt")
    with pytest.raises(SessionStateError):
        client.read()
    assert state(client) is ClientState.EVIDENCE_RECEIVED  # refused, not failed
    assert client.send_pending() == b""
    assert server.read() == b""  # the server received nothing
    client.close()
    assert state(client) is ClientState.CLOSED
    assert client.pending_event is None
    with pytest.raises(SessionStateError):
        client.accept("too late")
    with pytest.raises(SessionStateError):
        client.read()  # never verified: nothing is delivered after the close either
    assert client.attestation is None
    pump(client, server)
    assert server.peer_closed
    assert server.read() == b""


def test_reject_sends_close_notify_and_fails_for_good() -> None:
    client, server = waiting_pair()
    cause = FakeEvidenceError("measurement not in the transparency log")
    client.reject(cause)  # it does not raise: the caller does
    assert state(client) is ClientState.FAILED
    assert client.pending_event is None
    assert client.attestation is None
    goodbye = client.send_pending()
    assert goodbye  # close_notify
    server.receive(goodbye)
    assert server.peer_closed
    assert server.read() == b""
    with pytest.raises(SessionFailedError) as info:
        client.accept("a change of mind")
    assert info.value.__cause__ is cause
    assert_failed_for_good(client)


def test_the_helpers_act_only_when_asked() -> None:
    recorder = Recorder()
    verdicts: list[bytes] = []

    def verifier(evidence: bytes, data: bytes) -> FakeAttestation:
        verdicts.append(data)
        return fake_verifier(evidence, data)

    client, server = client_session(), server_session(IDENTITY)
    assert not supply_evidence(server, recorder)  # still handshaking
    assert not check_evidence(client, verifier)
    pump(client, server)
    assert not check_evidence(client, verifier)  # awaiting the evidence
    assert supply_evidence(server, recorder)
    assert not supply_evidence(server, recorder)  # once per session
    pump(client, server)
    assert check_evidence(client, verifier)
    assert not check_evidence(client, verifier)
    assert recorder.asked == verdicts == [server.report_data]
    assert state(client) is ClientState.VERIFIED
    assert isinstance(client.attestation, FakeAttestation)


def test_a_provider_error_passes_through_and_fails_the_server() -> None:
    def failing(_data: bytes) -> bytes:
        raise FakeEvidenceError("configfs-tsm is not there")

    client, server = client_session(), server_session(IDENTITY)
    with pytest.raises(FakeEvidenceError) as info:
        pump_attested(client, server, failing, fake_verifier)
    assert state(server) is ServerState.FAILED
    with pytest.raises(SessionFailedError) as failed:
        server.write(b"x")
    assert failed.value.__cause__ is info.value
    with pytest.raises(EvidenceTruncatedError):
        client.receive(server.send_pending())


def test_the_session_module_holds_no_callable() -> None:
    """Issue 17: the core is given answers, never something to call."""
    import inspect

    from privproc.ratls import session as module

    for factory in (module.client_session, module.server_session):
        for parameter in inspect.signature(factory).parameters.values():
            assert parameter.name in ("identity", "max_evidence", "max_buffer")
    client, server = attested_pair()
    for session in (client, server):
        assert not [v for v in vars(session).values() if callable(v)]


def test_unread_data_is_bounded() -> None:
    client = TlsEndpoint.client(max_buffer=1 << 16)
    server = TlsEndpoint.server(IDENTITY)
    pump(client, server)
    server.write(b"x" * 60_000)
    pump(client, server)
    server.write(b"x" * 10_000)
    with pytest.raises(TlsLimitError):
        pump(client, server)
    assert client.failed
    with pytest.raises(TlsStateError):
        client.read()


def test_unsent_data_is_bounded_and_refusal_is_not_fatal() -> None:
    client = TlsEndpoint.client(max_buffer=1 << 16)
    server = TlsEndpoint.server(IDENTITY)
    pump(client, server)
    client.write(b"x" * 60_000)
    with pytest.raises(TlsLimitError):
        client.write(b"x" * 10_000)
    assert not client.failed
    pump(client, server)
    client.write(b"y" * 10_000)
    pump(client, server)
    assert server.read() == b"x" * 60_000 + b"y" * 10_000


# --- State tables -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "states"),
    [(CLIENT_TRANSITIONS, ClientState), (SERVER_TRANSITIONS, ServerState)],
    ids=["client", "server"],
)
def test_state_tables_allow_exactly_their_transitions(
    table: Mapping[Any, frozenset[Any]], states: type[enum.Enum]
) -> None:
    assert set(table) == set(states)
    assert table[states["FAILED"]] == frozenset()  # terminal
    assert table[states["CLOSED"]] == frozenset({states["FAILED"]})
    for current in states:
        assert states["FAILED"] in table[current] or current is states["FAILED"]
        for target in states:
            if target in table[current]:
                assert transition(table, current, target) is target
            else:
                with pytest.raises(SessionStateError):
                    transition(table, current, target)


# Verification and evidence go through the caller: no move around the waiting states.
_SKIPS = [
    (CLIENT_TRANSITIONS, ClientState.HANDSHAKING, ClientState.VERIFIED),
    (CLIENT_TRANSITIONS, ClientState.FAILED, ClientState.VERIFIED),
    (CLIENT_TRANSITIONS, ClientState.CLOSED, ClientState.VERIFIED),
    (CLIENT_TRANSITIONS, ClientState.AWAITING_EVIDENCE, ClientState.VERIFIED),
    (CLIENT_TRANSITIONS, ClientState.VERIFIED, ClientState.EVIDENCE_RECEIVED),
    (SERVER_TRANSITIONS, ServerState.HANDSHAKING, ServerState.OPEN),
    (SERVER_TRANSITIONS, ServerState.OPEN, ServerState.EVIDENCE_SENT),
    (SERVER_TRANSITIONS, ServerState.HANDSHAKING, ServerState.EVIDENCE_SENT),
    (SERVER_TRANSITIONS, ServerState.EVIDENCE_NEEDED, ServerState.OPEN),
]


@pytest.mark.parametrize(("table", "current", "target"), _SKIPS)
def test_state_tables_forbid_skipping_the_evidence(table: Any, current: Any, target: Any) -> None:
    with pytest.raises(SessionStateError):
        transition(table, current, target)


def test_calls_in_the_wrong_state_are_refused_without_failing() -> None:
    client = client_session()
    server = server_session(IDENTITY)
    with pytest.raises(SessionStateError):
        client.write(b"too early")
    with pytest.raises(SessionStateError):
        client.read()
    with pytest.raises(SessionStateError):
        server.write(b"too early")
    with pytest.raises(SessionStateError):
        server.read()
    with pytest.raises(TlsStateError):
        client.exporter(LABEL, 32)
    assert state(client) is ClientState.HANDSHAKING
    assert state(server) is ServerState.HANDSHAKING
    drive(client, server)
    assert state(client) is ClientState.VERIFIED
    assert state(server) is ServerState.OPEN


def test_session_construction_is_checked() -> None:
    with pytest.raises(UsageError):
        client_session(max_evidence=MAX_EVIDENCE + 1)
    with pytest.raises(UsageError):
        server_session(IDENTITY, max_evidence=1 << 16, max_buffer=1 << 16)
    with pytest.raises(UsageError):
        report_data(b"short")


def test_pump_gives_up_on_endless_chatter() -> None:
    class Chatty:
        def receive(self, data: bytes) -> None:
            pass

        def send_pending(self) -> bytes:
            return b"more"

    with pytest.raises(UsageError):
        pump(Chatty(), Chatty(), max_rounds=3)
