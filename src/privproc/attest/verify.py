"""Explainable verification of AMD SEV-SNP evidence: an attestation report, the VCEK or VLEK
certificate that signed it, and the ASK/ASVK + ARK chain, against pinned trust anchors.

The result is a `VerificationReport`: a list of named checks, each passed, failed or skipped with
a human reason, in this order:

| id | passes when |
|---|---|
| report.parse | the report follows the ABI layout of its version (`privproc.attest.snp`) |
| vcek.parse | the VCEK/VLEK certificate and its KDS extensions parse |
| report.signing-key | the report names a VCEK or VLEK signer, and the certificate is that kind |
| vcek.product | the caller's product, the report's CPUID (v3+) and the productName agree |
| chain.parse | the chain is one ASK/ASVK and one ARK (none given: the anchor's own are used) |
| chain.ark-pinned | the chain's ARK is the trusted ARK of the product (same key and subject) |
| chain.ark-signature | the ARK's self-signature verifies |
| chain.ask-signature | the ARK signed the ASK/ASVK |
| chain.vcek-signature | the ASK/ASVK signed the VCEK/VLEK |
| chain.names | each issuer name equals its signer's subject name |
| chain.ca-constraints | ARK and ASK/ASVK are CAs allowed to sign certificates; no unknown critical
  extension anywhere |
| chain.validity | all three certificates are valid at `now` |
| report.signature | the VCEK/VLEK's ECDSA P-384 signature over bytes 0x000..0x29F verifies |
| vcek.tcb-matches-reported | the certificate's TCB equals the report's REPORTED_TCB |
| report.tcb-consistent | no SPL of REPORTED_TCB is above CURRENT_TCB's (firmware derives keys
  only for the TCB it runs or older ones: a report claiming more is forged or inconsistent) |
| vcek.hwid-matches-chip-id | the VCEK's hwID equals CHIP_ID (skipped for a VLEK or a masked ID) |

Rules of this module:
- `verify_snp_evidence` does not raise on bad evidence: every problem is a failed check. Only
  misuse (a naive `now`, an unknown `product` name, a non-bytes report) raises `UsageError`.
- `ok` is true only if there are checks and none failed. A check is skipped when it does not
  apply, or when a check it needs failed (which then already makes the result not ok).
- A later layer (policy: debug, migration agent, VMPL, minimum TCB, measurements, report data)
  appends its checks with `VerificationReport.with_checks`; check ids are unique.
- Trust anchors default to AMD's pinned roots; other anchors (a virtual SNP root) are trusted only
  when passed as `roots`.
- Parsed certificates and chain results (signatures, names, constraints: everything but time) are
  cached in bounded LRU caches keyed by the exact certificate bytes and the anchor; validity
  times and the report signature are checked on every call.
- Reasons name fields, products, TCB values and fingerprints, never key material.
"""

from __future__ import annotations

import enum
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from privproc.attest.amd import (
    AmdCertificate,
    CertificateError,
    TrustAnchors,
    TrustedChain,
    VekExtensions,
    hwid_size,
    load_certificate,
    load_certificates,
    split_chain,
    verify_report_signature,
)
from privproc.attest.snp import AttestationReport, Product, SigningKey
from privproc.errors import PrivprocError, UnsupportedError, UsageError

__all__ = [
    "Check",
    "Status",
    "VerificationReport",
    "clear_caches",
    "verify_snp_evidence",
]


