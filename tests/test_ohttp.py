"""RFC 9458 in the library: key configurations and lists, encapsulation both ways for every KEM,
rotation, and typed errors for every bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc import hpke
from privproc.errors import (
    DecodeError,
    OpenError,
    PrivprocError,
    TooLargeError,
    TrailingDataError,
    UnknownKeyError,
    UnsupportedError,
    UsageError,
)
from privproc.ohttp.keys import (
    GatewayKey,
    KeyConfig,
    KeyRing,
    SymmetricSuite,
    decode_key_configs,
    encode_key_configs,
)
from privproc.ohttp.messages import decapsulate_request, encapsulate_request

RING = KeyRing.generate()


def _with_length(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


def test_keys_document_round_trip_and_order() -> None:
    doc = RING.keys_document()
    assert decode_key_configs(doc) == RING.advertised
    assert RING.advertised[0].kem is hpke.KEM_X25519_HKDF_SHA256
    assert RING.advertised[0].suites == (
        SymmetricSuite(hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM),
    )


def test_unknown_kems_and_suites_are_skipped() -> None:
    known = RING.advertised[0]
    unknown_kem = b"\x07\x99\x99" + bytes(32) + b"\x00\x04\x00\x01\x00\x01"
    mixed_suites = (
        bytes([9]) + b"\x00\x20" + known.public_key.to_bytes() + b"\x00\x0c"
        + b"\x00\x01\x99\x99" + b"\x77\x77\x00\x01" + b"\x00\x01\x00\x03"
    )  # fmt: skip
    export_only = (
        bytes([10]) + b"\x00\x20" + known.public_key.to_bytes() + b"\x00\x04\x00\x01\xff\xff"
    )
    doc = b"".join(
        _with_length(x) for x in (unknown_kem, mixed_suites, export_only, known.encode())
    )
    configs = decode_key_configs(doc)
    assert [c.key_id for c in configs] == [9, known.key_id]
    assert configs[0].suites == (SymmetricSuite(hpke.KDF_HKDF_SHA256, hpke.AEAD_CHACHA20_POLY1305),)
    with pytest.raises(UnsupportedError):
        decode_key_configs(_with_length(unknown_kem))
    with pytest.raises(UnsupportedError):
        KeyConfig.decode(unknown_kem)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw[:-1],  # cuts the last suite
        lambda raw: raw[: 3 + 10],  # inside the public key
        lambda raw: raw[:-4] + b"\x00\x00",  # bad suites length
        lambda raw: raw + b"\x00",  # trailing byte
    ],
)
def test_malformed_configs(mutate: object) -> None:
    raw = RING.advertised[0].encode()
    bad = mutate(raw)  # type: ignore[operator]
    with pytest.raises(DecodeError):
        KeyConfig.decode(bad)
    with pytest.raises(DecodeError):
        decode_key_configs(_with_length(bad))


def test_malformed_lists() -> None:
    doc = RING.keys_document()
    with pytest.raises(DecodeError):
        decode_key_configs(doc[:-1])
    with pytest.raises(DecodeError):
        decode_key_configs(doc + b"\x00")
    raw = RING.advertised[0].encode() + b"\xaa"
    with pytest.raises(TrailingDataError):
        decode_key_configs(_with_length(raw))
    with pytest.raises(UnsupportedError):
        decode_key_configs(b"")
    with pytest.raises(DecodeError):
        decode_key_configs(b"\x00" * (64 * 1024 + 1))
    bad_point = RING.advertised[3].encode()
    assert RING.advertised[3].kem is hpke.KEM_P256_HKDF_SHA256
    bad_point = bad_point[:3] + b"\x04" + b"\xff" * 64 + bad_point[3 + 65 :]
    with pytest.raises(DecodeError):
        decode_key_configs(_with_length(bad_point))


@pytest.mark.parametrize("config", RING.advertised, ids=lambda c: c.kem.name)
def test_every_config_and_suite_round_trips(config: KeyConfig) -> None:
    for suite in config.suites:
        body, client = encapsulate_request(config, b"request bytes", suite=suite)
        assert body[0] == config.key_id
        inner, server = decapsulate_request(RING, body)
        assert inner == b"request bytes"
        assert server.key_id == config.key_id
        response = server.encapsulate_response(b"response bytes")
        assert client.decapsulate_response(response) == b"response bytes"
        # Responses are bound to their request: another client context cannot read it.
        _, other = encapsulate_request(config, b"request bytes", suite=suite)
        with pytest.raises(OpenError):
            other.decapsulate_response(response)


def test_decapsulation_errors_are_typed() -> None:
    config = RING.advertised[0]
    body, client = encapsulate_request(config, b"r")
    free_id = next(i for i in range(256) if i not in RING.live_ids)
    cases: dict[bytes, type[PrivprocError]] = {
        body[:6]: DecodeError,
        body[:-1]: OpenError,
        body[:7 + 31]: DecodeError,
        bytes([free_id]) + body[1:]: UnknownKeyError,
        body[:1] + b"\x00\x10" + body[3:]: UnsupportedError,
        body[:3] + b"\x00\x03" + body[5:]: UnsupportedError,
        body[:-2] + bytes([body[-2] ^ 1]) + body[-1:]: OpenError,
    }  # fmt: skip
    for bad, error in cases.items():
        with pytest.raises(error):
            decapsulate_request(RING, bad)
    with pytest.raises(TooLargeError):
        decapsulate_request(RING, body, max_size=len(body) - 1)
    _, server = decapsulate_request(RING, body)
    response = server.encapsulate_response(b"x")
    for bad_response in (response[:-1], response[:20], bytes([response[0] ^ 1]) + response[1:]):
        with pytest.raises((OpenError, DecodeError)):
            client.decapsulate_response(bad_response)
    with pytest.raises(TooLargeError):
        client.decapsulate_response(response, max_size=4)


def test_rotation_keeps_old_keys_live_until_retired() -> None:
    ring = KeyRing.generate()
    old_config = ring.advertised[0]
    body, _ = encapsulate_request(old_config, b"before rotation")
    previous = ring.rotate()
    assert old_config.key_id in previous
    assert old_config not in ring.advertised
    assert len(ring.live_ids) == 2 * len(previous)
    assert decapsulate_request(ring, body)[0] == b"before rotation"
    fresh = ring.advertised[0]
    assert decapsulate_request(ring, encapsulate_request(fresh, b"after")[0])[0] == b"after"
    ring.retire(previous)
    with pytest.raises(UnknownKeyError):
        decapsulate_request(ring, body)
    assert ring.live_ids == sorted(c.key_id for c in ring.advertised)


def test_key_material_checks() -> None:
    a = GatewayKey.generate(
        1, hpke.KEM_X25519_HKDF_SHA256, [(hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM)]
    )
    b = hpke.KEM_X25519_HKDF_SHA256.generate_key_pair()
    with pytest.raises(PrivprocError):
        GatewayKey(a.config, b)
    with pytest.raises(UsageError):
        KeyRing([a, a])
    with pytest.raises(UsageError):
        KeyConfig(256, b.public_key, a.config.suites)
    with pytest.raises(UsageError):
        KeyConfig(1, b.public_key, (SymmetricSuite(hpke.KDF_HKDF_SHA256, hpke.AEAD_EXPORT_ONLY),))
    with pytest.raises(UnsupportedError):
        a.config.cipher_suite(SymmetricSuite(hpke.KDF_HKDF_SHA512, hpke.AEAD_AES_128_GCM))
    assert a.private_key.to_bytes().hex() not in repr(a)
    assert encode_key_configs([a.config]) == _with_length(a.config.encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1400))
def test_property_random_requests(data: bytes) -> None:
    with pytest.raises(PrivprocError):
        decapsulate_request(RING, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_property_random_key_lists(data: bytes) -> None:
    with contextlib.suppress(PrivprocError):
        decode_key_configs(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_property_mutated_requests(data: st.DataObject) -> None:
    config = data.draw(st.sampled_from(RING.advertised))
    body = bytearray(encapsulate_request(config, b"payload")[0])
    i = data.draw(st.integers(0, len(body) - 1))
    body[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(PrivprocError):
        decapsulate_request(RING, bytes(body))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_responses(data: bytes) -> None:
    _, client = encapsulate_request(RING.advertised[0], b"payload")
    with pytest.raises(PrivprocError):
        client.decapsulate_response(data)


def test_a_given_response_nonce_must_have_the_suites_length() -> None:
    body, client = encapsulate_request(RING.advertised[0], b"payload")
    _, server = decapsulate_request(RING, body)
    n = max(server.suite.aead.nn, server.suite.aead.nk)
    with pytest.raises(UsageError, match=f"must be {n} bytes"):
        server.encapsulate_response(b"answer", response_nonce=b"\x00" * (n - 1))
    answer = server.encapsulate_response(b"answer", response_nonce=b"\x07" * n)
    assert answer[:n] == b"\x07" * n
    assert client.decapsulate_response(answer) == b"answer"
