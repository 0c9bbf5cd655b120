"""Hybrid Public Key Encryption (RFC 9180) over `cryptography` primitives.

Rules of this module:
- Pure functions and small context objects over bytes: no I/O, no global mutable state.
- It implements the RFC's layers literally: KEM (`Kem`), KDF (`Kdf`), AEAD (`Aead`), the key
  schedule, and the encryption context with its sequence number. `CipherSuite` ties them together
  and offers the four setup modes and the single-shot helpers.
- KEMs: every DHKEM of RFC 9180 §7.1 (P-256, P-384, P-521, X25519, X448), ML-KEM-768 (0x0041)
  and X-Wing, MLKEM768-X25519 (0x647a), as draft-ietf-hpke-pq defines them. The post-quantum KEMs
  run under the RFC 9180 key schedule with any HKDF; they offer no Auth modes.
- Every failure raises a typed error from `privproc.errors`; no message carries key bytes or
  plaintext. Randomness comes from `os.urandom` (through `cryptography`) only.
- The `sk_e` arguments fix the ephemeral key of a DHKEM for known-answer tests (RFC 9180 and
  RFC 9458 appendices); production callers never pass them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import ClassVar, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from privproc.errors import (
    DeriveKeyPairError,
    InvalidKeyError,
    MessageLimitReachedError,
    OpenError,
    UnsupportedError,
    UsageError,
)

__all__ = [
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AEAD_CHACHA20_POLY1305",
    "AEAD_EXPORT_ONLY",
    "KDF_HKDF_SHA256",
    "KDF_HKDF_SHA384",
    "KDF_HKDF_SHA512",
    "KEM_MLKEM768",
    "KEM_P256_HKDF_SHA256",
    "KEM_P384_HKDF_SHA384",
    "KEM_P521_HKDF_SHA512",
    "KEM_X448_HKDF_SHA512",
    "KEM_X25519_HKDF_SHA256",
    "KEM_XWING",
    "Aead",
    "CipherSuite",
    "Context",
    "Kdf",
    "Kem",
    "Mode",
    "PrivateKey",
    "PublicKey",
    "aead_by_id",
    "kdf_by_id",
    "kem_by_id",
]

_VERSION_LABEL = b"HPKE-v1"
# Bound on caller-supplied inputs (info, psk, psk_id, aad, exporter context). RFC 9180 §7.2.1
# allows far more; nothing in privproc needs more than this, and a bound keeps memory predictable.
MAX_INPUT_LENGTH = 1 << 16
MIN_PSK_LENGTH = 32  # RFC 9180 §9.5: the PSK MUST have at least 32 bytes of entropy


class Mode:
    """HPKE modes (RFC 9180 §5, Table 1)."""

    BASE = 0x00
    PSK = 0x01
    AUTH = 0x02
    AUTH_PSK = 0x03


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _bounded(name: str, value: bytes) -> bytes:
    if len(value) > MAX_INPUT_LENGTH:
        raise UsageError(f"HPKE {name} is {len(value)} bytes; at most {MAX_INPUT_LENGTH} allowed")
    return value


# --- KDF ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Kdf:
    """An HKDF instance (RFC 5869), with the labelled forms of RFC 9180 §4."""

    id: int
    name: str
    hash_name: str
    nh: int

    def extract(self, salt: bytes, ikm: bytes) -> bytes:
        return hmac.digest(salt or bytes(self.nh), ikm, self.hash_name)

    def expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        if length > 255 * self.nh:
            raise UsageError(f"HKDF-Expand length {length} exceeds 255*Nh for {self.name}")
        if length <= self.nh:  # one block: every key, nonce and secret HPKE and OHTTP derive
            return hmac.digest(prk, info + b"\x01", self.hash_name)[:length]
        out = b""
        block = b""
        counter = 1
        while len(out) < length:
            block = hmac.digest(prk, block + info + bytes((counter,)), self.hash_name)
            out += block
            counter += 1
        return out[:length]

    def labeled_extract(self, suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return self.extract(salt, _VERSION_LABEL + suite_id + label + ikm)

    def labeled_expand(
        self, suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int
    ) -> bytes:
        labeled_info = _i2osp(length, 2) + _VERSION_LABEL + suite_id + label + info
        return self.expand(prk, labeled_info, length)


KDF_HKDF_SHA256 = Kdf(0x0001, "HKDF-SHA256", "sha256", 32)
KDF_HKDF_SHA384 = Kdf(0x0002, "HKDF-SHA384", "sha384", 48)
KDF_HKDF_SHA512 = Kdf(0x0003, "HKDF-SHA512", "sha512", 64)
_KDFS = {k.id: k for k in (KDF_HKDF_SHA256, KDF_HKDF_SHA384, KDF_HKDF_SHA512)}


@functools.lru_cache(maxsize=256)
def _schedule_context(kdf: Kdf, suite_id: bytes, mode: int, psk_id: bytes, info: bytes) -> bytes:
    """RFC 9180 §5.1's key_schedule_context: mode || psk_id_hash || info_hash. It depends only on
    public values that repeat (a gateway's info is the same for every request under one key
    configuration), so it is computed once per (suite, mode, psk_id, info): two HMACs fewer a
    request. Bounded: the least recently used go first."""
    psk_id_hash = kdf.labeled_extract(suite_id, b"", b"psk_id_hash", psk_id)
    info_hash = kdf.labeled_extract(suite_id, b"", b"info_hash", info)
    return bytes((mode,)) + psk_id_hash + info_hash


# --- AEAD --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Aead:
    """An AEAD of RFC 9180 §7.3; `nk == 0` marks the export-only mode."""

    id: int
    name: str
    nk: int
    nn: int
    nt: int
    _factory: type[AESGCM] | type[ChaCha20Poly1305] | None

    @property
    def export_only(self) -> bool:
        return self._factory is None

    def cipher(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        if self._factory is None:
            raise UsageError("the export-only AEAD cannot seal or open")
        return self._factory(key)


AEAD_AES_128_GCM = Aead(0x0001, "AES-128-GCM", 16, 12, 16, AESGCM)
AEAD_AES_256_GCM = Aead(0x0002, "AES-256-GCM", 32, 12, 16, AESGCM)
AEAD_CHACHA20_POLY1305 = Aead(0x0003, "ChaCha20Poly1305", 32, 12, 16, ChaCha20Poly1305)
AEAD_EXPORT_ONLY = Aead(0xFFFF, "Export-only", 0, 0, 0, None)
_AEADS = {
    a.id: a for a in (AEAD_AES_128_GCM, AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305, AEAD_EXPORT_ONLY)
}


# --- KEM ---------------------------------------------------------------------------------------


class PublicKey:
    """A KEM public key: its serialisation (`to_bytes`) and the library object behind it."""

    __slots__ = ("_key", "_raw", "kem")

    def __init__(self, kem: Kem, raw: bytes, key: object) -> None:
        self.kem = kem
        self._raw = raw
        self._key = key

    def to_bytes(self) -> bytes:
        """SerializePublicKey (RFC 9180 §4)."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PublicKey)
            and other.kem is self.kem
            and hmac.compare_digest(other._raw, self._raw)
        )

    def __hash__(self) -> int:
        return hash((self.kem.id, self._raw))

    def __repr__(self) -> str:
        return f"<PublicKey {self.kem.name}>"