class Status(enum.Enum):
    PASS = "pass"  # noqa: S105 (a status, not a password)
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One named check: `id` is short and stable ("chain.ask-signature"), `reason` for people."""

    id: str
    status: Status
    reason: str

    @classmethod
    def passing(cls, check_id: str, reason: str) -> Check:
        return cls(check_id, Status.PASS, reason)

    @classmethod
    def failing(cls, check_id: str, reason: str) -> Check:
        return cls(check_id, Status.FAIL, reason)

    @classmethod
    def skipped(cls, check_id: str, reason: str) -> Check:
        return cls(check_id, Status.SKIP, reason)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status.value, "reason": self.reason}


@dataclass(frozen=True)
class VerificationReport:
    """The checks of one verification and what they established. Immutable; `with_checks`
    returns an extended copy."""

    checks: tuple[Check, ...]
    report: AttestationReport | None = None
    signer: AmdCertificate | None = field(default=None, repr=False)
    vek_extensions: VekExtensions | None = field(default=None, repr=False)
    product: Product | None = None
    anchor: TrustedChain | None = field(default=None, repr=False)
    verified_at: datetime | None = None

    def __post_init__(self) -> None:
        ids = [c.id for c in self.checks]
        if len(set(ids)) != len(ids):
            raise UsageError("check ids in one verification report are unique")

    @property
    def ok(self) -> bool:
        return bool(self.checks) and not any(c.failed for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.failed)

    def check(self, check_id: str) -> Check | None:
        for c in self.checks:
            if c.id == check_id:
                return c
        return None

    def with_checks(self, *checks: Check) -> VerificationReport:
        """A copy with more checks appended (a policy layer's)."""
        return replace(self, checks=self.checks + checks)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "product": str(self.product) if self.product else None,
            "verified_at": self.verified_at.isoformat() if self.verified_at else None,
            "checks": [c.to_dict() for c in self.checks],
        }
        if self.signer is not None:
            signer: dict[str, Any] = {
                "subject": str(self.signer.subject),
                "issuer": str(self.signer.issuer),
                "serial_number": self.signer.serial_number,
                "not_before": self.signer.not_before.isoformat(),
                "not_after": self.signer.not_after.isoformat(),
                "sha256": self.signer.fingerprint,
            }
            ext = self.vek_extensions
            if ext is not None:
                signer.update(kind=ext.kind.name, product_name=ext.product_name)
                if ext.csp_id is not None:
                    signer["csp_id"] = ext.csp_id
                if self.product is not None:
                    signer["tcb"] = f"{ext.tcb(self.product).raw:016x}"
            out["signer"] = signer
        if self.anchor is not None:
            out["anchor"] = {
                "source": self.anchor.source,
                "ark_spki_sha256": self.anchor.ark.spki_fingerprint,
            }
        if self.report is not None:
            out["report"] = self.report.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        head = "OK" if self.ok else "FAILED"
        what = [str(self.product)] if self.product else []
        if self.vek_extensions is not None:
            what.append(self.vek_extensions.kind.name)
        lines = [f"SEV-SNP evidence: {head}" + (f" ({', '.join(what)})" if what else "")]
        width = max((len(c.id) for c in self.checks), default=0)
        for c in self.checks:
            lines.append(f"  [{c.status.value}] {c.id.ljust(width)}  {c.reason}")
        return "\n".join(lines)


# --- Caches ------------------------------------------------------------------------------------

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _Lru(Generic[_K, _V]):
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_SIGNERS: _Lru[bytes | str, tuple[AmdCertificate, VekExtensions]] = _Lru(1024)
_CHAINS: _Lru[bytes | str, tuple[AmdCertificate, AmdCertificate]] = _Lru(256)
_CHAIN_CHECKS: _Lru[tuple[bytes, ...], tuple[Check, ...]] = _Lru(1024)


def clear_caches() -> None:
    """Forget parsed certificates and chain results (tests, benchmarks)."""
    for cache in (_SIGNERS, _CHAINS, _CHAIN_CHECKS):
        cache.clear()


def _load_signer(data: bytes | str) -> tuple[AmdCertificate, VekExtensions]:
    cached = _SIGNERS.get(data)
    if cached is None:
        cert = load_certificate(data)
        cached = (cert, VekExtensions.from_certificate(cert))
        _SIGNERS.put(data, cached)
    return cached


