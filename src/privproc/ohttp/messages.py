"""Oblivious HTTP messages (RFC 9458 §4): request and response encapsulation, both sides.

Rules of this module:
- Sans-IO: bytes in, bytes out. The client calls `encapsulate_request` and later
  `ClientContext.decapsulate_response`; the gateway calls `decapsulate_request` and later
  `ServerContext.encapsulate_response`.
- The inner bytes are opaque here (normally Binary HTTP, RFC 9292); this module does not parse them.
- Decapsulation failures raise typed errors (`DecodeError`, `UnknownKeyError`, `UnsupportedError`,
  `OpenError`, `InvalidKeyError`), all subclasses of `PrivprocError`. A server must answer them all
  the same way, so that nobody learns which check failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from privproc import hpke
from privproc.errors import (
    DecodeError,
    OpenError,
    TooLargeError,
    UnknownKeyError,
    UnsupportedError,
    UsageError,
)
from privproc.ohttp.keys import GatewayKey, KeyConfig, KeyRing, SymmetricSuite

__all__ = [
    "MEDIA_TYPE_REQUEST",
    "MEDIA_TYPE_RESPONSE",
    "ClientContext",
    "ServerContext",
    "decapsulate_request",
    "encapsulate_request",
]

MEDIA_TYPE_REQUEST = "message/ohttp-req"
MEDIA_TYPE_RESPONSE = "message/ohttp-res"
REQUEST_LABEL = b"message/bhttp request"
RESPONSE_LABEL = b"message/bhttp response"
HEADER_LENGTH = 7  # key id (1), kem id (2), kdf id (2), aead id (2)
DEFAULT_MAX_MESSAGE = 1 << 20


def request_header(key_id: int, suite: hpke.CipherSuite) -> bytes:
    """RFC 9458 §4.3: key id and the suite's three ids, the start of every request."""
    return (
        bytes((key_id,))
        + suite.kem.id.to_bytes(2, "big")
        + suite.kdf.id.to_bytes(2, "big")
        + suite.aead.id.to_bytes(2, "big")
    )


def response_keys(
    context: hpke.Context, label: bytes, enc: bytes, response_nonce: bytes
) -> tuple[bytes, bytes]:
    """RFC 9458 §4.4: the AEAD key and nonce for the response, from the request's HPKE context
    (its secret exported under `label`), the request's `enc` and the response nonce."""
    suite = context.suite
    kdf, aead = suite.kdf, suite.aead
    secret = context.export(label, response_nonce_length(suite))
    prk = kdf.extract(enc + response_nonce, secret)
    return kdf.expand(prk, b"key", aead.nk), kdf.expand(prk, b"nonce", aead.nn)


def new_response_nonce(suite: hpke.CipherSuite, given: bytes | None = None) -> bytes:
    """A random response nonce; `given` (for known-answer tests only) if it has the length."""
    n = response_nonce_length(suite)
    if given is None:
        return os.urandom(n)
    if len(given) != n:
        raise UsageError(f"the response nonce must be {n} bytes")
    return given


def key_for_header(keys: KeyRing, hdr: bytes) -> tuple[GatewayKey, hpke.CipherSuite]:
    """The live key and the suite a request header names (RFC 9458 §4.3), or a typed error."""
    kem_id = int.from_bytes(hdr[1:3], "big")
    kdf_id = int.from_bytes(hdr[3:5], "big")
    aead_id = int.from_bytes(hdr[5:7], "big")
    key = keys.get(hdr[0])
    if key is None:
        raise UnknownKeyError("the request names a key id that is not live")
    config = key.config
    if kem_id != config.kem.id:
        raise UnsupportedError("the request's KEM does not match its key configuration")
    for s in config.suites:
        if s.kdf.id == kdf_id and s.aead.id == aead_id:
            return key, hpke.CipherSuite(config.kem, s.kdf, s.aead)
    raise UnsupportedError("the request's KDF and AEAD are not offered by its key configuration")


def response_nonce_length(suite: hpke.CipherSuite) -> int:
    """RFC 9458 §4.4: max(Nn, Nk), the length of the response nonce and of the secret."""
    return max(suite.aead.nn, suite.aead.nk)


