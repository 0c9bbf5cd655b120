"""Evidence from real SEV-SNP hardware: Linux configfs-tsm, or the /dev/sev-guest ioctl.

configfs-tsm (Documentation/ABI/testing/configfs-tsm): `mkdir <root>/<entry>` makes the kernel
create the entry's attributes; writing 64 bytes to `inblob` (after an optional `privlevel`) and
reading `outblob` yields the report, `auxblob` the certificate table, `provider` names the
backend (`sev_guest`), and `generation` counts writes, so a reader can tell whether someone else
wrote between its write and its reads. The entry is removed afterwards.

/dev/sev-guest: `SNP_GET_REPORT` (include/uapi/linux/sev-guest.h), the report in the firmware's
MSG_REPORT_RSP. It returns no certificates; the caller fetches the VCEK from AMD's KDS or a cache.

`open_source()` picks at run time: configfs-tsm if present, else /dev/sev-guest, else it says
that this machine has no SEV-SNP guest interface (use the virtual SNP instead).

Rules: the report data is exactly 64 bytes; every file read is bounded; a generation change
between write and read is an error (`HardwareEvidenceError`), never a silently mixed report.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from privproc.errors import DecodeError, PrivprocError, UsageError

__all__ = [
    "CERT_GUIDS",
    "ConfigfsTsm",
    "HardwareEvidence",
    "HardwareEvidenceError",
    "SevGuestDevice",
    "open_source",
    "parse_cert_table",
]

CONFIGFS_TSM = Path("/sys/kernel/config/tsm/report")
SEV_GUEST = Path("/dev/sev-guest")
_MAX_BLOB = 1 << 20
REPORT_SIZE = 0x4A0

# GUIDs of the SNP certificate table (GHCB specification, "SNP Extended Guest Request").
CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}


class HardwareEvidenceError(PrivprocError):
    """The SEV-SNP guest interface is missing, refused, or answered inconsistently."""


@dataclass(frozen=True)
class HardwareEvidence:
    report: bytes
    certificates: dict[str, bytes] = field(default_factory=dict)  # "vcek"/"vlek"/"ask"/"ark"


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """The SNP certificate table: (GUID, offset, length) entries up to an all-zero one, offsets
    relative to the table's start. Unknown GUIDs are skipped."""
    certs: dict[str, bytes] = {}
    pos = 0
    while True:
        if pos + 24 > len(data):
            raise DecodeError("the certificate table ends without its terminating entry")
        guid = uuid.UUID(bytes_le=bytes(data[pos : pos + 16]))
        offset = int.from_bytes(data[pos + 16 : pos + 20], "little")
        length = int.from_bytes(data[pos + 20 : pos + 24], "little")
        pos += 24
        if guid.int == 0 and offset == 0 and length == 0:
            return certs
        if offset + length > len(data) or offset < pos:
            raise DecodeError("a certificate table entry points outside the table")
        name = CERT_GUIDS.get(guid)
        if name is not None:
            certs[name] = bytes(data[offset : offset + length])


def encode_cert_table(certs: dict[str, bytes]) -> bytes:
    """The inverse of `parse_cert_table` (used to lay out test and virtual evidence)."""
    names = {v: k for k, v in CERT_GUIDS.items()}
    items = [(names[n], c) for n, c in certs.items()]
    header_len = 24 * (len(items) + 1)
    header, body = bytearray(), bytearray()
    for guid, cert in items:
        header += guid.bytes_le
        header += (header_len + len(body)).to_bytes(4, "little") + len(cert).to_bytes(4, "little")
        body += cert
    return bytes(header + bytes(24) + body)


class TsmFiles(Protocol):
    """The file operations configfs-tsm needs; the real ones by default."""

    def mkdir(self, path: Path) -> None: ...
    def rmdir(self, path: Path) -> None: ...
    def write(self, path: Path, data: bytes) -> None: ...
    def read(self, path: Path, limit: int) -> bytes: ...


class OsFiles:
    def mkdir(self, path: Path) -> None:
        path.mkdir()

    def rmdir(self, path: Path) -> None:
        path.rmdir()

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def read(self, path: Path, limit: int) -> bytes:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise HardwareEvidenceError(f"{path.name} is larger than {limit} bytes")
        return data


