"""AMD SEV-SNP attestation reports: ATTESTATION_REPORT of the SEV Secure Nested Paging Firmware
ABI Specification (AMD 56860, "Table 23"), versions 2, 3, 4, 5 and later.

A report is 0x4A0 bytes, little-endian; the signature covers bytes 0x000..0x29F:

| offset | size | field | notes |
|---|---|---|---|
| 0x000 | 4 | VERSION | 2, 3, 4, 5 known; 0 and 1 refused; later ones parsed as 5 |
| 0x004 | 4 | GUEST_SVN | |
| 0x008 | 8 | POLICY | `GuestPolicy`; bit 17 must be one |
| 0x010 | 16 | FAMILY_ID | |
| 0x020 | 16 | IMAGE_ID | |
| 0x030 | 4 | VMPL | |
| 0x034 | 4 | SIGNATURE_ALGO | 1 = ECDSA P-384 with SHA-384 |
| 0x038 | 8 | CURRENT_TCB | TCB_VERSION, layout by product (`TcbParts`) |
| 0x040 | 8 | PLATFORM_INFO | `PlatformInfo` |
| 0x048 | 4 | signer info | bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY
  (0 VCEK, 1 VLEK, 7 none; 2-6 reserved), bits 31:5 must be zero |
| 0x04C | 4 | reserved | must be zero |
| 0x050 | 64 | REPORT_DATA | |
| 0x090 | 48 | MEASUREMENT | |
| 0x0C0 | 32 | HOST_DATA | |
| 0x0E0 | 48 | ID_KEY_DIGEST | |
| 0x110 | 48 | AUTHOR_KEY_DIGEST | |
| 0x140 | 32 | REPORT_ID | |
| 0x160 | 32 | REPORT_ID_MA | |
| 0x180 | 8 | REPORTED_TCB | the TCB the signing VCEK was derived for |
| 0x188 | 1+1+1 | CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP | version 3 on; zero (reserved) in 2 |
| 0x18B | 21 | reserved | must be zero |
| 0x1A0 | 64 | CHIP_ID | zero when masked; Turin uses the first 8 bytes |
| 0x1E0 | 8 | COMMITTED_TCB | |
| 0x1E8 | 1+1+1+1 | CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR, reserved | |
| 0x1EC | 1+1+1+1 | COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR, reserved | |
| 0x1F0 | 8 | LAUNCH_TCB | |
| 0x1F8 | 8 | LAUNCH_MIT_VECTOR | version 5 on; reserved before |
| 0x200 | 8 | CURRENT_MIT_VECTOR | version 5 on; reserved before |
| 0x208 | 152 | reserved | must be zero up to version 5; kept opaque (`tail`) after |
| 0x2A0 | 72 | SIGNATURE R | little-endian, zero-extended |
| 0x2E8 | 72 | SIGNATURE S | little-endian, zero-extended |
| 0x330 | 368 | reserved (rest of SIGNATURE) | must be zero |

TCB_VERSION (u64, byte 0 least significant), per product:
- Milan, Genoa: 0 BOOT_LOADER, 1 TEE, 2-5 reserved (KDS spl4-spl7), 6 SNP, 7 MICROCODE;
- Turin: 0 FMC, 1 BOOT_LOADER, 2 TEE, 3 SNP, 4-6 reserved (KDS spl5-spl7), 7 MICROCODE.

Rules of this module:
- `AttestationReport.parse` takes exactly 0x4A0 bytes and enforces what the specification makes
  mandatory for the report's version: the reserved areas above are zero, policy bit 17 is one,
  the signer-info reserved bits and values are unused, the signature algorithm is known. Bits of
  POLICY and PLATFORM_INFO that this module does not name are kept (`unknown_bits`), not refused:
  a policy layer decides about them. It never checks the signature (`privproc.attest.verify`).
- Parsing and encoding are exact inverses: `AttestationReport.parse(data).encode() == data`.
- Malformed input is a `ReportError` (a `DecodeError`), a wrong size a `TruncatedError` or
  `TrailingDataError`, an unsupported version or algorithm an `UnsupportedError`; building a report
  from inconsistent fields is a `UsageError`. Messages name fields and sizes, never their bytes.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from privproc.errors import (
    DecodeError,
    TrailingDataError,
    TruncatedError,
    UnsupportedError,
    UsageError,
)

__all__ = [
    "MAX_KNOWN_VERSION",
    "MIN_VERSION",
    "REPORT_SIZE",
    "SIGNATURE_ALGO_ECDSA_P384_SHA384",
    "SIGNATURE_OFFSET",
    "SIGNED_SIZE",
    "AttestationReport",
    "Cpuid",
    "FirmwareVersion",
    "GuestPolicy",
    "PlatformInfo",
    "Product",
    "ReportError",
    "SignerInfo",
    "SigningKey",
    "TcbParts",
    "product_from_cpuid",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_OFFSET = 0x2A0
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
MIN_VERSION = 2
MAX_KNOWN_VERSION = 5
_TAIL_SIZE = 0x2A0 - 0x208  # 152
_RS_SIZE = 72
_SIG_SIZE = REPORT_SIZE - SIGNATURE_OFFSET  # 512
_P384_ORDER_BITS = 384

# One struct for the whole report; reserved areas are read as bytes so that they can be checked.
_LAYOUT = struct.Struct(
    "<IIQ16s16sIIQQI4s64s48s32s48s48s32s32sQBBB21s64sQBBBBBBBBQQQ152s72s72s368s"
)
assert _LAYOUT.size == REPORT_SIZE

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_SIGNING_KEY_VALUES = frozenset((0, 1, 7))


class ReportError(DecodeError):
    """An attestation report does not follow the ABI layout of its version."""


# --- Products and TCB versions -----------------------------------------------------------------


class Product(enum.Enum):
    """An AMD EPYC product line with SEV-SNP, named as the KDS names it."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def parse(cls, name: str | Product) -> Product:
        """A product line or a VCEK productName with its stepping: "Milan", "Genoa-B1"."""
        if isinstance(name, Product):
            return name
        match = _PRODUCT_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise UnsupportedError("unknown AMD SEV-SNP product name")
        return cls(match.group(1))

    def __str__(self) -> str:
        return self.value


