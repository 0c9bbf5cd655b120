"""ML-KEM-768 and X-Wing: draft-ietf-hpke-pq-05 vectors (recipient side) and interoperation in both
directions with `cryptography`'s own one-shot HPKE."""

from __future__ import annotations

from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import hpke as chpke

from privproc import hpke
from privproc.errors import InvalidKeyError, OpenError, UnsupportedError
from tests.conftest import load_vectors

PQ_VECTORS: list[dict[str, Any]] = load_vectors("hpke/draft-ietf-hpke-pq-05.json")


def _h(v: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(v.get(key, ""))


@pytest.mark.parametrize("v", PQ_VECTORS, ids=lambda v: v["_source"]["section"].split(" ")[1])
def test_pq_vector_keys_and_decapsulation(v: dict[str, Any]) -> None:
    kem = hpke.kem_by_id(v["kem_id"])
    sk = kem.derive_key_pair(_h(v, "ikmR"))
    assert sk.to_bytes() == _h(v, "skRm")
    assert sk.public_key.to_bytes() == _h(v, "pkRm")
    assert kem.deserialize_private_key(_h(v, "skRm")).public_key.to_bytes() == _h(v, "pkRm")
    assert kem.decap(_h(v, "enc"), sk) == _h(v, "shared_secret")


@pytest.mark.parametrize(
    "v", [v for v in PQ_VECTORS if v["kdf_id"] in (1, 2, 3)], ids=lambda v: str(v["kem_id"])
)
def test_pq_vector_key_schedule_and_open(v: dict[str, Any]) -> None:
    suite = hpke.CipherSuite.from_ids(v["kem_id"], v["kdf_id"], v["aead_id"])
    sk = suite.kem.derive_key_pair(_h(v, "ikmR"))
    ctx = suite.setup_recipient(_h(v, "enc"), sk, _h(v, "info"))
    assert ctx.key == _h(v, "key")
    assert ctx.base_nonce == _h(v, "base_nonce")
    assert ctx.exporter_secret == _h(v, "exporter_secret")
    for e in v["encryptions"]:
        assert ctx.open(_h(e, "ct"), _h(e, "aad")) == _h(e, "pt")
    for x in v["exports"]:
        assert ctx.export(_h(x, "exporter_context"), x["L"]) == _h(x, "exported_value")
    # One flipped bit in the last ciphertext fails, as does the wrong sequence number.
    ctx = suite.setup_recipient(_h(v, "enc"), sk, _h(v, "info"))
    first = bytearray(_h(v["encryptions"][0], "ct"))
    first[-1] ^= 1
    with pytest.raises(OpenError):
        ctx.open(bytes(first), _h(v["encryptions"][0], "aad"))
    with pytest.raises(OpenError):
        ctx.open(_h(v["encryptions"][1], "ct"), _h(v["encryptions"][1], "aad"))


_CRYPTO_KEMS = [
    (hpke.KEM_MLKEM768, chpke.KEM.MLKEM768),
    (hpke.KEM_XWING, chpke.KEM.MLKEM768_X25519),
    (hpke.KEM_X25519_HKDF_SHA256, chpke.KEM.X25519),
    (hpke.KEM_P256_HKDF_SHA256, chpke.KEM.P256),
]
_CRYPTO_KDFS = [
    (hpke.KDF_HKDF_SHA256, chpke.KDF.HKDF_SHA256),
    (hpke.KDF_HKDF_SHA384, chpke.KDF.HKDF_SHA384),
    (hpke.KDF_HKDF_SHA512, chpke.KDF.HKDF_SHA512),
]
_CRYPTO_AEADS = [
    (hpke.AEAD_AES_128_GCM, chpke.AEAD.AES_128_GCM),
    (hpke.AEAD_AES_256_GCM, chpke.AEAD.AES_256_GCM),
    (hpke.AEAD_CHACHA20_POLY1305, chpke.AEAD.CHACHA20_POLY1305),
]


def _crypto_keys(sk: hpke.PrivateKey) -> tuple[Any, Any]:
    """The same key pair as `cryptography`'s HPKE wants it."""
    if sk.kem is hpke.KEM_XWING:
        pq, t = cast(Any, sk._key)
        return (
            chpke.MLKEM768X25519PrivateKey(pq, t),
            chpke.MLKEM768X25519PublicKey(pq.public_key(), t.public_key()),
        )
    return sk._key, sk.public_key._key


@pytest.mark.parametrize("kems", _CRYPTO_KEMS, ids=lambda k: k[0].name)
@pytest.mark.parametrize("kdfs", _CRYPTO_KDFS, ids=lambda k: k[0].name)
@pytest.mark.parametrize("aeads", _CRYPTO_AEADS, ids=lambda a: a[0].name)
def test_interoperates_with_cryptography_one_shot(kems: Any, kdfs: Any, aeads: Any) -> None:
    (kem, ckem), (kdf, ckdf), (aead, caead) = kems, kdfs, aeads
    ours = hpke.CipherSuite(kem, kdf, aead)
    theirs = chpke.Suite(ckem, ckdf, caead)
    sk = kem.generate_key_pair()
    c_sk, c_pk = _crypto_keys(sk)
    info = b"privproc interop"

    enc, ct = ours.seal(sk.public_key, b"from privproc", info)
    assert len(enc) == kem.n_enc
    assert theirs.decrypt(enc + ct, c_sk, info=info) == b"from privproc"

    blob = theirs.encrypt(b"from cryptography", c_pk, info=info)
    assert ours.open(blob[: kem.n_enc], sk, blob[kem.n_enc :], info) == b"from cryptography"
    with pytest.raises(OpenError):
        ours.open(blob[: kem.n_enc], sk, blob[kem.n_enc :], b"other info")


@pytest.mark.parametrize("kem", [hpke.KEM_MLKEM768, hpke.KEM_XWING], ids=lambda k: k.name)
def test_pq_kems_refuse_auth_modes_and_bad_sizes(kem: hpke.Kem) -> None:
    suite = hpke.CipherSuite(kem, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM)
    sk = kem.generate_key_pair()
    with pytest.raises(UnsupportedError):
        suite.setup_sender(sk.public_key, b"", sk_s=sk)
    with pytest.raises(InvalidKeyError):
        kem.deserialize_public_key(sk.public_key.to_bytes()[:-1])
    with pytest.raises(InvalidKeyError):
        kem.deserialize_private_key(sk.to_bytes() + b"\x00")
    enc, _ = suite.seal(sk.public_key, b"x")
    with pytest.raises(InvalidKeyError):
        kem.decap(enc[:-1], sk)
    # A wrong ciphertext decapsulates to an unrelated secret (implicit rejection) and the
    # AEAD then refuses it.
    enc2, ct2 = suite.seal(sk.public_key, b"y")
    tampered = bytes([enc2[0] ^ 1]) + enc2[1:]
    with pytest.raises(OpenError):
        suite.open(tampered, sk, ct2)


def test_pq_derive_key_pair_is_deterministic_and_key_separated() -> None:
    ikm = bytes(range(32))
    a = hpke.KEM_XWING.derive_key_pair(ikm)
    b = hpke.KEM_XWING.derive_key_pair(ikm)
    c = hpke.KEM_MLKEM768.derive_key_pair(ikm)
    assert a.to_bytes() == b.to_bytes()
    assert a.public_key == b.public_key
    assert c.to_bytes()[:32] != a.to_bytes()  # the KEM id is part of the derivation label
