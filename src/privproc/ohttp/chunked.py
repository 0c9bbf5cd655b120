"""Chunked Oblivious HTTP messages (draft-ietf-ohai-chunked-ohttp), both sides, incrementally.

Wire format (draft §4, §5, §6):

    request  = hdr || enc || { varint(len(ct)) || ct }* || varint(0) || final_ct
    response = response_nonce || { varint(len(ct)) || ct }* || varint(0) || final_ct

- `hdr` is the RFC 9458 header (key id, KEM, KDF, AEAD ids). The HPKE context is set up with
  info = "message/bhttp chunked request" || 0x00 || hdr; every request chunk is sealed with that
  context in order (its sequence number protects the order), with an empty AAD, and the final
  chunk with the AAD "final".
- The response key and nonce are derived as in RFC 9458 §4.4 from the exporter secret labelled
  "message/bhttp chunked response"; chunk i is sealed under nonce XOR encode(Nn, i), with the AAD
  "final" for the last one.
- The final chunk runs to the end of the stream, so only the end of the stream completes a
  message: pass `end_of_stream=True` to `receive` (or call `close`). `finished` becomes true only
  once the final chunk has been authenticated; a stream cut short never looks finished and ends
  in `TruncatedError` (or `OpenError` when the cut falls inside the final chunk).
- A non-final chunk never carries an empty plaintext: encoders emit nothing for one, decoders
  reject one as a decryption failure (draft §6).

Rules of this module:
- Sans-IO: bytes in, bytes out; nothing here reads a socket or a clock.
- Every failure is a typed `PrivprocError`; after one, a decoder refuses all further input.
- Memory is bounded: a decoder buffers at most one chunk (`max_chunk_size` plaintext bytes plus
  the AEAD tag and length prefix), and rejects a message whose sealed bytes exceed
  `max_message_size`.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from privproc import hpke
from privproc.errors import (
    MessageLimitReachedError,
    OpenError,
    PrivprocError,
    TooLargeError,
    TrailingDataError,
    TruncatedError,
    UsageError,
)
from privproc.ohttp.keys import GatewayKey, KeyConfig, KeyRing, SymmetricSuite
from privproc.ohttp.messages import (
    HEADER_LENGTH,
    key_for_header,
    new_response_nonce,
    request_header,
    response_keys,
    response_nonce_length,
)
from privproc.wire import encode_varint

__all__ = [
    "MEDIA_TYPE_CHUNKED_REQUEST",
    "MEDIA_TYPE_CHUNKED_RESPONSE",
    "ChunkedRequestDecoder",
    "ChunkedRequestEncoder",
    "ChunkedResponseDecoder",
    "ChunkedResponseEncoder",
]

MEDIA_TYPE_CHUNKED_REQUEST = "message/ohttp-chunked-req"
MEDIA_TYPE_CHUNKED_RESPONSE = "message/ohttp-chunked-res"
REQUEST_LABEL = b"message/bhttp chunked request"
RESPONSE_LABEL = b"message/bhttp chunked response"
FINAL_AAD = b"final"
# The draft requires support for 2^14-byte chunks; privproc accepts up to 1 MiB by default.
MIN_CHUNK_SIZE_SUPPORTED = 1 << 14
DEFAULT_MAX_CHUNK = 1 << 20
# Draft §7.3: with AES-128-GCM, 2^20 messages and a 2^-50 advantage, no message exceeds 2^30 bytes.
DEFAULT_MAX_MESSAGE = 1 << 30


def _check_chunk_size(data: bytes, max_chunk_size: int) -> None:
    if len(data) > max_chunk_size:
        raise UsageError(f"a chunk holds at most {max_chunk_size} bytes; split the data")


def _frame(ct: bytes, final: bool) -> bytes:
    return (b"\x00" if final else encode_varint(len(ct))) + ct


class _ChunkDecoder:
    """The shared state machine: a prefix, then length-prefixed chunks, then the final chunk."""

    def __init__(self, nt: int, max_chunk_size: int, max_message_size: int) -> None:
        if max_chunk_size < 1 or max_message_size < 1:
            raise UsageError("size limits must be positive")
        self._nt = nt
        self._max_chunk_size = max_chunk_size
        self._max_sealed = max_chunk_size + nt
        self._max_message_size = max_message_size
        self._buf = bytearray()
        self._received = 0
        self._stage = "prefix"  # prefix, chunks, final, done
        self._error: PrivprocError | None = None

    @property
    def finished(self) -> bool:
        """True once the final chunk has been authenticated, and only then."""
        return self._stage == "done"

    def receive(self, data: bytes, *, end_of_stream: bool = False) -> list[bytes]:
        """Feed the next bytes of the stream; returns the plaintext chunks they complete.

        `end_of_stream=True` says that no bytes follow `data`: that is what completes the final
        chunk. Only non-empty plaintexts are returned; `finished` says whether the message is
        complete.
        """
        if self._error is not None:
            raise type(self._error)("the stream already failed; discard it")
        if self._stage == "done":
            if data:
                raise TrailingDataError("bytes follow the end of a finished chunked message")
            return []
        try:
            return self._process(bytes(data), end_of_stream)
        except PrivprocError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def close(self) -> list[bytes]:
        """Mark the end of the stream. Raises `TruncatedError` (or `OpenError`) if incomplete."""
        return self.receive(b"", end_of_stream=True)

    # Subclass hooks

    def _read_prefix(self) -> bool:
        """Consume the prefix from `_buf` if it is all there; return whether it was."""
        raise NotImplementedError

    def _open(self, ct: bytes, final: bool) -> bytes:
        raise NotImplementedError

    # The state machine

    def _process(self, data: bytes, end_of_stream: bool) -> list[bytes]:
        self._received += len(data)
        if self._received > self._max_message_size:
            raise TooLargeError(f"chunked message exceeds {self._max_message_size} bytes")
        buf = self._buf
        buf += data
        out: list[bytes] = []
        if self._stage == "prefix" and self._read_prefix():
            self._stage = "chunks"
        while self._stage == "chunks" and buf:
            width = 1 << (buf[0] >> 6)
            if len(buf) < width:
                break
            length = int.from_bytes(buf[:width], "big") & ((1 << (8 * width - 2)) - 1)
            if length == 0:
                del buf[:width]
                self._stage = "final"
                break
            if length > self._max_sealed:
                raise TooLargeError(f"a chunk exceeds {self._max_chunk_size} bytes of plaintext")
            if length <= self._nt:
                # Too short to hold a tag and at least one byte: an empty or mangled chunk.
                raise OpenError("chunked message: a non-final chunk is empty or malformed")
            if len(buf) < width + length:
                break
            ct = bytes(buf[width : width + length])
            del buf[: width + length]
            out.append(self._open(ct, False))
        if self._stage == "final":
            if len(buf) > self._max_sealed:
                raise TooLargeError(
                    f"the final chunk exceeds {self._max_chunk_size} bytes of plaintext"
                )
            if end_of_stream:
                if len(buf) < self._nt:
                    raise TruncatedError("chunked message: the final chunk is cut short")
                ct = bytes(buf)
                buf.clear()
                pt = self._open(ct, True)
                self._stage = "done"
                if pt:
                    out.append(pt)
        if end_of_stream and self._stage != "done":
            raise TruncatedError("chunked message ended before its final chunk")
        return out


# --- Client side -------------------------------------------------------------------------------


class _ChunkEncoder:
    """What both encoders check before sealing a chunk."""

    _header_taken: bool
    _final_sent: bool
    _max_chunk_size: int

    def _admit(self, data: bytes, final: bool) -> bool:
        """Order and size checks; False for an empty non-final chunk (there is nothing to send)."""
        if not self._header_taken:
            raise UsageError("send header() before the first chunk")
        if self._final_sent:
            raise UsageError("the final chunk has already been sealed")
        _check_chunk_size(data, self._max_chunk_size)
        return final or bool(data)


class ChunkedRequestEncoder(_ChunkEncoder):
    """Client side: seals a request chunk by chunk (draft §6.1).

    Call `header()` once, then `chunk(data)` for each piece and `chunk(data, final=True)` last;
    send the returned bytes in that order. `response_decoder()` then reads the response.
    `sk_e` fixes the ephemeral key for known-answer tests; never pass it otherwise.
    """

    def __init__(
        self,
        config: KeyConfig,
        suite: SymmetricSuite | None = None,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK,
        sk_e: hpke.PrivateKey | None = None,
    ) -> None:
        cipher_suite = config.cipher_suite(suite)
        hdr = request_header(config.key_id, cipher_suite)
        info = REQUEST_LABEL + b"\x00" + hdr
        enc, ctx = cipher_suite.setup_sender(config.public_key, info, sk_e=sk_e)
        self._hdr = hdr
        self._enc = enc
        self._context = ctx
        self._max_chunk_size = max_chunk_size
        self._header_taken = False
        self._final_sent = False

    @property
    def suite(self) -> hpke.CipherSuite:
        return self._context.suite

    @property
    def finished(self) -> bool:
        """True once the final chunk has been produced."""
        return self._final_sent

    def header(self) -> bytes:
        """The Chunked Request Header: hdr || enc. It goes first on the wire."""
        self._header_taken = True
        return self._hdr + self._enc

    def chunk(self, data: bytes, final: bool = False) -> bytes:
        """Seal `data` as the next chunk and return its framed bytes.

        An empty non-final chunk returns b"" and uses no sequence number (the draft forbids empty
        non-final chunks); the final chunk may be empty.
        """
        if not self._admit(data, final):
            return b""
        ct = self._context.seal(bytes(data), FINAL_AAD if final else b"")
        self._final_sent = final
        return _frame(ct, final)

    def response_decoder(
        self,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        allow_incomplete: bool = False,
    ) -> ChunkedResponseDecoder:
        """The decoder for the `message/ohttp-chunked-res` answering this request.

        Before the final request chunk this is refused unless `allow_incomplete` (an interactive
        exchange; see draft §7.2 for what that costs in privacy).
        """
        if not self._final_sent and not allow_incomplete:
            raise UsageError("the request is not complete; seal its final chunk first")
        return ChunkedResponseDecoder(
            self._context,
            self._enc,
            max_chunk_size=max_chunk_size,
            max_message_size=max_message_size,
        )


class ChunkedResponseDecoder(_ChunkDecoder):
    """Client side: opens a chunked response incrementally (draft §5, §6.2)."""

    def __init__(
        self,
        context: hpke.Context,
        enc: bytes,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        suite = context.suite
        super().__init__(suite.aead.nt, max_chunk_size, max_message_size)
        self._context = context
        self._enc = enc
        self._suite = suite
        self._nonce_len = response_nonce_length(suite)
        self._cipher: AESGCM | ChaCha20Poly1305 | None = None
        self._nonce_int = 0
        self._counter = 0

    def _read_prefix(self) -> bool:
        n = self._nonce_len
        if len(self._buf) < n:
            return False
        response_nonce = bytes(self._buf[:n])
        del self._buf[:n]
        key, nonce = response_keys(self._context, RESPONSE_LABEL, self._enc, response_nonce)
        self._cipher = self._suite.aead.cipher(key)
        self._nonce_int = int.from_bytes(nonce, "big")
        return True

    def _open(self, ct: bytes, final: bool) -> bytes:
        nn = self._suite.aead.nn
        if self._counter >= 1 << (8 * nn):
            raise MessageLimitReachedError("chunked response has used every chunk nonce")
        nonce = (self._nonce_int ^ self._counter).to_bytes(nn, "big")
        assert self._cipher is not None
        try:
            pt = self._cipher.decrypt(nonce, ct, FINAL_AAD if final else b"")
        except InvalidTag:
            raise OpenError("chunked OHTTP response decryption failed") from None
        self._counter += 1
        if not final and not pt:
            raise OpenError("chunked message: a non-final chunk is empty")
        return pt


# --- Gateway side ------------------------------------------------------------------------------


class ChunkedRequestDecoder(_ChunkDecoder):
    """Gateway side: opens a chunked request incrementally with whichever live key it names."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        # The tag length is unknown until the header names the AEAD; every AEAD here has 16.
        super().__init__(16, max_chunk_size, max_message_size)
        self._keys = keys
        self._context: hpke.Context | None = None
        self._enc = b""
        self._suite: hpke.CipherSuite | None = None
        self._key: GatewayKey | None = None
        self.key_id: int | None = None

    @property
    def suite(self) -> hpke.CipherSuite | None:
        """The cipher suite the request named, once its header has arrived."""
        return self._suite

    def _read_prefix(self) -> bool:
        buf = self._buf
        if self._suite is None:
            if len(buf) < HEADER_LENGTH:
                return False
            self._key, self._suite = key_for_header(self._keys, bytes(buf[:HEADER_LENGTH]))
            self.key_id = self._key.config.key_id
            self._nt = self._suite.aead.nt
            self._max_sealed = self._max_chunk_size + self._nt
        suite = self._suite
        n_enc = suite.kem.n_enc
        if len(buf) < HEADER_LENGTH + n_enc:
            return False
        hdr = bytes(buf[:HEADER_LENGTH])
        enc = bytes(buf[HEADER_LENGTH : HEADER_LENGTH + n_enc])
        del buf[: HEADER_LENGTH + n_enc]
        assert self._key is not None
        private_key = self._key.private_key
        self._context = suite.setup_recipient(enc, private_key, REQUEST_LABEL + b"\x00" + hdr)
        self._enc = enc
        return True

    def _open(self, ct: bytes, final: bool) -> bytes:
        assert self._context is not None
        pt = self._context.open(ct, FINAL_AAD if final else b"")
        if not final and not pt:
            raise OpenError("chunked message: a non-final chunk is empty")
        return pt

    def response_encoder(
        self,
        *,
        response_nonce: bytes | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK,
        allow_incomplete: bool = False,
    ) -> ChunkedResponseEncoder:
        """The encoder for the response. `response_nonce` is for known-answer tests only.

        Before the request is finished this is refused unless `allow_incomplete` (an interactive
        exchange, such as an early 1xx response; see draft §7.2); the header must have arrived.
        """
        if self._context is None:
            raise UsageError("the request header has not arrived")
        if not self.finished and not allow_incomplete:
            raise UsageError("the request is not complete")
        return ChunkedResponseEncoder(
            self._context, self._enc, response_nonce=response_nonce, max_chunk_size=max_chunk_size
        )


