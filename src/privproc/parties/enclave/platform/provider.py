"""The enclave's side: evidence bundles for attested TLS, from the virtual SNP or real hardware.

    provider = EvidenceProvider(VirtualSnp.load(state), manifest, release)
    session = server_session(identity)
    session.receive(records)                          # the handshake completes: EVIDENCE_NEEDED
    supply_evidence(session, provider)                # provider(report_data), once per session

Each call asks the platform for a fresh report over the session's report data and staples the
certificates, the workload manifest and the release's log proof, so a client can decide offline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from privproc.attest.evidence import EvidenceBundle
from privproc.attest.measurement import Manifest
from privproc.errors import DecodeError, UsageError
from privproc.parties.enclave.platform.hardware import ConfigfsTsm, HardwareEvidence, SevGuestDevice
from privproc.parties.enclave.platform.virtual import VirtualSnp
from privproc.wire import load_json

__all__ = ["EvidenceProvider", "ReleaseProof"]


@dataclass(frozen=True)
class ReleaseProof:
    """Where this release sits in the transparency log, and the checkpoint that proves it."""

    entry: bytes
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes = field(repr=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "entry": self.entry.hex(),
                "index": self.index,
                "proof": [h.hex() for h in self.proof],
                "checkpoint": self.checkpoint.decode(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ReleaseProof:
        doc = load_json(text, "the release proof")
        try:
            return cls(
                bytes.fromhex(doc["entry"]),
                int(doc["index"]),
                tuple(bytes.fromhex(h) for h in doc["proof"]),
                doc["checkpoint"].encode(),
            )
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise DecodeError("not a release proof (entry, index, proof, checkpoint)") from None


@dataclass(frozen=True)
class EvidenceProvider:
    platform: VirtualSnp | ConfigfsTsm | SevGuestDevice
    manifest: Manifest
    release: ReleaseProof | None = None
    # For /dev/sev-guest, which returns no certificates: the VCEK and ASK/ARK, DER.
    certificates: dict[str, bytes] = field(default_factory=dict, repr=False)

    def _evidence(self, report_data: bytes) -> HardwareEvidence:
        if isinstance(self.platform, VirtualSnp):
            return self.platform.evidence(report_data, self.manifest.measurement)
        return self.platform.get_report(report_data)

    def __call__(self, report_data: bytes) -> bytes:
        evidence = self._evidence(report_data)
        certs = {**self.certificates, **evidence.certificates}
        signer = certs.get("vcek") or certs.get("vlek")
        if signer is None:
            raise UsageError("no VCEK or VLEK to staple: configure the platform's certificates")
        chain = tuple(certs[name] for name in ("ask", "ark") if name in certs)
        release = self.release
        return EvidenceBundle(
            report=evidence.report,
            signer_cert=signer,
            chain=chain,
            manifest=self.manifest.encode(),
            release_entry=release.entry if release else b"",
            log_index=release.index if release else 0,
            inclusion_proof=release.proof if release else (),
            checkpoint=release.checkpoint if release else b"",
        ).encode()
