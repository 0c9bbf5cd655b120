"""AMD SEV-SNP certificates: VCEK and VLEK endorsement keys, the ASK/ASVK intermediates and the
ARK roots (AMD 57230, "VCEK Certificate and KDS Interface Specification"), pinned AMD roots,
certificate and report signatures.

Chain: VCEK <- ASK <- ARK, or VLEK <- ASVK <- ARK, one ARK per product. Certificate signatures are
RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt; the ARK signs itself. The VCEK or VLEK is
an ECDSA P-384 key that signs reports with SHA-384. KDS extensions (OIDs under
1.3.6.1.4.1.3704.1): .1 structVersion, .2 productName (IA5String), .3.1 blSPL, .3.2 teeSPL,
.3.3 snpSPL, .3.4-.3.7 spl4-spl7, .3.8 ucodeSPL, .3.9 fmcSPL (Turin), each an INTEGER; .4 hwID
(VCEK only: 64 bytes, 8 on Turin, either raw or wrapped in an OCTET STRING); .5 CSP ID (VLEK only,
IA5String).

Rules of this module:
- Certificates are read by a small strict DER reader of our own, never by `cryptography.x509`:
  AMD's VCEKs carry a zero serial number, which `cryptography` warns about and has announced it
  will refuse. Signatures are checked over the TBSCertificate bytes exactly as received, and the
  public key is loaded from the SubjectPublicKeyInfo bytes.
- Only RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48, trailer 1) with RSA keys of 2048 bits or more
  is accepted on certificates, and only ECDSA P-384 with SHA-384 on reports.
- The pinned AMD roots ship in `privproc/attest/roots/` (see its README.md); other anchors (a
  virtual SNP root) are used only when a caller passes them explicitly.
- Malformed certificates are a `CertificateError` (a `DecodeError`), a failed signature or chain a
  `CertificateVerificationError` (a `CryptoError`). Messages never carry key material.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key

from privproc.attest.snp import (
    SIGNED_SIZE,
    AttestationReport,
    Product,
    SigningKey,
    TcbParts,
)
from privproc.errors import CryptoError, DecodeError, UnsupportedError, UsageError

__all__ = [
    "OID_BL_SPL",
    "OID_CSP_ID",
    "OID_FMC_SPL",
    "OID_HWID",
    "OID_PRODUCT_NAME",
    "OID_SNP_SPL",
    "OID_STRUCT_VERSION",
    "OID_TEE_SPL",
    "OID_UCODE_SPL",
    "AmdCertificate",
    "CertificateError",
    "CertificateVerificationError",
    "Extension",
    "Name",
    "TrustAnchors",
    "TrustedChain",
    "VekExtensions",
    "load_certificate",
    "load_certificates",
    "split_chain",
    "verify_report_signature",
]

KDS_OID = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = KDS_OID + ".1"
OID_PRODUCT_NAME = KDS_OID + ".2"
OID_BL_SPL = KDS_OID + ".3.1"
OID_TEE_SPL = KDS_OID + ".3.2"
OID_SNP_SPL = KDS_OID + ".3.3"
OID_SPL = {n: f"{KDS_OID}.3.{n}" for n in (4, 5, 6, 7)}
OID_UCODE_SPL = KDS_OID + ".3.8"
OID_FMC_SPL = KDS_OID + ".3.9"
OID_HWID = KDS_OID + ".4"
OID_CSP_ID = KDS_OID + ".5"

_OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_SHA384 = "2.16.840.1.101.3.4.2.2"
_OID_BASIC_CONSTRAINTS = "2.5.29.19"
_OID_KEY_USAGE = "2.5.29.15"
_HANDLED_CRITICAL = frozenset((_OID_BASIC_CONSTRAINTS, _OID_KEY_USAGE))
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_MIN_RSA_BITS = 2048
_MAX_CERT_SIZE = 64 * 1024
_HWID_SIZES = {Product.MILAN: 64, Product.GENOA: 64, Product.TURIN: 8}

# DER tags
_BOOLEAN, _INTEGER, _BIT_STRING, _OCTET_STRING, _NULL, _OID = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
_UTF8, _PRINTABLE, _T61, _IA5, _UTCTIME, _GENTIME, _BMP = 0x0C, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1E
_SEQUENCE, _SET = 0x30, 0x31


class CertificateError(DecodeError):
    """A certificate, a PEM block or a KDS extension is malformed."""


class CertificateVerificationError(CryptoError):
    """A certificate or report signature does not verify, or a chain does not link."""


# --- A strict DER reader -----------------------------------------------------------------------


class _Der:
    """A cursor over DER elements between `pos` and `end` of `data`."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def peek(self) -> int | None:
        return None if self.at_end() else self.data[self.pos]

    def element(self, tag: int, what: str) -> tuple[int, int, int]:
        """(start of the element, start of its content, end) of the next element, which must
        carry `tag`; the cursor moves past it."""
        data, pos, end = self.data, self.pos, self.end
        if pos + 2 > end:
            raise CertificateError(f"{what}: input ended")
        if data[pos] != tag:
            raise CertificateError(f"{what}: expected tag {tag:#04x}, found {data[pos]:#04x}")
        first = data[pos + 1]
        cursor = pos + 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 3 or cursor + count > end:
                raise CertificateError(f"{what}: unsupported or truncated length")
            length = int.from_bytes(data[cursor : cursor + count], "big")
            if data[cursor] == 0 or length < 0x80:
                raise CertificateError(f"{what}: length is not in its shortest form")
            cursor += count
        if cursor + length > end:
            raise CertificateError(f"{what}: input ended inside the element")
        self.pos = cursor + length
        return pos, cursor, cursor + length

    def content(self, tag: int, what: str) -> bytes:
        _, start, stop = self.element(tag, what)
        return self.data[start:stop]

    def inner(self, tag: int, what: str) -> _Der:
        """A cursor over the content of the next (constructed) element."""
        _, start, stop = self.element(tag, what)
        return _Der(self.data, start, stop)

    def raw(self, tag: int, what: str) -> bytes:
        """The whole next element, header included."""
        begin, _, stop = self.element(tag, what)
        return self.data[begin:stop]

    def finish(self, what: str) -> None:
        if not self.at_end():
            raise CertificateError(f"{what}: unexpected trailing elements")


