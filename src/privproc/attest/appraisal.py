"""Appraising an evidence bundle against a client's policy: one explainable report, ok or not.

After the hardware checks of `verify_snp_evidence` (chain to a trusted root, report signature,
TCB and chip binding), the policy adds, in this order:

| id | passes when |
|---|---|
| evidence.parse | the bundle decodes (checked first; nothing else runs without it) |
| policy.report-data | REPORT_DATA is exactly the value the caller expects (its TLS binding) |
| policy.debug | the guest policy forbids debugging, unless the policy allows it |
| policy.migration-agent | no migration agent may be associated, unless allowed |
| policy.vmpl | the report was requested at a VMPL no higher than allowed |
| policy.min-tcb | REPORTED_TCB meets the policy's minimum for the product (skipped if none) |
| manifest.measurement | the stapled workload manifest hashes to MEASUREMENT |
| policy.measurement | MEASUREMENT is one the policy lists (skipped if it lists none) |
| log.checkpoint | the stapled checkpoint carries the log's signature and the witness quorum |
| log.inclusion | the stapled release entry is in that checkpoint's tree |
| log.release | the entry is an enclave release whose measurement is MEASUREMENT |

Rules: appraisal never raises on bad evidence, only records failed checks; without a log policy
the log checks are skipped with that reason (a client configuration always has one); every
comparison of the expected report data is constant-time.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from privproc.attest.amd import TrustAnchors
from privproc.attest.evidence import EvidenceBundle
from privproc.attest.measurement import Manifest
from privproc.attest.snp import AttestationReport, Product, TcbParts
from privproc.attest.verify import Check, VerificationReport, verify_snp_evidence
from privproc.errors import CryptoError, PrivprocError
from privproc.tlog import merkle
from privproc.tlog.client import LogPolicy, verify_checkpoint
from privproc.tlog.entries import EnclaveRelease, decode_entry

__all__ = ["AttestationPolicy", "AttestationRejectedError", "appraise", "ratls_verifier"]


class AttestationRejectedError(CryptoError):
    """The evidence did not satisfy the policy; `report` explains every check."""

    def __init__(self, report: VerificationReport) -> None:
        reasons = "; ".join(f"{c.id}: {c.reason}" for c in report.failures)
        super().__init__(f"attestation rejected: {reasons}")
        self.report = report


@dataclass(frozen=True)
class AttestationPolicy:
    roots: TrustAnchors = field(default_factory=TrustAnchors.amd)
    allow_debug: bool = False
    allow_migration_agent: bool = False
    max_vmpl: int = 0
    min_tcb: Mapping[Product, TcbParts] = field(default_factory=dict)
    measurements: frozenset[bytes] = frozenset()  # empty: any the log proves
    log: LogPolicy | None = None


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _flag(check_id: str, value: bool, allowed: bool, what: str) -> Check:
    if value and not allowed:
        return Check.failing(check_id, f"the guest policy allows {what}; this policy forbids it")
    return Check.passing(check_id, f"{what}: {'allowed' if value else 'not allowed'} by the guest")


def _policy_checks(
    report: AttestationReport, product: Product | None, expected: bytes, policy: AttestationPolicy
) -> list[Check]:
    checks = []
    if hmac.compare_digest(report.report_data, expected):
        checks.append(Check.passing("policy.report-data", "REPORT_DATA binds this session"))
    else:
        checks.append(
            Check.failing("policy.report-data", "REPORT_DATA is not this session's binding")
        )
    checks.append(_flag("policy.debug", report.policy.debug, policy.allow_debug, "debugging"))
    checks.append(
        _flag(
            "policy.migration-agent",
            report.policy.migrate_ma,
            policy.allow_migration_agent,
            "a migration agent",
        )
    )
    if report.vmpl <= policy.max_vmpl:
        checks.append(Check.passing("policy.vmpl", f"VMPL {report.vmpl} <= {policy.max_vmpl}"))
    else:
        checks.append(Check.failing("policy.vmpl", f"VMPL {report.vmpl} > {policy.max_vmpl}"))
    minimum = policy.min_tcb.get(product) if product is not None else None
    if minimum is None:
        checks.append(Check.skipped("policy.min-tcb", f"no minimum TCB configured for {product}"))
    else:
        reported = report.tcb("reported", minimum.product)
        if reported.meets(minimum):
            checks.append(Check.passing("policy.min-tcb", f"{reported} meets {minimum}"))
        else:
            checks.append(Check.failing("policy.min-tcb", f"{reported} is below {minimum}"))
    return checks


def _measurement_checks(
    bundle: EvidenceBundle, report: AttestationReport, policy: AttestationPolicy
) -> list[Check]:
    checks = []
    if not bundle.manifest:
        checks.append(Check.skipped("manifest.measurement", "no workload manifest stapled"))
    else:
        try:
            measured = Manifest.decode(bundle.manifest).measurement
        except PrivprocError as exc:
            checks.append(Check.failing("manifest.measurement", f"the manifest is bad: {exc}"))
        else:
            if measured == report.measurement:
                checks.append(Check.passing("manifest.measurement", "the manifest hashes to it"))
            else:
                checks.append(
                    Check.failing("manifest.measurement", "the manifest hashes to another value")
                )
    if not policy.measurements:
        why = (
            "no fixed list of measurements: the transparency log says which builds are trusted "
            "(log.release)"
            if policy.log is not None
            else "the policy lists no measurements"
        )
        checks.append(Check.skipped("policy.measurement", why))
    elif report.measurement in policy.measurements:
        checks.append(Check.passing("policy.measurement", "MEASUREMENT is on the policy's list"))
    else:
        checks.append(
            Check.failing(
                "policy.measurement",
                f"MEASUREMENT {report.measurement.hex()[:16]}... is not listed",
            )
        )
    return checks


def _human_time(unix: int) -> str:
    """A logged time as people read it (a time no calendar holds stays a number)."""
    try:
        return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"Unix time {unix}"


def _log_checks(
    bundle: EvidenceBundle, report: AttestationReport, policy: AttestationPolicy
) -> list[Check]:
    ids = ("log.checkpoint", "log.inclusion", "log.release")
    if policy.log is None:
        return [Check.skipped(i, "no log policy: the release is not checked") for i in ids]
    try:
        verified = verify_checkpoint(bundle.checkpoint, policy.log)
    except PrivprocError as exc:
        failed = Check.failing("log.checkpoint", str(exc))
        return [failed, *(Check.skipped(i, "the checkpoint failed") for i in ids[1:])]
    checks = [
        Check.passing(
            "log.checkpoint",
            f"size {verified.size}, cosigned by {', '.join(verified.cosigners) or 'nobody'}",
        )
    ]
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(bundle.release_entry),
            bundle.log_index,
            verified.size,
            list(bundle.inclusion_proof),
            verified.root,
        )
    except PrivprocError as exc:
        checks.append(Check.failing("log.inclusion", str(exc)))
        checks.append(Check.skipped("log.release", "the entry is not proven"))
        return checks
    checks.append(Check.passing("log.inclusion", f"entry {bundle.log_index} is in the tree"))
    try:
        entry = decode_entry(bundle.release_entry)
    except PrivprocError as exc:
        checks.append(Check.failing("log.release", f"the entry does not decode: {exc}"))
        return checks
    if not isinstance(entry, EnclaveRelease):
        checks.append(Check.failing("log.release", f"entry {bundle.log_index} is not a release"))
    elif entry.measurement != report.measurement:
        checks.append(Check.failing("log.release", "the logged release has another measurement"))
    else:
        logged = _human_time(entry.time)
        checks.append(
            Check.passing(
                "log.release",
                f"the logged release {entry.source_revision!r} of {logged} has this measurement",
            )
        )
    return checks


def appraise(
    evidence: bytes | EvidenceBundle,
    expected_report_data: bytes,
    policy: AttestationPolicy,
    *,
    now: datetime | None = None,
) -> VerificationReport:
    """The whole verdict on one evidence bundle: hardware, policy, measurement and log."""
    try:
        bundle = (
            evidence if isinstance(evidence, EvidenceBundle) else EvidenceBundle.decode(evidence)
        )
    except PrivprocError as exc:
        return VerificationReport((Check.failing("evidence.parse", str(exc)),))
    chain = b"".join(_pem(c) for c in bundle.chain) or None
    hardware = verify_snp_evidence(
        bundle.report, bundle.signer_cert, chain, now=now, roots=policy.roots
    )
    parsed = Check.passing("evidence.parse", f"bundle with {len(bundle.chain)} chain certificates")
    hardware = replace(hardware, checks=(parsed, *hardware.checks))
    report = hardware.report
    if report is None:
        return hardware
    return hardware.with_checks(
        *_policy_checks(report, hardware.product, expected_report_data, policy),
        *_measurement_checks(bundle, report, policy),
        *_log_checks(bundle, report, policy),
    )


def ratls_verifier(
    policy: AttestationPolicy, *, now: Callable[[], datetime | None] = lambda: None
) -> Callable[[bytes, bytes], VerificationReport]:
    """An `EvidenceVerifier` for an attested TLS session: appraise, and refuse unless ok."""

    def verify(evidence: bytes, report_data: bytes) -> VerificationReport:
        report = appraise(evidence, report_data, policy, now=now())
        if not report.ok:
            raise AttestationRejectedError(report)
        return report

    return verify
