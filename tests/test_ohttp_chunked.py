"""Chunked OHTTP (draft-ietf-ohai-chunked-ohttp): the draft's Appendix A byte for byte, round
trips, truncation, tampering, reordering and fuzzing of both decoders."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc import hpke
from privproc.errors import (
    MessageLimitReachedError,
    OpenError,
    PrivprocError,
    TooLargeError,
    TrailingDataError,
    TruncatedError,
    UnknownKeyError,
    UnsupportedError,
    UsageError,
)
from privproc.ohttp.chunked import (
    MEDIA_TYPE_CHUNKED_REQUEST,
    MEDIA_TYPE_CHUNKED_RESPONSE,
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
)
from privproc.ohttp.keys import GatewayKey, KeyConfig, KeyRing, SymmetricSuite
from privproc.wire import encode_varint

# draft-ietf-ohai-chunked-ohttp, Appendix A (ietf-wg-ohai/draft-ohai-chunked-ohttp,
# draft-ietf-ohai-chunked-ohttp.txt at commit 1a87f52999620fbf712f289c4571d82580d4c4e6,
# "draft-ietf-ohai-chunked-ohttp-latest", 17 February 2026).
H = bytes.fromhex
SERVER_SK = H("1c190d72acdbe4dbc69e680503bb781a932c70a12c8f3754434c67d8640d8698")
KEY_CONFIG = H(
    "010020668eb21aace159803974a4c67f08b4152d29bed10735fd08f98ccdd6fe09570800080001000100010003"
)
REQUEST = H("00034745540568747470730b6578616d706c652e636f6d012f")
CLIENT_SK_E = H("b26d565f3f875ed480d1abced3d665159650c99174fd0b124ac4bda0c64ae324")
CLIENT_PK_E = H("8811eb457e100811c40a0aa71340a1b81d804bb986f736f2f566a7199761a032")
INFO = H("6d6573736167652f6268747470206368756e6b656420726571756573740001002000010001")
ENCAPSULATED_REQUEST = H(
    "01002000010001"
    "8811eb457e100811c40a0aa71340a1b81d804bb986f736f2f566a7199761a032"
    "1c2ad24942d4d692563012f2980c8fef437a336b9b2fc938ef77a5834f"
    "1d2e33d8fd25577afe31bd1c79d094f76b6250ae6549b473ecd950501311"
    "001c6c1395d0ef7c1022297966307b8a7f"
)
RESPONSE = H("0140c8")
RESPONSE_SECRET = H("1d4484834ae36102a6ac42a5523454d9")
RESPONSE_NONCE = H("bcce7f4cb921309ba5d62edf1769ef09")
RESPONSE_SALT = CLIENT_PK_E + RESPONSE_NONCE
RESPONSE_PRK = H("3967884b5f7b4bce4a5320a3e3f79fdc97389f7deba1c1e11c5ea62278187786")
RESPONSE_KEY = H("8209f78f2a1610d80c7125009b00aff0")
RESPONSE_BASE_NONCE = H("fead854635d2d5527d64f546")
CHUNK_NONCES = [H("fead854635d2d5527d64f546"), H("fead854635d2d5527d64f547")]
CHUNK_NONCES.append(H("fead854635d2d5527d64f544"))
ENCAPSULATED_RESPONSE = H(
    "bcce7f4cb921309ba5d62edf1769ef09"
    "1179bf1cc87fa0e2c02de4546945aa3d1e48"
    "12b348b5bd4c594c16b6170b07b475845d1f32"
    "00ed9d8a796617a5b27265f4d73247f639"
)


def _vector_gateway() -> tuple[KeyConfig, KeyRing]:
    config = KeyConfig.decode(KEY_CONFIG)
    sk = config.kem.deserialize_private_key(SERVER_SK)
    return config, KeyRing([GatewayKey(config, sk)])


_KEY = GatewayKey.generate(
    3, hpke.KEM_X25519_HKDF_SHA256, [(hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM)]
)
_RING = KeyRing([_KEY])
CONFIG = _KEY.config


def _request(
    pieces: list[bytes], config: KeyConfig = CONFIG, suite: SymmetricSuite | None = None
) -> tuple[bytes, ChunkedRequestEncoder]:
    enc = ChunkedRequestEncoder(config, suite)
    out = enc.header()
    for p in pieces[:-1]:
        out += enc.chunk(p)
    out += enc.chunk(pieces[-1], final=True)
    return out, enc


def _feed(decoder: ChunkedRequestDecoder | ChunkedResponseDecoder, data: bytes, step: int) -> bytes:
    got = b""
    for i in range(0, len(data), step):
        got += b"".join(decoder.receive(data[i : i + step]))
    got += b"".join(decoder.close())
    return got


def _exchange(
    req_pieces: list[bytes], resp_pieces: list[bytes]
) -> tuple[bytes, bytes, ChunkedRequestDecoder, ChunkedResponseDecoder]:
    request, client = _request(req_pieces)
    server = ChunkedRequestDecoder(_RING)
    assert _feed(server, request, 7) == b"".join(req_pieces)
    assert server.finished
    resp_enc = server.response_encoder()
    response = resp_enc.header()
    for p in resp_pieces[:-1]:
        response += resp_enc.chunk(p)
    response += resp_enc.chunk(resp_pieces[-1], final=True)
    return request, response, server, client.response_decoder()


# --- The draft's example --------------------------------------------------------------------


def test_media_types() -> None:
    assert MEDIA_TYPE_CHUNKED_REQUEST == "message/ohttp-chunked-req"
    assert MEDIA_TYPE_CHUNKED_RESPONSE == "message/ohttp-chunked-res"


def test_appendix_a_request_byte_for_byte() -> None:
    config, ring = _vector_gateway()
    sk_e = config.kem.deserialize_private_key(CLIENT_SK_E)
    assert sk_e.public_key.to_bytes() == CLIENT_PK_E
    encoder = ChunkedRequestEncoder(config, sk_e=sk_e)
    out = encoder.header() + encoder.chunk(REQUEST[:12]) + encoder.chunk(REQUEST[12:])
    out += encoder.chunk(b"", final=True)
    assert out == ENCAPSULATED_REQUEST
    # The info string of the HPKE context is the draft's.
    key = ring.get(1)
    assert key is not None
    ctx = config.cipher_suite().setup_recipient(CLIENT_PK_E, key.private_key, INFO)
    assert ctx.open(ENCAPSULATED_REQUEST[40:68]) == REQUEST[:12]

    decoder = ChunkedRequestDecoder(ring)
    assert decoder.receive(ENCAPSULATED_REQUEST) == [REQUEST[:12], REQUEST[12:]]
    assert not decoder.finished
    assert decoder.close() == []  # the final chunk is empty
    assert decoder.finished
    assert decoder.key_id == 1

    responder = decoder.response_encoder(response_nonce=RESPONSE_NONCE)
    response = responder.header() + responder.chunk(RESPONSE[:1]) + responder.chunk(RESPONSE[1:])
    response += responder.chunk(b"", final=True)
    assert response == ENCAPSULATED_RESPONSE

    reader = encoder.response_decoder()
    assert reader.receive(ENCAPSULATED_RESPONSE) == [RESPONSE[:1], RESPONSE[1:]]
    assert not reader.finished
    assert reader.close() == []
    assert reader.finished


def test_appendix_a_intermediate_values() -> None:
    config, ring = _vector_gateway()
    suite = config.cipher_suite()
    key = ring.get(1)
    assert key is not None
    ctx = suite.setup_recipient(CLIENT_PK_E, key.private_key, INFO)
    assert ctx.export(b"message/bhttp chunked response", 16) == RESPONSE_SECRET
    prk = suite.kdf.extract(RESPONSE_SALT, RESPONSE_SECRET)
    assert prk == RESPONSE_PRK
    assert suite.kdf.expand(prk, b"key", 16) == RESPONSE_KEY
    assert suite.kdf.expand(prk, b"nonce", 12) == RESPONSE_BASE_NONCE
    base = int.from_bytes(RESPONSE_BASE_NONCE, "big")
    assert [(base ^ i).to_bytes(12, "big") for i in range(3)] == CHUNK_NONCES
    # The final response chunk is sealed with the AAD "final" under the third nonce.
    cipher = suite.aead.cipher(RESPONSE_KEY)
    assert cipher.decrypt(CHUNK_NONCES[2], ENCAPSULATED_RESPONSE[-16:], b"final") == b""


# --- Round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 2, 3, 17, 64, 1000, 1 << 20])
@pytest.mark.parametrize(
    ("req", "resp"),
    [
        ([b""], [b""]),  # final-only, empty
        ([b"hello"], [b"world"]),  # final-only, with data
        ([b"a", b"bc", b""], [b"x", b"", b"yz", b""]),  # empty non-final chunks emit nothing
        ([b"q" * 70, b"r" * 16400], [b"s" * 100_000, b"t"]),  # two- and four-byte varints
    ],
)
def test_round_trips(req: list[bytes], resp: list[bytes], step: int) -> None:
    _, response, _, reader = _exchange(req, resp)
    assert _feed(reader, response, step) == b"".join(resp)
    assert reader.finished


@pytest.mark.parametrize(
    "kem",
    [hpke.KEM_X25519_HKDF_SHA256, hpke.KEM_P256_HKDF_SHA256, hpke.KEM_MLKEM768, hpke.KEM_XWING],
)
@pytest.mark.parametrize(
    ("kdf", "aead"),
    [
        (hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM),
        (hpke.KDF_HKDF_SHA384, hpke.AEAD_AES_256_GCM),
        (hpke.KDF_HKDF_SHA512, hpke.AEAD_CHACHA20_POLY1305),
    ],
)
def test_round_trip_every_suite(kem: hpke.Kem, kdf: hpke.Kdf, aead: hpke.Aead) -> None:
    key = GatewayKey.generate(7, kem, [(kdf, aead)])
    ring = KeyRing([key])
    request, client = _request([b"one", b"two", b"three"], key.config)
    server = ChunkedRequestDecoder(ring)
    assert _feed(server, request, 5) == b"onetwothree"
    assert server.suite is not None
    assert server.suite.aead is aead
    responder = server.response_encoder()
    response = responder.header() + responder.chunk(b"four") + responder.chunk(b"5", final=True)
    assert len(responder.header()) == max(aead.nn, aead.nk)
    reader = client.response_decoder()
    assert _feed(reader, response, 3) == b"four5"


def test_empty_non_final_chunk_emits_nothing() -> None:
    encoder = ChunkedRequestEncoder(CONFIG)
    encoder.header()
    assert encoder.chunk(b"") == b""
    assert encoder._context.seq == 0


def test_non_minimal_varints_are_accepted() -> None:
    """The length encoding is not authenticated (draft §6): any varint form is valid."""
    encoder = ChunkedRequestEncoder(CONFIG)
    framed = encoder.header()
    ct = encoder._context.seal(b"abc")
    final = encoder._context.seal(b"", b"final")
    framed += (0x8000_0000 | len(ct)).to_bytes(4, "big") + ct + b"\x40\x00" + final
    decoder = ChunkedRequestDecoder(_RING)
    assert decoder.receive(framed, end_of_stream=True) == [b"abc"]
    assert decoder.finished


# --- Truncation -------------------------------------------------------------------------------


def test_response_truncated_at_every_offset_never_finishes() -> None:
    request, client = _request([b"req"])
    server = ChunkedRequestDecoder(_RING)
    server.receive(request, end_of_stream=True)
    responder = server.response_encoder()
    response = responder.header() + responder.chunk(b"ab") + responder.chunk(b"cde")
    response += responder.chunk(b"fgh", final=True)
    for cut in range(len(response)):
        reader = client.response_decoder()
        reader.receive(response[:cut])
        assert not reader.finished
        with pytest.raises((TruncatedError, OpenError)):
            reader.close()
        assert not reader.finished
        with pytest.raises(PrivprocError):  # a failed decoder stays failed
            reader.receive(b"")
    reader = client.response_decoder()
    assert _feed(reader, response, 1) == b"abcdefgh"
    assert reader.finished


def test_request_truncated_at_every_offset_never_finishes() -> None:
    request, _ = _request([b"abc", b"defg", b"h"])
    for cut in range(len(request)):
        decoder = ChunkedRequestDecoder(_RING)
        decoder.receive(request[:cut])
        with pytest.raises((TruncatedError, OpenError)):
            decoder.close()
        assert not decoder.finished


def test_truncation_before_the_final_indicator_is_truncated_error() -> None:
    request, _ = _request([b"abc", b"defg", b"h"])
    decoder = ChunkedRequestDecoder(_RING)
    # Cut just before the final indicator: every non-final chunk authenticates, but no final one.
    final_start = len(request) - (1 + 16 + 1)
    assert decoder.receive(request[:final_start]) == [b"abc", b"defg"]
    with pytest.raises(TruncatedError):
        decoder.close()
    # Dropping the final indicator and the final chunk also fails; so does a stray zero.
    decoder = ChunkedRequestDecoder(_RING)
    with pytest.raises(TruncatedError):
        decoder.receive(request[:final_start] + b"\x00", end_of_stream=True)


# --- Tampering, reordering, replay, trailing data ---------------------------------------------


def test_any_flipped_response_bit_fails() -> None:
    request, client = _request([b"req"])
    server = ChunkedRequestDecoder(_RING)
    server.receive(request, end_of_stream=True)
    responder = server.response_encoder()
    response = responder.header() + responder.chunk(b"ab") + responder.chunk(b"c", final=True)
    for i in range(len(response)):
        for bit in (0x01, 0x80):
            bad = bytearray(response)
            bad[i] ^= bit
            reader = client.response_decoder()
            with pytest.raises(PrivprocError) as info:
                reader.receive(bytes(bad), end_of_stream=True)
            assert not reader.finished
            # Ciphertext, tag and nonce flips are decryption failures; length flips may also
            # surface as truncation or an over-long chunk.
            if not _is_length_byte(response, i):
                assert isinstance(info.value, OpenError)


def _is_length_byte(response: bytes, i: int) -> bool:
    # Layout here: nonce(16) | len(1) | ct(18) | 0x00 | final(17).
    return i in (16, 16 + 1 + 18)


def test_any_flipped_request_byte_fails() -> None:
    request, _ = _request([b"abc", b"de"])
    for i in range(len(request)):
        bad = bytearray(request)
        bad[i] ^= 0x01
        decoder = ChunkedRequestDecoder(_RING)
        with pytest.raises(PrivprocError):
            decoder.receive(bytes(bad), end_of_stream=True)
        assert not decoder.finished


def _split_frames(body: bytes) -> tuple[list[bytes], bytes]:
    """Non-final framed chunks and the final framed chunk of a chunk sequence."""
    frames: list[bytes] = []
    pos = 0
    while body[pos] != 0:
        width = 1 << (body[pos] >> 6)
        n = int.from_bytes(body[pos : pos + width], "big") & ((1 << (8 * width - 2)) - 1)
        frames.append(body[pos : pos + width + n])
        pos += width + n
    return frames, body[pos:]


def test_reordered_replayed_or_dropped_chunks_fail() -> None:
    request, client = _request([b"one", b"two", b"three", b"four"])
    hdr_len = 7 + 32
    frames, final = _split_frames(request[hdr_len:])
    assert len(frames) == 3
    hdr = request[:hdr_len]
    variants = [
        [frames[1], frames[0], frames[2]],  # swapped
        [frames[0], frames[0], frames[1], frames[2]],  # replayed
        [frames[0], frames[2]],  # dropped
    ]
    for v in variants:
        decoder = ChunkedRequestDecoder(_RING)
        with pytest.raises(OpenError):
            decoder.receive(hdr + b"".join(v) + final, end_of_stream=True)
        assert not decoder.finished
    # A non-final chunk presented as the final one fails (its AAD is empty, not "final").
    decoder = ChunkedRequestDecoder(_RING)
    with pytest.raises(OpenError):
        decoder.receive(hdr + b"\x00" + frames[0][1:], end_of_stream=True)
    # And the final chunk presented as a non-final one fails too.
    decoder = ChunkedRequestDecoder(_RING)
    with pytest.raises(OpenError):
        decoder.receive(hdr + b"".join(frames) + encode_varint(len(final) - 1) + final[1:])

    server = ChunkedRequestDecoder(_RING)
    server.receive(request, end_of_stream=True)
    responder = server.response_encoder()
    nonce = responder.header()
    r_frames = [responder.chunk(b"x"), responder.chunk(b"y")]
    r_final = responder.chunk(b"z", final=True)
    for v in ([r_frames[1], r_frames[0]], [r_frames[0], r_frames[0]], [r_frames[1]]):
        reader = client.response_decoder()
        with pytest.raises(OpenError):
            reader.receive(nonce + b"".join(v) + r_final, end_of_stream=True)
        assert not reader.finished


def test_data_after_the_final_chunk_fails() -> None:
    request, client = _request([b"abc"])
    decoder = ChunkedRequestDecoder(_RING)
    with pytest.raises(OpenError):  # the final chunk runs to the end of the stream
        decoder.receive(request + b"\x00", end_of_stream=True)
    decoder = ChunkedRequestDecoder(_RING)
    decoder.receive(request, end_of_stream=True)
    assert decoder.finished
    with pytest.raises(TrailingDataError):
        decoder.receive(b"x")

    responder = ChunkedRequestDecoder(_RING)
    responder.receive(request, end_of_stream=True)
    enc = responder.response_encoder()
    response = enc.header() + enc.chunk(b"ok", final=True)
    reader = client.response_decoder()
    with pytest.raises(OpenError):
        reader.receive(response + b"\x05abcde", end_of_stream=True)
    assert not reader.finished


def test_empty_non_final_chunk_on_the_wire_is_a_decryption_error() -> None:
    encoder = ChunkedRequestEncoder(CONFIG)
    hdr = encoder.header()
    empty = encoder._context.seal(b"")
    final = encoder._context.seal(b"x", b"final")
    decoder = ChunkedRequestDecoder(_RING)
    with pytest.raises(OpenError):
        decoder.receive(hdr + encode_varint(len(empty)) + empty + b"\x00" + final)


# --- Limits and misuse ------------------------------------------------------------------------


def test_chunk_size_limits() -> None:
    encoder = ChunkedRequestEncoder(CONFIG, max_chunk_size=10)
    encoder.header()
    with pytest.raises(UsageError):
        encoder.chunk(b"x" * 11)
    request, _ = _request([b"x" * 100, b"y"])
    decoder = ChunkedRequestDecoder(_RING, max_chunk_size=99)
    with pytest.raises(TooLargeError):
        decoder.receive(request[: 7 + 32 + 2])  # the length prefix alone is enough to refuse
    request, _ = _request([b"y", b"x" * 100])
    decoder = ChunkedRequestDecoder(_RING, max_chunk_size=99)
    with pytest.raises(TooLargeError):
        decoder.receive(request)  # an over-long final chunk is refused before the end
    decoder = ChunkedRequestDecoder(_RING, max_message_size=50)
    with pytest.raises(TooLargeError):
        decoder.receive(request)


def test_huge_announced_length_is_refused_without_buffering() -> None:
    encoder = ChunkedRequestEncoder(CONFIG)
    decoder = ChunkedRequestDecoder(_RING)
    with pytest.raises(TooLargeError):
        decoder.receive(encoder.header() + encode_varint((1 << 62) - 1))


def test_misuse_is_a_usage_error() -> None:
    encoder = ChunkedRequestEncoder(CONFIG)
    with pytest.raises(UsageError):
        encoder.chunk(b"too early")
    encoder.header()
    with pytest.raises(UsageError):
        encoder.response_decoder()  # request not complete
    encoder.chunk(b"done", final=True)
    assert encoder.finished
    with pytest.raises(UsageError):
        encoder.chunk(b"more")
    decoder = ChunkedRequestDecoder(_RING)
    with pytest.raises(UsageError):
        decoder.response_encoder()
    decoder.receive(encoder.header())
    with pytest.raises(UsageError):
        decoder.response_encoder()  # header arrived, request incomplete
    early = decoder.response_encoder(allow_incomplete=True)
    with pytest.raises(UsageError):
        early.chunk(b"no header yet")
    with pytest.raises(UsageError):
        decoder.response_encoder(allow_incomplete=True, response_nonce=b"short")


def test_header_errors_are_typed() -> None:
    request, _ = _request([b"abc"])
    with pytest.raises(UnknownKeyError):
        ChunkedRequestDecoder(_RING).receive(bytes([request[0] ^ 0xFF]) + request[1:])
    with pytest.raises(UnsupportedError):
        ChunkedRequestDecoder(_RING).receive(request[:1] + b"\x00\x99" + request[3:])
    with pytest.raises(UnsupportedError):
        ChunkedRequestDecoder(_RING).receive(request[:5] + b"\x00\x77" + request[7:])
    with pytest.raises(TruncatedError):
        ChunkedRequestDecoder(_RING).receive(request[:20], end_of_stream=True)


def test_response_counter_limit() -> None:
    request, _client = _request([b"abc"])
    server = ChunkedRequestDecoder(_RING)
    server.receive(request, end_of_stream=True)
    responder = server.response_encoder()
    responder.header()
    responder._counter = 1 << 96
    with pytest.raises(MessageLimitReachedError):
        responder.chunk(b"x")


# --- Fuzzing ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64), st.booleans())
def test_fuzz_request_decoder(data: bytes, step: int, prefix: bool) -> None:
    if prefix:
        data = ChunkedRequestEncoder(CONFIG).header() + data
    decoder = ChunkedRequestDecoder(_RING, max_chunk_size=256)
    try:
        for i in range(0, len(data), step):
            decoder.receive(data[i : i + step])
        decoder.close()
    except PrivprocError:
        assert not decoder.finished
    else:  # practically unreachable: it would need a forged AEAD tag
        assert decoder.finished


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64), st.booleans())
def test_fuzz_response_decoder(data: bytes, step: int, mutate_real: bool) -> None:
    request, client = _request([b"q"])
    if mutate_real:
        server = ChunkedRequestDecoder(_RING)
        server.receive(request, end_of_stream=True)
        responder = server.response_encoder()
        real = responder.header() + responder.chunk(b"abc") + responder.chunk(b"d", final=True)
        cut = len(data) % (len(real) + 1)
        data = real[:cut] + data
    reader = client.response_decoder(max_chunk_size=256)
    try:
        for i in range(0, len(data), step):
            reader.receive(data[i : i + step])
        reader.close()
    except PrivprocError:
        assert not reader.finished