def _integer(content: bytes, what: str) -> int:
    if not content:
        raise CertificateError(f"{what}: empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise CertificateError(f"{what}: INTEGER is not in its shortest form")
    return int.from_bytes(content, "big", signed=True)


def _oid(content: bytes, what: str) -> str:
    if not content or content[-1] & 0x80:
        raise CertificateError(f"{what}: malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in content:
        if fresh and byte == 0x80:
            raise CertificateError(f"{what}: OBJECT IDENTIFIER arc is not in its shortest form")
        value = value << 7 | byte & 0x7F
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def _read_oid(der: _Der, what: str) -> str:
    return _oid(der.content(_OID, what), what)


def _time(der: _Der, what: str) -> datetime:
    tag = der.peek()
    if tag == _UTCTIME:
        text = der.content(_UTCTIME, what)
        size = 13
    elif tag == _GENTIME:
        text = der.content(_GENTIME, what)
        size = 15
    else:
        raise CertificateError(f"{what}: expected UTCTime or GeneralizedTime")
    if len(text) != size or not text.endswith(b"Z") or not text[:-1].isdigit():
        raise CertificateError(f"{what}: malformed time")
    digits = text[:-1].decode("ascii")
    if size == 13:  # RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, otherwise 20YY
        year = int(digits[:2])
        year += 1900 if year >= 50 else 2000
        rest = digits[2:]
    else:
        year, rest = int(digits[:4]), digits[4:]
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise CertificateError(f"{what}: malformed time") from None


_STRING_TAGS = {_UTF8: "utf-8", _PRINTABLE: "ascii", _IA5: "ascii", _T61: "latin-1"}
_NAME_KEYS = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
}


def _string(der: _Der, what: str) -> str:
    tag = der.peek()
    if tag in _STRING_TAGS:
        return der.content(tag, what).decode(_STRING_TAGS[tag], "replace")
    if tag == _BMP:
        return der.content(_BMP, what).decode("utf-16-be", "replace")
    if tag is None:
        raise CertificateError(f"{what}: input ended")
    # Any other attribute value: skip it, shown as its tag.
    header = der.data[der.pos]
    der.element(header, what)
    return f"#{header:02x}"


@dataclass(frozen=True)
class Name:
    """An X.501 Name: compared by its DER bytes, shown as "CN=..., O=..."."""

    der: bytes = field(repr=False)
    attributes: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, der: bytes) -> Name:
        outer = _Der(der)
        seq = outer.inner(_SEQUENCE, "name")
        outer.finish("name")
        attributes: list[tuple[str, str]] = []
        while not seq.at_end():
            rdn = seq.inner(_SET, "name RDN")
            while not rdn.at_end():
                pair = rdn.inner(_SEQUENCE, "name attribute")
                oid = _read_oid(pair, "name attribute type")
                value = _string(pair, "name attribute value")
                pair.finish("name attribute")
                attributes.append((_NAME_KEYS.get(oid, oid), value))
        return cls(der, tuple(attributes))

    @property
    def common_name(self) -> str | None:
        for key, value in self.attributes:
            if key == "CN":
                return value
        return None

    def __str__(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.attributes)


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes = field(repr=False)


