"""RFC 9474: the four variants' official vectors, and the failures a signer or client must catch."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.errors import DecodeError, PrivprocError
from privproc.tokens import blindrsa
from tests.conftest import load_vectors

VECTORS: list[dict[str, Any]] = load_vectors("blindrsa/rfc9474-test-vectors.json")
VARIANTS = {
    v.name: v
    for v in (
        blindrsa.RSABSSA_SHA384_PSS_RANDOMIZED,
        blindrsa.RSABSSA_SHA384_PSSZERO_RANDOMIZED,
        blindrsa.RSABSSA_SHA384_PSS_DETERMINISTIC,
        blindrsa.RSABSSA_SHA384_PSSZERO_DETERMINISTIC,
    )
}


def _int(v: dict[str, Any], key: str) -> int:
    return int(v[key], 16)


def _key(v: dict[str, Any]) -> rsa.RSAPrivateKey:
    p, q, d, e, n = (_int(v, k) for k in ("p", "q", "d", "e", "n"))
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    ).private_key()


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["name"])
def test_rfc9474_vector(v: dict[str, Any]) -> None:
    variant = VARIANTS[v["name"]]
    assert variant.randomized == (v["is_randomized"] == "0x01")
    assert variant.salt_length == _int(v, "sLen")
    sk = _key(v)
    pk = sk.public_key()
    n = _int(v, "n")
    msg = bytes.fromhex(v["msg"])
    prefix = bytes.fromhex(v["msg_prefix"]) if variant.randomized else None
    input_msg = blindrsa.prepare(variant, msg, msg_prefix=prefix)
    assert input_msg == bytes.fromhex(v["input_msg"])

    r = pow(_int(v, "inv"), -1, n)
    blinded, state = blindrsa.blind(pk, variant, input_msg, salt=bytes.fromhex(v["salt"]), r=r)
    assert blinded == bytes.fromhex(v["blinded_msg"])
    assert state.inv == _int(v, "inv")
    blind_sig = blindrsa.blind_sign(sk, blinded)
    assert blind_sig == bytes.fromhex(v["blind_sig"])
    sig = blindrsa.finalize(pk, variant, blind_sig, state)
    assert sig == bytes.fromhex(v["sig"])
    blindrsa.verify(pk, variant, input_msg, sig)


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=lambda v: v.name)
def test_round_trip_with_fresh_randomness_and_failures(variant: blindrsa.Variant) -> None:
    sk = _key(VECTORS[0])
    pk = sk.public_key()
    input_msg = blindrsa.prepare(variant, b"token input")
    blinded, state = blindrsa.blind(pk, variant, input_msg)
    blinded2, _ = blindrsa.blind(pk, variant, input_msg)
    assert blinded != blinded2  # fresh blinding every time: the signer cannot link
    blind_sig = blindrsa.blind_sign(sk, blinded)
    sig = blindrsa.finalize(pk, variant, blind_sig, state)
    blindrsa.verify(pk, variant, input_msg, sig)
    with pytest.raises(blindrsa.BlindSignatureError):
        blindrsa.verify(pk, variant, input_msg + b"x", sig)
    tampered = bytes([blind_sig[0] ^ 1]) + blind_sig[1:]
    with pytest.raises(PrivprocError):
        blindrsa.finalize(pk, variant, tampered, state)
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(PrivprocError):
        blindrsa.finalize(pk, variant, blindrsa.blind_sign(other, blinded), state)
    with pytest.raises(DecodeError):
        blindrsa.blind_sign(sk, blinded[:-1])
    with pytest.raises(blindrsa.BlindSignatureError):
        blindrsa.blind_sign(sk, b"\xff" * len(blinded))
    assert "inv" not in repr(state)