class PrivateKey:
    """A KEM private key. Its repr never shows key material."""

    __slots__ = ("_key", "_raw", "kem", "public_key")

    def __init__(self, kem: Kem, raw: bytes, key: object, public_key: PublicKey) -> None:
        self.kem = kem
        self._raw = raw
        self._key = key
        self.public_key = public_key

    def to_bytes(self) -> bytes:
        """SerializePrivateKey (RFC 9180 §7.1.2)."""
        return self._raw

    def __repr__(self) -> str:
        return f"<PrivateKey {self.kem.name}>"


class Kem:
    """A key encapsulation mechanism with the interface of RFC 9180 §4."""

    id: int
    name: str
    n_secret: int
    n_enc: int
    n_pk: int
    n_sk: int
    supports_auth: ClassVar[bool] = False

    @property
    def suite_id(self) -> bytes:
        return b"KEM" + _i2osp(self.id, 2)

    def generate_key_pair(self) -> PrivateKey:
        raise NotImplementedError

    def derive_key_pair(self, ikm: bytes) -> PrivateKey:
        raise NotImplementedError

    def deserialize_public_key(self, data: bytes) -> PublicKey:
        raise NotImplementedError

    def deserialize_private_key(self, data: bytes) -> PrivateKey:
        raise NotImplementedError

    def encap(self, pk_r: PublicKey, *, sk_e: PrivateKey | None = None) -> tuple[bytes, bytes]:
        """Return (shared_secret, enc)."""
        raise NotImplementedError

    def decap(self, enc: bytes, sk_r: PrivateKey) -> bytes:
        raise NotImplementedError

    def auth_encap(
        self, pk_r: PublicKey, sk_s: PrivateKey, *, sk_e: PrivateKey | None = None
    ) -> tuple[bytes, bytes]:
        raise UnsupportedError(f"{self.name} offers no authenticated modes")

    def auth_decap(self, enc: bytes, sk_r: PrivateKey, pk_s: PublicKey) -> bytes:
        raise UnsupportedError(f"{self.name} offers no authenticated modes")

    def _check_own(self, key: PublicKey | PrivateKey) -> None:
        if key.kem is not self:
            raise UsageError(f"a {key.kem.name} key cannot be used with {self.name}")

    def __repr__(self) -> str:
        return f"<Kem {self.name} 0x{self.id:04x}>"


