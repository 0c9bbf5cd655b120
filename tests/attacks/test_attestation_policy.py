"""The operator's platform against the device's attestation policy: evidence signed by a virtual
SEV-SNP as each product, appraised by the real verifier under the policy a device builds from
its client.json (which names the operator's virtual root and no minimum TCB of its own), and by
`privproc attest verify`.

- Firmware with a zeroed TCB, on Milan, Genoa and Turin: refused by policy.min-tcb (AMD's
  bulletins set the minimum: attest/bulletins.py); the same product at that minimum passes.
- A debuggable guest: policy.debug.
- A report whose CPUID names a product the verifier does not know: vcek.product, and
  policy.min-tcb (no minimum applies to no product).
- A report whose REPORTED_TCB (the VCEK's) is above the CURRENT_TCB the platform runs:
  report.tcb-consistent.
- Real AMD reports (the vectors) pass every hardware check and fail policy.min-tcb, naming the
  SPLs they lack.
- `privproc attest verify` exits 1 on each, 0 on a good report; the measurement must be a
  logged release when a log is given; `--no-policy` warns on stderr that the policy is off.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from privproc.attest.appraisal import appraise
from privproc.attest.bulletins import MINIMUM_TCB
from privproc.attest.evidence import EvidenceBundle
from privproc.attest.snp import Cpuid, GuestPolicy, Product, TcbParts
from privproc.attest.verify import VerificationReport, verify_snp_evidence
from privproc.parties.device.private import ClientConfig
from privproc.parties.enclave.platform.virtual import VirtualSnp
from privproc.tlog.entries import EnclaveRelease, encode_entry
from privproc.tlog.log import TransparencyLog
from privproc.tlog.note import parse_note
from privproc.tlog.witness import Witness, encode_add_checkpoint
from tests.servers import privproc_cli as _cli

ROOT = Path(__file__).parent.parent.parent
SEV = ROOT / "tests" / "vectors" / "sev"
ORIGIN = "log.example/releases"
MEASUREMENT = hashlib.sha384(b"the logged release").digest()
RD = bytes(range(64))


@dataclass
class Log:
    """A published log (a directory, as the CDN serves it) holding the release of MEASUREMENT."""

    directory: Path
    log_key: str
    witness_key: str
    entry: bytes
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    tmp = tmp_path_factory.mktemp("log")
    tlog = TransparencyLog.init(tmp / "log", ORIGIN)
    witness = Witness.init(tmp / "witness", "witness.example/a")
    witness.add_log(ORIGIN, [tlog.verifier.encode()])
    digest = bytes(32)
    entry = encode_entry(EnclaveRelease(MEASUREMENT, digest, digest, digest, "v1", 1_800_000_000))
    tlog.append(encode_entry(EnclaveRelease(bytes(48), digest, digest, digest, "v0", 1)))
    index = tlog.append(entry)
    note = tlog.stage(tmp / "cdn")
    line = witness.add_checkpoint(encode_add_checkpoint(0, [], note.encode()))
    cosigned = note.with_signatures(parse_note(note.text + "\n" + line).signatures)
    tlog.commit(tmp / "cdn", cosigned)
    yield Log(
        tmp / "cdn",
        tlog.verifier.encode(),
        witness.verifier.encode(),
        entry,
        index,
        tuple(tlog.inclusion_proof(index, tlog.size)),
        cosigned.encode(),
    )
    tlog.close()
    witness.close()


def _zero(product: Product) -> dict[str, int]:
    spls = {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}
    return {**spls, "fmc": 0} if product is Product.TURIN else spls


@pytest.fixture(scope="module")
def platforms() -> dict[tuple[Product, str], VirtualSnp]:
    """Per product, a platform at AMD's minimum TCB ("minimum") and one with a zeroed TCB."""
    return {
        (product, which): VirtualSnp.generate(
            product, **(_zero(product) if which == "zeroed" else {})
        )
        for product in Product
        for which in ("minimum", "zeroed")
    }


def _bundle(platform: VirtualSnp, log: Log, report: bytes) -> EvidenceBundle:
    return EvidenceBundle(
        report, platform.vcek_der(), platform.chain_der(), b"", log.entry, log.index, log.proof,
        log.checkpoint,
    )  # fmt: skip


def _device_policy(platform: VirtualSnp, log: Log) -> ClientConfig:
    """The client.json of a device told to trust this (virtual) platform's root, with no
    minimum TCB of its own: the defaults must hold."""
    return ClientConfig(
        relay_url="http://127.0.0.1:1/",
        keys_url="http://127.0.0.1:1/ohttp-keys",
        log_url="http://127.0.0.1:1/",
        issuer_url="http://127.0.0.1:1/",
        gateway_origin="gateway.example",
        log_origin=ORIGIN,
        log_keys=(log.log_key,),
        witness_keys=(log.witness_key,),
        witness_quorum=1,
        hardware_roots=(platform.chain_pem().decode(),),
    )


def _appraised(platform: VirtualSnp, log: Log, report: bytes) -> VerificationReport:
    policy = _device_policy(platform, log).attestation_policy()
    return appraise(_bundle(platform, log, report), RD, policy)


