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
| policy.min-tcb | REPORTED_TCB meets the policy's minimum for the product; a report of no known
  product, or of a product the policy has no minimum for, fails |
| manifest.measurement | the stapled workload manifest hashes to MEASUREMENT |
| policy.measurement | MEASUREMENT is one the policy lists (skipped if it lists none) |
| log.checkpoint | the stapled checkpoint carries the log's signature and the witness quorum |
| log.inclusion | the stapled release entry is in that checkpoint's tree |
| log.release | the entry is an enclave release whose measurement is MEASUREMENT |

`apply_policy` runs the policy checks on a report verified without a bundle (`privproc attest
verify`): policy.report-data is skipped when no value is expected, and `logged_release_checks`
looks the measurement up in a log the caller reads (log.checkpoint, log.inclusion, log.release).

Rules: sans IO: it reads only what it is given (a stapled proof, or the log resources a shell
fetched; `logged_release_checks` raises `ResourcesNeeded` for what is missing, the one error it
lets out). Appraisal never raises on bad evidence, only records failed checks; without a log
policy the log checks are skipped with that reason (a client configuration always has one); every
comparison of the expected report data is constant-time. The default minimum TCB
(`privproc.attest.bulletins.MINIMUM_TCB`) covers every product the verifier knows; a
configuration may raise it (`raised_minimum_tcb`), only code that builds its own policy can lower
it.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from privproc.attest.amd import TrustAnchors
from privproc.attest.bulletins import MINIMUM_TCB
from privproc.attest.evidence import EvidenceBundle
from privproc.attest.measurement import Manifest
from privproc.attest.snp import AttestationReport, Product, TcbParts
from privproc.attest.verify import Check, VerificationReport, verify_snp_evidence
from privproc.errors import CryptoError, PrivprocError, UsageError
from privproc.tlog import merkle
from privproc.tlog.client import (
    LogClient,
    LogPolicy,
    ResourcesNeeded,
    VerifiedCheckpoint,
    verify_checkpoint,
)
from privproc.tlog.entries import EnclaveRelease, decode_entry

__all__ = [
    "AttestationPolicy",
    "AttestationRejectedError",
    "apply_policy",
    "appraise",
    "logged_release_checks",
    "ratls_verifier",
    "unreadable_log_checks",
]


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
    # The least REPORTED_TCB per product; a product it does not name is refused.
    min_tcb: Mapping[Product, TcbParts] = field(default_factory=lambda: MINIMUM_TCB)
    measurements: frozenset[bytes] = frozenset()  # empty: any the log proves
    log: LogPolicy | None = None

    def __post_init__(self) -> None:
        for product, minimum in self.min_tcb.items():
            if minimum.product is not product:
                raise UsageError(f"the minimum TCB for {product} is a {product} TCB")


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _flag(check_id: str, value: bool, allowed: bool, what: str) -> Check:
    if value and not allowed:
        return Check.failing(check_id, f"the guest policy allows {what}; this policy forbids it")
    return Check.passing(check_id, f"{what}: {'allowed' if value else 'not allowed'} by the guest")


def _policy_checks(
    report: AttestationReport,
    product: Product | None,
    expected: bytes | None,
    policy: AttestationPolicy,
) -> list[Check]:
    checks = []
    if expected is None:
        checks.append(Check.skipped("policy.report-data", "no expected REPORT_DATA was given"))
    elif hmac.compare_digest(report.report_data, expected):
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
    checks.append(_min_tcb_check(report, product, policy))
    return checks


def _min_tcb_check(
    report: AttestationReport, product: Product | None, policy: AttestationPolicy
) -> Check:
    if product is None:
        return Check.failing(
            "policy.min-tcb", "the report is of no known product (Milan, Genoa, Turin): refused"
        )
    minimum = policy.min_tcb.get(product)
    if minimum is None:
        return Check.failing(
            "policy.min-tcb", f"the policy has no minimum TCB for {product}: refused"
        )
    reported = report.tcb("reported", product)
    if reported.meets(minimum):
        return Check.passing("policy.min-tcb", f"REPORTED_TCB {reported} meets {minimum}")
    have = reported.components()
    short = ", ".join(
        f"{name} {have[name]} < {least}"
        for name, least in minimum.components().items()
        if have[name] < least
    )
    return Check.failing(
        "policy.min-tcb", f"REPORTED_TCB {reported} is below {product}'s minimum: {short}"
    )


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
    checks.append(_listed_measurement_check(report, policy))
    return checks


def _listed_measurement_check(report: AttestationReport, policy: AttestationPolicy) -> Check:
    if not policy.measurements:
        why = (
            "no fixed list of measurements: the transparency log says which builds are trusted "
            "(log.release)"
            if policy.log is not None
            else "the policy lists no measurements"
        )
        return Check.skipped("policy.measurement", why)
    if report.measurement in policy.measurements:
        return Check.passing("policy.measurement", "MEASUREMENT is on the policy's list")
    return Check.failing(
        "policy.measurement", f"MEASUREMENT {report.measurement.hex()[:16]}... is not listed"
    )


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
    checks = [_checkpoint_passed(verified)]
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
        checks.append(_release_found(entry))
    return checks