class DhKem(Kem):
    """DHKEM(Group, HKDF) of RFC 9180 §4.1, for the NIST curves and X25519/X448."""

    supports_auth = True

    def __init__(
        self,
        kem_id: int,
        name: str,
        kdf: Kdf,
        n_secret: int,
        n_enc: int,
        n_sk: int,
        *,
        curve: ec.EllipticCurve | None = None,
        order: int = 0,
        bitmask: int = 0xFF,
        montgomery: type[x25519.X25519PrivateKey] | type[x448.X448PrivateKey] | None = None,
    ) -> None:
        self.id = kem_id
        self.name = name
        self.kdf = kdf
        self.n_secret = n_secret
        self.n_enc = self.n_pk = n_enc
        self.n_sk = n_sk
        self._curve = curve
        self._order = order
        self._bitmask = bitmask
        self._montgomery = montgomery
        self._suite_id = self.suite_id

    # Key handling

    def _from_private_object(self, key: object) -> PrivateKey:
        pub: object
        if self._curve is None:
            assert isinstance(key, (x25519.X25519PrivateKey, x448.X448PrivateKey))
            raw = key.private_bytes_raw()
            pub = key.public_key()
            pub_raw = pub.public_bytes_raw()
        else:
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            raw = _i2osp(key.private_numbers().private_value, self.n_sk)
            pub = key.public_key()
            pub_raw = pub.public_bytes(_ENC_X962, _FMT_UNCOMPRESSED)
        return PrivateKey(self, raw, key, PublicKey(self, pub_raw, pub))

    def generate_key_pair(self) -> PrivateKey:
        if self._montgomery is not None:
            return self._from_private_object(self._montgomery.generate())
        assert self._curve is not None
        return self._from_private_object(ec.generate_private_key(self._curve))

    def derive_key_pair(self, ikm: bytes) -> PrivateKey:
        _bounded("ikm", ikm)
        sid = self._suite_id
        dkp_prk = self.kdf.labeled_extract(sid, b"", b"dkp_prk", ikm)
        if self._montgomery is not None:
            sk = self.kdf.labeled_expand(sid, dkp_prk, b"sk", b"", self.n_sk)
            return self.deserialize_private_key(sk)
        for counter in range(256):
            candidate = bytearray(
                self.kdf.labeled_expand(sid, dkp_prk, b"candidate", bytes((counter,)), self.n_sk)
            )
            candidate[0] &= self._bitmask
            value = int.from_bytes(candidate, "big")
            if 0 < value < self._order:
                return self.deserialize_private_key(bytes(candidate))
        raise DeriveKeyPairError(f"{self.name}: no valid scalar after 256 candidates")

    def deserialize_private_key(self, data: bytes) -> PrivateKey:
        if len(data) != self.n_sk:
            raise InvalidKeyError(f"{self.name} private key must be {self.n_sk} bytes")
        if self._montgomery is not None:
            return self._from_private_object(self._montgomery.from_private_bytes(data))
        assert self._curve is not None
        value = int.from_bytes(data, "big")
        if not 0 < value < self._order:
            raise InvalidKeyError(f"{self.name} private key is out of range")
        return self._from_private_object(ec.derive_private_key(value, self._curve))

    def deserialize_public_key(self, data: bytes) -> PublicKey:
        if len(data) != self.n_pk:
            raise InvalidKeyError(f"{self.name} public key must be {self.n_pk} bytes")
        try:
            if self._curve is None:
                if self._montgomery is x25519.X25519PrivateKey:
                    key: object = x25519.X25519PublicKey.from_public_bytes(data)
                else:
                    key = x448.X448PublicKey.from_public_bytes(data)
            else:
                if data[0] != 0x04:
                    raise InvalidKeyError(f"{self.name} public key must be uncompressed")
                key = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, data)
        except ValueError:
            raise InvalidKeyError(f"{self.name} public key is not a valid point") from None
        return PublicKey(self, bytes(data), key)

    # DH and the KEM operations

    def _dh(self, sk: PrivateKey, pk: PublicKey) -> bytes:
        try:
            if self._curve is None:
                return sk._key.exchange(pk._key)  # type: ignore[attr-defined,no-any-return]
            return sk._key.exchange(ec.ECDH(), pk._key)  # type: ignore[attr-defined,no-any-return]
        except ValueError:
            # X25519/X448 with a low-order point: RFC 9180 §7.1.4 requires rejecting the
            # all-zero output, which `cryptography` already refuses to produce.
            raise InvalidKeyError(
                f"{self.name}: Diffie-Hellman produced an invalid value"
            ) from None

    def _extract_and_expand(self, dh: bytes, kem_context: bytes) -> bytes:
        sid = self._suite_id
        eae_prk = self.kdf.labeled_extract(sid, b"", b"eae_prk", dh)
        return self.kdf.labeled_expand(sid, eae_prk, b"shared_secret", kem_context, self.n_secret)

    def _ephemeral(self, sk_e: PrivateKey | None) -> PrivateKey:
        if sk_e is None:
            return self.generate_key_pair()
        self._check_own(sk_e)
        return sk_e

    def encap(self, pk_r: PublicKey, *, sk_e: PrivateKey | None = None) -> tuple[bytes, bytes]:
        self._check_own(pk_r)
        sk_e = self._ephemeral(sk_e)
        dh = self._dh(sk_e, pk_r)
        enc = sk_e.public_key.to_bytes()
        return self._extract_and_expand(dh, enc + pk_r.to_bytes()), enc

    def decap(self, enc: bytes, sk_r: PrivateKey) -> bytes:
        self._check_own(sk_r)
        pk_e = self.deserialize_public_key(enc)
        dh = self._dh(sk_r, pk_e)
        return self._extract_and_expand(dh, enc + sk_r.public_key.to_bytes())

    def auth_encap(
        self, pk_r: PublicKey, sk_s: PrivateKey, *, sk_e: PrivateKey | None = None
    ) -> tuple[bytes, bytes]:
        self._check_own(pk_r)
        self._check_own(sk_s)
        sk_e = self._ephemeral(sk_e)
        dh = self._dh(sk_e, pk_r) + self._dh(sk_s, pk_r)
        enc = sk_e.public_key.to_bytes()
        kem_context = enc + pk_r.to_bytes() + sk_s.public_key.to_bytes()
        return self._extract_and_expand(dh, kem_context), enc

    def auth_decap(self, enc: bytes, sk_r: PrivateKey, pk_s: PublicKey) -> bytes:
        self._check_own(sk_r)
        self._check_own(pk_s)
        pk_e = self.deserialize_public_key(enc)
        dh = self._dh(sk_r, pk_e) + self._dh(sk_r, pk_s)
        kem_context = enc + sk_r.public_key.to_bytes() + pk_s.to_bytes()
        return self._extract_and_expand(dh, kem_context)


