"""The log's entry types, each with one canonical, versioned binary encoding.

    struct {
        uint8 version = 1;
        uint8 entry_type;  /* 1 enclave release, 2 OHTTP key-config set, 3 issuer token key */
        select (entry_type) { ... } body;
    } LogEntry;

    EnclaveRelease:   opaque measurement[48]; opaque image_digest[32]; opaque model_digest[32];
                      opaque config_digest[32]; opaque source_revision<1..255>; uint64 time;
    OhttpKeyConfigSet: opaque gateway<1..255>; opaque key_configs<1..2^16-1>; uint64 not_before;
    IssuerTokenKey:   opaque issuer<1..255>; uint16 token_type; opaque token_key<1..2^16-1>;
                      uint64 not_before; uint64 expires;

Integers are big-endian; `<a..b>` is a length prefix of the smallest width holding b, as in TLS.
Names and revisions are printable ASCII. `key_configs` is an `application/ohttp-keys` document
(RFC 9458 §3.2) and `token_key` an RFC 9578 §6.5 SPKI; both are checked when encoded and decoded.

Rules: `decode(encode(e)) == e` and `encode(decode(b)) == b` for every accepted `b`: a decoder
refuses anything non-canonical (trailing bytes, bad lengths, unknown versions or types), so one
entry has exactly one byte string and therefore one leaf hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import ClassVar

from privproc.errors import DecodeError, PrivprocError, TrailingDataError, UsageError
from privproc.wire import Reader

__all__ = [
    "ENTRY_VERSION",
    "EnclaveRelease",
    "IssuerTokenKey",
    "LogEntry",
    "OhttpKeyConfigSet",
    "decode_entry",
]

ENTRY_VERSION = 1
MAX_ENTRY = 65_535  # tlog-tiles entry bundles carry 16-bit lengths
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def _name(value: str, what: str) -> bytes:
    if not _PRINTABLE.fullmatch(value) or len(value) > 255:
        raise UsageError(f"the {what} is 1-255 printable ASCII characters without spaces")
    return value.encode("ascii")


def _digest(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise UsageError(f"the {what} is {size} bytes")


def _u8_opaque(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def _u16_opaque(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise UsageError("a field is longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def _read_name(r: Reader, what: str) -> str:
    raw = r.read(r.uint(1, f"{what} length"), what)
    try:
        text = raw.decode("ascii")
        _name(text, what)
    except (UnicodeDecodeError, UsageError):
        raise DecodeError(f"the {what} is not printable ASCII") from None
    return text


def _check_time(value: int, what: str) -> None:
    if not 0 <= value < 2**63:
        raise UsageError(f"{what} is a Unix time in seconds")


@dataclass(frozen=True)
class EnclaveRelease:
    """A build of the enclave that clients may accept: its measurement and what went into it."""

    TYPE: ClassVar[int] = 1
    NAME: ClassVar[str] = "enclave-release"
    measurement: bytes
    image_digest: bytes
    model_digest: bytes
    config_digest: bytes
    source_revision: str
    time: int

    def __post_init__(self) -> None:
        _digest(self.measurement, 48, "measurement")
        for field_name in ("image_digest", "model_digest", "config_digest"):
            _digest(getattr(self, field_name), 32, field_name.replace("_", " "))
        _name(self.source_revision, "source revision")
        _check_time(self.time, "the release time")

    def body(self) -> bytes:
        return b"".join(
            (
                self.measurement,
                self.image_digest,
                self.model_digest,
                self.config_digest,
                _u8_opaque(_name(self.source_revision, "source revision")),
                self.time.to_bytes(8, "big"),
            )
        )

    @classmethod
    def read(cls, r: Reader) -> EnclaveRelease:
        return cls(
            r.read(48, "measurement"),
            r.read(32, "image digest"),
            r.read(32, "model digest"),
            r.read(32, "config digest"),
            _read_name(r, "source revision"),
            r.uint(8, "time"),
        )


@dataclass(frozen=True)
class OhttpKeyConfigSet:
    """The key configurations a gateway advertises (its application/ohttp-keys document)."""

    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "ohttp-key-configs"
    gateway: str
    key_configs: bytes
    not_before: int

    def __post_init__(self) -> None:
        from privproc.ohttp.keys import decode_key_configs

        _name(self.gateway, "gateway name")
        _check_time(self.not_before, "not-before")
        if not self.key_configs:
            raise UsageError("a key-config set is not empty")
        try:
            decode_key_configs(self.key_configs)
        except PrivprocError as exc:
            raise UsageError(f"the key configurations do not decode: {exc}") from None

    def body(self) -> bytes:
        return b"".join(
            (
                _u8_opaque(_name(self.gateway, "gateway name")),
                _u16_opaque(self.key_configs),
                self.not_before.to_bytes(8, "big"),
            )
        )

    @classmethod
    def read(cls, r: Reader) -> OhttpKeyConfigSet:
        return cls(
            _read_name(r, "gateway name"),
            r.read(r.uint(2, "key configs length"), "key configs"),
            r.uint(8, "not-before"),
        )


@dataclass(frozen=True)
class IssuerTokenKey:
    """One Privacy Pass issuer key and its lifetime, as verifiers and clients must see it."""

    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "issuer-token-key"
    issuer: str
    token_type: int
    token_key: bytes
    not_before: int
    expires: int

    def __post_init__(self) -> None:
        from privproc.tokens.issuance import decode_token_key

        _name(self.issuer, "issuer name")
        if self.token_type != 2:
            raise UsageError("only token type 0x0002 keys are logged")
        try:
            decode_token_key(self.token_key)
        except PrivprocError as exc:
            raise UsageError(f"the token key is unusable: {exc}") from None
        _check_time(self.not_before, "not-before")
        _check_time(self.expires, "expires")
        if self.expires <= self.not_before:
            raise UsageError("a key expires after its not-before")

    def body(self) -> bytes:
        return b"".join(
            (
                _u8_opaque(_name(self.issuer, "issuer name")),
                self.token_type.to_bytes(2, "big"),
                _u16_opaque(self.token_key),
                self.not_before.to_bytes(8, "big"),
                self.expires.to_bytes(8, "big"),
            )
        )

    @classmethod
    def read(cls, r: Reader) -> IssuerTokenKey:
        return cls(
            _read_name(r, "issuer name"),
            r.uint(2, "token type"),
            r.read(r.uint(2, "token key length"), "token key"),
            r.uint(8, "not-before"),
            r.uint(8, "expires"),
        )


LogEntry = EnclaveRelease | OhttpKeyConfigSet | IssuerTokenKey
_TYPES: dict[int, type[EnclaveRelease] | type[OhttpKeyConfigSet] | type[IssuerTokenKey]] = {
    t.TYPE: t for t in (EnclaveRelease, OhttpKeyConfigSet, IssuerTokenKey)
}


def encode_entry(entry: LogEntry) -> bytes:
    data = bytes((ENTRY_VERSION, entry.TYPE)) + entry.body()
    if len(data) > MAX_ENTRY:
        raise UsageError(f"a log entry is at most {MAX_ENTRY} bytes")
    return data


def decode_entry(data: bytes) -> LogEntry:
    if len(data) > MAX_ENTRY:
        raise DecodeError(f"a log entry is at most {MAX_ENTRY} bytes")
    r = Reader(data)
    version = r.uint(1, "entry version")
    if version != ENTRY_VERSION:
        raise DecodeError(f"log entry version {version} is not supported")
    kind = _TYPES.get(r.uint(1, "entry type"))
    if kind is None:
        raise DecodeError("unknown log entry type")
    try:
        entry = kind.read(r)
    except UsageError as exc:
        raise DecodeError(str(exc)) from None
    if not r.at_end():
        raise TrailingDataError("bytes follow the log entry")
    return entry


def describe_entry(entry: LogEntry) -> str:
    """One JSON line for people: the entry's type and fields (hex for bytes)."""
    values = {f.name: getattr(entry, f.name) for f in fields(entry)}
    readable = {k: v.hex() if isinstance(v, bytes) else v for k, v in values.items()}
    return json.dumps({"type": entry.NAME, **readable}, sort_keys=False)