_PRODUCT_NAME = re.compile(r"(Milan|Genoa|Turin)(?:-[A-Z][0-9])?")


def product_from_cpuid(family: int, model: int) -> Product | None:
    """The product of a CPUID family and model (the combined extended values, as the report's
    CPUID_FAM_ID and CPUID_MOD_ID carry them), or None for one without AMD roots here.

    Family 19h: models 00h-0Fh Milan; 10h-1Fh and A0h-AFh Genoa (Genoa, Genoa-X, Bergamo, Siena
    share the Genoa keys). Family 1Ah: models 00h-11h Turin."""
    if family == 0x19:
        if model <= 0x0F:
            return Product.MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return Product.GENOA
    if family == 0x1A and model <= 0x11:
        return Product.TURIN
    return None


@dataclass(frozen=True)
class TcbParts:
    """A TCB_VERSION decomposed by the layout of its product: security patch levels (SPLs).

    `fmc` exists on Turin only. `reserved` holds the reserved bytes in order: four (KDS spl4-spl7)
    on Milan and Genoa, three (spl5-spl7) on Turin; empty means zeros."""

    product: Product
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None
    reserved: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        turin = self.product is Product.TURIN
        if turin != (self.fmc is not None):
            raise UsageError("an FMC SPL exists on Turin and only there")
        width = 3 if turin else 4
        if not self.reserved:
            object.__setattr__(self, "reserved", (0,) * width)
        if len(self.reserved) != width:
            raise UsageError(f"a {self.product} TCB_VERSION has {width} reserved bytes")
        values = [self.bootloader, self.tee, self.snp, self.microcode, *self.reserved]
        if self.fmc is not None:
            values.append(self.fmc)
        if any(not 0 <= v <= 0xFF for v in values):
            raise UsageError("a security patch level is one byte")

    @classmethod
    def decode(cls, raw: int, product: Product | str) -> TcbParts:
        product = Product.parse(product)
        if not 0 <= raw <= _U64:
            raise UsageError("a TCB_VERSION is a 64-bit value")
        b = raw.to_bytes(8, "little")
        if product is Product.TURIN:
            return cls(product, b[1], b[2], b[3], b[7], fmc=b[0], reserved=(b[4], b[5], b[6]))
        return cls(product, b[0], b[1], b[6], b[7], reserved=(b[2], b[3], b[4], b[5]))

    @property
    def raw(self) -> int:
        """The 64-bit TCB_VERSION value."""
        r = self.reserved
        if self.product is Product.TURIN:
            assert self.fmc is not None
            b = (self.fmc, self.bootloader, self.tee, self.snp, r[0], r[1], r[2], self.microcode)
        else:
            b = (self.bootloader, self.tee, r[0], r[1], r[2], r[3], self.snp, self.microcode)
        return int.from_bytes(bytes(b), "little")

    def components(self) -> dict[str, int]:
        """The named SPLs (reserved bytes excluded), in layout order."""
        out: dict[str, int] = {}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        out.update(bootloader=self.bootloader, tee=self.tee, snp=self.snp)
        out["microcode"] = self.microcode
        return out

    def meets(self, minimum: TcbParts) -> bool:
        """True if every named SPL is at least the minimum's (same product required)."""
        if minimum.product is not self.product:
            raise UsageError("TCB versions of different products are not comparable")
        mine = self.components()
        return all(mine[name] >= value for name, value in minimum.components().items())

    def __str__(self) -> str:
        parts = " ".join(f"{k}={v}" for k, v in self.components().items())
        return f"{self.product} TCB {self.raw:016x} ({parts})"


