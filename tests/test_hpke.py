"""HPKE behaviour beyond the vectors: mode rules, roles, limits, and every kind of bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc import hpke
from privproc.errors import (
    InvalidKeyError,
    MessageLimitReachedError,
    OpenError,
    PrivprocError,
    UnsupportedError,
    UsageError,
)

ALL_KEMS = [hpke.kem_by_id(i) for i in (0x10, 0x11, 0x12, 0x20, 0x21, 0x41, 0x647A)]
SUITE = hpke.CipherSuite(hpke.KEM_X25519_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM)
PSK = bytes(range(32))


@pytest.mark.parametrize("kem", ALL_KEMS, ids=lambda k: k.name)
def test_every_kem_round_trips_in_every_mode_it_offers(kem: hpke.Kem) -> None:
    suite = hpke.CipherSuite(kem, hpke.KDF_HKDF_SHA384, hpke.AEAD_CHACHA20_POLY1305)
    sk_r = kem.generate_key_pair()
    sk_s = kem.generate_key_pair()
    modes: list[dict[str, object]] = [{}, {"psk": PSK, "psk_id": b"id"}]
    for kwargs in modes:
        enc, ct = suite.seal(sk_r.public_key, b"message", b"info", b"aad", **kwargs)  # type: ignore[arg-type]
        assert suite.open(enc, sk_r, ct, b"info", b"aad", **kwargs) == b"message"  # type: ignore[arg-type]
    if kem.supports_auth:
        for psk_kwargs in ({}, {"psk": PSK, "psk_id": b"id"}):
            enc, ct = suite.seal(sk_r.public_key, b"m", sk_s=sk_s, **psk_kwargs)
            assert suite.open(enc, sk_r, ct, pk_s=sk_s.public_key, **psk_kwargs) == b"m"
            other = kem.generate_key_pair()
            with pytest.raises(OpenError):
                suite.open(enc, sk_r, ct, pk_s=other.public_key, **psk_kwargs)
    # Private keys survive serialisation.
    again = kem.deserialize_private_key(sk_r.to_bytes())
    assert again.public_key == sk_r.public_key
    assert kem.deserialize_public_key(sk_r.public_key.to_bytes()) == sk_r.public_key


def test_psk_rules() -> None:
    pk = SUITE.kem.generate_key_pair().public_key
    with pytest.raises(UsageError):
        SUITE.setup_sender(pk, psk=PSK)
    with pytest.raises(UsageError):
        SUITE.setup_sender(pk, psk_id=b"id")
    with pytest.raises(UsageError):
        SUITE.setup_sender(pk, psk=b"short", psk_id=b"id")


def test_wrong_psk_or_info_or_aad_fails_to_open() -> None:
    sk = SUITE.kem.generate_key_pair()
    enc, ct = SUITE.seal(sk.public_key, b"m", b"info", b"aad", psk=PSK, psk_id=b"id")
    with pytest.raises(OpenError):
        SUITE.open(enc, sk, ct, b"info", b"aad", psk=bytes(32), psk_id=b"id")
    with pytest.raises(OpenError):
        SUITE.open(enc, sk, ct, b"info", b"aad", psk=PSK, psk_id=b"other")
    with pytest.raises(OpenError):
        SUITE.open(enc, sk, ct, b"inf0", b"aad", psk=PSK, psk_id=b"id")
    with pytest.raises(OpenError):
        SUITE.open(enc, sk, ct, b"info", b"", psk=PSK, psk_id=b"id")


def test_tampering_anywhere_fails() -> None:
    sk = SUITE.kem.generate_key_pair()
    enc, ct = SUITE.seal(sk.public_key, b"message")
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x80
        with pytest.raises(OpenError):
            SUITE.open(enc, sk, bytes(bad))
    bad_enc = bytes([enc[0] ^ 1]) + enc[1:]
    with pytest.raises(OpenError):
        SUITE.open(bad_enc, sk, ct)
    with pytest.raises(OpenError):
        SUITE.open(enc, sk, ct[:-1])
    with pytest.raises(OpenError):
        SUITE.open(enc, SUITE.kem.generate_key_pair(), ct)


def test_roles_and_sequence_numbers() -> None:
    sk = SUITE.kem.generate_key_pair()
    enc, sender = SUITE.setup_sender(sk.public_key, b"i")
    recipient = SUITE.setup_recipient(enc, sk, b"i")
    cts = [sender.seal(bytes([n])) for n in range(3)]
    assert len(set(cts)) == 3
    with pytest.raises(UsageError):
        sender.open(cts[0])
    with pytest.raises(UsageError):
        recipient.seal(b"x")
    # Out of order is refused: the nonce is bound to the sequence number.
    with pytest.raises(OpenError):
        recipient.open(cts[1])
    assert recipient.seq == 0
    assert [recipient.open(c) for c in cts] == [b"\x00", b"\x01", b"\x02"]
    assert sender.export(b"ctx", 40) == recipient.export(b"ctx", 40)
    assert sender.export(b"ctx", 40) != sender.export(b"ctx2", 40)


def test_message_limit() -> None:
    sk = SUITE.kem.generate_key_pair()
    _, sender = SUITE.setup_sender(sk.public_key)
    sender.seq = (1 << 96) - 1
    with pytest.raises(MessageLimitReachedError):
        sender.seal(b"x")


def test_export_only() -> None:
    suite = hpke.CipherSuite(hpke.KEM_XWING, hpke.KDF_HKDF_SHA256, hpke.AEAD_EXPORT_ONLY)
    sk = suite.kem.generate_key_pair()
    enc, secret = suite.send_export(sk.public_key, b"info", b"ctx", 32)
    assert suite.receive_export(enc, sk, b"info", b"ctx", 32) == secret
    with pytest.raises(UsageError):
        suite.seal(sk.public_key, b"x")
    with pytest.raises(UsageError):
        suite.setup_recipient(enc, sk, b"info").export(b"", 255 * 32 + 1)


def test_unknown_identifiers_and_mismatched_keys() -> None:
    for bad in ((0x9999, 1, 1), (0x20, 0x9999, 1), (0x20, 1, 0x9999)):
        with pytest.raises(UnsupportedError):
            hpke.CipherSuite.from_ids(*bad)
    p256 = hpke.KEM_P256_HKDF_SHA256.generate_key_pair()
    with pytest.raises(UsageError):
        SUITE.seal(p256.public_key, b"x")
    with pytest.raises(UsageError):
        SUITE.setup_sender(
            SUITE.kem.generate_key_pair().public_key, b"x" * (hpke.MAX_INPUT_LENGTH + 1)
        )


def test_invalid_public_keys() -> None:
    p256 = hpke.KEM_P256_HKDF_SHA256
    good = p256.generate_key_pair().public_key.to_bytes()
    not_on_curve = good[:-1] + bytes([good[-1] ^ 1])
    for bad in (not_on_curve, b"\x02" + good[1:], good[:33], bytes(65)):
        with pytest.raises(InvalidKeyError):
            p256.deserialize_public_key(bad)
    for bad_sk in (bytes(32), b"\xff" * 32):
        with pytest.raises(InvalidKeyError):
            p256.deserialize_private_key(bad_sk)
    # X25519: a low-order point gives an all-zero shared value, which must be refused.
    sk = SUITE.kem.generate_key_pair()
    with pytest.raises(InvalidKeyError):
        SUITE.setup_recipient(bytes(32), sk)


def test_reprs_hide_keys() -> None:
    sk = SUITE.kem.generate_key_pair()
    assert sk.to_bytes().hex() not in repr(sk)
    _, ctx = SUITE.setup_sender(sk.public_key)
    assert ctx.key.hex() not in repr(ctx)


@settings(max_examples=60, deadline=None)
@given(kem=st.sampled_from(ALL_KEMS), data=st.binary(max_size=1300))
def test_random_public_keys_either_load_or_raise_typed(kem: hpke.Kem, data: bytes) -> None:
    with contextlib.suppress(PrivprocError):
        kem.deserialize_public_key(data)


@settings(max_examples=60, deadline=None)
@given(enc=st.binary(max_size=1200), ct=st.binary(max_size=64))
def test_random_encapsulations_never_escape_the_hierarchy(enc: bytes, ct: bytes) -> None:
    for kem in (hpke.KEM_X25519_HKDF_SHA256, hpke.KEM_XWING, hpke.KEM_MLKEM768):
        suite = hpke.CipherSuite(kem, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM)
        with pytest.raises(PrivprocError):
            suite.open(enc, kem.generate_key_pair(), ct)