# --- Certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmdCertificate:
    """An X.509 v3 certificate read field by field. `tbs` is the exact signed TBSCertificate."""

    der: bytes = field(repr=False)
    tbs: bytes = field(repr=False)
    serial_number: int
    tbs_signature_algorithm: bytes = field(repr=False)
    signature_algorithm: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    issuer: Name
    subject: Name
    not_before: datetime
    not_after: datetime
    spki: bytes = field(repr=False)
    public_key: PublicKeyTypes = field(repr=False, compare=False)
    extensions: tuple[Extension, ...] = field(repr=False)

    @classmethod
    def parse(cls, der: bytes) -> AmdCertificate:
        der = bytes(der)
        if len(der) > _MAX_CERT_SIZE:
            raise CertificateError("a certificate is larger than 64 KiB")
        outer = _Der(der)
        cert = outer.inner(_SEQUENCE, "certificate")
        outer.finish("certificate")
        tbs_start, tbs_content, tbs_end = cert.element(_SEQUENCE, "TBSCertificate")
        tbs_bytes = der[tbs_start:tbs_end]
        signature_algorithm = cert.raw(_SEQUENCE, "signatureAlgorithm")
        bits = cert.content(_BIT_STRING, "signatureValue")
        cert.finish("certificate")
        if not bits or bits[0] != 0:
            raise CertificateError("signatureValue: a signature has no unused bits")

        tbs = _Der(der, tbs_content, tbs_end)
        version_box = tbs.inner(0xA0, "version")
        version = _integer(version_box.content(_INTEGER, "version"), "version")
        version_box.finish("version")
        if version != 2:
            raise CertificateError("only X.509 v3 certificates are used")
        serial = _integer(tbs.content(_INTEGER, "serialNumber"), "serialNumber")
        tbs_signature_algorithm = tbs.raw(_SEQUENCE, "signature")
        issuer = Name.parse(tbs.raw(_SEQUENCE, "issuer"))
        validity = tbs.inner(_SEQUENCE, "validity")
        not_before = _time(validity, "notBefore")
        not_after = _time(validity, "notAfter")
        validity.finish("validity")
        subject = Name.parse(tbs.raw(_SEQUENCE, "subject"))
        spki = tbs.raw(_SEQUENCE, "subjectPublicKeyInfo")
        for tag, what in ((0x81, "issuerUniqueID"), (0x82, "subjectUniqueID")):
            if tbs.peek() == tag:
                tbs.element(tag, what)
        extensions: list[Extension] = []
        if tbs.peek() == 0xA3:
            box = tbs.inner(0xA3, "extensions")
            seq = box.inner(_SEQUENCE, "extensions")
            box.finish("extensions")
            while not seq.at_end():
                ext = seq.inner(_SEQUENCE, "extension")
                oid = _read_oid(ext, "extnID")
                critical = False
                if ext.peek() == _BOOLEAN:
                    flag = ext.content(_BOOLEAN, "critical")
                    if flag != b"\xff":  # DER: TRUE only, FALSE is the default and omitted
                        raise CertificateError("critical: not a DER TRUE")
                    critical = True
                value = ext.content(_OCTET_STRING, "extnValue")
                ext.finish("extension")
                extensions.append(Extension(oid, critical, value))
            if not extensions:
                raise CertificateError("extensions: an empty list is not allowed")
        tbs.finish("TBSCertificate")
        if len({e.oid for e in extensions}) != len(extensions):
            raise CertificateError("a certificate repeats an extension")
        try:
            public_key = load_der_public_key(spki)
        except (ValueError, UnsupportedAlgorithm):
            raise CertificateError("subjectPublicKeyInfo: not a supported public key") from None
        return cls(
            der=der,
            tbs=tbs_bytes,
            serial_number=serial,
            tbs_signature_algorithm=tbs_signature_algorithm,
            signature_algorithm=signature_algorithm,
            signature=bits[1:],
            issuer=issuer,
            subject=subject,
            not_before=not_before,
            not_after=not_after,
            spki=spki,
            public_key=public_key,
            extensions=tuple(extensions),
        )

    # -- views --

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, hex."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def spki_fingerprint(self) -> str:
        """SHA-256 of the SubjectPublicKeyInfo, hex."""
        return hashlib.sha256(self.spki).hexdigest()

    @property
    def self_issued(self) -> bool:
        return self.issuer.der == self.subject.der

    def extension(self, oid: str) -> Extension | None:
        for ext in self.extensions:
            if ext.oid == oid:
                return ext
        return None

    def valid_at(self, moment: datetime) -> bool:
        return self.not_before <= moment <= self.not_after

    def is_ca(self) -> bool | None:
        """basicConstraints cA, or None without the extension."""
        ext = self.extension(_OID_BASIC_CONSTRAINTS)
        if ext is None:
            return None
        outer = _Der(ext.value)
        seq = outer.inner(_SEQUENCE, "basicConstraints")
        outer.finish("basicConstraints")
        ca = False
        if seq.peek() == _BOOLEAN:
            if seq.content(_BOOLEAN, "cA") != b"\xff":
                raise CertificateError("basicConstraints: cA is not a DER TRUE")
            ca = True
        if seq.peek() == _INTEGER and _integer(seq.content(_INTEGER, "pathLen"), "pathLen") < 0:
            raise CertificateError("basicConstraints: negative path length")
        seq.finish("basicConstraints")
        return ca

    def may_sign_certificates(self) -> bool | None:
        """keyUsage keyCertSign, or None without the extension."""
        ext = self.extension(_OID_KEY_USAGE)
        if ext is None:
            return None
        outer = _Der(ext.value)
        bits = outer.content(_BIT_STRING, "keyUsage")
        outer.finish("keyUsage")
        if len(bits) < 2 or bits[0] > 7:
            raise CertificateError("keyUsage: malformed BIT STRING")
        return bool(bits[1] & 0x04)

    def unhandled_critical_extensions(self) -> list[str]:
        return [e.oid for e in self.extensions if e.critical and e.oid not in _HANDLED_CRITICAL]

    # -- signatures --

    def verify_signed_by(self, issuer: AmdCertificate) -> None:
        """Check this certificate's RSASSA-PSS signature with the issuer's key over the exact
        TBSCertificate; raises `CertificateVerificationError`."""
        if self.signature_algorithm != self.tbs_signature_algorithm:
            raise CertificateVerificationError(
                "the certificate's two signature algorithm fields differ"
            )
        _check_pss_algorithm(self.signature_algorithm)
        key = issuer.public_key
        if not isinstance(key, rsa.RSAPublicKey):
            raise CertificateVerificationError("the issuer's key is not an RSA key")
        if key.key_size < _MIN_RSA_BITS:
            raise CertificateVerificationError(f"the issuer's RSA key has {key.key_size} bits")
        try:
            key.verify(self.signature, self.tbs, _PSS, hashes.SHA384())
        except InvalidSignature:
            raise CertificateVerificationError(
                f"the signature on {self.subject.common_name or 'the certificate'} does not "
                f"verify with the key of {issuer.subject.common_name or 'its issuer'}"
            ) from None