# --- Bit fields --------------------------------------------------------------------------------

_POLICY_RESERVED_ONE = 1 << 17
_POLICY_BITS = {
    "smt": 16,
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allowed": 21,
    "mem_aes_256_xts": 22,
    "rapl_disable": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}
_POLICY_KNOWN = 0xFFFF | _POLICY_RESERVED_ONE | sum(1 << b for b in _POLICY_BITS.values())


@dataclass(frozen=True)
class GuestPolicy:
    """POLICY (guest policy, fixed at launch): ABI version floor and what the host may do."""

    raw: int = _POLICY_RESERVED_ONE

    def __post_init__(self) -> None:
        if not 0 <= self.raw <= _U64:
            raise UsageError("the guest policy is a 64-bit value")

    @classmethod
    def build(
        cls,
        *,
        abi_major: int = 0,
        abi_minor: int = 0,
        smt: bool = False,
        migrate_ma: bool = False,
        debug: bool = False,
        single_socket: bool = False,
        cxl_allowed: bool = False,
        mem_aes_256_xts: bool = False,
        rapl_disable: bool = False,
        ciphertext_hiding: bool = False,
        page_swap_disable: bool = False,
    ) -> GuestPolicy:
        if not (0 <= abi_major <= 0xFF and 0 <= abi_minor <= 0xFF):
            raise UsageError("the ABI major and minor versions are one byte each")
        flags = {
            "smt": smt,
            "migrate_ma": migrate_ma,
            "debug": debug,
            "single_socket": single_socket,
            "cxl_allowed": cxl_allowed,
            "mem_aes_256_xts": mem_aes_256_xts,
            "rapl_disable": rapl_disable,
            "ciphertext_hiding": ciphertext_hiding,
            "page_swap_disable": page_swap_disable,
        }
        raw = abi_minor | abi_major << 8 | _POLICY_RESERVED_ONE
        for name, bit in _POLICY_BITS.items():
            if flags[name]:
                raw |= 1 << bit
        return cls(raw)

    def _bit(self, name: str) -> bool:
        return bool(self.raw >> _POLICY_BITS[name] & 1)

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return self.raw >> 8 & 0xFF

    @property
    def smt(self) -> bool:
        """Host SMT is allowed."""
        return self._bit("smt")

    @property
    def migrate_ma(self) -> bool:
        """Association with a migration agent is allowed."""
        return self._bit("migrate_ma")

    @property
    def debug(self) -> bool:
        """The host may debug (decrypt) the guest."""
        return self._bit("debug")

    @property
    def single_socket(self) -> bool:
        return self._bit("single_socket")

    @property
    def cxl_allowed(self) -> bool:
        return self._bit("cxl_allowed")

    @property
    def mem_aes_256_xts(self) -> bool:
        """AES-256-XTS memory encryption is required."""
        return self._bit("mem_aes_256_xts")

    @property
    def rapl_disable(self) -> bool:
        """Running Average Power Limit must be disabled."""
        return self._bit("rapl_disable")

    @property
    def ciphertext_hiding(self) -> bool:
        """Ciphertext hiding for DRAM must be enabled."""
        return self._bit("ciphertext_hiding")

    @property
    def page_swap_disable(self) -> bool:
        """SNP_PAGE_MOVE, SNP_SWAP_OUT and SNP_SWAP_IN are disabled for the guest."""
        return self._bit("page_swap_disable")

    @property
    def reserved_one(self) -> bool:
        """Bit 17, which the specification requires to be one."""
        return bool(self.raw & _POLICY_RESERVED_ONE)

    @property
    def unknown_bits(self) -> int:
        """Set bits this module does not name (26-63: reserved, must be zero in ABI 1.57)."""
        return self.raw & ~_POLICY_KNOWN

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"raw": f"{self.raw:#x}", "abi": f"{self.abi_major}.{self.abi_minor}"}
        out.update({name: self._bit(name) for name in _POLICY_BITS})
        out["unknown_bits"] = f"{self.unknown_bits:#x}"
        return out