def _failures(result: VerificationReport) -> list[str]:
    return [c.id for c in result.failures]


@pytest.mark.parametrize("product", list(Product), ids=str)
def test_a_platform_with_a_zeroed_tcb_is_refused(
    platforms: dict[tuple[Product, str], VirtualSnp], log: Log, product: Product
) -> None:
    zeroed = platforms[product, "zeroed"]
    result = _appraised(zeroed, log, zeroed.report(RD, MEASUREMENT))
    assert _failures(result) == ["policy.min-tcb"], result.to_text()
    reason = (result.check("policy.min-tcb") or result.checks[0]).reason
    least = MINIMUM_TCB[product]
    assert f"snp 0 < {least.snp}, microcode 0 < {least.microcode}" in reason
    # Every other check passed: the chain, the signature, the TCB binding, the log.
    assert result.check("log.release") is not None
    # The same product at AMD's minimum passes: the check compares, it does not just refuse.
    at_minimum = platforms[product, "minimum"]
    assert at_minimum.tcb == least
    good = _appraised(at_minimum, log, at_minimum.report(RD, MEASUREMENT))
    assert good.ok, good.to_text()


def test_a_debuggable_guest_is_refused(
    platforms: dict[tuple[Product, str], VirtualSnp], log: Log
) -> None:
    platform = platforms[Product.GENOA, "minimum"]
    debuggable = GuestPolicy.build(abi_major=1, abi_minor=55, smt=True, debug=True)
    result = _appraised(platform, log, platform.report(RD, MEASUREMENT, policy=debuggable))
    assert _failures(result) == ["policy.debug"]


def test_a_report_of_an_unknown_product_is_refused(
    platforms: dict[tuple[Product, str], VirtualSnp], log: Log
) -> None:
    """Genuine keys of a known product sign a report whose CPUID names a product that has no
    AMD root and no minimum here (family 1Ah, model 50h: not Turin)."""
    platform = platforms[Product.TURIN, "minimum"]
    unknown = Cpuid(0x1A, 0x50, 0)
    assert unknown.product is None
    result = _appraised(platform, log, platform.report(RD, MEASUREMENT, cpuid=unknown))
    failed = {c.id: c.reason for c in result.failures}
    assert "not Milan, Genoa or Turin" in failed["vcek.product"]
    assert "no known product" in failed["policy.min-tcb"]
    assert result.product is None


def test_a_report_claiming_more_than_its_current_tcb_is_refused(
    platforms: dict[tuple[Product, str], VirtualSnp], log: Log
) -> None:
    """The VCEK (and so REPORTED_TCB) is for the minimum, but the platform runs an older SNP
    firmware than that: firmware never derives a key for a TCB above the one it runs."""
    platform = platforms[Product.MILAN, "minimum"]
    least = platform.tcb
    older = TcbParts(Product.MILAN, least.bootloader, least.tee, least.snp - 1, least.microcode)
    result = _appraised(platform, log, platform.report(RD, MEASUREMENT, tcb=older))
    assert _failures(result) == ["report.tcb-consistent"]
    reason = (result.check("report.tcb-consistent") or result.checks[0]).reason
    assert f"snp {least.snp} > {least.snp - 1}" in reason


REAL = {
    "go-sev-guest": ("go-sev-guest/attestation.bin", "go-sev-guest/vcek.testcer",
                     "go-sev-guest/ask_ark_milan.pem", "snp 5 < 27, microcode 68 < 219"),
    "virtee-sev": ("virtee-sev/report_milan.bin", "virtee-sev/vcek_milan.der",
                   "virtee-sev/cert_chain_milan", "snp 8 < 27, microcode 115 < 219"),
    "trustee-vcek": ("trustee/test-report.bin", "trustee/test-vcek.der",
                     "go-sev-guest/ask_ark_milan.pem", "snp 8 < 27, microcode 115 < 219"),
    "trustee-vlek": ("trustee/test-vlek-report.bin", "trustee/test-vlek.der",
                     "go-sev-guest/ask_ark_milan_vlek.pem", "snp 24 < 27, microcode 217 < 219"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REAL))
def test_real_amd_reports_pass_the_hardware_and_fail_the_minimum_tcb(name: str) -> None:
    """Genuine Milan evidence from 2022-2025 firmware: AMD signed it, and it predates the
    microcode and SNP fixes of AMD-SB-3019/3020, so the device refuses that platform."""
    from datetime import UTC, datetime

    from privproc.attest.appraisal import AttestationPolicy, apply_policy

    report, signer, chain, short = REAL[name]
    hardware = verify_snp_evidence(
        *((SEV / f).read_bytes() for f in (report, signer, chain)),
        now=datetime(2025, 6, 1, tzinfo=UTC),
    )
    assert hardware.ok, hardware.to_text()
    result = apply_policy(hardware, AttestationPolicy())
    failed = {c.id: c.reason for c in result.failures}
    assert "policy.min-tcb" in failed
    assert failed["policy.min-tcb"].endswith(short)
    # Other policy failures, where there are any, are the report's own: a debuggable guest
    # (the go-sev-guest sample), a report requested at VMPL 1 (the VLEK sample).
    assert set(failed) <= {"policy.min-tcb", "policy.debug", "policy.vmpl"}


