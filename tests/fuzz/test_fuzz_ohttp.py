"""Fuzzing Oblivious HTTP (ohttp/keys.py, messages.py, chunked.py, bhttp.py): mutated key
configuration documents, encapsulated requests and responses, chunked requests and binary HTTP
messages. Random-bytes fuzzing of the same parsers lives in tests/test_ohttp.py,
test_ohttp_chunked.py, test_bhttp.py and test_bhttp_stream.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from privproc.ohttp import bhttp
from privproc.ohttp.chunked import ChunkedRequestDecoder, ChunkedRequestEncoder
from privproc.ohttp.keys import KeyConfig, KeyRing, decode_key_configs, encode_key_configs
from privproc.ohttp.messages import decapsulate_request, encapsulate_request, key_for_header
from tests.conftest import load_vectors
from tests.fuzz.support import fuzz, mutated, parses

RING = KeyRing.generate()
CONFIGS = encode_key_configs(RING.advertised)
REQUEST, CLIENT = encapsulate_request(RING.advertised[0], b"a private prompt")
_, SERVER = decapsulate_request(RING, REQUEST)
RESPONSE = SERVER.encapsulate_response(b"a private answer")
BHTTP = [bytes.fromhex(e["bhttp"]) for e in load_vectors("bhttp/rfc9292-examples.json")["examples"]]


def _chunked_request() -> bytes:
    encoder = ChunkedRequestEncoder(RING.advertised[0])
    return encoder.header() + encoder.chunk(b"part one") + encoder.chunk(b"two", final=True)


CHUNKED = _chunked_request()


@fuzz()
@given(st.one_of(mutated(CONFIGS), mutated(RING.advertised[0].encode())))
def test_key_configs(data: bytes) -> None:
    configs = parses(decode_key_configs, data)
    if configs is not None:
        assert decode_key_configs(encode_key_configs(configs)) == configs
    config = parses(KeyConfig.decode, data)
    if config is not None:
        assert KeyConfig.decode(config.encode()) == config


@fuzz(0.5)
@given(mutated(REQUEST))
def test_mutated_requests(data: bytes) -> None:
    if len(data) >= 7:  # its callers hand it exactly the 7-byte header
        parses(lambda d: key_for_header(RING, d[:7]), data)
    opened = parses(lambda d: decapsulate_request(RING, d), data)
    if opened is not None:  # only the genuine request opens
        assert data == REQUEST


@fuzz(0.5)
@given(mutated(RESPONSE))
def test_mutated_responses(data: bytes) -> None:
    answer = parses(CLIENT.decapsulate_response, data)
    if answer is not None:
        assert data == RESPONSE


@fuzz(0.5)
@given(mutated(CHUNKED), st.integers(1, 64))
def test_mutated_chunked_requests(data: bytes, step: int) -> None:
    decoder = ChunkedRequestDecoder(RING, max_chunk_size=256)

    def feed(raw: bytes) -> bool:
        for i in range(0, len(raw), step):
            decoder.receive(raw[i : i + step])
        decoder.close()
        return True

    if parses(feed, data):
        assert data == CHUNKED


@fuzz()
@given(mutated(st.sampled_from(BHTTP)))
def test_mutated_binary_http(data: bytes) -> None:
    message = parses(bhttp.decode_message, data)
    if isinstance(message, bhttp.Request):
        assert bhttp.decode_request(bhttp.encode_request(message)) == message
    elif message is not None:
        assert bhttp.decode_response(bhttp.encode_response(message)) == message