def _shake256(data: bytes, length: int) -> bytes:
    return hashlib.shake_256(data).digest(length)


class _PqKem(Kem):
    """Shared parts of the draft-ietf-hpke-pq KEMs: keys are seeds, derived with SHAKE256."""

    def __init__(self, kem_id: int, name: str) -> None:
        self.id = kem_id
        self.name = name
        self._suite_id = self.suite_id

    def _labeled_derive(self, ikm: bytes, label: bytes, context: bytes, length: int) -> bytes:
        # SHAKE256.LabeledDerive (draft-ietf-hpke-pq §4, draft-ietf-hpke-hpke).
        labeled_ikm = (
            ikm
            + _VERSION_LABEL
            + self._suite_id
            + _i2osp(len(label), 2)
            + label
            + _i2osp(length, 2)
            + context
        )
        return _shake256(labeled_ikm, length)

    def generate_key_pair(self) -> PrivateKey:
        return self.deserialize_private_key(os.urandom(self.n_sk))

    def derive_key_pair(self, ikm: bytes) -> PrivateKey:
        _bounded("ikm", ikm)
        return self.deserialize_private_key(
            self._labeled_derive(ikm, b"DeriveKeyPair", b"", self.n_sk)
        )


class MlKem768(_PqKem):
    """ML-KEM-768 (FIPS 203) as an HPKE KEM: the shared secret is ML-KEM's own."""

    n_secret = 32
    n_enc = 1088
    n_pk = 1184
    n_sk = 64

    def deserialize_private_key(self, data: bytes) -> PrivateKey:
        if len(data) != self.n_sk:
            raise InvalidKeyError(f"{self.name} private key must be a {self.n_sk}-byte seed")
        key = mlkem.MLKEM768PrivateKey.from_seed_bytes(data)
        pub = key.public_key()
        return PrivateKey(self, bytes(data), key, PublicKey(self, pub.public_bytes_raw(), pub))

    def deserialize_public_key(self, data: bytes) -> PublicKey:
        if len(data) != self.n_pk:
            raise InvalidKeyError(f"{self.name} public key must be {self.n_pk} bytes")
        try:
            key = mlkem.MLKEM768PublicKey.from_public_bytes(data)
        except ValueError:
            raise InvalidKeyError(f"{self.name} public key is malformed") from None
        return PublicKey(self, bytes(data), key)

    def encap(self, pk_r: PublicKey, *, sk_e: PrivateKey | None = None) -> tuple[bytes, bytes]:
        self._check_own(pk_r)
        if sk_e is not None:
            raise UnsupportedError(f"{self.name}: deterministic encapsulation is not available")
        shared, ct = pk_r._key.encapsulate()  # type: ignore[attr-defined]
        return shared, ct

    def decap(self, enc: bytes, sk_r: PrivateKey) -> bytes:
        self._check_own(sk_r)
        if len(enc) != self.n_enc:
            raise InvalidKeyError(f"{self.name} encapsulation must be {self.n_enc} bytes")
        return sk_r._key.decapsulate(enc)  # type: ignore[attr-defined,no-any-return]