@dataclass(eq=False)
class ClientContext:
    """What a client keeps between sending a request and reading its response."""

    _context: hpke.Context
    _enc: bytes
    response_label: bytes = RESPONSE_LABEL

    @property
    def suite(self) -> hpke.CipherSuite:
        return self._context.suite

    def decapsulate_response(self, data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE) -> bytes:
        suite = self.suite
        n = response_nonce_length(suite)
        if len(data) > max_size:
            raise TooLargeError(f"encapsulated response exceeds {max_size} bytes")
        if len(data) < n + suite.aead.nt:
            raise DecodeError("encapsulated response is too short")
        response_nonce, ct = data[:n], data[n:]
        key, nonce = response_keys(self._context, self.response_label, self._enc, response_nonce)
        try:
            return suite.aead.cipher(key).decrypt(nonce, ct, b"")
        except InvalidTag:
            raise OpenError("OHTTP response decryption failed") from None


@dataclass(eq=False)
class ServerContext:
    """What a gateway keeps between decapsulating a request and encapsulating its response."""

    _context: hpke.Context
    _enc: bytes
    key_id: int
    response_label: bytes = RESPONSE_LABEL

    @property
    def suite(self) -> hpke.CipherSuite:
        return self._context.suite

    def encapsulate_response(
        self, response: bytes, *, response_nonce: bytes | None = None
    ) -> bytes:
        """`response_nonce` is for known-answer tests only; it is random otherwise."""
        suite = self.suite
        response_nonce = new_response_nonce(suite, response_nonce)
        key, nonce = response_keys(self._context, self.response_label, self._enc, response_nonce)
        return response_nonce + suite.aead.cipher(key).encrypt(nonce, response, b"")


def encapsulate_request(
    config: KeyConfig,
    request: bytes,
    *,
    suite: SymmetricSuite | None = None,
    request_label: bytes = REQUEST_LABEL,
    response_label: bytes = RESPONSE_LABEL,
    sk_e: hpke.PrivateKey | None = None,
) -> tuple[bytes, ClientContext]:
    """Encapsulate `request` for the gateway that published `config` (RFC 9458 §4.3).

    Returns the `message/ohttp-req` body and the context that reads the response. `sk_e` fixes the
    ephemeral key for known-answer tests; never pass it otherwise.
    """
    cipher_suite = config.cipher_suite(suite)
    hdr = request_header(config.key_id, cipher_suite)
    info = request_label + b"\x00" + hdr
    enc, ctx = cipher_suite.setup_sender(config.public_key, info, sk_e=sk_e)
    ct = ctx.seal(request)
    return hdr + enc + ct, ClientContext(ctx, enc, response_label)


def decapsulate_request(
    keys: KeyRing,
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_MESSAGE,
    request_label: bytes = REQUEST_LABEL,
    response_label: bytes = RESPONSE_LABEL,
) -> tuple[bytes, ServerContext]:
    """Decapsulate a `message/ohttp-req` body with whichever live key it names (RFC 9458 §4.3).

    Returns the inner request bytes and the context that encapsulates the response.
    """
    if len(data) > max_size:
        raise TooLargeError(f"encapsulated request exceeds {max_size} bytes")
    if len(data) < HEADER_LENGTH:
        raise DecodeError("encapsulated request is too short for its header")
    hdr = bytes(data[:HEADER_LENGTH])
    key, suite = key_for_header(keys, hdr)
    config = key.config
    n_enc = config.kem.n_enc
    if len(data) < HEADER_LENGTH + n_enc + suite.aead.nt:
        raise DecodeError("encapsulated request is too short")
    enc = bytes(data[HEADER_LENGTH : HEADER_LENGTH + n_enc])
    ct = data[HEADER_LENGTH + n_enc :]
    ctx = suite.setup_recipient(enc, key.private_key, request_label + b"\x00" + hdr)
    request = ctx.open(ct)
    return request, ServerContext(ctx, enc, key.config.key_id, response_label)