class ChunkedResponseEncoder(_ChunkEncoder):
    """Gateway side: seals a response chunk by chunk (draft §6.2).

    Send `header()` (the response nonce) first, then each `chunk(data)`, then
    `chunk(data, final=True)`.
    """

    def __init__(
        self,
        context: hpke.Context,
        enc: bytes,
        *,
        response_nonce: bytes | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK,
    ) -> None:
        suite = context.suite
        response_nonce = new_response_nonce(suite, response_nonce)
        key, nonce = response_keys(context, RESPONSE_LABEL, enc, response_nonce)
        self._response_nonce = response_nonce
        self._cipher = suite.aead.cipher(key)
        self._nn = suite.aead.nn
        self._nonce_int = int.from_bytes(nonce, "big")
        self._counter = 0
        self._max_chunk_size = max_chunk_size
        self._header_taken = False
        self._final_sent = False

    @property
    def finished(self) -> bool:
        return self._final_sent

    def header(self) -> bytes:
        """The response nonce. It goes first on the wire."""
        self._header_taken = True
        return self._response_nonce

    def chunk(self, data: bytes, final: bool = False) -> bytes:
        """Seal `data` as the next chunk and return its framed bytes.

        An empty non-final chunk returns b"" and uses no counter value; the final chunk may be
        empty.
        """
        if not self._admit(data, final):
            return b""
        if self._counter >= 1 << (8 * self._nn):
            raise MessageLimitReachedError("chunked response has used every chunk nonce")
        nonce = (self._nonce_int ^ self._counter).to_bytes(self._nn, "big")
        ct = self._cipher.encrypt(nonce, bytes(data), FINAL_AAD if final else b"")
        self._counter += 1
        self._final_sent = final
        return _frame(ct, final)