_XWingPrivate = tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]
_XWingPublic = tuple[mlkem.MLKEM768PublicKey, x25519.X25519PublicKey]
_XWING_LABEL = b"\\.//^\\"  # 5c2e2f2f5e5c
_MLKEM768_NEK = 1184
_MLKEM768_NCT = 1088


class XWing(_PqKem):
    """X-Wing, MLKEM768-X25519 (draft-ietf-hpke-pq, draft-connolly-cfrg-xwing-kem)."""

    n_secret = 32
    n_enc = 1120
    n_pk = 1216
    n_sk = 32

    def deserialize_private_key(self, data: bytes) -> PrivateKey:
        if len(data) != self.n_sk:
            raise InvalidKeyError(f"{self.name} private key must be a {self.n_sk}-byte seed")
        expanded = _shake256(bytes(data), 64 + 32)
        pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        t = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        pk_pq, pk_t = pq.public_key(), t.public_key()
        raw_pk = pk_pq.public_bytes_raw() + pk_t.public_bytes_raw()
        return PrivateKey(self, bytes(data), (pq, t), PublicKey(self, raw_pk, (pk_pq, pk_t)))

    def deserialize_public_key(self, data: bytes) -> PublicKey:
        if len(data) != self.n_pk:
            raise InvalidKeyError(f"{self.name} public key must be {self.n_pk} bytes")
        try:
            pk_pq = mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM768_NEK])
            pk_t = x25519.X25519PublicKey.from_public_bytes(data[_MLKEM768_NEK:])
        except ValueError:
            raise InvalidKeyError(f"{self.name} public key is malformed") from None
        return PublicKey(self, bytes(data), (pk_pq, pk_t))

    @staticmethod
    def _combine(ss_pq: bytes, ss_t: bytes, ct_t: bytes, pk_t: bytes) -> bytes:
        return hashlib.sha3_256(ss_pq + ss_t + ct_t + pk_t + _XWING_LABEL).digest()

    def encap(self, pk_r: PublicKey, *, sk_e: PrivateKey | None = None) -> tuple[bytes, bytes]:
        self._check_own(pk_r)
        if sk_e is not None:
            raise UnsupportedError(f"{self.name}: deterministic encapsulation is not available")
        pk_pq, pk_t = cast(_XWingPublic, pk_r._key)
        ss_pq, ct_pq = pk_pq.encapsulate()
        eph = x25519.X25519PrivateKey.generate()
        ct_t = eph.public_key().public_bytes_raw()
        try:
            ss_t = eph.exchange(pk_t)
        except ValueError:
            raise InvalidKeyError(f"{self.name}: X25519 produced an invalid value") from None
        pk_t_raw = pk_r.to_bytes()[_MLKEM768_NEK:]
        return self._combine(ss_pq, ss_t, ct_t, pk_t_raw), ct_pq + ct_t

    def decap(self, enc: bytes, sk_r: PrivateKey) -> bytes:
        self._check_own(sk_r)
        if len(enc) != self.n_enc:
            raise InvalidKeyError(f"{self.name} encapsulation must be {self.n_enc} bytes")
        sk_pq, sk_t = cast(_XWingPrivate, sk_r._key)
        ct_t = enc[_MLKEM768_NCT:]
        ss_pq = sk_pq.decapsulate(enc[:_MLKEM768_NCT])
        try:
            ss_t = sk_t.exchange(x25519.X25519PublicKey.from_public_bytes(ct_t))
        except ValueError:
            raise InvalidKeyError(f"{self.name}: X25519 produced an invalid value") from None
        pk_t_raw = sk_r.public_key.to_bytes()[_MLKEM768_NEK:]
        return self._combine(ss_pq, ss_t, ct_t, pk_t_raw)