_PLATFORM_BITS = {
    "smt_enabled": 0,
    "tsme_enabled": 1,
    "ecc_enabled": 2,
    "rapl_disabled": 3,
    "ciphertext_hiding_enabled": 4,
    "alias_check_complete": 5,
    "tio_enabled": 7,
}
_PLATFORM_KNOWN = sum(1 << b for b in _PLATFORM_BITS.values())


@dataclass(frozen=True)
class PlatformInfo:
    """PLATFORM_INFO: the state of the host when the report was made."""

    raw: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.raw <= _U64:
            raise UsageError("the platform info is a 64-bit value")

    @classmethod
    def build(cls, **flags: bool) -> PlatformInfo:
        raw = 0
        for name, value in flags.items():
            if name not in _PLATFORM_BITS:
                raise UsageError(f"no platform info bit is called {name!r}")
            if value:
                raw |= 1 << _PLATFORM_BITS[name]
        return cls(raw)

    def _bit(self, name: str) -> bool:
        return bool(self.raw >> _PLATFORM_BITS[name] & 1)

    @property
    def smt_enabled(self) -> bool:
        return self._bit("smt_enabled")

    @property
    def tsme_enabled(self) -> bool:
        return self._bit("tsme_enabled")

    @property
    def ecc_enabled(self) -> bool:
        return self._bit("ecc_enabled")

    @property
    def rapl_disabled(self) -> bool:
        return self._bit("rapl_disabled")

    @property
    def ciphertext_hiding_enabled(self) -> bool:
        return self._bit("ciphertext_hiding_enabled")

    @property
    def alias_check_complete(self) -> bool:
        """The boot-time memory alias check finished and found no aliases (AMD-SB-3015)."""
        return self._bit("alias_check_complete")

    @property
    def tio_enabled(self) -> bool:
        """SEV-TIO is enabled (bit 7, ABI 1.58)."""
        return self._bit("tio_enabled")

    @property
    def unknown_bits(self) -> int:
        return self.raw & ~_PLATFORM_KNOWN

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"raw": f"{self.raw:#x}"}
        out.update({name: self._bit(name) for name in _PLATFORM_BITS})
        out["unknown_bits"] = f"{self.unknown_bits:#x}"
        return out


