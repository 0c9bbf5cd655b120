"""Appraisal of evidence against a client's policy, the virtual SNP, configfs-tsm evidence, and
attested TLS end to end with a virtual enclave whose release is in a witnessed log."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from privproc.attest.amd import TrustAnchors
from privproc.attest.appraisal import (
    AttestationPolicy,
    AttestationRejectedError,
    appraise,
    ratls_verifier,
)
from privproc.attest.bulletins import MINIMUM_TCB, raised_minimum_tcb
from privproc.attest.evidence import EvidenceBundle
from privproc.attest.measurement import Manifest, ManifestEntry
from privproc.attest.snp import GuestPolicy, Product, TcbParts
from privproc.errors import PrivprocError, UsageError
from privproc.net.ratls import pump_attested
from privproc.parties.enclave.platform.hardware import ConfigfsTsm, encode_cert_table
from privproc.parties.enclave.platform.provider import EvidenceProvider, ReleaseProof
from privproc.parties.enclave.platform.virtual import VirtualSnp
from privproc.ratls.session import (
    EXPORTER_LABEL,
    EXPORTER_LENGTH,
    ClientSession,
    ClientState,
    ServerSession,
    client_session,
    pump,
    report_data,
    server_session,
)
from privproc.ratls.tls import ServerIdentity
from privproc.tlog.client import LogPolicy
from privproc.tlog.entries import EnclaveRelease, encode_entry
from privproc.tlog.log import TransparencyLog
from privproc.tlog.note import parse_note
from privproc.tlog.witness import Witness, encode_add_checkpoint

ORIGIN = "log.example/releases"


@pytest.fixture(scope="module")
def platform() -> VirtualSnp:
    return VirtualSnp.generate(Product.MILAN)


def _manifest(tag: bytes) -> Manifest:
    import hashlib

    return Manifest.of([ManifestEntry("code", "enclave.py", hashlib.sha384(tag).digest(), 10)])


@dataclass
class Release:
    manifest: Manifest
    proof: ReleaseProof
    log_policy: LogPolicy


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """A log holding the release of `_manifest(b"v1")`, cosigned by one witness."""
    tmp = tmp_path_factory.mktemp("log")
    log = TransparencyLog.init(tmp / "log", ORIGIN)
    witness = Witness.init(tmp / "witness", "witness.example/a")
    witness.add_log(ORIGIN, [log.verifier.encode()])
    manifest = _manifest(b"v1")
    entry = encode_entry(
        EnclaveRelease(
            manifest.measurement,
            manifest.digest_of("code"),
            manifest.digest_of("model"),
            manifest.digest_of("config"),
            "abc123",
            1_800_000_000,
        )
    )
    log.append(b"an earlier entry")
    index = log.append(entry)
    note = log.stage(tmp / "cdn")
    line = witness.add_checkpoint(encode_add_checkpoint(0, [], note.encode()))
    cosigned = note.with_signatures(parse_note(note.text + "\n" + line).signatures)
    proof = ReleaseProof(entry, index, tuple(log.inclusion_proof(index, 2)), cosigned.encode())
    policy = LogPolicy(ORIGIN, (log.verifier,), (witness.verifier,), 1)
    yield Release(manifest, proof, policy)
    log.close()
    witness.close()


def _policy(platform: VirtualSnp, release: Release, **kw: object) -> AttestationPolicy:
    return AttestationPolicy(roots=platform.trust_anchors(), log=release.log_policy, **kw)  # type: ignore[arg-type]


def _bundle(platform: VirtualSnp, release: Release, rd: bytes, **report_kw: object) -> bytes:
    manifest = release.manifest
    report = platform.report(rd, manifest.measurement, **report_kw)  # type: ignore[arg-type]
    ask, ark = platform.chain_der()
    p = release.proof
    return EvidenceBundle(
        report, platform.vcek_der(), (ask, ark), manifest.encode(), p.entry, p.index, p.proof,
        p.checkpoint,
    ).encode()  # fmt: skip


RD = bytes(range(64))


def test_genuine_evidence_passes_every_check(platform: VirtualSnp, release: Release) -> None:
    report = appraise(_bundle(platform, release, RD), RD, _policy(platform, release))
    assert report.ok, report.to_text()
    ids = [c.id for c in report.checks]
    assert ids[0] == "evidence.parse"
    for expected in ("chain.ark-pinned", "policy.report-data", "log.release", "log.inclusion"):
        assert report.check(expected) is not None
    assert '"ok": true' in report.to_json()


@pytest.mark.parametrize(
    ("report_kw", "policy_kw", "failing"),
    [
        ({"policy": GuestPolicy.build(abi_major=1, smt=True, debug=True)}, {}, "policy.debug"),
        (
            {"policy": GuestPolicy.build(abi_major=1, smt=True, migrate_ma=True)},
            {},
            "policy.migration-agent",
        ),
        ({"vmpl": 2}, {}, "policy.vmpl"),
        (
            {},
            {"min_tcb": {Product.MILAN: TcbParts(Product.MILAN, 10, 0, 24, 213)}},
            "policy.min-tcb",
        ),
        ({}, {"measurements": frozenset({bytes(48)})}, "policy.measurement"),
    ],
    ids=["debug", "migration-agent", "vmpl", "stale-tcb", "unlisted-measurement"],
)
def test_policy_failures_name_their_reason(
    platform: VirtualSnp,
    release: Release,
    report_kw: dict[str, object],
    policy_kw: dict[str, object],
    failing: str,
) -> None:
    report = appraise(
        _bundle(platform, release, RD, **report_kw), RD, _policy(platform, release, **policy_kw)
    )
    assert not report.ok
    assert [c.id for c in report.failures] == [failing]


def test_a_stale_platform_fails_its_minimum_tcb(release: Release) -> None:
    old = VirtualSnp.generate(Product.MILAN, snp=8)
    minimum = {Product.MILAN: TcbParts(Product.MILAN, 10, 0, 23, 213)}
    report = appraise(_bundle(old, release, RD), RD, _policy(old, release, min_tcb=minimum))
    assert [c.id for c in report.failures] == ["policy.min-tcb"]
    assert "below" in (report.check("policy.min-tcb") or report.checks[0]).reason


def test_the_virtual_root_is_trusted_only_when_named(
    platform: VirtualSnp, release: Release
) -> None:
    bundle = _bundle(platform, release, RD)
    amd_only = AttestationPolicy(roots=TrustAnchors.amd(), log=release.log_policy)
    report = appraise(bundle, RD, amd_only)
    assert [c.id for c in report.failures] == ["chain.ark-pinned"]
    other = VirtualSnp.generate(Product.MILAN)
    report = appraise(bundle, RD, _policy(other, release))
    assert "chain.ark-pinned" in [c.id for c in report.failures]


def test_wrong_session_measurement_and_log(platform: VirtualSnp, release: Release) -> None:
    policy = _policy(platform, release)
    assert [c.id for c in appraise(_bundle(platform, release, RD), bytes(64), policy).failures] == [
        "policy.report-data"
    ]
    # A measurement that is not the logged release (and whose manifest is not stapled honestly).
    other = Release(_manifest(b"v2"), release.proof, release.log_policy)
    failures = [c.id for c in appraise(_bundle(platform, other, RD), RD, policy).failures]
    assert failures == ["log.release"]
    # A tampered inclusion proof; a checkpoint without the witness quorum.
    good = EvidenceBundle.decode(_bundle(platform, release, RD))
    bad_proof = EvidenceBundle(**{**good.__dict__, "inclusion_proof": (bytes(32),)})
    assert [c.id for c in appraise(bad_proof, RD, policy).failures] == ["log.inclusion"]
    note = parse_note(good.checkpoint)
    unwitnessed = EvidenceBundle(
        **{**good.__dict__, "checkpoint": type(note)(note.text, note.signatures[:1]).encode()}
    )
    assert [c.id for c in appraise(unwitnessed, RD, policy).failures] == ["log.checkpoint"]
    assert [c.id for c in appraise(b"garbage", RD, policy).failures] == ["evidence.parse"]


def test_flipped_bytes_fail_with_the_right_check(platform: VirtualSnp, release: Release) -> None:
    good = EvidenceBundle.decode(_bundle(platform, release, RD))
    policy = _policy(platform, release)
    for offset, expected in ((0x90, "report.signature"), (0x2A0 + 5, "report.signature")):
        report = bytearray(good.report)
        report[offset] ^= 1
        flipped = EvidenceBundle(**{**good.__dict__, "report": bytes(report)})
        assert expected in [c.id for c in appraise(flipped, RD, policy).failures]
    vcek = bytearray(good.signer_cert)
    vcek[len(vcek) - 10] ^= 1  # inside the ASK's signature over the VCEK
    flipped = EvidenceBundle(**{**good.__dict__, "signer_cert": bytes(vcek)})
    assert "chain.vcek-signature" in [c.id for c in appraise(flipped, RD, policy).failures]


# --- configfs-tsm, laid out in a temporary directory -------------------------------------------


class FakeTsm:
    """configfs-tsm's kernel side on a temporary directory: entries get their attributes at
    mkdir, and outblob is the (virtual) firmware's report over what inblob holds."""

    def __init__(self, platform: VirtualSnp, measurement: bytes) -> None:
        self.platform = platform
        self.measurement = measurement
        self.lock = threading.Lock()

    def mkdir(self, path: Path) -> None:
        path.mkdir()
        (path / "provider").write_text("sev_guest\n")
        (path / "generation").write_text("0\n")
        (path / "privlevel").write_text("")
        (path / "inblob").write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()

    def write(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        if path.name == "inblob":
            generation = int((path.parent / "generation").read_text()) + 1
            (path.parent / "generation").write_text(f"{generation}\n")
            evidence = self.platform.evidence(data, self.measurement)
            (path.parent / "outblob").write_bytes(evidence.report)
            (path.parent / "auxblob").write_bytes(encode_cert_table(evidence.certificates))

    def read(self, path: Path, limit: int) -> bytes:
        return path.read_bytes()[:limit]


def test_configfs_tsm_evidence_verifies(
    platform: VirtualSnp, release: Release, tmp_path: Path
) -> None:
    tsm = ConfigfsTsm(tmp_path, FakeTsm(platform, release.manifest.measurement))
    provider = EvidenceProvider(tsm, release.manifest, release.proof)
    report = appraise(provider(RD), RD, _policy(platform, release))
    assert report.ok, report.to_text()
    assert list(tmp_path.iterdir()) == []  # the entry was removed
    with pytest.raises(PrivprocError):
        tsm.get_report(bytes(63))
    os.chmod(tmp_path, 0o500)
    try:
        if os.geteuid() != 0:  # root ignores directory permissions
            with pytest.raises(PrivprocError, match="configfs-tsm"):
                tsm.get_report(RD)
    finally:
        os.chmod(tmp_path, 0o700)


# --- Attested TLS with a virtual enclave -------------------------------------------------------


@pytest.fixture(scope="module")
def identity() -> ServerIdentity:
    return ServerIdentity.generate()


def test_attested_tls_with_a_genuine_virtual_enclave(
    platform: VirtualSnp, release: Release, identity: ServerIdentity
) -> None:
    provider = EvidenceProvider(platform, release.manifest, release.proof)
    server = server_session(identity)
    client = client_session()
    pump_attested(client, server, provider, ratls_verifier(_policy(platform, release)))
    assert client.state is ClientState.VERIFIED
    assert client.attestation.ok  # type: ignore[attr-defined]
    client.write(b"summarise my chat")
    pump(client, server)
    assert server.read() == b"summarise my chat"


def _rejection(
    client: ClientSession,
    server: ServerSession,
    provider: Callable[[bytes], bytes],
    policy: AttestationPolicy,
) -> list[str]:
    """Run the handshake to its failure; the ids of the attestation checks that failed."""
    with pytest.raises(PrivprocError) as err:
        pump_attested(client, server, provider, ratls_verifier(policy))
    cause: BaseException | None = err.value
    while cause is not None and not isinstance(cause, AttestationRejectedError):
        cause = cause.__cause__
    assert isinstance(cause, AttestationRejectedError), repr(err.value)
    return [c.id for c in cause.report.failures]


def test_replayed_foreign_or_mismatched_evidence_fails_before_any_data(
    platform: VirtualSnp, release: Release, identity: ServerIdentity
) -> None:
    policy = _policy(platform, release)
    honest = EvidenceProvider(platform, release.manifest, release.proof)
    # 1. Evidence recorded from another session (another exporter) and replayed.
    recorded: list[bytes] = []

    def recording(rd: bytes) -> bytes:
        recorded.append(honest(rd))
        return recorded[-1]

    first = client_session()
    pump_attested(first, server_session(identity), recording, ratls_verifier(policy))
    assert first.state is ClientState.VERIFIED
    client = client_session()
    replaying = server_session(identity)
    assert _rejection(client, replaying, lambda rd: recorded[0], policy) == ["policy.report-data"]
    assert client.state is ClientState.FAILED
    with pytest.raises(PrivprocError):
        client.write(b"secret")
    # 2. A genuine platform running another (unlogged) workload.
    other = EvidenceProvider(platform, _manifest(b"evil"), release.proof)
    client = client_session()
    assert _rejection(client, server_session(identity), other, policy) == ["log.release"]
    assert client.state is ClientState.FAILED
    # 3. A relay that terminates TLS itself and forwards the genuine enclave's evidence: the
    #    evidence is bound to the enclave's session, not to the relay's.
    genuine_client = client_session()
    genuine_server = server_session(identity)
    pump_attested(genuine_client, genuine_server, honest, lambda evidence, rd: None)
    exporter = genuine_server.exporter(EXPORTER_LABEL, EXPORTER_LENGTH)
    genuine_evidence = honest(report_data(exporter))
    impostor = server_session(ServerIdentity.generate())
    client = client_session()
    assert _rejection(client, impostor, lambda rd: genuine_evidence, policy) == [
        "policy.report-data"
    ]
    assert client.state is ClientState.FAILED


# --- The minimum TCB -----------------------------------------------------------------------------


def test_the_threat_models_minimum_tcb_table_is_the_codes() -> None:
    text = (Path(__file__).parent.parent / "docs" / "THREAT_MODEL.md").read_text()
    section = text.split("## The minimum TCB", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (Milan|Genoa|Turin) \| (.*) \|$", section, re.MULTILINE)
    assert [name for name, _ in rows] == [str(p) for p in Product]
    for name, cells in rows:
        fmc, bootloader, tee, snp, microcode = (c.strip() for c in cells.split("|"))
        product = Product.parse(name)
        documented = TcbParts(
            product,
            int(bootloader, 0),
            int(tee, 0),
            int(snp, 0),
            int(microcode, 0),
            fmc=None if fmc == "-" else int(fmc, 0),
        )
        assert documented == MINIMUM_TCB[product]


def test_a_configuration_raises_the_minimum_tcb_and_never_lowers_it() -> None:
    least = MINIMUM_TCB[Product.GENOA]
    lower = TcbParts(Product.GENOA, 0, 0, 0, 0)
    assert raised_minimum_tcb({Product.GENOA: lower}) == dict(MINIMUM_TCB)
    higher = TcbParts(Product.GENOA, 3, 0, least.snp + 2, 0)
    raised = raised_minimum_tcb({Product.GENOA: higher})
    assert raised[Product.GENOA] == TcbParts(
        Product.GENOA, 3, least.tee, least.snp + 2, least.microcode
    )
    assert raised[Product.MILAN] == MINIMUM_TCB[Product.MILAN]
    with pytest.raises(UsageError):
        raised_minimum_tcb({Product.MILAN: lower})
    with pytest.raises(UsageError):
        AttestationPolicy(min_tcb={Product.MILAN: lower})


def test_a_policy_without_a_minimum_for_the_product_refuses_it(
    platform: VirtualSnp, release: Release
) -> None:
    """The minimum TCB check is never skipped: a product the policy names no minimum for is
    refused (here a Milan platform under a policy with a Genoa minimum only)."""
    genoa_only = {Product.GENOA: MINIMUM_TCB[Product.GENOA]}
    report = appraise(
        _bundle(platform, release, RD), RD, _policy(platform, release, min_tcb=genoa_only)
    )
    assert [c.id for c in report.failures] == ["policy.min-tcb"]
    assert "no minimum TCB for Milan" in report.failures[0].reason


def test_a_resumed_system_replaces_a_saved_platform_below_the_minimum(tmp_path: Path) -> None:
    """State saved before the minimum rose would be refused by every device: `privproc up`
    makes a new platform at the minimum (client.json names its root at each start)."""
    from privproc.system import virtual_platform

    said: list[str] = []
    old = VirtualSnp.generate(Product.MILAN, bootloader=10, snp=23, microcode=213)
    old.save(tmp_path / "platform")
    new = virtual_platform(tmp_path / "platform", True, said.append)
    assert new.tcb == MINIMUM_TCB[Product.MILAN]
    assert new.chain_pem() != old.chain_pem()
    assert VirtualSnp.load(tmp_path / "platform").chain_pem() == new.chain_pem()
    assert len(said) == 1
    assert "below the minimum" in said[0]
    # A saved platform at the minimum is kept as it is.
    assert virtual_platform(tmp_path / "platform", True, said.append).chain_pem() == new.chain_pem()
    assert len(said) == 1