_ENC_X962 = Encoding.X962
_FMT_UNCOMPRESSED = PublicFormat.UncompressedPoint

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_P521_ORDER = int(
    "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
    16,
)

KEM_P256_HKDF_SHA256 = DhKem(
    0x0010, "DHKEM(P-256, HKDF-SHA256)", KDF_HKDF_SHA256, 32, 65, 32,
    curve=ec.SECP256R1(), order=_P256_ORDER,
)  # fmt: skip
KEM_P384_HKDF_SHA384 = DhKem(
    0x0011, "DHKEM(P-384, HKDF-SHA384)", KDF_HKDF_SHA384, 48, 97, 48,
    curve=ec.SECP384R1(), order=_P384_ORDER,
)  # fmt: skip
KEM_P521_HKDF_SHA512 = DhKem(
    0x0012, "DHKEM(P-521, HKDF-SHA512)", KDF_HKDF_SHA512, 64, 133, 66,
    curve=ec.SECP521R1(), order=_P521_ORDER, bitmask=0x01,
)  # fmt: skip
KEM_X25519_HKDF_SHA256 = DhKem(
    0x0020, "DHKEM(X25519, HKDF-SHA256)", KDF_HKDF_SHA256, 32, 32, 32,
    montgomery=x25519.X25519PrivateKey,
)  # fmt: skip
KEM_X448_HKDF_SHA512 = DhKem(
    0x0021, "DHKEM(X448, HKDF-SHA512)", KDF_HKDF_SHA512, 64, 56, 56,
    montgomery=x448.X448PrivateKey,
)  # fmt: skip
KEM_MLKEM768 = MlKem768(0x0041, "ML-KEM-768")
KEM_XWING = XWing(0x647A, "MLKEM768-X25519 (X-Wing)")

_KEMS: dict[int, Kem] = {
    k.id: k
    for k in (
        KEM_P256_HKDF_SHA256,
        KEM_P384_HKDF_SHA384,
        KEM_P521_HKDF_SHA512,
        KEM_X25519_HKDF_SHA256,
        KEM_X448_HKDF_SHA512,
        KEM_MLKEM768,
        KEM_XWING,
    )
}


def kem_by_id(kem_id: int) -> Kem:
    try:
        return _KEMS[kem_id]
    except KeyError:
        raise UnsupportedError(f"unsupported HPKE KEM 0x{kem_id:04x}") from None


def kdf_by_id(kdf_id: int) -> Kdf:
    try:
        return _KDFS[kdf_id]
    except KeyError:
        raise UnsupportedError(f"unsupported HPKE KDF 0x{kdf_id:04x}") from None


