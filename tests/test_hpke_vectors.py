"""RFC 9180 Appendix A: the full official vector file, every mode, every sequence number, every
export, for every suite of the file (all of which privproc supports)."""

from __future__ import annotations

from typing import Any

import pytest

from privproc import hpke
from privproc.errors import UsageError
from tests.conftest import load_vectors

VECTORS: list[dict[str, Any]] = load_vectors("hpke/rfc9180-test-vectors.json.gz")


def _id(v: dict[str, Any]) -> str:
    return f"mode{v['mode']}-kem{v['kem_id']:04x}-kdf{v['kdf_id']:04x}-aead{v['aead_id']:04x}"


def _h(v: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(v.get(key, ""))


def test_every_vector_is_for_a_supported_suite() -> None:
    assert len(VECTORS) == 128
    for v in VECTORS:
        hpke.CipherSuite.from_ids(v["kem_id"], v["kdf_id"], v["aead_id"])


@pytest.mark.parametrize("v", VECTORS, ids=_id)
def test_rfc9180_vector(v: dict[str, Any]) -> None:
    suite = hpke.CipherSuite.from_ids(v["kem_id"], v["kdf_id"], v["aead_id"])
    kem = suite.kem

    sk_r = kem.derive_key_pair(_h(v, "ikmR"))
    assert sk_r.to_bytes() == _h(v, "skRm")
    assert sk_r.public_key.to_bytes() == _h(v, "pkRm")
    sk_e = kem.derive_key_pair(_h(v, "ikmE"))
    assert sk_e.to_bytes() == _h(v, "skEm")

    info, psk, psk_id = _h(v, "info"), _h(v, "psk"), _h(v, "psk_id")
    sk_s = pk_s = None
    if v["mode"] in (hpke.Mode.AUTH, hpke.Mode.AUTH_PSK):
        sk_s = kem.derive_key_pair(_h(v, "ikmS"))
        assert sk_s.to_bytes() == _h(v, "skSm")
        assert sk_s.public_key.to_bytes() == _h(v, "pkSm")
        pk_s = kem.deserialize_public_key(_h(v, "pkSm"))

    # The KEM alone.
    if sk_s is None:
        shared, enc = kem.encap(sk_r.public_key, sk_e=sk_e)
        assert kem.decap(enc, sk_r) == shared
    else:
        assert pk_s is not None
        shared, enc = kem.auth_encap(sk_r.public_key, sk_s, sk_e=sk_e)
        assert kem.auth_decap(enc, sk_r, pk_s) == shared
    assert enc == _h(v, "enc")
    assert shared == _h(v, "shared_secret")

    # The full setup on both sides, key schedule values included.
    pk_r = kem.deserialize_public_key(_h(v, "pkRm"))
    enc_s, sender = suite.setup_sender(pk_r, info, psk=psk, psk_id=psk_id, sk_s=sk_s, sk_e=sk_e)
    recipient = suite.setup_recipient(enc_s, sk_r, info, psk=psk, psk_id=psk_id, pk_s=pk_s)
    for ctx in (sender, recipient):
        assert ctx.key == _h(v, "key")
        assert ctx.base_nonce == _h(v, "base_nonce")
        assert ctx.exporter_secret == _h(v, "exporter_secret")

    for seq, e in enumerate(v["encryptions"]):
        assert sender.seq == seq
        ct = sender.seal(_h(e, "pt"), _h(e, "aad"))
        assert ct == _h(e, "ct"), f"seq {seq}"
        assert recipient.open(_h(e, "ct"), _h(e, "aad")) == _h(e, "pt")
    if suite.aead.export_only:
        assert not v["encryptions"]
        with pytest.raises(UsageError):
            sender.seal(b"x")

    for x in v["exports"]:
        ctx_bytes = _h(x, "exporter_context")
        assert sender.export(ctx_bytes, x["L"]) == _h(x, "exported_value")
        assert recipient.export(ctx_bytes, x["L"]) == _h(x, "exported_value")


@pytest.mark.parametrize("length", [1, 12, 16, 32, 33, 48, 64, 65, 100, 255])
@pytest.mark.parametrize("kdf", [hpke.KDF_HKDF_SHA256, hpke.KDF_HKDF_SHA384, hpke.KDF_HKDF_SHA512])
def test_hkdf_expand_agrees_with_cryptography_in_one_block_and_in_many(
    kdf: hpke.Kdf, length: int
) -> None:
    """The one-block fast path and the loop give RFC 5869's output, as `cryptography`'s
    HKDFExpand (an independent implementation) computes it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    prk, info = bytes(range(kdf.nh)), b"privproc info"
    oracle = HKDFExpand(algorithm[kdf.hash_name], length, info).derive(prk)
    assert kdf.expand(prk, info, length) == oracle
