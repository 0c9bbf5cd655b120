"""AMD SEV-SNP: real reports and certificates from go-sev-guest, trustee and virtee/sev verify
(or fail) as EXPECTED.json says; every single-byte change to a report or certificate fails the
right check; the report layout round-trips for versions 2 to 6; a locally made root verifies
through the same code only when trusted explicitly; hypothesis fuzzes the parsers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.attest.amd import (
    OID_BL_SPL,
    OID_HWID,
    OID_PRODUCT_NAME,
    OID_SNP_SPL,
    OID_STRUCT_VERSION,
    OID_TEE_SPL,
    OID_UCODE_SPL,
    AmdCertificate,
    CertificateError,
    CertificateVerificationError,
    TrustAnchors,
    TrustedChain,
    VekExtensions,
    load_certificate,
    load_certificates,
    split_chain,
    verify_report_signature,
)
from privproc.attest.snp import (
    REPORT_SIZE,
    SIGNED_SIZE,
    AttestationReport,
    Cpuid,
    FirmwareVersion,
    GuestPolicy,
    PlatformInfo,
    Product,
    ReportError,
    SignerInfo,
    SigningKey,
    TcbParts,
    product_from_cpuid,
)
from privproc.attest.verify import (
    Check,
    Status,
    VerificationReport,
    clear_caches,
    verify_snp_evidence,
)
from privproc.errors import (
    PrivprocError,
    TrailingDataError,
    TruncatedError,
    UnsupportedError,
    UsageError,
)

pytestmark = [
    pytest.mark.filterwarnings("error::DeprecationWarning"),
    pytest.mark.filterwarnings("error::cryptography.utils.CryptographyDeprecationWarning"),
]

SEV = Path(__file__).parent / "vectors" / "sev"
EXPECTED: dict[str, Any] = json.loads((SEV / "EXPECTED.json").read_text())
ROOTS = Path(__file__).parent.parent / "src" / "privproc" / "attest" / "roots"
NOW = datetime(2025, 6, 1, tzinfo=UTC)  # inside every vector's validity (the VLEK: 2024-12-10 on)


def _file(name: str) -> bytes:
    return (SEV / name.split(" ", 1)[0]).read_bytes()


def _failed(result: VerificationReport) -> set[str]:
    return {c.id for c in result.failures}


GO = (
    _file("go-sev-guest/attestation.bin"),
    _file("go-sev-guest/vcek.testcer"),
    _file("go-sev-guest/ask_ark_milan.pem"),
)
VLEK = (
    _file("trustee/test-vlek-report.bin"),
    _file("trustee/test-vlek.der"),
    _file("go-sev-guest/ask_ark_milan_vlek.pem"),
)
ALL_CHECKS = [
    "report.parse",
    "vcek.parse",
    "report.signing-key",
    "vcek.product",
    "chain.parse",
    "chain.ark-pinned",
    "chain.ark-signature",
    "chain.ask-signature",
    "chain.vcek-signature",
    "chain.names",
    "chain.ca-constraints",
    "chain.validity",
    "report.signature",
    "vcek.tcb-matches-reported",
    "report.tcb-consistent",
    "vcek.hwid-matches-chip-id",
]


# --- The vectors -------------------------------------------------------------------------------


def test_vector_files_are_what_the_sources_say() -> None:
    hex_text = (SEV / "virtee-sev/report_milan.hex").read_text()
    assert bytes.fromhex("".join(hex_text.split())) == _file("virtee-sev/report_milan.bin")
    assert _file("virtee-sev/cert_chain_milan") == _file("go-sev-guest/ask_ark_milan.pem")
    assert _file("virtee-sev/cert_chain_turin") == _file("go-sev-guest/ask_ark_turin_vcek.pem")
    readme = (ROOTS / "README.md").read_text()
    for root in sorted(ROOTS.glob("*.pem")):
        # The pinned roots are byte-identical to the go-sev-guest files, and documented.
        assert root.read_bytes() == _file(f"go-sev-guest/{root.name}")
        assert hashlib.sha256(root.read_bytes()).hexdigest() in readme
        for cert in load_certificates(root.read_bytes()):
            assert cert.fingerprint in readme
            assert cert.spki_fingerprint in readme


@pytest.mark.parametrize("case", EXPECTED["reports"], ids=lambda c: c["report"].split()[0])
def test_expected_reports_verify(case: dict[str, Any]) -> None:
    report_bytes, signer, chain = _file(case["report"]), _file(case["signer"]), _file(case["chain"])
    result = verify_snp_evidence(report_bytes, signer, chain, now=NOW)
    assert result.ok, result.to_text()
    assert [c.id for c in result.checks] == ALL_CHECKS
    assert result.product is Product.parse(case["product"])
    assert result.report is not None
    assert result.report.version == case["version"]
    vlek = "VLEK" in case["expect"]
    assert result.report.signing_key is (SigningKey.VLEK if vlek else SigningKey.VCEK)
    hwid = result.check("vcek.hwid-matches-chip-id")
    assert hwid is not None
    assert hwid.status is (Status.SKIP if vlek else Status.PASS)
    if "report_data_prefix" in case:
        assert result.report.report_data == bytes.fromhex("0102030405") + bytes(59)
    # The same evidence without a chain verifies with the pinned ASK/ASVK and ARK.
    assert verify_snp_evidence(report_bytes, signer, None, now=NOW).ok


def test_wrong_product_chain_fails_at_the_pinned_ark() -> None:
    case = next(c for c in EXPECTED["negative_or_parsing"] if "wrong-product" in c["what"])
    report_name, chain_name = case["file"].split(" with ")
    result = verify_snp_evidence(_file(report_name), VLEK[1], _file(chain_name), now=NOW)
    assert not result.ok
    assert _failed(result) == {"chain.ark-pinned", "chain.vcek-signature", "chain.names"}
    assert result.product is Product.MILAN
    text = result.to_text()
    assert "[fail] chain.ark-pinned" in text
    assert "ARK-Genoa is not the trusted Milan root" in text
    # Asking for Genoa explicitly does not help: the report's CPUID and the VLEK say Milan.
    forced = verify_snp_evidence(VLEK[0], VLEK[1], _file(chain_name), product="Genoa", now=NOW)
    assert "vcek.product" in _failed(forced)


def test_extra_certificates_chain_to_their_roots() -> None:
    anchors = TrustAnchors.amd()
    for name, product, chain in (
        ("trustee/az-vcek-genoa.pem", Product.GENOA, "go-sev-guest/ask_ark_genoa.pem"),
        ("virtee-sev/vcek_turin.der", Product.TURIN, "virtee-sev/cert_chain_turin"),
    ):
        vcek = load_certificate(_file(name))
        ask, ark = split_chain(load_certificates(_file(chain)))
        anchor = anchors.get(product, SigningKey.VCEK)
        assert anchor is not None
        assert anchor.pins(ark)
        ark.verify_signed_by(ark)
        ask.verify_signed_by(ark)
        vcek.verify_signed_by(ask)
        assert vcek.issuer.der == ask.subject.der
        ext = VekExtensions.from_certificate(vcek)
        assert ext.product is product
        assert ext.kind is SigningKey.VCEK
        assert vcek.serial_number == 0  # the KDS quirk
        with pytest.raises(CertificateVerificationError):
            vcek.verify_signed_by(anchors.get(Product.MILAN, SigningKey.VCEK).intermediate)  # type: ignore[union-attr]
    turin = VekExtensions.from_certificate(load_certificate(_file("virtee-sev/vcek_turin.der")))
    assert turin.hwid == bytes.fromhex("1e550a8ee5cf9f4d")  # Turin: 8 bytes
    assert turin.fmc_spl == 0
    assert turin.spl4 is None
    assert turin.tcb().raw == 0x0900000000000000
    genoa = VekExtensions.from_certificate(load_certificate(_file("trustee/az-vcek-genoa.pem")))
    assert genoa.tcb() == TcbParts(Product.GENOA, bootloader=10, tee=0, snp=23, microcode=84)
    assert genoa.hwid is not None
    assert len(genoa.hwid) == 64


def test_modified_vceks_parse_their_hwid_in_both_encodings() -> None:
    legacy = load_certificate(_file("trustee/test-vcek-invalid-legacy.der"))
    new = load_certificate(_file("trustee/test-vcek-invalid-new.der"))
    raw_ext = legacy.extension(OID_HWID)
    wrapped_ext = new.extension(OID_HWID)
    assert raw_ext is not None
    assert wrapped_ext is not None
    assert len(raw_ext.value) == 64
    assert wrapped_ext.value[:2] == b"\x04\x40"
    legacy_ext, new_ext = (
        VekExtensions.from_certificate(legacy),
        VekExtensions.from_certificate(new),
    )
    assert legacy_ext.hwid_encoding == "raw"
    assert new_ext.hwid_encoding == "octet-string"
    assert legacy_ext.hwid == new_ext.hwid == bytes(range(64))
    assert legacy_ext.ucode_spl == 0xA9  # an INTEGER needing a leading zero byte
    # Both were modified after signing: their signatures must not verify.
    milan = TrustAnchors.amd().get(Product.MILAN, SigningKey.VCEK)
    assert milan is not None
    for cert in (legacy, new):
        with pytest.raises(CertificateVerificationError):
            cert.verify_signed_by(milan.intermediate)


def test_cryptography_itself_warns_about_the_kds_serial_numbers() -> None:
    """Why the certificates are read by our own DER reader: the library warns today and has
    announced it will refuse. Our path raises no warning (this module runs with -W error)."""
    vcek = GO[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(ValueError):
            x509.load_der_x509_certificate(vcek)
    refused_or_warned = not caught or any(
        issubclass(w.category, CryptographyDeprecationWarning) for w in caught
    )
    assert refused_or_warned
    assert AmdCertificate.parse(vcek).serial_number == 0


def test_reports_decode_field_by_field() -> None:
    go = AttestationReport.parse(GO[0])
    assert go.version == 2
    assert go.cpuid is None
    assert go.product is None
    assert go.policy.raw == 0xB0000
    assert (go.policy.smt, go.policy.debug, go.policy.migrate_ma) == (True, True, False)
    assert go.policy.abi_major == go.policy.abi_minor == 0
    assert go.platform_info.smt_enabled
    assert not go.platform_info.tsme_enabled
    assert go.signer_info == SignerInfo.build(SigningKey.VCEK)
    assert go.current_version == FirmwareVersion(1, 49, 3)
    assert go.tcb("reported", Product.MILAN) == TcbParts(Product.MILAN, 2, 0, 5, 0x44)
    assert go.launch_mit_vector is None
    with pytest.raises(UsageError):
        go.tcb("current")  # a version 2 report does not name its product
    vlek = AttestationReport.parse(VLEK[0])
    assert vlek.version == 3
    assert vlek.cpuid == Cpuid(0x19, 0x01, 0x01)
    assert (vlek.cpuid_fam_id, vlek.cpuid_mod_id, vlek.cpuid_step) == (0x19, 0x01, 0x01)
    assert vlek.product is Product.MILAN
    assert vlek.vmpl == 1
    assert vlek.signing_key is SigningKey.VLEK
    assert vlek.chip_id_masked
    info = vlek.platform_info
    assert (info.smt_enabled, info.tsme_enabled, info.ecc_enabled) == (True, True, True)
    assert info.alias_check_complete
    assert not info.rapl_disabled
    assert info.unknown_bits == 0
    assert vlek.tcb("current").snp == 0x18
    assert vlek.tcb("committed").microcode == 0xDB
    assert json.dumps(vlek.to_dict())


@pytest.mark.parametrize(
    "name",
    [
        "go-sev-guest/attestation.bin",
        "virtee-sev/report_milan.bin",
        "trustee/test-report.bin",
        "trustee/test-vlek-report.bin",
    ],
)
def test_real_reports_encode_back_byte_for_byte(name: str) -> None:
    data = _file(name)
    report = AttestationReport.parse(data)
    assert report.encode() == data
    assert report.signed_bytes == data[:SIGNED_SIZE]
    assert report.unsigned().with_signature(report.signature_r, report.signature_s) == report
    assert report.with_der_signature(report.der_signature()) == report


# --- Building reports --------------------------------------------------------------------------


def _v5(**changes: Any) -> AttestationReport:
    fields: dict[str, Any] = {
        "version": 5,
        "guest_svn": 7,
        "policy": GuestPolicy.build(abi_major=1, abi_minor=55, smt=True, page_swap_disable=True),
        "family_id": bytes(range(16)),
        "image_id": bytes(range(16, 32)),
        "vmpl": 0,
        "current_tcb": TcbParts(Product.TURIN, 1, 2, 3, 4, fmc=5).raw,
        "platform_info": PlatformInfo.build(smt_enabled=True, alias_check_complete=True),
        "signer_info": SignerInfo.build(SigningKey.VCEK, author_key_en=True),
        "report_data": b"\x11" * 64,
        "measurement": b"\x22" * 48,
        "host_data": b"\x33" * 32,
        "id_key_digest": b"\x44" * 48,
        "author_key_digest": b"\x55" * 48,
        "report_id": b"\x66" * 32,
        "report_id_ma": b"\xff" * 32,
        "reported_tcb": TcbParts(Product.TURIN, 1, 2, 3, 4, fmc=5).raw,
        "cpuid": Cpuid.of(Product.TURIN, stepping=1),
        "chip_id": bytes.fromhex("0102030405060708") + bytes(56),
        "committed_tcb": TcbParts(Product.TURIN, 1, 2, 3, 4, fmc=5).raw,
        "current_version": FirmwareVersion(1, 57, 9),
        "committed_version": FirmwareVersion(1, 57, 8),
        "launch_tcb": TcbParts(Product.TURIN, 1, 1, 1, 1, fmc=1).raw,
        "launch_mit_vector": 0x3,
        "current_mit_vector": 0x7,
    }
    fields.update(changes)
    return AttestationReport(**fields)


def test_v5_report_built_from_fields_round_trips() -> None:
    report = _v5()
    data = report.encode()
    assert len(data) == REPORT_SIZE
    assert AttestationReport.parse(data) == report
    # Spot checks of the layout, straight from the specification's offsets.
    assert data[0:4] == (5).to_bytes(4, "little")
    assert data[0x34:0x38] == (1).to_bytes(4, "little")
    assert data[0x48:0x4C] == (0b00001).to_bytes(4, "little")
    assert data[0x50:0x90] == b"\x11" * 64
    assert data[0x188:0x18B] == bytes((0x1A, 0x02, 0x01))
    assert data[0x1A0:0x1A8] == bytes.fromhex("0102030405060708")
    assert data[0x1E8:0x1EF] == bytes((9, 57, 1, 0, 8, 57, 1))
    assert data[0x1F8:0x208] == (3).to_bytes(8, "little") + (7).to_bytes(8, "little")
    assert data[0x38:0x40] == bytes((5, 1, 2, 3, 0, 0, 0, 4))  # Turin: fmc bl tee snp .. ucode
    assert not any(data[0x208:])  # unsigned: zeros from the reserved area to the end
    parsed = AttestationReport.parse(data)
    assert parsed.product is Product.TURIN
    assert parsed.tcb("current") == TcbParts(Product.TURIN, 1, 2, 3, 4, fmc=5)
    assert parsed.policy.page_swap_disable
    assert parsed.policy.abi_major == 1
    assert parsed.policy.abi_minor == 55
    assert parsed.signer_info.author_key_en


def test_later_versions_keep_their_tail_and_earlier_ones_refuse_it() -> None:
    tail = bytes(range(152))
    v6 = _v5(version=6, tail=tail)
    data = v6.encode()
    assert data[0x208:0x2A0] == tail
    assert AttestationReport.parse(data) == v6
    v5 = bytearray(_v5().encode())
    v5[0x220] = 1
    with pytest.raises(ReportError):
        AttestationReport.parse(bytes(v5))
    with pytest.raises(UsageError):
        _v5(tail=tail)
    v4 = _v5(version=4, launch_mit_vector=None, current_mit_vector=None)
    assert AttestationReport.parse(v4.encode()) == v4


def test_signed_with_produces_a_report_that_verifies_under_its_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    signed = _v5().signed_with(key)
    data = signed.encode()
    der = AttestationReport.parse(data).der_signature()
    key.public_key().verify(der, data[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
    assert not any(data[0x330:])
    with pytest.raises(UsageError):
        _v5().signed_with(ec.generate_private_key(ec.SECP256R1()))


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (GO[0][:-1], TruncatedError),
        (b"", TruncatedError),
        (GO[0] + b"\x00", TrailingDataError),
        (_patched(GO[0], 0, (1).to_bytes(4, "little")), UnsupportedError),
        (_patched(GO[0], 0, (0).to_bytes(4, "little")), UnsupportedError),
        (_patched(GO[0], 0x34, (2).to_bytes(4, "little")), UnsupportedError),
        (_patched(GO[0], 0x34, (0).to_bytes(4, "little")), UnsupportedError),
        (_patched(GO[0], 0x0A, b"\x01"), ReportError),  # policy bit 17 cleared (0x0B -> 0x01)
        (_patched(GO[0], 0x48, (1 << 5).to_bytes(4, "little")), ReportError),
        (_patched(GO[0], 0x48, (3 << 2).to_bytes(4, "little")), ReportError),  # SIGNING_KEY 3
        (_patched(GO[0], 0x4C, b"\x01"), ReportError),
        (_patched(GO[0], 0x188, b"\x19"), ReportError),  # CPUID bytes in a version 2 report
        (_patched(GO[0], 0x19F, b"\x01"), ReportError),
        (_patched(GO[0], 0x1EB, b"\x01"), ReportError),
        (_patched(GO[0], 0x1EF, b"\x01"), ReportError),
        (_patched(VLEK[0], 0x1F8, b"\x01"), ReportError),  # a mitigation vector in version 3
        (_patched(GO[0], 0x29F, b"\x01"), ReportError),
        (_patched(GO[0], 0x330, b"\x01"), ReportError),  # reserved part of the signature
        (_patched(GO[0], 0x49F, b"\x01"), ReportError),
    ],
)
def test_parse_refuses_with_typed_errors(data: bytes, error: type[PrivprocError]) -> None:
    with pytest.raises(error):
        AttestationReport.parse(data)


def test_unsigned_reports_parse_but_never_verify() -> None:
    unsigned = _v5(signer_info=SignerInfo.build(SigningKey.NONE), signature_algo=0)
    assert AttestationReport.parse(unsigned.encode()) == unsigned
    result = verify_snp_evidence(unsigned.encode(), GO[1], GO[2], now=NOW)
    assert {"report.signing-key", "report.signature"} <= _failed(result)


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 1},
        {"version": 3},  # needs cpuid
        {"cpuid": None},
        {"launch_mit_vector": None},
        {"version": 3, "launch_mit_vector": None, "current_mit_vector": None, "cpuid": None},
        {"version": 2, "cpuid": None},  # mitigation vectors before version 5
        {"measurement": bytes(47)},
        {"report_data": "x" * 64},
        {"guest_svn": 1 << 32},
        {"reported_tcb": -1},
        {"signature": bytes(511)},
        {"signature": bytes(511) + b"\x01"},
        {"signature_algo": 2},
        {"policy": GuestPolicy(0)},  # bit 17 clear: refused by encode()
    ],
)
def test_building_refuses_inconsistent_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        _v5(**changes).encode()


def test_tcb_layouts_per_product() -> None:
    raw = 0x0807060504030201
    milan = TcbParts.decode(raw, Product.MILAN)
    assert (milan.bootloader, milan.tee, milan.snp, milan.microcode) == (1, 2, 7, 8)
    assert milan.reserved == (3, 4, 5, 6)
    assert milan.fmc is None
    assert milan.raw == raw
    assert TcbParts.decode(raw, "Genoa").components() == milan.components()
    turin = TcbParts.decode(raw, Product.TURIN)
    assert (turin.fmc, turin.bootloader, turin.tee, turin.snp, turin.microcode) == (1, 2, 3, 4, 8)
    assert turin.reserved == (5, 6, 7)
    assert turin.raw == raw
    floor = TcbParts(Product.MILAN, 1, 2, 7, 8)
    assert milan.meets(floor)
    assert not TcbParts(Product.MILAN, 1, 2, 6, 9).meets(floor)
    with pytest.raises(UsageError):
        milan.meets(turin)
    with pytest.raises(UsageError):
        TcbParts(Product.TURIN, 1, 2, 3, 4)  # Turin has an FMC SPL
    with pytest.raises(UsageError):
        TcbParts(Product.MILAN, 1, 2, 3, 4, fmc=0)
    with pytest.raises(UsageError):
        TcbParts(Product.MILAN, 256, 2, 3, 4)


def test_products_from_names_and_cpuid() -> None:
    assert Product.parse("Milan-B0") is Product.MILAN
    assert Product.parse("Genoa") is Product.GENOA
    assert Product.parse("Turin-B1") is Product.TURIN
    for bad in ("milan", "Venice", "Milan-", "Milan-b0", ""):
        with pytest.raises(UnsupportedError):
            Product.parse(bad)
    assert product_from_cpuid(0x19, 0x01) is Product.MILAN
    assert product_from_cpuid(0x19, 0x11) is Product.GENOA
    assert product_from_cpuid(0x19, 0xA0) is Product.GENOA
    assert product_from_cpuid(0x1A, 0x02) is Product.TURIN
    assert product_from_cpuid(0x1A, 0x50) is None
    assert product_from_cpuid(0x17, 0x31) is None
    for product in Product:
        assert Cpuid.of(product).product is product


def test_policy_and_platform_bits() -> None:
    policy = GuestPolicy.build(
        abi_major=1,
        abi_minor=51,
        smt=True,
        migrate_ma=True,
        debug=True,
        single_socket=True,
        cxl_allowed=True,
        mem_aes_256_xts=True,
        rapl_disable=True,
        ciphertext_hiding=True,
        page_swap_disable=True,
    )
    assert policy.raw == 0x3FF0133
    assert policy.unknown_bits == 0
    assert GuestPolicy(policy.raw | 1 << 40).unknown_bits == 1 << 40
    assert GuestPolicy().raw == 1 << 17
    info = PlatformInfo(0xFF)
    assert info.tio_enabled
    assert info.unknown_bits == 1 << 6
    with pytest.raises(UsageError):
        PlatformInfo.build(warp_drive=True)
    with pytest.raises(UsageError):
        SignerInfo(2 << 2)


# --- Every byte matters ------------------------------------------------------------------------


def _expect_failure_for_report(data: bytes, base: tuple[bytes, bytes, bytes]) -> None:
    result = verify_snp_evidence(data, base[1], base[2], now=NOW)
    assert not result.ok
    try:
        AttestationReport.parse(data)
    except PrivprocError:
        assert "report.parse" in _failed(result)
        return
    assert "report.signature" in _failed(result), result.to_text()


@pytest.mark.parametrize("base", [GO, VLEK], ids=["vcek-v2", "vlek-v3"])
def test_every_byte_of_the_signed_area_is_covered(base: tuple[bytes, bytes, bytes]) -> None:
    for offset in range(SIGNED_SIZE):
        _expect_failure_for_report(
            _patched(base[0], offset, bytes((base[0][offset] ^ 0x01,))), base
        )
    # A full-byte change too, on a stride (it reaches other bit patterns of the same fields).
    for offset in range(0, SIGNED_SIZE, 7):
        _expect_failure_for_report(
            _patched(base[0], offset, bytes((base[0][offset] ^ 0xFF,))), base
        )


def test_every_byte_of_the_signature_is_covered() -> None:
    for offset in range(SIGNED_SIZE, REPORT_SIZE):
        data = _patched(GO[0], offset, bytes((GO[0][offset] ^ 0x80,)))
        result = verify_snp_evidence(data, GO[1], GO[2], now=NOW)
        expected = "report.signature" if offset < 0x330 else "report.parse"
        assert _failed(result) == {expected}, (hex(offset), result.to_text())


def _flip_results(der: bytes, verify: Any) -> list[tuple[int, set[str]]]:
    out = []
    for offset in range(len(der)):
        changed = _patched(der, offset, bytes((der[offset] ^ 0x01,)))
        out.append((offset, _failed(verify(changed))))
    return out


def _pem(certs: list[bytes]) -> bytes:
    """A chain as PEM, in the order given (AMD serves ASK first, then ARK)."""
    return b"".join(x509_pem(der) for der in certs)


def x509_pem(der: bytes) -> bytes:
    body = base64.b64encode(der)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def test_every_byte_of_every_certificate_is_covered() -> None:
    report, vcek, chain = GO
    ask, ark = split_chain(load_certificates(chain))
    for offset, failed in _flip_results(
        vcek, lambda v: verify_snp_evidence(report, v, chain, now=NOW)
    ):
        assert failed & {"vcek.parse", "chain.vcek-signature"}, hex(offset)
    for offset, failed in _flip_results(
        ask.der,
        lambda a: verify_snp_evidence(report, vcek, _pem([a, ark.der]), now=NOW),
    ):
        assert failed & {"chain.parse", "chain.ask-signature"}, hex(offset)
    for offset, failed in _flip_results(
        ark.der,
        lambda a: verify_snp_evidence(report, vcek, _pem([ask.der, a]), now=NOW),
    ):
        assert failed & {"chain.parse", "chain.ark-signature"}, hex(offset)
        if "chain.parse" not in failed:
            assert failed & {"chain.ark-signature", "chain.ark-pinned"}


# --- Other failures and the report object ------------------------------------------------------


def test_mismatched_evidence_fails_the_right_checks() -> None:
    # A VLEK report with a VCEK: the kinds disagree and the signature fails.
    result = verify_snp_evidence(VLEK[0], GO[1], GO[2], now=NOW)
    assert {"report.signing-key", "report.signature"} <= _failed(result)
    # Another chip's VCEK for a report: signature, TCB and hwID all differ.
    other = verify_snp_evidence(GO[0], _file("trustee/test-vcek.der"), GO[2], now=NOW)
    assert _failed(other) == {
        "report.signature",
        "vcek.tcb-matches-reported",
        "vcek.hwid-matches-chip-id",
    }
    # The wrong product forced by the caller for a version 2 report.
    forced = verify_snp_evidence(GO[0], GO[1], GO[2], product=Product.GENOA, now=NOW)
    assert "vcek.product" in _failed(forced)
    # Garbage certificates.
    junk = verify_snp_evidence(GO[0], b"not a certificate", b"nor a chain", now=NOW)
    assert {"vcek.parse", "chain.parse"} <= _failed(junk)
    assert junk.check("report.signature") == Check.skipped(
        "report.signature", "not run: vcek.parse did not pass"
    )
    # One certificate where a chain of two is needed.
    single = verify_snp_evidence(
        GO[0], GO[1], x509_pem(split_chain(load_certificates(GO[2]))[1].der)
    )
    assert "chain.parse" in _failed(single)


def test_validity_is_checked_at_the_given_time() -> None:
    later = verify_snp_evidence(*GO, now=datetime(2029, 9, 25, tzinfo=UTC))
    assert _failed(later) == {"chain.validity"}
    earlier = verify_snp_evidence(*GO, now=datetime(2022, 9, 23, tzinfo=UTC))
    assert _failed(earlier) == {"chain.validity"}
    expired_vlek = verify_snp_evidence(*VLEK, now=datetime(2025, 12, 11, tzinfo=UTC))
    assert _failed(expired_vlek) == {"chain.validity"}
    assert verify_snp_evidence(*GO, now=datetime(2029, 9, 24, tzinfo=UTC)).ok
    with pytest.raises(UsageError):
        verify_snp_evidence(*GO, now=datetime(2025, 1, 1))  # naive
    with pytest.raises(UsageError):
        verify_snp_evidence(*GO, product="Venice")
    with pytest.raises(UsageError):
        verify_snp_evidence("text", GO[1], GO[2])  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        verify_snp_evidence(GO[0], 42, GO[2])  # type: ignore[arg-type]
    assert verify_snp_evidence(bytearray(GO[0]), bytearray(GO[1]), memoryview(GO[2]), now=NOW).ok


def test_the_report_explains_itself_and_can_be_extended() -> None:
    result = verify_snp_evidence(*GO, now=NOW)
    as_json = json.loads(result.to_json())
    assert as_json["ok"] is True
    assert [c["id"] for c in as_json["checks"]] == ALL_CHECKS
    assert as_json["product"] == "Milan"
    assert as_json["signer"]["serial_number"] == 0
    assert as_json["signer"]["tcb"] == "4405000000000002"
    assert as_json["report"]["reported_tcb"]["raw"] == "4405000000000002"
    assert "ask_ark_milan.pem" in as_json["anchor"]["source"]
    assert result.to_text().startswith("SEV-SNP evidence: OK (Milan, VCEK)")
    # A policy layer appends its own checks.
    report = result.report
    assert report is not None
    debug = (
        Check.failing("policy.debug", "the guest policy allows debugging")
        if report.policy.debug
        else Check.passing("policy.debug", "debugging is not allowed")
    )
    extended = result.with_checks(debug)
    assert not extended.ok
    assert [c.id for c in extended.failures] == ["policy.debug"]
    assert result.ok  # the original is unchanged
    with pytest.raises(UsageError):
        extended.with_checks(Check.passing("policy.debug", "again"))
    assert not VerificationReport(checks=()).ok


def test_cached_verification_rate() -> None:
    """With the chain cached, one verification is dominated by one ECDSA P-384 verify."""
    clear_caches()
    assert verify_snp_evidence(*GO, now=NOW).ok
    count = 300
    start = time.perf_counter()
    for _ in range(count):
        verify_snp_evidence(*GO, now=NOW)
    rate = count / (time.perf_counter() - start)
    assert rate > 250, f"{rate:.0f} verifications per second"


# --- A root of our own, trusted explicitly -----------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _der_len(len(content)) + content


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ext(oid: str, value: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)


class LocalRoot:
    """A Genoa-shaped ARK -> ASK -> VCEK made here, the way a virtual SNP would make one."""

    def __init__(self) -> None:
        self.ark_key = rsa.generate_private_key(65537, 2048)
        self.ask_key = rsa.generate_private_key(65537, 2048)
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())
        self.hwid = bytes(range(100, 164))
        start = datetime(2025, 1, 1, tzinfo=UTC)
        ca = x509.BasicConstraints(ca=True, path_length=None)
        usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )

        def builder(subject: str, issuer: str, key: Any, serial: int) -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(_name(subject))
                .issuer_name(_name(issuer))
                .public_key(key)
                .serial_number(serial)
                .not_valid_before(start)
                .not_valid_after(start + timedelta(days=3650))
            )

        def sign(b: x509.CertificateBuilder, key: rsa.RSAPrivateKey) -> bytes:
            cert = b.sign(key, hashes.SHA384(), rsa_padding=_PSS)
            return cert.public_bytes(serialization.Encoding.DER)

        self.ark = sign(
            builder("ARK-Genoa", "ARK-Genoa", self.ark_key.public_key(), 1)
            .add_extension(ca, critical=True)
            .add_extension(usage, critical=True),
            self.ark_key,
        )
        self.ask = sign(
            builder("SEV-Genoa", "ARK-Genoa", self.ask_key.public_key(), 2)
            .add_extension(ca, critical=True)
            .add_extension(usage, critical=True),
            self.ark_key,
        )
        vcek = builder("SEV-VCEK", "SEV-Genoa", self.vcek_key.public_key(), 3)
        for oid, value in (
            (OID_STRUCT_VERSION, b"\x02\x01\x01"),
            (OID_PRODUCT_NAME, b"\x16\x08Genoa-B1"),
            (OID_BL_SPL, b"\x02\x01\x09"),
            (OID_TEE_SPL, b"\x02\x01\x00"),
            (OID_SNP_SPL, b"\x02\x01\x17"),
            ("1.3.6.1.4.1.3704.1.3.4", b"\x02\x01\x00"),
            ("1.3.6.1.4.1.3704.1.3.5", b"\x02\x01\x00"),
            ("1.3.6.1.4.1.3704.1.3.6", b"\x02\x01\x00"),
            ("1.3.6.1.4.1.3704.1.3.7", b"\x02\x01\x00"),
            (OID_UCODE_SPL, b"\x02\x02\x00\xd4"),
            (OID_HWID, self.hwid),
        ):
            vcek = vcek.add_extension(_ext(oid, value), critical=False)
        self.vcek = sign(vcek, self.ask_key)
        self.tcb = TcbParts(Product.GENOA, bootloader=9, tee=0, snp=0x17, microcode=0xD4)
        self.anchors = TrustAnchors.of(
            [
                TrustedChain.from_pem(
                    self.chain_pem(), Product.GENOA, SigningKey.VCEK, "a local test root"
                )
            ]
        )

    def chain_pem(self) -> bytes:
        return x509_pem(self.ask) + x509_pem(self.ark)

    def report(self, **changes: Any) -> bytes:
        fields: dict[str, Any] = {
            "cpuid": Cpuid.of(Product.GENOA, 1),
            "current_tcb": self.tcb.raw,
            "reported_tcb": self.tcb.raw,
            "committed_tcb": self.tcb.raw,
            "launch_tcb": self.tcb.raw,
            "chip_id": self.hwid,
            "current_version": FirmwareVersion(1, 55, 22),
            "committed_version": FirmwareVersion(1, 55, 22),
        }
        fields.update(changes)
        return _v5(**fields).signed_with(self.vcek_key).encode()

    def resigned_vcek_with_serial(self, serial: bytes) -> bytes:
        """The VCEK with its serial INTEGER content replaced (same length), signed again."""
        cert = AmdCertificate.parse(self.vcek)
        tbs = cert.tbs
        at = tbs.index(b"\x02\x01\x03")  # serial 3 after the version [0] box
        tbs = tbs[:at] + b"\x02\x01" + serial + tbs[at + 3 :]
        signature = self.ask_key.sign(tbs, _PSS, hashes.SHA384())
        body = tbs + cert.signature_algorithm + _tlv(0x03, b"\x00" + signature)
        return _tlv(0x30, body)


@pytest.fixture(scope="module")
def local_root() -> LocalRoot:
    return LocalRoot()


def test_a_local_root_verifies_only_when_trusted(local_root: LocalRoot) -> None:
    report = local_root.report()
    trusted = verify_snp_evidence(
        report, local_root.vcek, local_root.chain_pem(), now=NOW, roots=local_root.anchors
    )
    assert trusted.ok, trusted.to_text()
    assert trusted.product is Product.GENOA
    # Without a chain the anchor's own ASK and ARK are used.
    assert verify_snp_evidence(report, local_root.vcek, now=NOW, roots=local_root.anchors).ok
    # AMD's roots (the default) do not know it.
    untrusted = verify_snp_evidence(report, local_root.vcek, local_root.chain_pem(), now=NOW)
    assert _failed(untrusted) == {"chain.ark-pinned"}
    # An anchor set holds one chain per product and key kind: adding a second Genoa VCEK root
    # to AMD's is refused rather than silently preferring one.
    with pytest.raises(UsageError):
        TrustAnchors.amd().merged(local_root.anchors)
    # A report signed by the local VCEK but for another TCB or chip fails those checks.
    newer = TcbParts(Product.GENOA, 9, 0, 0x18, 0xD4).raw
    other = local_root.report(reported_tcb=newer, current_tcb=newer)
    assert _failed(
        verify_snp_evidence(other, local_root.vcek, now=NOW, roots=local_root.anchors)
    ) == {"vcek.tcb-matches-reported"}
    masked = local_root.report(chip_id=bytes(64))
    result = verify_snp_evidence(masked, local_root.vcek, now=NOW, roots=local_root.anchors)
    assert result.ok
    hwid = result.check("vcek.hwid-matches-chip-id")
    assert hwid is not None
    assert hwid.status is Status.SKIP
    # The AMD roots still verify AMD evidence when the local one is merged for another product.
    turin_anchor = TrustedChain.from_pem(
        local_root.chain_pem(), Product.TURIN, SigningKey.VLEK, "test"
    )
    merged = TrustAnchors.of(c for c in TrustAnchors.amd().chains if c.product is not Product.TURIN)
    assert verify_snp_evidence(
        *GO, now=NOW, roots=merged.merged(TrustAnchors.of([turin_anchor]))
    ).ok


@pytest.mark.parametrize("serial", [b"\xff", b"\x80", b"\x00"], ids=["-1", "-128", "0"])
def test_non_positive_serials_are_read_without_warnings(
    local_root: LocalRoot, serial: bytes
) -> None:
    vcek = local_root.resigned_vcek_with_serial(serial)
    cert = AmdCertificate.parse(vcek)
    assert cert.serial_number == int.from_bytes(serial, "big", signed=True)
    result = verify_snp_evidence(local_root.report(), vcek, now=NOW, roots=local_root.anchors)
    assert result.ok, result.to_text()


def test_pss_parameters_are_checked(local_root: LocalRoot) -> None:
    weak_salt = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=32)
    cert = x509.load_der_x509_certificate(local_root.ask)
    rebuilt = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(local_root.ask_key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(local_root.ark_key, hashes.SHA384(), rsa_padding=weak_salt)
        .public_bytes(serialization.Encoding.DER)
    )
    ark = AmdCertificate.parse(local_root.ark)
    with pytest.raises(CertificateVerificationError, match="salt is 32"):
        AmdCertificate.parse(rebuilt).verify_signed_by(ark)
    pkcs1 = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(local_root.ask_key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(local_root.ark_key, hashes.SHA384())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(CertificateVerificationError, match="not RSASSA-PSS"):
        AmdCertificate.parse(pkcs1).verify_signed_by(ark)
    # A VCEK key (ECDSA) cannot sign certificates here, nor an RSA key sign reports.
    vcek = AmdCertificate.parse(local_root.vcek)
    with pytest.raises(CertificateVerificationError):
        vcek.verify_signed_by(vcek)
    with pytest.raises(CertificateVerificationError):
        verify_report_signature(local_root.report(), ark)


# --- Certificate parsing edge cases ------------------------------------------------------------


def test_certificate_parsing_is_strict() -> None:
    vcek = GO[1]
    with pytest.raises(CertificateError):
        AmdCertificate.parse(vcek + b"\x00")
    with pytest.raises(CertificateError):
        AmdCertificate.parse(vcek[:-1])
    with pytest.raises(CertificateError):
        load_certificates(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CertificateError):
        load_certificates(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateError):
        load_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(CertificateError):
        load_certificate(GO[2])  # two certificates
    with pytest.raises(CertificateError):
        split_chain(load_certificates(GO[2]) * 2)
    ask, ark = split_chain(load_certificates(GO[2]))
    with pytest.raises(CertificateError):
        split_chain([ark, ark])
    assert split_chain([ark, ask]) == (ask, ark)
    # A PEM text string works as well as bytes, with text around the blocks.
    text = "AMD chain\n" + GO[2].decode() + "trailing words\n"
    assert [c.der for c in load_certificates(text)] == [ask.der, ark.der]
    assert re.fullmatch(r"[0-9a-f]{64}", ask.fingerprint)
    assert ark.is_ca() is True
    assert ark.may_sign_certificates() is True
    assert AmdCertificate.parse(vcek).is_ca() is None


# --- Fuzzing -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=REPORT_SIZE + 2))
def test_fuzz_report_parse_random(data: bytes) -> None:
    with contextlib.suppress(PrivprocError):
        AttestationReport.parse(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([GO[0], VLEK[0]]),
    st.lists(st.tuples(st.integers(0, REPORT_SIZE - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, 8),
)
def test_fuzz_report_parse_mutations(
    base: bytes, edits: list[tuple[int, int]], version: int
) -> None:
    data = bytearray(base)
    data[0:4] = version.to_bytes(4, "little")
    for offset, value in edits:
        data[offset] = value
    try:
        report = AttestationReport.parse(bytes(data))
    except PrivprocError:
        return
    assert report.encode() == bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([GO[1], VLEK[1], split_chain(load_certificates(GO[2]))[0].der]),
    st.lists(st.tuples(st.integers(0, 1400), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 1400),
)
def test_fuzz_certificate_parse(base: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        with contextlib.suppress(PrivprocError):
            cert = AmdCertificate.parse(candidate)
            with contextlib.suppress(PrivprocError):
                VekExtensions.from_certificate(cert)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=2000), st.text(max_size=300))
def test_fuzz_verify_never_raises(report: bytes, cert: bytes, chain: str) -> None:
    result = verify_snp_evidence(report, cert, "-----BEGIN CERTIFICATE-----\n" + chain, now=NOW)
    assert not result.ok
    assert result.failures