def aead_by_id(aead_id: int) -> Aead:
    try:
        return _AEADS[aead_id]
    except KeyError:
        raise UnsupportedError(f"unsupported HPKE AEAD 0x{aead_id:04x}") from None


# --- Context -----------------------------------------------------------------------------------


class Context:
    """An HPKE encryption context (RFC 9180 §5.2): key, base nonce, sequence number, exporter.

    A sender context only seals and a recipient context only opens; both export.
    """

    __slots__ = (
        "_cipher",
        "_max_seq",
        "_nonce_int",
        "_role",
        "base_nonce",
        "exporter_secret",
        "key",
        "seq",
        "suite",
    )

    def __init__(
        self, suite: CipherSuite, key: bytes, base_nonce: bytes, exporter_secret: bytes, role: str
    ) -> None:
        self.suite = suite
        self.key = key
        self.base_nonce = base_nonce
        self.exporter_secret = exporter_secret
        self.seq = 0
        self._role = role
        self._cipher = None if suite.aead.export_only else suite.aead.cipher(key)
        self._max_seq = (1 << (8 * suite.aead.nn)) - 1
        self._nonce_int = int.from_bytes(base_nonce, "big")

    def __repr__(self) -> str:
        return f"<Context {self._role} {self.suite!r} seq={self.seq}>"

    def _next_nonce(self) -> bytes:
        if self.seq >= self._max_seq:
            raise MessageLimitReachedError("HPKE context has used every sequence number")
        return (self._nonce_int ^ self.seq).to_bytes(self.suite.aead.nn, "big")

    def _require(self, role: str) -> AESGCM | ChaCha20Poly1305:
        if self._cipher is None:
            raise UsageError("the export-only AEAD cannot seal or open")
        if self._role != role:
            raise UsageError(
                f"a {self._role} context cannot {'seal' if role == 'sender' else 'open'}"
            )
        return self._cipher

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        cipher = self._require("sender")
        ct = cipher.encrypt(self._next_nonce(), plaintext, _bounded("aad", aad))
        self.seq += 1
        return ct

    def open(self, ciphertext: bytes, aad: bytes = b"") -> bytes:
        cipher = self._require("recipient")
        try:
            pt = cipher.decrypt(self._next_nonce(), ciphertext, _bounded("aad", aad))
        except InvalidTag:
            raise OpenError("HPKE decryption failed") from None
        self.seq += 1
        return pt

    def export(self, exporter_context: bytes, length: int) -> bytes:
        suite = self.suite
        return suite.kdf.labeled_expand(
            suite.suite_id,
            self.exporter_secret,
            b"sec",
            _bounded("exporter context", exporter_context),
            length,
        )


# --- Cipher suite: key schedule, setup and single shot ----------------------------------------