def _check_pss_algorithm(algorithm: bytes) -> None:
    """The AlgorithmIdentifier must be RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48, trailer 1
    (an explicit trailer field of 1, as AMD writes it, or the default)."""
    try:
        outer = _Der(algorithm)
        seq = outer.inner(_SEQUENCE, "algorithm")
        if _read_oid(seq, "algorithm") != _OID_RSASSA_PSS:
            raise CertificateVerificationError("the signature algorithm is not RSASSA-PSS")
        params = seq.inner(_SEQUENCE, "RSASSA-PSS parameters")
        seq.finish("algorithm")
        hash_box = params.inner(0xA0, "hashAlgorithm")
        _expect_sha384(hash_box.inner(_SEQUENCE, "hashAlgorithm"), "hashAlgorithm")
        hash_box.finish("hashAlgorithm")
        mgf_box = params.inner(0xA1, "maskGenAlgorithm")
        mgf = mgf_box.inner(_SEQUENCE, "maskGenAlgorithm")
        mgf_box.finish("maskGenAlgorithm")
        if _read_oid(mgf, "maskGenAlgorithm") != _OID_MGF1:
            raise CertificateVerificationError("the PSS mask generation function is not MGF1")
        _expect_sha384(mgf.inner(_SEQUENCE, "MGF1 hash"), "MGF1 hash")
        mgf.finish("maskGenAlgorithm")
        salt_box = params.inner(0xA2, "saltLength")
        salt = _integer(salt_box.content(_INTEGER, "saltLength"), "saltLength")
        salt_box.finish("saltLength")
        if salt != 48:
            raise CertificateVerificationError(f"the PSS salt is {salt} bytes, not 48")
        if params.peek() == 0xA3:
            trailer_box = params.inner(0xA3, "trailerField")
            trailer = _integer(trailer_box.content(_INTEGER, "trailerField"), "trailerField")
            trailer_box.finish("trailerField")
            if trailer != 1:
                raise CertificateVerificationError("the PSS trailer field is not 1")
        params.finish("RSASSA-PSS parameters")
    except CertificateError as exc:
        raise CertificateVerificationError(f"malformed signature algorithm: {exc}") from None


