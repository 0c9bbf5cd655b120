"""Fuzzing attestation (attest/evidence.py, measurement.py, hardware.py, amd.py, snp.py,
provider.py): mutated evidence bundles, measurement manifests, SNP certificate tables, PEM
certificate chains, TCB values, product names and release proofs. Attestation reports, the strict
DER certificate reader and the whole SNP verification are fuzzed in tests/test_snp.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from privproc.attest.amd import load_certificates
from privproc.attest.evidence import EvidenceBundle
from privproc.attest.measurement import Manifest, ManifestEntry
from privproc.attest.snp import Product, TcbParts
from privproc.parties.enclave.platform.hardware import encode_cert_table, parse_cert_table
from privproc.parties.enclave.platform.provider import ReleaseProof
from tests.fuzz.support import fuzz, mutated, mutated_text, parses

SEV = Path(__file__).parent.parent / "vectors" / "sev"
REPORT = (SEV / "go-sev-guest" / "attestation.bin").read_bytes()
VCEK = (SEV / "trustee" / "test-vcek.der").read_bytes()
CHAIN_PEM = (SEV / "go-sev-guest" / "ask_ark_milan.pem").read_text()

MANIFEST = Manifest.of(
    [
        ManifestEntry("code", "pkg/__init__.py", hashlib.sha384(b"a").digest(), 1),
        ManifestEntry("code", "pkg/main.py", hashlib.sha384(b"b").digest(), 22),
    ]
).encode()
BUNDLE = EvidenceBundle(
    REPORT[:200],
    VCEK[:100],
    (b"ask", b"ark"),
    MANIFEST,
    b"entry",
    7,
    (hashlib.sha256(b"h").digest(),),
    b"checkpoint\n",
).encode()
CERT_TABLE = encode_cert_table({"vcek": b"v" * 10, "ask": b"s" * 5, "ark": b"a" * 3})
RELEASE_PROOF = ReleaseProof(b"entry", 3, (hashlib.sha256(b"p").digest(),), b"cp\n").to_json()


@fuzz()
@given(st.one_of(mutated(BUNDLE), st.binary(max_size=600)))
def test_evidence_bundle(data: bytes) -> None:
    bundle = parses(EvidenceBundle.decode, data)
    if bundle is not None:
        assert bundle.encode() == data


@fuzz()
@given(mutated(MANIFEST))
def test_manifest(data: bytes) -> None:
    manifest = parses(Manifest.decode, data)
    if manifest is not None:
        assert manifest.encode() == data


@fuzz()
@given(st.one_of(mutated(CERT_TABLE), st.binary(max_size=200)))
def test_certificate_table(data: bytes) -> None:
    certs = parses(parse_cert_table, data)
    if certs is not None:
        assert all(cert in data for cert in certs.values())


@fuzz(0.5)
@given(mutated_text(CHAIN_PEM, max_ops=2))
def test_pem_chain(text: str) -> None:
    certs = parses(load_certificates, text)
    if certs is not None:
        assert all(c.der for c in certs)


@fuzz()
@given(st.integers(0, 2**64 - 1), st.one_of(st.sampled_from(list(Product)), st.text(max_size=12)))
def test_tcb_and_product(raw: int, product: Product | str) -> None:
    parses(Product.parse, product)
    parts = parses(lambda r: TcbParts.decode(r, product), raw)
    if parts is not None:
        assert parts.raw == raw  # the decomposition is lossless


@fuzz()
@given(mutated_text(RELEASE_PROOF))
def test_release_proof(text: str) -> None:
    proof = parses(ReleaseProof.from_json, text)
    if proof is not None:
        assert ReleaseProof.from_json(proof.to_json()) == proof


# --- Regressions found by these tests (fixed; kept so that they stay fixed) -------------------


def test_regression_release_proof_with_infinite_index() -> None:
    # Fixed (fuzz, issue 8): parties/enclave/platform/provider.py `ReleaseProof.from_json` does
    # `int(doc["index"])`;
    # Python's json accepts `Infinity`, and int(inf) raises OverflowError, which escapes.
    doc = json.loads(RELEASE_PROOF)
    text = json.dumps(doc).replace(f'"index": {doc["index"]}', '"index": Infinity')
    assert parses(ReleaseProof.from_json, text) is None


def test_regression_release_proof_deeply_nested() -> None:
    # Fixed (fuzz, issue 8): json.loads raises RecursionError on deep nesting (not caught).
    assert parses(ReleaseProof.from_json, "[" * 5000) is None