@dataclass(frozen=True, eq=False)
class CipherSuite:
    """A (KEM, KDF, AEAD) triple with the setup functions of RFC 9180 §5.1."""

    kem: Kem
    kdf: Kdf
    aead: Aead

    suite_id: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = _i2osp(self.kem.id, 2) + _i2osp(self.kdf.id, 2) + _i2osp(self.aead.id, 2)
        object.__setattr__(self, "suite_id", b"HPKE" + ids)

    @classmethod
    def from_ids(cls, kem_id: int, kdf_id: int, aead_id: int) -> CipherSuite:
        return cls(kem_by_id(kem_id), kdf_by_id(kdf_id), aead_by_id(aead_id))

    def __repr__(self) -> str:
        return f"<CipherSuite {self.kem.name}, {self.kdf.name}, {self.aead.name}>"

    def key_schedule(
        self, mode: int, shared_secret: bytes, info: bytes, psk: bytes, psk_id: bytes, role: str
    ) -> Context:
        _bounded("info", info)
        _bounded("psk", psk)
        _bounded("psk_id", psk_id)
        got_psk, got_psk_id = bool(psk), bool(psk_id)
        if got_psk != got_psk_id:
            raise UsageError("psk and psk_id must be given together")
        if got_psk and mode in (Mode.BASE, Mode.AUTH):
            raise UsageError("a psk was given in a mode that takes none")
        if not got_psk and mode in (Mode.PSK, Mode.AUTH_PSK):
            raise UsageError("this mode needs a psk and a psk_id")
        if got_psk and len(psk) < MIN_PSK_LENGTH:
            raise UsageError(f"the psk must be at least {MIN_PSK_LENGTH} bytes")
        kdf, sid = self.kdf, self.suite_id
        context = _schedule_context(kdf, sid, mode, psk_id, info)
        secret = kdf.labeled_extract(sid, shared_secret, b"secret", psk)
        key = kdf.labeled_expand(sid, secret, b"key", context, self.aead.nk)
        base_nonce = kdf.labeled_expand(sid, secret, b"base_nonce", context, self.aead.nn)
        exporter_secret = kdf.labeled_expand(sid, secret, b"exp", context, kdf.nh)
        return Context(self, key, base_nonce, exporter_secret, role)

    # Sender side (setup*S)

    def setup_sender(
        self,
        pk_r: PublicKey,
        info: bytes = b"",
        *,
        psk: bytes = b"",
        psk_id: bytes = b"",
        sk_s: PrivateKey | None = None,
        sk_e: PrivateKey | None = None,
    ) -> tuple[bytes, Context]:
        """SetupBaseS, SetupPSKS, SetupAuthS or SetupAuthPSKS, chosen by the arguments given.

        Returns (enc, context).
        """
        if sk_s is None:
            shared_secret, enc = self.kem.encap(pk_r, sk_e=sk_e)
            mode = Mode.PSK if psk else Mode.BASE
        else:
            shared_secret, enc = self.kem.auth_encap(pk_r, sk_s, sk_e=sk_e)
            mode = Mode.AUTH_PSK if psk else Mode.AUTH
        return enc, self.key_schedule(mode, shared_secret, info, psk, psk_id, "sender")

    def setup_recipient(
        self,
        enc: bytes,
        sk_r: PrivateKey,
        info: bytes = b"",
        *,
        psk: bytes = b"",
        psk_id: bytes = b"",
        pk_s: PublicKey | None = None,
    ) -> Context:
        """SetupBaseR, SetupPSKR, SetupAuthR or SetupAuthPSKR, chosen by the arguments given."""
        if pk_s is None:
            shared_secret = self.kem.decap(enc, sk_r)
            mode = Mode.PSK if psk else Mode.BASE
        else:
            shared_secret = self.kem.auth_decap(enc, sk_r, pk_s)
            mode = Mode.AUTH_PSK if psk else Mode.AUTH
        return self.key_schedule(mode, shared_secret, info, psk, psk_id, "recipient")

    # Single-shot APIs (RFC 9180 §6)

    def seal(
        self,
        pk_r: PublicKey,
        plaintext: bytes,
        info: bytes = b"",
        aad: bytes = b"",
        *,
        psk: bytes = b"",
        psk_id: bytes = b"",
        sk_s: PrivateKey | None = None,
    ) -> tuple[bytes, bytes]:
        """Returns (enc, ciphertext)."""
        enc, ctx = self.setup_sender(pk_r, info, psk=psk, psk_id=psk_id, sk_s=sk_s)
        return enc, ctx.seal(plaintext, aad)

    def open(
        self,
        enc: bytes,
        sk_r: PrivateKey,
        ciphertext: bytes,
        info: bytes = b"",
        aad: bytes = b"",
        *,
        psk: bytes = b"",
        psk_id: bytes = b"",
        pk_s: PublicKey | None = None,
    ) -> bytes:
        ctx = self.setup_recipient(enc, sk_r, info, psk=psk, psk_id=psk_id, pk_s=pk_s)
        return ctx.open(ciphertext, aad)

    def send_export(
        self,
        pk_r: PublicKey,
        info: bytes,
        exporter_context: bytes,
        length: int,
        *,
        psk: bytes = b"",
        psk_id: bytes = b"",
        sk_s: PrivateKey | None = None,
    ) -> tuple[bytes, bytes]:
        """Returns (enc, exported secret)."""
        enc, ctx = self.setup_sender(pk_r, info, psk=psk, psk_id=psk_id, sk_s=sk_s)
        return enc, ctx.export(exporter_context, length)

    def receive_export(
        self,
        enc: bytes,
        sk_r: PrivateKey,
        info: bytes,
        exporter_context: bytes,
        length: int,
        *,
        psk: bytes = b"",
        psk_id: bytes = b"",
        pk_s: PublicKey | None = None,
    ) -> bytes:
        ctx = self.setup_recipient(enc, sk_r, info, psk=psk, psk_id=psk_id, pk_s=pk_s)
        return ctx.export(exporter_context, length)