def _expect_sha384(der: _Der, what: str) -> None:
    if _read_oid(der, what) != _OID_SHA384:
        raise CertificateVerificationError(f"the {what} is not SHA-384")
    if der.peek() == _NULL and der.content(_NULL, what):
        raise CertificateError(f"{what}: NULL with content")
    der.finish(what)


def verify_report_signature(report: bytes | AttestationReport, signer: AmdCertificate) -> None:
    """Check a report's ECDSA P-384/SHA-384 signature over bytes 0x000..0x29F with the VCEK or
    VLEK of `signer`. Given raw bytes, the bytes as received are hashed (never a re-encoding)."""
    if isinstance(report, AttestationReport):
        parsed, signed = report, report.signed_bytes
    else:
        parsed, signed = AttestationReport.parse(report), bytes(report[:SIGNED_SIZE])
    key = signer.public_key
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise CertificateVerificationError("the report signing key is not an ECDSA P-384 key")
    try:
        key.verify(parsed.der_signature(), signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise CertificateVerificationError("the report signature does not verify") from None


# --- Loading -----------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\s*?\n(.*?)-----END ([A-Z0-9 ]+)-----", re.DOTALL
)


def load_certificates(data: bytes | str) -> list[AmdCertificate]:
    """Every certificate of a PEM text (text outside the blocks is ignored; blocks other than
    CERTIFICATE are refused), or the one certificate of DER bytes."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if b"-----BEGIN" not in raw:
        return [AmdCertificate.parse(raw)]
    certs: list[AmdCertificate] = []
    for match in _PEM_BLOCK.finditer(raw):
        label, body, end_label = match.groups()
        if label != b"CERTIFICATE" or end_label != label:
            raise CertificateError("a PEM block is not a CERTIFICATE")
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise CertificateError("a PEM certificate is not base64") from None
        certs.append(AmdCertificate.parse(der))
    if raw.count(b"-----BEGIN") != len(certs):
        raise CertificateError("a PEM block is not terminated")
    return certs


def load_certificate(data: bytes | str) -> AmdCertificate:
    """One certificate, PEM or DER."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise CertificateError(f"expected one certificate, found {len(certs)}")
    return certs[0]


def split_chain(certs: Sequence[AmdCertificate]) -> tuple[AmdCertificate, AmdCertificate]:
    """(intermediate, root) of an ASK/ASVK + ARK pair in either order: the ARK is self-issued."""
    if len(certs) != 2:
        raise CertificateError(f"a chain is an ASK or ASVK and an ARK, found {len(certs)} certs")
    first, second = certs
    if first.self_issued == second.self_issued:
        raise CertificateError("a chain has exactly one self-issued certificate (the ARK)")
    return (second, first) if first.self_issued else (first, second)


