"""Benchmark (not a test): SEV-SNP report verification and attested TLS handshakes with real
(virtual-SNP) evidence, on one core.

    make bench            # or: .venv/bin/python bench/bench_attest.py [--seconds 3]

- Report verification: a real AMD Milan report (google/go-sev-guest's test vector) with its VCEK
  and the pinned ASK/ARK, chain results cached, as a client verifies evidence; next to the floor,
  one ECDSA P-384 verify by `cryptography`.
- Attested handshake: TLS 1.3 over memory transports, the enclave's side asking the virtual SNP
  for a signed report over the session's exporter binding and stapling its log proof, the client
  appraising the whole bundle (chain, report, policy, manifest, checkpoint, inclusion).
Targets: >= 1,000 report verifications a second, >= 200 attested handshakes a second.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from privproc.attest.amd import load_certificate
from privproc.attest.appraisal import AttestationPolicy, ratls_verifier
from privproc.attest.measurement import Manifest, ManifestEntry
from privproc.attest.snp import AttestationReport
from privproc.attest.verify import verify_snp_evidence
from privproc.net.ratls import pump_attested
from privproc.parties.enclave.platform.provider import EvidenceProvider
from privproc.parties.enclave.platform.virtual import VirtualSnp
from privproc.ratls.session import ClientState, client_session, server_session
from privproc.ratls.tls import ServerIdentity
from timing import paired_rates, rate

VECTORS = Path(__file__).parent.parent / "tests" / "vectors" / "sev" / "go-sev-guest"
AT = datetime(2024, 6, 1, tzinfo=UTC)  # inside the test VCEK's validity


def bench_reports(seconds: float) -> float:
    report = (VECTORS / "attestation.bin").read_bytes()
    vcek = (VECTORS / "vcek.testcer").read_bytes()
    chain = (VECTORS / "ask_ark_milan.pem").read_bytes()
    assert verify_snp_evidence(report, vcek, chain, now=AT).ok
    parsed = AttestationReport.parse(report)
    key = load_certificate(vcek).public_key
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = parsed.der_signature()
    ours, floor = paired_rates(
        lambda: verify_snp_evidence(report, vcek, chain, now=AT),
        lambda: key.verify(der, parsed.signed_bytes, ec.ECDSA(hashes.SHA384())),
        seconds,
    )
    print(f"{'report verification (chain cached)':44} {ours:9.0f}/s   floor {floor:7.0f}/s "
          f"(one ECDSA P-384 verify), {ours / floor:.0%}")  # fmt: skip
    return ours


def bench_handshakes(seconds: float) -> float:
    platform = VirtualSnp.generate()
    manifest = Manifest.of([ManifestEntry("code", "enclave.py", os.urandom(48), 1)])
    provider = EvidenceProvider(platform, manifest)
    policy = AttestationPolicy(roots=platform.trust_anchors())
    verifier = ratls_verifier(policy)
    identity = ServerIdentity.generate()

    def handshake() -> None:
        client = client_session()
        pump_attested(client, server_session(identity), provider, verifier)
        assert client.state is ClientState.VERIFIED

    handshake()
    per_second = rate(handshake, seconds)
    print(f"{'attested TLS handshake (real evidence)':44} {per_second:9.0f}/s   "
          f"({1000 / per_second:.2f} ms, client and server in one thread)")  # fmt: skip
    return per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    reports = bench_reports(args.seconds)
    handshakes = bench_handshakes(args.seconds)
    print(
        f"\nreports: {reports:.0f}/s (target >= 1000); "
        f"attested handshakes: {handshakes:.0f}/s (target >= 200)"
    )


if __name__ == "__main__":
    main()
