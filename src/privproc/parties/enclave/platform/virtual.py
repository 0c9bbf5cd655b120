"""A virtual AMD SEV-SNP for machines without the hardware: a local ARK -> ASK -> VCEK chain with
AMD's algorithms and extensions, signing reports in the exact SNP format.

- ARK and ASK: RSA-4096, RSASSA-PSS with SHA-384 (MGF1-SHA-384, salt 48), basicConstraints CA and
  keyUsage keyCertSign/cRLSign, both critical, as AMD's roots carry them.
- VCEK: ECDSA P-384, signed by the ASK the same way, with the KDS extensions (structVersion,
  productName, the SPLs of its TCB, hwID = the virtual chip id: 64 bytes, 8 on Turin).
- Products: Milan, Genoa or Turin, each with its TCB_VERSION layout. Unless told otherwise a
  platform runs the product's minimum TCB (`privproc.attest.bulletins.MINIMUM_TCB`), so the
  default policy accepts it; any other TCB can be asked for, to test policies.
- Reports: version 5 with the product's CPUID, signed by the VCEK over bytes 0x000..0x29F.

Every name says `(virtual)` and the organisation is `privproc virtual SEV-SNP (not AMD)`, and
the ARK is nobody's pinned root: the verifier accepts this evidence only when the caller trusts
this ARK explicitly (`trust_anchors()`), as a client's trust anchors must name it. The state
directory holds the private keys (0600) and `ark.pem` + `ask.pem` for clients to pin.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from privproc.attest.amd import (
    OID_BL_SPL,
    OID_FMC_SPL,
    OID_HWID,
    OID_PRODUCT_NAME,
    OID_SNP_SPL,
    OID_SPL,
    OID_STRUCT_VERSION,
    OID_TEE_SPL,
    OID_UCODE_SPL,
    TrustAnchors,
    TrustedChain,
    hwid_size,
)
from privproc.attest.bulletins import MINIMUM_TCB
from privproc.attest.snp import (
    AttestationReport,
    Cpuid,
    FirmwareVersion,
    GuestPolicy,
    PlatformInfo,
    Product,
    SignerInfo,
    SigningKey,
    TcbParts,
)
from privproc.errors import UsageError
from privproc.parties.enclave.platform.hardware import HardwareEvidence
from privproc.storage import create_private_file

__all__ = ["VirtualSnp"]

ORGANISATION = "privproc virtual SEV-SNP (not AMD)"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_VALIDITY = timedelta(days=25 * 365)
_SPLS = ("bootloader", "tee", "snp", "microcode", "fmc")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
        ]
    )


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes((0x02, len(body))) + body


def _ca(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    signer: rsa.RSAPrivateKey,
    now: datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(signer, hashes.SHA384(), rsa_padding=_PSS)
    )


@dataclass(frozen=True)
class VirtualSnp:
    """A virtual platform: its chain, its VCEK key, its chip id and TCB."""

    product: Product
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey = field(repr=False)
    chip_id: bytes = field(repr=False)
    tcb: TcbParts

    @classmethod
    def generate(cls, product: Product | str = Product.MILAN, **spl: int) -> VirtualSnp:
        """A fresh virtual platform (RSA-4096 keys: a second or two) running the product's
        minimum TCB, or the SPLs given (bootloader, tee, snp, microcode; fmc on Turin)."""
        product = Product.parse(product)
        if set(spl) - set(_SPLS):
            raise UsageError(f"the SPLs are {', '.join(_SPLS)}")
        v = {**MINIMUM_TCB[product].components(), **spl}
        tcb = TcbParts(product, v["bootloader"], v["tee"], v["snp"], v["microcode"], v.get("fmc"))
        now = datetime.now(UTC)
        ark_key = rsa.generate_private_key(65537, 4096)
        ask_key = rsa.generate_private_key(65537, 4096)
        ark_name, ask_name = f"ARK-{product} (virtual)", f"SEV-{product} (virtual)"
        ark = _ca(ark_name, ark_key, ark_name, ark_key, now)
        ask = _ca(ask_name, ask_key, ark_name, ark_key, now)
        vcek_key = ec.generate_private_key(ec.SECP384R1())
        chip_id = secrets.token_bytes(hwid_size(product))
        vcek = cls._vcek(product, tcb, chip_id, vcek_key, ask_name, ask_key, now)
        return cls(product, ark, ask, vcek, vcek_key, chip_id, tcb)

    @staticmethod
    def _vcek(
        product: Product,
        tcb: TcbParts,
        chip_id: bytes,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        signer: rsa.RSAPrivateKey,
        now: datetime,
    ) -> x509.Certificate:
        # As AMD's KDS writes them: "Milan-B0", "Genoa-B0", but plain "Turin", with fmcSPL and
        # no spl4 (its reserved bytes are spl5-spl7).
        turin = product is Product.TURIN
        name = (str(product) if turin else f"{product}-B0").encode()
        spare = (5, 6, 7) if turin else (4, 5, 6, 7)
        values = {
            OID_STRUCT_VERSION: _der_integer(1),
            OID_PRODUCT_NAME: bytes((0x16, len(name))) + name,  # IA5String
            **({OID_FMC_SPL: _der_integer(tcb.fmc or 0)} if turin else {}),
            OID_BL_SPL: _der_integer(tcb.bootloader),
            OID_TEE_SPL: _der_integer(tcb.tee),
            **{OID_SPL[n]: _der_integer(v) for n, v in zip(spare, tcb.reserved, strict=True)},
            OID_SNP_SPL: _der_integer(tcb.snp),
            OID_UCODE_SPL: _der_integer(tcb.microcode),
            OID_HWID: chip_id,  # raw, as AMD's KDS writes it
        }
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("SEV-VCEK (virtual)"))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + _VALIDITY)
        )
        for oid, value in values.items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
            )
        return builder.sign(signer, hashes.SHA384(), rsa_padding=_PSS)

    # --- Persistence -----------------------------------------------------------------------

    def save(self, state_dir: Path) -> None:
        """Write the platform to `state_dir`: private VCEK key (0600), public certificates."""
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = self.vcek_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_private_file(state_dir / "vcek.key", key)
        create_private_file(state_dir / "chip_id", self.chip_id)
        for name, cert in (("ark", self.ark), ("ask", self.ask), ("vcek", self.vcek)):
            (state_dir / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (state_dir / "platform").write_text(f"{self.product} {self.tcb.raw}\n")

    @classmethod
    def load(cls, state_dir: Path) -> VirtualSnp:
        product_name, raw_tcb = (state_dir / "platform").read_text().split()
        product = Product.parse(product_name)
        key = serialization.load_pem_private_key((state_dir / "vcek.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError("the virtual VCEK key is not an EC key")
        certs = {
            name: x509.load_pem_x509_certificate((state_dir / f"{name}.pem").read_bytes())
            for name in ("ark", "ask", "vcek")
        }
        chip_id = (state_dir / "chip_id").read_bytes()
        tcb = TcbParts.decode(int(raw_tcb), product)
        return cls(product, certs["ark"], certs["ask"], certs["vcek"], key, chip_id, tcb)

    # --- What clients need -------------------------------------------------------------------

    def chain_pem(self) -> bytes:
        """The ASK then the ARK, PEM (what evidence carries next to the VCEK)."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.ask, self.ark))

    def vcek_pem(self) -> bytes:
        return self.vcek.public_bytes(serialization.Encoding.PEM)

    def vcek_der(self) -> bytes:
        return self.vcek.public_bytes(serialization.Encoding.DER)

    def chain_der(self) -> tuple[bytes, bytes]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in (self.ask, self.ark))  # type: ignore[return-value]

    def trust_anchors(self) -> TrustAnchors:
        """Anchors that trust this virtual ARK (and only it) for its product's VCEKs."""
        chain = TrustedChain.from_pem(
            self.chain_pem(), self.product, SigningKey.VCEK, "privproc virtual SEV-SNP"
        )
        return TrustAnchors.of([chain])

    # --- Reports -----------------------------------------------------------------------------

    def report(
        self,
        report_data: bytes,
        measurement: bytes,
        *,
        policy: GuestPolicy | None = None,
        vmpl: int = 0,
        host_data: bytes = bytes(32),
        tcb: TcbParts | None = None,
        cpuid: Cpuid | None = None,
    ) -> bytes:
        """A signed version 5 report, as the firmware would produce it for this guest. To test
        verifiers, `tcb` makes the platform run another TCB than its VCEK's (CURRENT_TCB and
        the others; REPORTED_TCB stays the VCEK's), and `cpuid` names another product."""
        if len(report_data) != 64 or len(measurement) != 48:
            raise UsageError("report data is 64 bytes and a measurement 48")
        raw_tcb = (tcb or self.tcb).raw
        report = AttestationReport(
            version=5,
            guest_svn=0,
            policy=policy or GuestPolicy.build(abi_major=1, abi_minor=55, smt=True),
            vmpl=vmpl,
            current_tcb=raw_tcb,
            platform_info=PlatformInfo.build(smt_enabled=True),
            signer_info=SignerInfo.build(SigningKey.VCEK),
            report_data=report_data,
            measurement=measurement,
            host_data=host_data,
            report_id=secrets.token_bytes(32),
            reported_tcb=self.tcb.raw,
            cpuid=cpuid or Cpuid.of(self.product, 1),
            chip_id=self.chip_id.ljust(64, b"\0"),  # Turin's 8 bytes, then zeros
            committed_tcb=raw_tcb,
            current_version=FirmwareVersion(1, 55, 21),
            committed_version=FirmwareVersion(1, 55, 21),
            launch_tcb=raw_tcb,
            launch_mit_vector=0,
            current_mit_vector=0,
        )
        return report.signed_with(self.vcek_key).encode()

    def evidence(self, report_data: bytes, measurement: bytes) -> HardwareEvidence:
        """What a guest would get: the report and the certificate table (VCEK, ASK, ARK)."""
        ask, ark = self.chain_der()
        certs = {"vcek": self.vcek_der(), "ask": ask, "ark": ark}
        return HardwareEvidence(self.report(report_data, measurement), certs)