def _release_found(entry: EnclaveRelease, index: int | None = None) -> Check:
    where = "" if index is None else f" (entry {index})"
    logged = _human_time(entry.time)
    return Check.passing(
        "log.release",
        f"the logged release {entry.source_revision!r} of {logged}{where} has this measurement",
    )


def logged_release_checks(
    measurement: bytes, client: LogClient, resources: Mapping[str, bytes]
) -> list[Check]:
    """log.checkpoint, log.inclusion and log.release for a measurement looked up in a log the
    caller reads (no stapled proof): the log's current checkpoint must verify under the
    client's policy, and an entry proven against it, read newest first, must be an enclave
    release of `measurement`.

    Sans IO: it reads the log from `resources` (tlog-tiles path -> bytes) and raises the
    client's `ResourcesNeeded` for what is missing (the checkpoint, then its tiles, then every
    entry bundle and tile of the scan at once); a shell fetches them and calls again. Every
    other error reading the log is a failed check, never raised; one the shell meets fetching is
    `unreadable_log_checks`'s."""
    try:
        verified = client.update(resources)
    except ResourcesNeeded:
        raise
    except PrivprocError as exc:
        return [
            Check.failing("log.checkpoint", str(exc)),
            Check.skipped("log.inclusion", "the checkpoint failed"),
            Check.skipped("log.release", "the checkpoint failed"),
        ]
    checks = [_checkpoint_passed(verified)]
    newest_first = range(verified.size - 1, -1, -1)
    try:
        client.need_entries(newest_first, resources)
    except ResourcesNeeded:
        raise
    except PrivprocError as exc:
        checks.append(Check.failing("log.inclusion", str(exc)))
        checks.append(Check.skipped("log.release", "the log's entries are not proven"))
        return checks
    for index in newest_first:
        try:
            raw = client.entry(index, resources)
        except ResourcesNeeded:
            raise  # a tile the cache let go since: asked for again
        except PrivprocError as exc:
            checks.append(Check.failing("log.inclusion", f"entry {index}: {exc}"))
            checks.append(Check.skipped("log.release", "the log's entries are not proven"))
            return checks
        try:
            entry = decode_entry(raw)
        except PrivprocError:
            continue  # not an entry this version knows: not a release
        if isinstance(entry, EnclaveRelease) and entry.measurement == measurement:
            checks.append(Check.passing("log.inclusion", f"entry {index} is in the tree"))
            checks.append(_release_found(entry, index))
            return checks
    checks.append(Check.passing("log.inclusion", f"all {verified.size} entries are in the tree"))
    checks.append(
        Check.failing(
            "log.release", f"no release in the log has MEASUREMENT {measurement.hex()[:16]}..."
        )
    )
    return checks


def unreadable_log_checks(error: PrivprocError, accepted: VerifiedCheckpoint | None) -> list[Check]:
    """The log checks when the shell could not read what `logged_release_checks` needed (a
    fetch failed, or its bounds were reached): log.checkpoint fails if no checkpoint had been
    accepted in that reading (`accepted`), else log.inclusion fails."""
    if accepted is None:
        return [
            Check.failing("log.checkpoint", str(error)),
            Check.skipped("log.inclusion", "the checkpoint failed"),
            Check.skipped("log.release", "the checkpoint failed"),
        ]
    return [
        _checkpoint_passed(accepted),
        Check.failing("log.inclusion", f"the log's entries could not be read: {error}"),
        Check.skipped("log.release", "the log's entries are not proven"),
    ]


def _checkpoint_passed(verified: VerifiedCheckpoint) -> Check:
    return Check.passing(
        "log.checkpoint",
        f"size {verified.size}, cosigned by {', '.join(verified.cosigners) or 'nobody'}",
    )


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


def apply_policy(
    hardware: VerificationReport,
    policy: AttestationPolicy,
    expected_report_data: bytes | None = None,
) -> VerificationReport:
    """The policy's checks on a report that `verify_snp_evidence` verified without a bundle:
    report data (skipped when None), debug, migration agent, VMPL, minimum TCB and the listed
    measurements. Without a report (it did not parse) there is nothing to appraise: the
    hardware result, already failed, is returned."""
    report = hardware.report
    if report is None:
        return hardware
    return hardware.with_checks(
        *_policy_checks(report, hardware.product, expected_report_data, policy),
        _listed_measurement_check(report, policy),
    )


def ratls_verifier(
    policy: AttestationPolicy, *, now: Callable[[], datetime | None] = lambda: None
) -> Callable[[bytes, bytes], VerificationReport]:
    """A verifier for an attested TLS session's received evidence (`privproc.net.ratls`'s
    `check_evidence` calls it): appraise, and refuse unless ok."""

    def verify(evidence: bytes, report_data: bytes) -> VerificationReport:
        report = appraise(evidence, report_data, policy, now=now())
        if not report.ok:
            raise AttestationRejectedError(report)
        return report

    return verify