# --- KDS extensions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VekExtensions:
    """The KDS extensions of a VCEK or VLEK certificate."""

    struct_version: int
    product_name: str
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    spl4: int | None
    spl5: int | None
    spl6: int | None
    spl7: int | None
    fmc_spl: int | None
    hwid: bytes | None = field(repr=False)
    hwid_encoding: Literal["raw", "octet-string"] | None
    csp_id: str | None

    @classmethod
    def from_certificate(cls, cert: AmdCertificate) -> VekExtensions:
        def get(oid: str) -> bytes | None:
            ext = cert.extension(oid)
            return None if ext is None else ext.value

        def spl(oid: str, what: str, required: bool = True) -> int | None:
            value = get(oid)
            if value is None:
                if required:
                    raise CertificateError(f"the {what} extension is missing")
                return None
            return _small_int(value, what)

        name_value = get(OID_PRODUCT_NAME)
        if name_value is None:
            raise CertificateError("the productName extension is missing")
        product_name = _ia5(name_value, "productName")
        turin = product_name.split("-", 1)[0] == Product.TURIN.value
        hwid: bytes | None = None
        encoding: Literal["raw", "octet-string"] | None = None
        hwid_value = get(OID_HWID)
        if hwid_value is not None:
            hwid, encoding = _hwid(hwid_value)
        csp_value = get(OID_CSP_ID)
        csp_id = None if csp_value is None else _ia5(csp_value, "CSP ID")
        if hwid is not None and csp_id is not None:
            raise CertificateError("a certificate has both a hwID and a CSP ID extension")
        struct_version = spl(OID_STRUCT_VERSION, "structVersion")
        bl, tee, snp, ucode = (
            spl(OID_BL_SPL, "blSPL"),
            spl(OID_TEE_SPL, "teeSPL"),
            spl(OID_SNP_SPL, "snpSPL"),
            spl(OID_UCODE_SPL, "ucodeSPL"),
        )
        assert None not in (struct_version, bl, tee, snp, ucode)
        return cls(
            struct_version=struct_version or 0,
            product_name=product_name,
            bl_spl=bl or 0,
            tee_spl=tee or 0,
            snp_spl=snp or 0,
            ucode_spl=ucode or 0,
            spl4=spl(OID_SPL[4], "spl4", required=not turin),
            spl5=spl(OID_SPL[5], "spl5"),
            spl6=spl(OID_SPL[6], "spl6"),
            spl7=spl(OID_SPL[7], "spl7"),
            fmc_spl=spl(OID_FMC_SPL, "fmcSPL", required=turin),
            hwid=hwid,
            hwid_encoding=encoding,
            csp_id=csp_id,
        )

    @property
    def product(self) -> Product | None:
        """The product line of productName ("Milan-B0" -> Milan), None for an unknown one."""
        try:
            return Product.parse(self.product_name)
        except UnsupportedError:
            return None

    @property
    def kind(self) -> SigningKey:
        """VLEK if the certificate carries a CSP ID, else VCEK."""
        return SigningKey.VLEK if self.csp_id is not None else SigningKey.VCEK

    def tcb(self, product: Product | None = None) -> TcbParts:
        """The TCB this key was derived for, in the product's TCB_VERSION layout."""
        chosen = product or self.product
        if chosen is None:
            raise UsageError("the certificate names no known product: pass one")
        if chosen is Product.TURIN:
            return TcbParts(
                chosen,
                self.bl_spl,
                self.tee_spl,
                self.snp_spl,
                self.ucode_spl,
                fmc=self.fmc_spl or 0,
                reserved=(self.spl5 or 0, self.spl6 or 0, self.spl7 or 0),
            )
        return TcbParts(
            chosen,
            self.bl_spl,
            self.tee_spl,
            self.snp_spl,
            self.ucode_spl,
            reserved=(self.spl4 or 0, self.spl5 or 0, self.spl6 or 0, self.spl7 or 0),
        )


def _small_int(value: bytes, what: str) -> int:
    der = _Der(value)
    number = _integer(der.content(_INTEGER, what), what)
    der.finish(what)
    if not 0 <= number <= 0xFF:
        raise CertificateError(f"{what}: not in 0..255")
    return number