class SigningKey(enum.IntEnum):
    """SIGNING_KEY: which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True)
class SignerInfo:
    """The 32-bit field at 0x48: AUTHOR_KEY_EN, MASK_CHIP_KEY and SIGNING_KEY."""

    raw: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.raw <= 0x1F:
            raise UsageError("signer info bits 31:5 are reserved")
        if self.raw >> 2 not in _SIGNING_KEY_VALUES:
            raise UsageError("SIGNING_KEY values 2 to 6 are reserved")

    @classmethod
    def build(
        cls,
        signing_key: SigningKey = SigningKey.VCEK,
        *,
        mask_chip_key: bool = False,
        author_key_en: bool = False,
    ) -> SignerInfo:
        return cls(int(signing_key) << 2 | int(mask_chip_key) << 1 | int(author_key_en))

    @property
    def author_key_en(self) -> bool:
        """AUTHOR_KEY_DIGEST holds the digest of an author key."""
        return bool(self.raw & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.raw & 2)

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.raw >> 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "author_key_en": self.author_key_en,
            "mask_chip_key": self.mask_chip_key,
            "signing_key": self.signing_key.name,
        }


@dataclass(frozen=True)
class FirmwareVersion:
    """A SEV firmware version: major.minor and build."""

    major: int = 0
    minor: int = 0
    build: int = 0

    def __post_init__(self) -> None:
        if not all(0 <= v <= 0xFF for v in (self.major, self.minor, self.build)):
            raise UsageError("firmware version parts are one byte each")

    def __str__(self) -> str:
        return f"{self.major}.{self.minor} build {self.build}"


@dataclass(frozen=True)
class Cpuid:
    """CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (combined extended family and model)."""

    family: int
    model: int
    stepping: int

    def __post_init__(self) -> None:
        if not all(0 <= v <= 0xFF for v in (self.family, self.model, self.stepping)):
            raise UsageError("CPUID family, model and stepping are one byte each")

    @classmethod
    def of(cls, product: Product | str, stepping: int = 0) -> Cpuid:
        """The CPUID values of a product's first model (for building reports)."""
        product = Product.parse(product)
        family, model = {
            Product.MILAN: (0x19, 0x01),
            Product.GENOA: (0x19, 0x11),
            Product.TURIN: (0x1A, 0x02),
        }[product]
        return cls(family, model, stepping)

    @property
    def product(self) -> Product | None:
        return product_from_cpuid(self.family, self.model)


# --- The report --------------------------------------------------------------------------------

TcbField = Literal["current", "reported", "committed", "launch"]


def _le(value: int) -> bytes:
    return value.to_bytes(_RS_SIZE, "little")