def _load_chain(data: bytes | str) -> tuple[AmdCertificate, AmdCertificate]:
    cached = _CHAINS.get(data)
    if cached is None:
        cached = split_chain(load_certificates(data))
        _CHAINS.put(data, cached)
    return cached


# --- Verification ------------------------------------------------------------------------------


def _name(cert: AmdCertificate) -> str:
    return cert.subject.common_name or str(cert.subject) or "an unnamed certificate"


def _describe(exc: PrivprocError) -> str:
    return f"{exc} ({type(exc).__name__})"


class _Run:
    """Collects checks; a check whose prerequisites did not pass is recorded as skipped."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.status: dict[str, Status] = {}

    def add(self, check: Check) -> None:
        self.checks.append(check)
        self.status[check.id] = check.status

    def ok(self, check_id: str, reason: str) -> None:
        self.add(Check.passing(check_id, reason))

    def fail(self, check_id: str, reason: str) -> None:
        self.add(Check.failing(check_id, reason))

    def skip(self, check_id: str, reason: str) -> None:
        self.add(Check.skipped(check_id, reason))

    def blocked(self, check_id: str, *needs: str) -> bool:
        """Record `check_id` as skipped if one of `needs` did not pass; True if so."""
        for need in needs:
            if self.status.get(need) is not Status.PASS:
                self.skip(check_id, f"not run: {need} did not pass")
                return True
        return False


def verify_snp_evidence(
    report_bytes: bytes | bytearray | memoryview,
    signer_cert: bytes | bytearray | memoryview | str,
    chain_pem: bytes | bytearray | memoryview | str | None = None,
    *,
    product: Product | str | None = None,
    now: datetime | None = None,
    roots: TrustAnchors | None = None,
) -> VerificationReport:
    """Verify a raw attestation report with the VCEK or VLEK certificate that signed it (DER or
    PEM) and its ASK/ASVK + ARK chain (PEM, either order; None: the anchor's own). `product`
    is needed only when neither the report (version 2) nor the certificate names it; `now`
    defaults to the current time; `roots` defaults to AMD's pinned roots."""
    if not isinstance(report_bytes, bytes | bytearray | memoryview):
        raise UsageError("the report is bytes")
    signer_cert = _text_or_bytes(signer_cert)
    chain_pem = None if chain_pem is None else _text_or_bytes(chain_pem)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise UsageError("`now` must be timezone-aware")
    requested: Product | None = None
    if product is not None:
        try:
            requested = Product.parse(product)
        except UnsupportedError:
            raise UsageError("unknown product: use Milan, Genoa or Turin") from None
    anchors = roots if roots is not None else TrustAnchors.amd()
    raw = bytes(report_bytes)
    run = _Run()

    # report.parse
    report: AttestationReport | None = None
    try:
        report = AttestationReport.parse(raw)
        run.ok(
            "report.parse",
            f"version {report.version} report, SIGNING_KEY {report.signing_key.name}",
        )
    except PrivprocError as exc:
        run.fail("report.parse", _describe(exc))

    # vcek.parse
    signer: AmdCertificate | None = None
    ext: VekExtensions | None = None
    try:
        signer, ext = _load_signer(signer_cert)
        run.ok(
            "vcek.parse",
            f"{_name(signer)} ({ext.kind.name}), productName {ext.product_name!r}, "
            f"issued by {signer.issuer.common_name}, serial {signer.serial_number}",
        )
    except PrivprocError as exc:
        run.fail("vcek.parse", _describe(exc))
    kind = ext.kind if ext is not None else None
    vek_label = kind.name if kind is not None else "VCEK/VLEK"
    ask_label = "ASVK" if kind is SigningKey.VLEK else "ASK"

    # report.signing-key
    if not run.blocked("report.signing-key", "report.parse", "vcek.parse"):
        assert report is not None
        assert ext is not None
        said = report.signing_key
        if said is SigningKey.NONE:
            run.fail("report.signing-key", "the report is unsigned (SIGNING_KEY 7)")
        elif said is not ext.kind:
            run.fail(
                "report.signing-key",
                f"the report says it was signed by a {said.name}, the certificate is a "
                f"{ext.kind.name}",
            )
        else:
            run.ok("report.signing-key", f"the report and the certificate agree: {said.name}")

    # vcek.product
    chosen = _product(run, requested, report, ext)

    # chain.parse (a supplied chain; otherwise the anchor's, below)
    intermediate: AmdCertificate | None = None
    ark: AmdCertificate | None = None
    if chain_pem is not None:
        try:
            intermediate, ark = _load_chain(chain_pem)
            run.ok("chain.parse", f"{ask_label} {_name(intermediate)}, ARK {_name(ark)}")
        except PrivprocError as exc:
            run.fail("chain.parse", _describe(exc))

    # The anchor, and the chain when none was supplied.
    anchor: TrustedChain | None = None
    if chosen is not None and kind is not None:
        anchor = anchors.get(chosen, kind)
    if chain_pem is None:
        if anchor is not None:
            intermediate, ark = anchor.intermediate, anchor.ark
            run.ok("chain.parse", f"no chain supplied: the trusted {ask_label} and ARK are used")
        elif chosen is None or kind is None:
            run.skip("chain.parse", "no chain supplied and no product or key kind to pick one")
        else:
            run.fail("chain.parse", f"no chain supplied and no trusted {chosen} {kind.name} chain")

    # chain.*: everything but validity comes from the cache when it can.
    chain_ids = (
        "chain.ark-pinned",
        "chain.ark-signature",
        "chain.ask-signature",
        "chain.vcek-signature",
        "chain.names",
        "chain.ca-constraints",
    )
    if signer is None or intermediate is None or ark is None:
        for check_id in chain_ids:
            run.blocked(check_id, "vcek.parse", "chain.parse")
    else:
        if anchor is None:
            run.fail(
                "chain.ark-pinned",
                "no product to choose a trusted ARK for"
                if chosen is None or kind is None
                else f"no trusted ARK for {chosen} {kind.name}s",
            )
        for check in _chain_checks(signer, intermediate, ark, anchor, vek_label, ask_label):
            run.add(check)

    # chain.validity
    if signer is None or intermediate is None or ark is None:
        run.blocked("chain.validity", "vcek.parse", "chain.parse")
    else:
        stale = [
            f"{label} {_name(cert)} ({cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d})"
            for label, cert in ((vek_label, signer), (ask_label, intermediate), ("ARK", ark))
            if not cert.valid_at(now)
        ]
        if stale:
            run.fail("chain.validity", f"not valid at {now:%Y-%m-%dT%H:%M:%SZ}: {'; '.join(stale)}")
        else:
            until = min(signer.not_after, intermediate.not_after, ark.not_after)
            run.ok(
                "chain.validity", f"all valid at {now:%Y-%m-%dT%H:%M:%SZ} (until {until:%Y-%m-%d})"
            )

    # report.signature
    if not run.blocked("report.signature", "report.parse", "vcek.parse"):
        assert report is not None
        assert signer is not None
        if report.signing_key is SigningKey.NONE:
            run.fail("report.signature", "the report carries no signature")
        else:
            try:
                verify_report_signature(raw, signer)
                run.ok("report.signature", f"ECDSA P-384 SHA-384 by the {vek_label} verifies")
            except PrivprocError as exc:
                run.fail("report.signature", str(exc))

    # vcek.tcb-matches-reported
    if not run.blocked("vcek.tcb-matches-reported", "report.parse", "vcek.parse", "vcek.product"):
        assert report is not None
        assert ext is not None
        assert chosen is not None
        cert_tcb = ext.tcb(chosen)
        reported = report.tcb("reported", chosen)
        if cert_tcb.raw == reported.raw:
            run.ok("vcek.tcb-matches-reported", f"REPORTED_TCB is the {vek_label}'s: {reported}")
        else:
            run.fail(
                "vcek.tcb-matches-reported",
                f"the {vek_label} is for {cert_tcb}, the report's REPORTED_TCB is {reported}",
            )

    # report.tcb-consistent
    if not run.blocked("report.tcb-consistent", "report.parse", "vcek.product"):
        assert report is not None
        assert chosen is not None
        reported = report.tcb("reported", chosen)
        current = report.tcb("current", chosen)
        now_running = current.components()
        above = [
            f"{name} {level} > {now_running[name]}"
            for name, level in reported.components().items()
            if level > now_running[name]
        ]
        if above:
            run.fail(
                "report.tcb-consistent",
                f"REPORTED_TCB is above CURRENT_TCB {current}: {', '.join(above)}",
            )
        else:
            run.ok("report.tcb-consistent", f"REPORTED_TCB is at most CURRENT_TCB {current}")

    # vcek.hwid-matches-chip-id
    _hwid_check(run, report, ext, chosen)

    return VerificationReport(
        checks=tuple(run.checks),
        report=report,
        signer=signer,
        vek_extensions=ext,
        product=chosen,
        anchor=anchor,
        verified_at=now,
    )


def _text_or_bytes(data: object) -> bytes | str:
    """Certificates as given (PEM text or DER/PEM bytes), hashable for the caches."""
    if isinstance(data, bytes | str):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise UsageError("certificates are PEM text or DER bytes")


def _product(
    run: _Run,
    requested: Product | None,
    report: AttestationReport | None,
    ext: VekExtensions | None,
) -> Product | None:
    """Record vcek.product and return the product every source agrees on."""
    sources: list[tuple[str, Product]] = []
    if requested is not None:
        sources.append(("the caller", requested))
    if report is not None and report.cpuid is not None:
        cpuid = report.cpuid
        if cpuid.product is None:
            run.fail(
                "vcek.product",
                f"the report's CPUID (family {cpuid.family:#04x}, model {cpuid.model:#04x}) "
                "is not Milan, Genoa or Turin",
            )
            return None
        sources.append(("the report's CPUID", cpuid.product))
    if ext is not None:
        if ext.product is None:
            run.fail("vcek.product", f"unknown productName {ext.product_name!r}")
            return None
        sources.append((f"the productName {ext.product_name!r}", ext.product))
    if not sources:
        run.fail("vcek.product", "no product: the report and certificate did not parse")
        return None
    first_source, first = sources[0]
    for source, other in sources[1:]:
        if other is not first:
            run.fail("vcek.product", f"{first_source} says {first} but {source} says {other}")
            return None
    names = ", ".join(source for source, _ in sources)
    run.ok("vcek.product", f"{first} (from {names})")
    return first


def _chain_checks(
    vek: AmdCertificate,
    intermediate: AmdCertificate,
    ark: AmdCertificate,
    anchor: TrustedChain | None,
    vek_label: str,
    ask_label: str,
) -> tuple[Check, ...]:
    """The time-independent chain checks (ark-pinned only when there is an anchor), cached."""
    key = (
        vek.der,
        intermediate.der,
        ark.der,
        anchor.ark.spki if anchor else b"",
        anchor.ark.subject.der if anchor else b"",
        anchor.source.encode() if anchor else b"",
        vek_label.encode(),
    )
    cached = _CHAIN_CHECKS.get(key)
    if cached is not None:
        return cached
    checks: list[Check] = []
    if anchor is not None:
        if anchor.pins(ark):
            checks.append(
                Check.passing(
                    "chain.ark-pinned",
                    f"ARK {_name(ark)} is the trusted {anchor.product} root of {anchor.source} "
                    f"(SPKI SHA-256 {ark.spki_fingerprint[:16]}...)",
                )
            )
        else:
            checks.append(
                Check.failing(
                    "chain.ark-pinned",
                    f"ARK {_name(ark)} is not the trusted {anchor.product} root "
                    f"{_name(anchor.ark)} of {anchor.source}",
                )
            )
    for check_id, cert, issuer, label in (
        ("chain.ark-signature", ark, ark, "ARK"),
        ("chain.ask-signature", intermediate, ark, ask_label),
        ("chain.vcek-signature", vek, intermediate, vek_label),
    ):
        try:
            cert.verify_signed_by(issuer)
            checks.append(
                Check.passing(
                    check_id, f"the {label} {_name(cert)} is signed by {_name(issuer)} (RSA-PSS)"
                )
            )
        except PrivprocError as exc:
            checks.append(Check.failing(check_id, f"{label}: {exc}"))
    broken = [
        f"{label} {_name(cert)} names {cert.issuer.common_name} as issuer, not {_name(issuer)}"
        for cert, issuer, label in (
            (ark, ark, "ARK"),
            (intermediate, ark, ask_label),
            (vek, intermediate, vek_label),
        )
        if cert.issuer.der != issuer.subject.der
    ]
    if broken:
        checks.append(Check.failing("chain.names", "; ".join(broken)))
    else:
        checks.append(
            Check.passing(
                "chain.names", f"{_name(vek)} <- {_name(intermediate)} <- {_name(ark)} (self)"
            )
        )
    checks.append(_constraints(vek, intermediate, ark, vek_label, ask_label))
    result = tuple(checks)
    _CHAIN_CHECKS.put(key, result)
    return result


def _constraints(
    vek: AmdCertificate,
    intermediate: AmdCertificate,
    ark: AmdCertificate,
    vek_label: str,
    ask_label: str,
) -> Check:
    problems: list[str] = []
    try:
        for label, cert in (("ARK", ark), (ask_label, intermediate)):
            if cert.is_ca() is not True:
                problems.append(f"the {label} is not marked as a CA (basicConstraints)")
            if cert.may_sign_certificates() is False:
                problems.append(f"the {label}'s keyUsage does not allow certificate signing")
        if vek.is_ca():
            problems.append(f"the {vek_label} is marked as a CA")
        for label, cert in (("ARK", ark), (ask_label, intermediate), (vek_label, vek)):
            for oid in cert.unhandled_critical_extensions():
                problems.append(f"the {label} has an unrecognised critical extension {oid}")
    except CertificateError as exc:
        problems.append(str(exc))
    if problems:
        return Check.failing("chain.ca-constraints", "; ".join(problems))
    return Check.passing(
        "chain.ca-constraints", f"ARK and {ask_label} are CAs that may sign certificates"
    )


def _hwid_check(
    run: _Run,
    report: AttestationReport | None,
    ext: VekExtensions | None,
    chosen: Product | None,
) -> None:
    check_id = "vcek.hwid-matches-chip-id"
    if ext is not None and ext.kind is SigningKey.VLEK:
        run.skip(check_id, "not applicable: a VLEK is not bound to one chip")
        return
    if run.blocked(check_id, "report.parse", "vcek.parse", "vcek.product"):
        return
    assert report is not None
    assert ext is not None
    assert chosen is not None
    if ext.hwid is None:
        run.fail(check_id, "the VCEK has no hwID extension")
        return
    size = hwid_size(chosen)
    if report.chip_id_masked:
        run.skip(check_id, "CHIP_ID is masked (zero); the VCEK signature alone binds the chip")
    elif len(ext.hwid) != size:
        run.fail(check_id, f"a {chosen} hwID is {size} bytes, the VCEK's is {len(ext.hwid)}")
    elif ext.hwid != report.chip_id[:size] or any(report.chip_id[size:]):
        run.fail(check_id, "the VCEK's hwID is not the report's CHIP_ID")
    else:
        run.ok(check_id, f"the VCEK's hwID ({ext.hwid_encoding}) is the report's CHIP_ID")