def _ia5(value: bytes, what: str) -> str:
    der = _Der(value)
    text = der.content(_IA5, what)
    der.finish(what)
    if any(b > 0x7E or b < 0x20 for b in text):
        raise CertificateError(f"{what}: not printable ASCII")
    return text.decode("ascii")


def _hwid(value: bytes) -> tuple[bytes, Literal["raw", "octet-string"]]:
    """The hwID: the raw 64 (Turin: 8) bytes AMD's KDS writes, or the same bytes wrapped in a DER
    OCTET STRING."""
    sizes = set(_HWID_SIZES.values())
    if len(value) in sizes:
        return value, "raw"
    der = _Der(value)
    inner = der.content(_OCTET_STRING, "hwID")
    der.finish("hwID")
    if len(inner) not in sizes:
        raise CertificateError("hwID: neither 64 nor 8 bytes")
    return inner, "octet-string"


def hwid_size(product: Product) -> int:
    return _HWID_SIZES[product]


# --- Trust anchors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedChain:
    """A trusted ARK and its intermediate (ASK for VCEKs, ASVK for VLEKs) for one product."""

    product: Product
    kind: SigningKey
    ark: AmdCertificate
    intermediate: AmdCertificate
    source: str

    def __post_init__(self) -> None:
        if self.kind not in (SigningKey.VCEK, SigningKey.VLEK):
            raise UsageError("a trusted chain is for VCEKs or for VLEKs")

    @classmethod
    def from_pem(
        cls, pem: bytes | str, product: Product | str, kind: SigningKey, source: str
    ) -> TrustedChain:
        """An anchor from an ASK/ASVK + ARK PEM pair. The ARK's self-signature, the intermediate's
        signature and the names are checked now; validity times are checked when used."""
        intermediate, ark = split_chain(load_certificates(pem))
        ark.verify_signed_by(ark)
        intermediate.verify_signed_by(ark)
        if intermediate.issuer.der != ark.subject.der:
            raise CertificateVerificationError("the intermediate's issuer is not the ARK")
        return cls(Product.parse(product), kind, ark, intermediate, source)

    def pins(self, ark: AmdCertificate) -> bool:
        """True if `ark` is this anchor's ARK: same subject and same public key."""
        return ark.spki == self.ark.spki and ark.subject.der == self.ark.subject.der


# Package files: (product, key kind) -> file under privproc/attest/roots/.
_AMD_ROOT_FILES = {
    (Product.MILAN, SigningKey.VCEK): "ask_ark_milan.pem",
    (Product.MILAN, SigningKey.VLEK): "ask_ark_milan_vlek.pem",
    (Product.GENOA, SigningKey.VCEK): "ask_ark_genoa.pem",
    (Product.GENOA, SigningKey.VLEK): "ask_ark_genoa_vlek.pem",
    (Product.TURIN, SigningKey.VCEK): "ask_ark_turin_vcek.pem",
    (Product.TURIN, SigningKey.VLEK): "ask_ark_turin_vlek.pem",
}


@dataclass(frozen=True)
class TrustAnchors:
    """The trusted chains a verifier accepts, at most one per (product, key kind)."""

    chains: tuple[TrustedChain, ...]

    def __post_init__(self) -> None:
        keys = [(c.product, c.kind) for c in self.chains]
        if len(set(keys)) != len(keys):
            raise UsageError("two trusted chains for the same product and key kind")

    @classmethod
    def of(cls, chains: Iterable[TrustedChain]) -> TrustAnchors:
        return cls(tuple(chains))

    @classmethod
    def amd(cls) -> TrustAnchors:
        """AMD's real roots, pinned in the package (privproc/attest/roots/README.md)."""
        return _amd_anchors()

    def get(self, product: Product, kind: SigningKey) -> TrustedChain | None:
        for chain in self.chains:
            if chain.product is product and chain.kind is kind:
                return chain
        return None

    def merged(self, other: TrustAnchors) -> TrustAnchors:
        return TrustAnchors(self.chains + other.chains)


@functools.cache
def _amd_anchors() -> TrustAnchors:
    folder = resources.files("privproc.attest").joinpath("roots")
    chains = []
    for (product, kind), name in _AMD_ROOT_FILES.items():
        pem = folder.joinpath(name).read_bytes()
        chains.append(TrustedChain.from_pem(pem, product, kind, f"AMD (pinned {name})"))
    return TrustAnchors(tuple(chains))