# --- privproc attest verify -----------------------------------------------------------------------


def _verify(tmp: Path, platform: VirtualSnp, report: bytes, *extra: str) -> tuple[int, str, str]:
    """`privproc attest verify` of `report`, trusting the platform's root: status, out, err."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "report.bin").write_bytes(report)
    (tmp / "vcek.pem").write_bytes(platform.vcek_pem())
    (tmp / "chain.pem").write_bytes(platform.chain_pem())
    done = _cli(
        "attest", "verify", str(tmp / "report.bin"), "--vcek", str(tmp / "vcek.pem"),
        "--chain", str(tmp / "chain.pem"), "--trust-root", str(tmp / "chain.pem"), *extra,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def _failed_lines(out: str) -> list[str]:
    return re.findall(r"\[fail\] (\S+)", out)


def test_attest_verify_refuses_each_attack_and_passes_a_good_report(
    platforms: dict[tuple[Product, str], VirtualSnp], tmp_path: Path
) -> None:
    milan, turin = platforms[Product.MILAN, "minimum"], platforms[Product.TURIN, "minimum"]
    least = milan.tcb
    older = TcbParts(Product.MILAN, least.bootloader, least.tee, least.snp - 1, least.microcode)
    debuggable = GuestPolicy.build(abi_major=1, abi_minor=55, smt=True, debug=True)
    attacks = {
        "zeroed-milan": (platforms[Product.MILAN, "zeroed"], None, ["policy.min-tcb"]),
        "zeroed-genoa": (platforms[Product.GENOA, "zeroed"], None, ["policy.min-tcb"]),
        "zeroed-turin": (platforms[Product.TURIN, "zeroed"], None, ["policy.min-tcb"]),
        "debug": (milan, {"policy": debuggable}, ["policy.debug"]),
        "unknown": (turin, {"cpuid": Cpuid(0x1A, 0x50, 0)}, ["vcek.product"]),
        "reported-above-current": (milan, {"tcb": older}, ["report.tcb-consistent"]),
    }
    for name, (platform, changes, failing) in attacks.items():
        report = platform.report(RD, MEASUREMENT, **(changes or {}))
        status, out, _ = _verify(tmp_path / name, platform, report)
        assert status == 1, (name, out)
        failed = _failed_lines(out)
        assert set(failing) <= set(failed), (name, out)
        assert set(failed) <= {*failing, "chain.ark-pinned", "policy.min-tcb"}, (name, out)
    status, out, err = _verify(tmp_path / "good", milan, milan.report(RD, MEASUREMENT))
    assert status == 0, out
    assert "[pass] policy.min-tcb" in out
    assert "[pass] policy.debug" in out
    assert not err


def test_attest_verify_checks_the_measurement_in_the_log_it_is_given(
    platforms: dict[tuple[Product, str], VirtualSnp], log: Log, tmp_path: Path
) -> None:
    platform = platforms[Product.GENOA, "minimum"]
    with_log = ["--log-dir", str(log.directory), "--log-origin", ORIGIN,
                "--log-key", log.log_key, "--witness-key", log.witness_key]  # fmt: skip
    status, out, _ = _verify(
        tmp_path / "logged", platform, platform.report(RD, MEASUREMENT), *with_log
    )
    assert status == 0, out
    assert re.search(r"\[pass\] log\.release .*'v1'.*\(entry 1\)", out), out
    unlogged = platform.report(RD, hashlib.sha384(b"another build").digest())
    status, out, _ = _verify(tmp_path / "unlogged", platform, unlogged, *with_log)
    assert status == 1
    assert _failed_lines(out) == ["log.release"]
    # Without a log, --measurement lists the builds accepted.
    listed = ["--measurement", MEASUREMENT.hex()]
    status, out, _ = _verify(tmp_path / "listed", platform, unlogged, *listed)
    assert (status, _failed_lines(out)) == (1, ["policy.measurement"])
    # A checkpoint that the log key given did not sign is not believed.
    other_log = TransparencyLog.init(tmp_path / "other-log", ORIGIN)
    with_other_key = [*with_log[:4], "--log-key", other_log.verifier.encode(), *with_log[6:]]
    other_log.close()
    good = platform.report(RD, MEASUREMENT)
    status, out, _ = _verify(tmp_path / "other-key", platform, good, *with_other_key)
    assert (status, _failed_lines(out)) == (1, ["log.checkpoint"])


def test_attest_verify_without_the_policy_says_so_loudly(
    platforms: dict[tuple[Product, str], VirtualSnp], tmp_path: Path
) -> None:
    zeroed = platforms[Product.GENOA, "zeroed"]
    status, out, err = _verify(tmp_path, zeroed, zeroed.report(RD, MEASUREMENT), "--no-policy")
    assert status == 0, out
    assert "policy.min-tcb" not in out
    assert "WARNING: --no-policy" in err
    assert "firmware below the minimum TCB" in err