class ConfigfsTsm:
    def __init__(self, root: Path = CONFIGFS_TSM, files: TsmFiles | None = None) -> None:
        self.root = root
        self.files = files or OsFiles()

    def available(self) -> bool:
        return self.root.is_dir()

    def get_report(self, report_data: bytes, privlevel: int = 0) -> HardwareEvidence:
        if len(report_data) != 64:
            raise UsageError("SEV-SNP report data is 64 bytes")
        if not 0 <= privlevel <= 3:
            raise UsageError("the privilege level (VMPL) is 0 to 3")
        entry = self.root / f"privproc-{secrets.token_hex(8)}"
        try:
            self.files.mkdir(entry)
        except OSError as exc:
            raise HardwareEvidenceError(
                f"cannot create a configfs-tsm entry: {exc.strerror}"
            ) from None
        try:
            provider = self.files.read(entry / "provider", 64).decode("ascii", "replace").strip()
            if provider != "sev_guest":
                raise HardwareEvidenceError(f"configfs-tsm's provider is {provider!r}, not SEV-SNP")
            self.files.write(entry / "privlevel", str(privlevel).encode())
            self.files.write(entry / "inblob", report_data)
            before = self.files.read(entry / "generation", 32)
            report = self.files.read(entry / "outblob", _MAX_BLOB)
            aux = self.files.read(entry / "auxblob", _MAX_BLOB)
            after = self.files.read(entry / "generation", 32)
            if before != after:
                raise HardwareEvidenceError("someone else used this report entry concurrently")
        except OSError as exc:
            raise HardwareEvidenceError(f"configfs-tsm refused: {exc.strerror}") from None
        finally:
            # Nothing secret stays behind if this fails: the entry holds public report data.
            with contextlib.suppress(OSError):
                self.files.rmdir(entry)
        if len(report) != REPORT_SIZE:
            raise HardwareEvidenceError(f"the report is {len(report)} bytes, not {REPORT_SIZE}")
        return HardwareEvidence(report, parse_cert_table(aux) if aux else {})


# --- /dev/sev-guest ----------------------------------------------------------------------------


class _ReportReq(ctypes.Structure):
    _fields_ = [
        ("user_data", ctypes.c_uint8 * 64),
        ("vmpl", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint8 * 28),
    ]


class _ReportResp(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint8 * 4000)]


class _GuestRequest(ctypes.Structure):
    _fields_ = [
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    ]


# _IOWR('S', 0x0, struct snp_guest_request_ioctl): direction 3, size 32, type 'S', number 0.
SNP_GET_REPORT = (3 << 30) | (ctypes.sizeof(_GuestRequest) << 16) | (ord("S") << 8) | 0x0


class SevGuestDevice:
    def __init__(self, path: Path = SEV_GUEST) -> None:
        self.path = path

    def available(self) -> bool:
        return self.path.exists()

    def get_report(self, report_data: bytes, privlevel: int = 0) -> HardwareEvidence:
        if len(report_data) != 64:
            raise UsageError("SEV-SNP report data is 64 bytes")
        req = _ReportReq()
        ctypes.memmove(req.user_data, report_data, 64)
        req.vmpl = privlevel
        resp = _ReportResp()
        ioctl = _GuestRequest(1, ctypes.addressof(req), ctypes.addressof(resp), 0)
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise HardwareEvidenceError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            fcntl.ioctl(fd, SNP_GET_REPORT, ioctl)
        except OSError as exc:
            raise HardwareEvidenceError(
                f"SNP_GET_REPORT failed: {exc.strerror} (firmware status {ioctl.exitinfo2:#x})"
            ) from None
        finally:
            os.close(fd)
        raw = bytes(resp.data)
        # MSG_REPORT_RSP: uint32 status, uint32 report_size, 24 reserved bytes, the report.
        status = int.from_bytes(raw[0:4], "little")
        size = int.from_bytes(raw[4:8], "little")
        if status != 0 or size != REPORT_SIZE:
            raise HardwareEvidenceError(f"the firmware answered status {status:#x}, size {size}")
        return HardwareEvidence(raw[32 : 32 + REPORT_SIZE])


def open_source() -> ConfigfsTsm | SevGuestDevice:
    """The guest interface this machine has, chosen at run time."""
    tsm = ConfigfsTsm()
    if tsm.available():
        return tsm
    device = SevGuestDevice()
    if device.available():
        return device
    raise HardwareEvidenceError(
        "this machine has no SEV-SNP guest interface (neither configfs-tsm nor /dev/sev-guest); "
        "run the enclave with the virtual SNP for development"
    )
