"""RSA blind signatures (RFC 9474): RSABSSA-SHA384-PSS and -PSSZERO, Randomized and Deterministic.

Rules of this module:
- Pure functions over bytes and `cryptography` RSA keys; no I/O, no global state.
- The client side is `prepare`, `blind`, `finalize`; the signer's side is `blind_sign`; anyone can
  `verify`. Each failure raises a typed `PrivprocError`; no message carries key material.
- Arithmetic is Python's big integers, except the signer's private exponentiation: GMP's
  constant-time `powmod_sec` (through gmpy2) over CRT, on a message blinded with a fresh random
  factor, checked against the public key before its result leaves (RFC 9474 §4.3, fault
  protection).
- `salt` and `r` arguments exist for the RFC's known-answer tests only.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass

import gmpy2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from privproc.errors import CryptoError, DecodeError, UsageError

__all__ = [
    "RSABSSA_SHA384_PSSZERO_DETERMINISTIC",
    "RSABSSA_SHA384_PSSZERO_RANDOMIZED",
    "RSABSSA_SHA384_PSS_DETERMINISTIC",
    "RSABSSA_SHA384_PSS_RANDOMIZED",
    "BlindingState",
    "Variant",
    "blind",
    "blind_sign",
    "finalize",
    "prepare",
    "verify",
]

_HASH_LEN = 48  # SHA-384
_PREFIX_LEN = 32


class BlindSignatureError(CryptoError):
    """A blind signature operation failed (invalid input, or a signature that does not verify)."""


@dataclass(frozen=True)
class Variant:
    """One of the four RFC 9474 variants (§5)."""

    name: str
    salt_length: int
    randomized: bool


RSABSSA_SHA384_PSS_RANDOMIZED = Variant("RSABSSA-SHA384-PSS-Randomized", 48, True)
RSABSSA_SHA384_PSSZERO_RANDOMIZED = Variant("RSABSSA-SHA384-PSSZERO-Randomized", 0, True)
RSABSSA_SHA384_PSS_DETERMINISTIC = Variant("RSABSSA-SHA384-PSS-Deterministic", 48, False)
RSABSSA_SHA384_PSSZERO_DETERMINISTIC = Variant("RSABSSA-SHA384-PSSZERO-Deterministic", 0, False)


@dataclass(frozen=True)
class BlindingState:
    """What the client keeps between `blind` and `finalize`. Secret: it unlinks the signature."""

    inv: int
    input_msg: bytes

    def __repr__(self) -> str:
        return "<BlindingState>"


def _modulus_len(n: int) -> int:
    return (n.bit_length() + 7) // 8


def _element(data: bytes, n: int, what: str) -> int:
    """OS2IP of a modulus-sized input, refused unless it is exactly k bytes and below n."""
    k = _modulus_len(n)
    if len(data) != k:
        raise DecodeError(f"the {what} must be {k} bytes")
    value = int.from_bytes(data, "big")
    if value >= n:
        raise BlindSignatureError(f"the {what} is not smaller than the modulus")
    return value


def _mgf1_sha384(seed: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha384(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def _emsa_pss_encode(msg: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE of RFC 8017 §9.1.1 with SHA-384 and MGF1-SHA-384."""
    em_len = (em_bits + 7) // 8
    if em_len < _HASH_LEN + len(salt) + 2:
        raise UsageError("the RSA modulus is too small for this salt length")
    m_hash = hashlib.sha384(msg).digest()
    h = hashlib.sha384(bytes(8) + m_hash + salt).digest()
    db = bytes(em_len - len(salt) - _HASH_LEN - 2) + b"\x01" + salt
    mask = _mgf1_sha384(h, em_len - _HASH_LEN - 1)
    masked = bytearray(a ^ b for a, b in zip(db, mask, strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    return bytes(masked) + h + b"\xbc"


def prepare(variant: Variant, msg: bytes, *, msg_prefix: bytes | None = None) -> bytes:
    """RFC 9474 §4.1: a random 32-byte prefix for the Randomized variants, none otherwise."""
    if not variant.randomized:
        return msg
    prefix = secrets.token_bytes(_PREFIX_LEN) if msg_prefix is None else msg_prefix
    if len(prefix) != _PREFIX_LEN:
        raise UsageError("the message prefix is 32 bytes")
    return prefix + msg


def blind(
    public_key: rsa.RSAPublicKey,
    variant: Variant,
    input_msg: bytes,
    *,
    salt: bytes | None = None,
    r: int | None = None,
) -> tuple[bytes, BlindingState]:
    """RFC 9474 §4.2: returns (blinded_msg, state). `input_msg` comes from `prepare`."""
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    if salt is None:
        salt = secrets.token_bytes(variant.salt_length)
    elif len(salt) != variant.salt_length:
        raise UsageError(f"{variant.name} uses a {variant.salt_length}-byte salt")
    encoded = _emsa_pss_encode(input_msg, n.bit_length() - 1, salt)
    m = int.from_bytes(encoded, "big")
    if math.gcd(m, n) != 1:
        raise BlindSignatureError("the encoded message is not invertible modulo n")
    while r is None:
        candidate = secrets.randbelow(n - 1) + 1
        if math.gcd(candidate, n) == 1:
            r = candidate
    try:
        inv = pow(r, -1, n)
    except ValueError:
        raise BlindSignatureError("the blinding factor is not invertible modulo n") from None
    z = (m * pow(r, e, n)) % n
    return z.to_bytes(_modulus_len(n), "big"), BlindingState(inv, input_msg)


def blind_sign(private_key: rsa.RSAPrivateKey, blinded_msg: bytes) -> bytes:
    """RFC 9474 §4.3, the signer's only operation: RSASP1 on the blinded message, checked."""
    priv = private_key.private_numbers()
    pub = priv.public_numbers
    n, e = pub.n, pub.e
    m = _element(blinded_msg, n, "blinded message")
    # Blind the exponentiation itself, so no secret-dependent timing relates to m.
    b = secrets.randbelow(n - 2) + 2
    mb = (m * pow(b, e, n)) % n
    p, q = priv.p, priv.q
    s1 = int(gmpy2.powmod_sec(mb % p, priv.dmp1, p))
    s2 = int(gmpy2.powmod_sec(mb % q, priv.dmq1, q))
    sb = s2 + q * ((priv.iqmp * (s1 - s2)) % p)
    s = (sb * int(gmpy2.invert(b, n))) % n
    if pow(s, e, n) != m:
        raise BlindSignatureError("signing failed its own verification")
    return s.to_bytes(_modulus_len(n), "big")


_SHA384 = hashes.SHA384()
_PSS_PADDING = {
    length: padding.PSS(mgf=padding.MGF1(_SHA384), salt_length=length) for length in (0, _HASH_LEN)
}


def verify(public_key: rsa.RSAPublicKey, variant: Variant, input_msg: bytes, sig: bytes) -> None:
    """RSASSA-PSS verification (SHA-384, MGF1-SHA-384, the variant's salt length)."""
    try:
        public_key.verify(sig, input_msg, _PSS_PADDING[variant.salt_length], _SHA384)
    except InvalidSignature:
        raise BlindSignatureError("the signature does not verify") from None


def finalize(
    public_key: rsa.RSAPublicKey, variant: Variant, blind_sig: bytes, state: BlindingState
) -> bytes:
    """RFC 9474 §4.4: unblind and verify; returns the signature over `state.input_msg`."""
    n = public_key.public_numbers().n
    z = _element(blind_sig, n, "blind signature")
    sig = ((z * state.inv) % n).to_bytes(_modulus_len(n), "big")
    verify(public_key, variant, state.input_msg, sig)
    return sig
