"""TLS 1.3 endpoints over memory BIOs (pyOpenSSL), for a client and an attested server.

Rules of this module:
- Sans-IO: `receive` takes bytes from the network, `send_pending` returns bytes for it, `write`
  and `read` carry application bytes. No sockets, threads or clocks; a caller that wants
  timeouts keeps its own.
- TLS 1.3 only, ALPN `privproc/1` required on both sides. No renegotiation (TLS 1.3 has none;
  OpenSSL is told so anyway), no compression, no resumption and so no 0-RTT: a client's sessions
  must not be linkable through tickets, and an attested session gains nothing from resuming
  because every connection gets fresh evidence bound to its own exporter.
- The server proves possession of an ephemeral key with a self-signed certificate made at start
  (`ServerIdentity.generate`). The client runs the full TLS 1.3 handshake, CertificateVerify
  included, but does not judge the certificate: the server is authenticated by attestation
  evidence bound to the connection's exporter (`privproc.ratls.session`).
- Every OpenSSL failure becomes a `TlsError`; messages name at most a TLS alert, never library
  internals or key material. A failed endpoint still hands out the alert OpenSSL queued
  (`send_pending`) and refuses everything else.
- Buffers are bounded: at most `max_buffer` bytes of unread application data (more is a fatal
  `TlsLimitError`) and of unsent records (a `write` beyond it is refused, nothing is queued).
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from privproc.errors import PrivprocError, UsageError

__all__ = [
    "ALPN",
    "DEFAULT_MAX_BUFFER",
    "MAX_EXPORTER_LABEL",
    "MAX_EXPORTER_LENGTH",
    "Role",
    "ServerIdentity",
    "TlsAlertError",
    "TlsEndpoint",
    "TlsError",
    "TlsLimitError",
    "TlsProtocolError",
    "TlsStateError",
    "alert_name",
]

ALPN = b"privproc/1"
DEFAULT_MAX_BUFFER = 4 << 20
MAX_EXPORTER_LABEL = 249  # HKDF-Expand-Label: "tls13 " || label fits in 255 bytes
MAX_EXPORTER_LENGTH = 255 * 32  # HKDF-Expand's bound for the smallest TLS 1.3 hash (SHA-256)
# RFC 8446's three mandatory-or-recommended AEAD suites; OpenSSL's default set, stated here.
_CIPHERSUITES = b"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
_CHUNK = 1 << 16
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
_CLOSE_NOTIFY = 0

# RFC 8446 §6 and the IANA TLS Alert registry: names for error messages.
_ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}


def alert_name(alert: int) -> str:
    """`bad_record_mac (20)`: a TLS alert description for messages."""
    return f"{_ALERT_NAMES.get(alert, 'unknown alert')} ({alert})"


# --- Errors --------------------------------------------------------------------------------------


class TlsError(PrivprocError):
    """The TLS connection failed or cannot do what was asked."""


class TlsAlertError(TlsError):
    """The peer ended the connection with a fatal alert; `alert` holds its description code."""

    def __init__(self, message: str, alert: int) -> None:
        super().__init__(message)
        self.alert = alert


class TlsProtocolError(TlsError):
    """This side found the peer's bytes or choices unacceptable: a forged or damaged record, a
    bad handshake, a protocol version or ALPN other than ours. `alert` is the alert this side
    sent, if any."""

    def __init__(self, message: str, alert: int | None = None) -> None:
        super().__init__(message)
        self.alert = alert


class TlsStateError(TlsError):
    """The call is not possible now: before the handshake, after close or after a failure."""


class TlsLimitError(TlsError):
    """A buffer bound was reached: too much unread application data, or too much unsent."""


# --- Identity and contexts -----------------------------------------------------------------------

ServerKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, eq=False)
class ServerIdentity:
    """The server's ephemeral TLS key and its self-signed certificate.

    The certificate carries no trust: clients do not validate it, and its fixed validity
    (2000-01-01 to 9999-12-31, RFC 5280's "no expiry") keeps clocks out of the picture. It exists
    because TLS 1.3 needs one for the CertificateVerify that proves the key is held. One
    `SSL.Context` is built per identity, on first use, and shared by every connection.
    """

    private_key: ServerKey = field(repr=False)
    certificate: x509.Certificate

    @classmethod
    def generate(cls, algorithm: Literal["p256", "ed25519"] = "p256") -> ServerIdentity:
        """A fresh key and certificate. ECDSA P-256 by default: ecdsa_secp256r1_sha256 is the
        signature scheme every TLS 1.3 implementation must support (RFC 8446 §9.1), whereas
        Ed25519 is optional (OpenSSL offers it, not every stack does). Both cost about the same."""
        key: ServerKey
        if algorithm == "p256":
            key = ec.generate_private_key(ec.SECP256R1())
            digest: hashes.SHA256 | None = hashes.SHA256()
        elif algorithm == "ed25519":
            key = ed25519.Ed25519PrivateKey.generate()
            digest = None
        else:
            raise UsageError("a server identity is 'p256' or 'ed25519'")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privproc attested enclave")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .sign(key, digest)
        )
        return cls(key, certificate)

    @functools.cached_property
    def _context(self) -> SSL.Context:
        ctx = _base_context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate(self.certificate)
        ctx.use_privatekey(self.private_key)
        ctx.check_privatekey()
        ctx.set_verify(SSL.VERIFY_NONE)  # no client certificates
        # Select ours or none; a client that does not offer it fails the check after the
        # handshake. (Refusing inside the callback would make pyOpenSSL keep the error on the
        # shared context, where a concurrent connection could pick it up.)
        ctx.set_alpn_select_callback(
            lambda _conn, offered: ALPN if ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS
        )
        return ctx


def _base_context(method: int) -> SSL.Context:
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    # OP_NO_TICKET makes a TLS 1.3 server issue stateful tickets instead of tickets that carry
    # the session encrypted under a context-wide key; with the session cache off those name
    # sessions that were never stored, so no ticket can ever be resumed (and so no 0-RTT).
    # pyOpenSSL has no binding for SSL_CTX_set_num_tickets, which would stop them being sent.
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_tls13_ciphersuites(_CIPHERSUITES)
    ctx.set_info_callback(_on_info)
    return ctx


@functools.cache
def _client_context() -> SSL.Context:
    ctx = _base_context(SSL.TLS_CLIENT_METHOD)
    # The chain is not judged (attestation authenticates the server); CertificateVerify still is.
    ctx.set_verify(SSL.VERIFY_NONE)
    ctx.set_alpn_protos([ALPN])
    return ctx


class _Alerts:
    """Per connection: the first non-close_notify alert each way, seen by the info callback."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.received: int | None = None
        self.sent: int | None = None


def _on_info(conn: SSL.Connection, where: int, ret: int) -> None:
    if not where & SSL.SSL_CB_ALERT:
        return
    alerts = conn.get_app_data()
    description = ret & 0xFF
    if not isinstance(alerts, _Alerts) or description == _CLOSE_NOTIFY:
        return
    if where & SSL.SSL_CB_READ:
        if alerts.received is None:
            alerts.received = description
    elif alerts.sent is None:
        alerts.sent = description


# --- The endpoint --------------------------------------------------------------------------------


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class TlsEndpoint:
    """One side of a TLS 1.3 connection over memory BIOs.

    A client starts its handshake at once: its ClientHello is waiting in `send_pending`.
    `exporter` is RFC 8446 §7.5 with an empty context. In TLS 1.3 "no context" and "an empty
    context" are the same thing (the context is always hashed; OpenSSL hashes zero bytes when
    told there is none), and pyOpenSSL accepts both; this module passes `b""`, the form RFC 8446
    defines.
    """

    def __init__(
        self,
        role: Role,
        identity: ServerIdentity | None = None,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        if (role is Role.SERVER) != (identity is not None):
            raise UsageError("a server endpoint needs a ServerIdentity; a client takes none")
        if max_buffer < 1 << 16:
            raise UsageError("max_buffer must be at least 64 KiB")
        context = identity._context if identity is not None else _client_context()
        self._role = role
        self._max_buffer = max_buffer
        self._alerts = _Alerts()
        self._conn = SSL.Connection(context)
        self._conn.set_app_data(self._alerts)
        self._out = bytearray()
        self._in = bytearray()
        self._handshake_done = False
        self._peer_closed = False
        self._closed = False
        self._failed = False
        if role is Role.CLIENT:
            self._conn.set_connect_state()
            self._advance()
        else:
            self._conn.set_accept_state()

    @classmethod
    def client(cls, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> TlsEndpoint:
        return cls(Role.CLIENT, max_buffer=max_buffer)

    @classmethod
    def server(
        cls, identity: ServerIdentity, *, max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> TlsEndpoint:
        return cls(Role.SERVER, identity, max_buffer=max_buffer)

    # --- State ---

    @property
    def role(self) -> Role:
        return self._role

    @property
    def handshake_done(self) -> bool:
        """The handshake completed with TLS 1.3 and ALPN `privproc/1`."""
        return self._handshake_done

    @property
    def peer_closed(self) -> bool:
        """The peer sent close_notify: no more application data will come."""
        return self._peer_closed

    @property
    def closed(self) -> bool:
        """This side sent close_notify (or gave up before the handshake completed)."""
        return self._closed

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher suite's name, for diagnostics."""
        return self._conn.get_cipher_name() if self._handshake_done else None

    @property
    def group(self) -> str | None:
        """The negotiated key exchange group's name, for diagnostics."""
        return self._conn.get_group_name() if self._handshake_done else None

    # --- Bytes in and out ---

    def receive(self, data: bytes) -> None:
        """Network bytes in: advances the handshake, decrypts application data for `read`."""
        self._check_usable()
        if not data or (self._closed and not self._handshake_done):
            return
        try:
            self._conn.bio_write(data)
        except SSL.Error:
            raise self._failure() from None
        self._advance()

    def send_pending(self) -> bytes:
        """Network bytes out: every record queued so far. Never raises; after a failure it hands
        out the alert that OpenSSL queued, if any."""
        self._drain()
        out = bytes(self._out)
        self._out.clear()
        return out

    def write(self, data: bytes) -> None:
        """Encrypt application bytes into records for `send_pending`."""
        self._check_usable()
        if not self._handshake_done:
            raise TlsStateError("application data waits for the TLS handshake to complete")
        if self._closed:
            raise TlsStateError("this side has closed the TLS connection")
        if len(self._out) + len(data) > self._max_buffer:
            raise TlsLimitError(
                f"more than {self._max_buffer} bytes would wait to be sent; send_pending first"
            )
        if not data:
            return
        try:
            self._conn.sendall(data)
        except SSL.Error:
            raise self._failure() from None
        finally:
            self._drain()

    def read(self) -> bytes:
        """All application bytes decrypted so far and not yet read."""
        self._check_usable()
        data = bytes(self._in)
        self._in.clear()
        return data

    def close(self) -> None:
        """Send close_notify. Before the handshake completes there is nothing to close: the
        endpoint only stops. Idempotent; a no-op after a failure."""
        if self._closed or self._failed:
            return
        self._closed = True
        if not self._handshake_done:
            return
        try:
            self._conn.shutdown()
        except SSL.Error:
            raise self._failure() from None
        finally:
            self._drain()

    def exporter(self, label: bytes, length: int) -> bytes:
        """RFC 8446 §7.5 keying material for `label`, with an empty context."""
        self._check_usable()
        if not self._handshake_done:
            raise TlsStateError("the exporter is available once the handshake has completed")
        if not 0 < len(label) <= MAX_EXPORTER_LABEL:
            raise UsageError(f"an exporter label is 1 to {MAX_EXPORTER_LABEL} bytes")
        if not 0 < length <= MAX_EXPORTER_LENGTH:
            raise UsageError(f"an exporter length is 1 to {MAX_EXPORTER_LENGTH} bytes")
        try:
            return self._conn.export_keying_material(label, length, b"")
        except SSL.Error:
            raise TlsError("the TLS library could not export keying material") from None

    # --- Internals ---

    def _check_usable(self) -> None:
        if self._failed:
            raise TlsStateError("the TLS connection has failed")

    def _advance(self) -> None:
        try:
            if not self._handshake_done:
                try:
                    self._conn.do_handshake()
                except SSL.WantReadError:
                    return
                self._check_negotiated()
            self._read_records()
        except SSL.Error:
            raise self._failure() from None
        finally:
            self._drain()

    def _check_negotiated(self) -> None:
        if self._conn.get_protocol_version() != SSL.TLS1_3_VERSION:  # pragma: no cover
            raise self._give_up(TlsProtocolError("the peer negotiated a version other than 1.3"))
        if self._conn.get_alpn_proto_negotiated() != ALPN:
            raise self._give_up(
                TlsProtocolError("the peer did not negotiate the ALPN protocol privproc/1")
            )
        self._handshake_done = True

    def _read_records(self) -> None:
        while not self._peer_closed:
            try:
                chunk = self._conn.recv(_CHUNK)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self._peer_closed = True
                return
            self._in += chunk
            if len(self._in) > self._max_buffer:
                raise self._give_up(
                    TlsLimitError(f"more than {self._max_buffer} bytes of unread application data")
                )

    def _give_up(self, error: TlsError) -> TlsError:
        """Fail on this side's own judgement: close_notify if possible, then fail."""
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()
        self._drain()
        self._failed = True
        return error

    def _failure(self) -> TlsError:
        """Fail after OpenSSL refused: the alert (if any) is queued; say which alert it was."""
        self._failed = True
        self._drain()
        if self._alerts.received is not None:
            alert = self._alerts.received
            return TlsAlertError(f"the peer sent the fatal alert {alert_name(alert)}", alert)
        if self._alerts.sent is not None:
            alert = self._alerts.sent
            return TlsProtocolError(f"TLS failed; this side sent {alert_name(alert)}", alert)
        if not self._handshake_done:
            return TlsProtocolError("the TLS handshake failed")
        return TlsProtocolError("the TLS connection failed")

    def _drain(self) -> None:
        while True:
            try:
                chunk = self._conn.bio_read(_CHUNK)
            except SSL.WantReadError:
                return
            except SSL.Error:  # pragma: no cover - a memory BIO does not fail
                return
            self._out += chunk
            if len(chunk) < _CHUNK:
                return