@dataclass(frozen=True)
class AttestationReport:
    """One ATTESTATION_REPORT. Build one from fields (everything but `version` has a zero
    default) and `encode()` it, or `parse()` one; `cpuid` must be set from version 3 on, the two
    mitigation vectors from version 5 on, and `tail` (152 bytes) only after version 5."""

    version: int
    guest_svn: int = 0
    policy: GuestPolicy = GuestPolicy()
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    vmpl: int = 0
    signature_algo: int = SIGNATURE_ALGO_ECDSA_P384_SHA384
    current_tcb: int = 0
    platform_info: PlatformInfo = PlatformInfo()
    signer_info: SignerInfo = SignerInfo()
    report_data: bytes = bytes(64)
    measurement: bytes = bytes(48)
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = bytes(32)
    report_id_ma: bytes = bytes(32)
    reported_tcb: int = 0
    cpuid: Cpuid | None = None
    chip_id: bytes = bytes(64)
    committed_tcb: int = 0
    current_version: FirmwareVersion = FirmwareVersion()
    committed_version: FirmwareVersion = FirmwareVersion()
    launch_tcb: int = 0
    launch_mit_vector: int | None = None
    current_mit_vector: int | None = None
    tail: bytes = field(default=b"", repr=False)
    signature: bytes = field(default=bytes(_SIG_SIZE), repr=False)

    def __post_init__(self) -> None:
        if not MIN_VERSION <= self.version <= _U32:
            raise UsageError(f"report versions start at {MIN_VERSION}")
        for name in ("guest_svn", "vmpl", "signature_algo"):
            if not 0 <= getattr(self, name) <= _U32:
                raise UsageError(f"{name} is a 32-bit value")
        for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
            if not 0 <= getattr(self, name) <= _U64:
                raise UsageError(f"{name} is a 64-bit value")
        for name, size in _BYTE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise UsageError(f"{name} is {size} bytes")
        if len(self.signature) != _SIG_SIZE or any(self.signature[2 * _RS_SIZE :]):
            raise UsageError("the signature field is 512 bytes: R and S (72 each), then zeros")
        if (self.cpuid is not None) != (self.version >= 3):
            raise UsageError("CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP exist from version 3 on")
        vectors = (self.launch_mit_vector, self.current_mit_vector)
        if self.version >= 5:
            if any(v is None or not 0 <= v <= _U64 for v in vectors):
                raise UsageError("version 5 reports carry two 64-bit mitigation vectors")
        elif any(v is not None for v in vectors):
            raise UsageError("mitigation vectors exist from version 5 on")
        if len(self.tail) != (_TAIL_SIZE if self.version > MAX_KNOWN_VERSION else 0):
            raise UsageError("the opaque tail (152 bytes) exists only after version 5")
        if self.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384 and not (
            self.signer_info.signing_key is SigningKey.NONE and self.signature_algo == 0
        ):
            raise UsageError("the signature algorithm is 1 (ECDSA P-384 with SHA-384)")

    # -- decoding and encoding --

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> AttestationReport:
        data = bytes(data)
        if len(data) < REPORT_SIZE:
            raise TruncatedError(f"an attestation report is {REPORT_SIZE} bytes, got {len(data)}")
        if len(data) > REPORT_SIZE:
            raise TrailingDataError(
                f"an attestation report is {REPORT_SIZE} bytes, got {len(data)}"
            )
        (
            version,
            guest_svn,
            policy,
            family_id,
            image_id,
            vmpl,
            signature_algo,
            current_tcb,
            platform_info,
            signer_info,
            reserved_4c,
            report_data,
            measurement,
            host_data,
            id_key_digest,
            author_key_digest,
            report_id,
            report_id_ma,
            reported_tcb,
            cpuid_family,
            cpuid_model,
            cpuid_stepping,
            reserved_18b,
            chip_id,
            committed_tcb,
            current_build,
            current_minor,
            current_major,
            reserved_1eb,
            committed_build,
            committed_minor,
            committed_major,
            reserved_1ef,
            launch_tcb,
            launch_mit_vector,
            current_mit_vector,
            tail,
            sig_r,
            sig_s,
            sig_reserved,
        ) = _LAYOUT.unpack(data)
        if version < MIN_VERSION:
            raise UnsupportedError(f"report version {version} predates version {MIN_VERSION}")
        if not policy & _POLICY_RESERVED_ONE:
            raise ReportError("guest policy bit 17 is reserved and must be one")
        if signer_info >> 5:
            raise ReportError("signer info bits 31:5 are reserved and must be zero")
        if signer_info >> 2 not in _SIGNING_KEY_VALUES:
            raise ReportError("SIGNING_KEY values 2 to 6 are reserved")
        unsigned = signer_info >> 2 == SigningKey.NONE
        if signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384 and not (
            unsigned and signature_algo == 0
        ):
            raise UnsupportedError(f"unknown report signature algorithm {signature_algo}")
        _zero(reserved_4c, 0x04C)
        cpuid: Cpuid | None = None
        if version >= 3:
            cpuid = Cpuid(cpuid_family, cpuid_model, cpuid_stepping)
        elif cpuid_family or cpuid_model or cpuid_stepping:
            raise ReportError("bytes 0x188..0x18A are reserved before version 3")
        _zero(reserved_18b, 0x18B)
        if reserved_1eb or reserved_1ef:
            raise ReportError("bytes 0x1EB and 0x1EF are reserved and must be zero")
        launch_mit: int | None = None
        current_mit: int | None = None
        if version >= 5:
            launch_mit, current_mit = launch_mit_vector, current_mit_vector
        elif launch_mit_vector or current_mit_vector:
            raise ReportError("bytes 0x1F8..0x207 are reserved before version 5")
        if version <= MAX_KNOWN_VERSION:
            _zero(tail, 0x208)
            tail = b""
        _zero(sig_reserved, 0x330)
        return cls(
            version=version,
            guest_svn=guest_svn,
            policy=GuestPolicy(policy),
            family_id=family_id,
            image_id=image_id,
            vmpl=vmpl,
            signature_algo=signature_algo,
            current_tcb=current_tcb,
            platform_info=PlatformInfo(platform_info),
            signer_info=SignerInfo(signer_info),
            report_data=report_data,
            measurement=measurement,
            host_data=host_data,
            id_key_digest=id_key_digest,
            author_key_digest=author_key_digest,
            report_id=report_id,
            report_id_ma=report_id_ma,
            reported_tcb=reported_tcb,
            cpuid=cpuid,
            chip_id=chip_id,
            committed_tcb=committed_tcb,
            current_version=FirmwareVersion(current_major, current_minor, current_build),
            committed_version=FirmwareVersion(committed_major, committed_minor, committed_build),
            launch_tcb=launch_tcb,
            launch_mit_vector=launch_mit,
            current_mit_vector=current_mit,
            tail=tail,
            signature=sig_r + sig_s + sig_reserved,
        )

    def encode(self) -> bytes:
        """The exact 0x4A0 bytes of this report, signature included."""
        if not self.policy.reserved_one:
            raise UsageError("guest policy bit 17 is reserved and must be one")
        cpuid = self.cpuid or Cpuid(0, 0, 0)
        cur, com = self.current_version, self.committed_version
        return _LAYOUT.pack(
            self.version,
            self.guest_svn,
            self.policy.raw,
            self.family_id,
            self.image_id,
            self.vmpl,
            self.signature_algo,
            self.current_tcb,
            self.platform_info.raw,
            self.signer_info.raw,
            bytes(4),
            self.report_data,
            self.measurement,
            self.host_data,
            self.id_key_digest,
            self.author_key_digest,
            self.report_id,
            self.report_id_ma,
            self.reported_tcb,
            cpuid.family,
            cpuid.model,
            cpuid.stepping,
            bytes(21),
            self.chip_id,
            self.committed_tcb,
            cur.build,
            cur.minor,
            cur.major,
            0,
            com.build,
            com.minor,
            com.major,
            0,
            self.launch_tcb,
            self.launch_mit_vector or 0,
            self.current_mit_vector or 0,
            self.tail or bytes(_TAIL_SIZE),
            self.signature[:_RS_SIZE],
            self.signature[_RS_SIZE : 2 * _RS_SIZE],
            bytes(_SIG_SIZE - 2 * _RS_SIZE),
        )

    @property
    def signed_bytes(self) -> bytes:
        """Bytes 0x000..0x29F, which the signature covers."""
        return self.encode()[:SIGNED_SIZE]

    # -- the signature --

    @property
    def signature_r(self) -> int:
        return int.from_bytes(self.signature[:_RS_SIZE], "little")

    @property
    def signature_s(self) -> int:
        return int.from_bytes(self.signature[_RS_SIZE : 2 * _RS_SIZE], "little")

    def der_signature(self) -> bytes:
        """The signature as a DER ECDSA-Sig-Value (for `cryptography`'s verify)."""
        return encode_dss_signature(self.signature_r, self.signature_s)

    def with_signature(self, r: int, s: int) -> AttestationReport:
        """A copy carrying the ECDSA signature (r, s)."""
        if not (0 <= r < 1 << _P384_ORDER_BITS and 0 <= s < 1 << _P384_ORDER_BITS):
            raise UsageError("ECDSA P-384 signature components are at most 384 bits")
        return replace(self, signature=_le(r) + _le(s) + bytes(_SIG_SIZE - 2 * _RS_SIZE))

    def with_der_signature(self, der: bytes) -> AttestationReport:
        """A copy carrying a DER-encoded ECDSA signature."""
        try:
            r, s = decode_dss_signature(der)
        except ValueError:
            raise UsageError("not a DER ECDSA signature") from None
        return self.with_signature(r, s)

    def unsigned(self) -> AttestationReport:
        """A copy with a zero signature field."""
        return replace(self, signature=bytes(_SIG_SIZE))

    def signed_with(self, private_key: ec.EllipticCurvePrivateKey) -> AttestationReport:
        """A copy signed with an ECDSA P-384 key (a VCEK or VLEK), over `signed_bytes`."""
        if not isinstance(private_key.curve, ec.SECP384R1):
            raise UsageError("reports are signed with ECDSA P-384")
        der = private_key.sign(self.signed_bytes, ec.ECDSA(hashes.SHA384()))
        return self.with_der_signature(der)

    # -- interpretation --

    @property
    def product(self) -> Product | None:
        """The product named by the report's CPUID fields (version 3 on), if known."""
        return self.cpuid.product if self.cpuid is not None else None

    @property
    def signing_key(self) -> SigningKey:
        return self.signer_info.signing_key

    def tcb(self, which: TcbField, product: Product | str | None = None) -> TcbParts:
        """One of the four TCB_VERSION fields decoded for `product` (default: the report's)."""
        chosen = Product.parse(product) if product is not None else self.product
        if chosen is None:
            raise UsageError("a version 2 report does not name its product: pass one")
        raw = {
            "current": self.current_tcb,
            "reported": self.reported_tcb,
            "committed": self.committed_tcb,
            "launch": self.launch_tcb,
        }[which]
        return TcbParts.decode(raw, chosen)

    @property
    def chip_id_masked(self) -> bool:
        return not any(self.chip_id)

    # Names of the specification, for callers that think in them.
    @property
    def cpuid_fam_id(self) -> int | None:
        return self.cpuid.family if self.cpuid else None

    @property
    def cpuid_mod_id(self) -> int | None:
        return self.cpuid.model if self.cpuid else None

    @property
    def cpuid_step(self) -> int | None:
        return self.cpuid.stepping if self.cpuid else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: byte strings in hex, bit fields decoded, TCBs raw."""
        product = self.product
        out: dict[str, Any] = {
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": self.policy.to_dict(),
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "platform_info": self.platform_info.to_dict(),
            "signer_info": self.signer_info.to_dict(),
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "chip_id": self.chip_id.hex(),
            "current_version": str(self.current_version),
            "committed_version": str(self.committed_version),
        }
        for which in ("current", "reported", "committed", "launch"):
            raw = getattr(self, f"{which}_tcb")
            entry: dict[str, Any] = {"raw": f"{raw:016x}"}
            if product is not None:
                entry.update(TcbParts.decode(raw, product).components())
            out[f"{which}_tcb"] = entry
        if self.cpuid is not None:
            out["cpuid"] = {
                "family": f"{self.cpuid.family:#x}",
                "model": f"{self.cpuid.model:#x}",
                "stepping": self.cpuid.stepping,
                "product": str(product) if product else None,
            }
        if self.launch_mit_vector is not None:
            out["launch_mit_vector"] = f"{self.launch_mit_vector:#x}"
            out["current_mit_vector"] = f"{self.current_mit_vector:#x}"
        return out


_BYTE_FIELDS = (
    ("family_id", 16),
    ("image_id", 16),
    ("report_data", 64),
    ("measurement", 48),
    ("host_data", 32),
    ("id_key_digest", 48),
    ("author_key_digest", 48),
    ("report_id", 32),
    ("report_id_ma", 32),
    ("chip_id", 64),
    ("signature", _SIG_SIZE),
)


def _zero(area: bytes, offset: int) -> None:
    if any(area):
        raise ReportError(
            f"bytes {offset:#05x}..{offset + len(area) - 1:#05x} are reserved and must be zero"
        )
