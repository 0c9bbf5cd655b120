"""OHTTP key configurations (RFC 9458 §3) and the gateway's ring of live keys.

Rules of this module:
- `KeyConfig` is the public half: it encodes to and decodes from the RFC 9458 §3.1 format, and a
  list of them to and from `application/ohttp-keys` (§3.2). A list may name KEMs or symmetric
  suites that privproc does not know: those are skipped, so that newer gateways stay usable.
- `GatewayKey` adds the private key; `KeyRing` holds every key that may still decapsulate
  (rotation keeps old ids live while new ones are advertised). Private keys are never encoded to
  bytes by this module and never appear in a repr.
- Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from privproc import hpke
from privproc.errors import (
    DecodeError,
    InvalidKeyError,
    PrivprocError,
    TrailingDataError,
    UnsupportedError,
    UsageError,
)
from privproc.wire import Reader

__all__ = [
    "DEFAULT_CONFIG_SPECS",
    "GatewayKey",
    "KeyConfig",
    "KeyFileError",
    "KeyRing",
    "SymmetricSuite",
    "decode_key_configs",
    "encode_key_configs",
]

MEDIA_TYPE_KEYS = "application/ohttp-keys"
MAX_KEYS_DOCUMENT = 64 * 1024
MAX_SUITES_PER_CONFIG = 64
KEY_FILE_FORMAT = "privproc-ohttp-keys"
KEY_FILE_VERSION = 1
MAX_KEY_FILE = 1 << 20


class KeyFileError(DecodeError):
    """A gateway key file that is not a well-formed, consistent key ring."""


@dataclass(frozen=True)
class SymmetricSuite:
    kdf: hpke.Kdf
    aead: hpke.Aead

    def __repr__(self) -> str:
        return f"<SymmetricSuite {self.kdf.name}, {self.aead.name}>"


@dataclass(frozen=True, eq=False)
class KeyConfig:
    """One key configuration: a key id, a KEM public key and the (KDF, AEAD) pairs it accepts."""

    key_id: int
    public_key: hpke.PublicKey
    suites: tuple[SymmetricSuite, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 255:
            raise UsageError("key ids are one byte")
        if not self.suites:
            raise UsageError("a key configuration needs at least one symmetric suite")
        for s in self.suites:
            if s.aead.export_only:
                raise UsageError("OHTTP cannot use the export-only AEAD")

    @property
    def kem(self) -> hpke.Kem:
        return self.public_key.kem

    def cipher_suite(self, suite: SymmetricSuite | None = None) -> hpke.CipherSuite:
        chosen = suite or self.suites[0]
        if chosen not in self.suites:
            raise UnsupportedError("that symmetric suite is not offered by this key configuration")
        return hpke.CipherSuite(self.kem, chosen.kdf, chosen.aead)

    def encode(self) -> bytes:
        suites = b"".join(
            s.kdf.id.to_bytes(2, "big") + s.aead.id.to_bytes(2, "big") for s in self.suites
        )
        return (
            bytes((self.key_id,))
            + self.kem.id.to_bytes(2, "big")
            + self.public_key.to_bytes()
            + len(suites).to_bytes(2, "big")
            + suites
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyConfig) and other.encode() == self.encode()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        return f"<KeyConfig id={self.key_id} {self.kem.name} suites={list(self.suites)}>"

    @classmethod
    def decode(cls, data: bytes | memoryview, *, skip_unknown_suites: bool = True) -> KeyConfig:
        """Decode exactly one configuration; `UnsupportedError` if its KEM is unknown."""
        r = Reader(data)
        config = _read_config(r, skip_unknown_suites)
        if not r.at_end():
            raise TrailingDataError("bytes follow the key configuration")
        return config


def _read_config(r: Reader, skip_unknown_suites: bool) -> KeyConfig:
    key_id = r.uint(1, "key id")
    kem = hpke.kem_by_id(r.uint(2, "kem id"))  # UnsupportedError for an unknown KEM
    try:
        public_key = kem.deserialize_public_key(r.read(kem.n_pk, "public key"))
    except InvalidKeyError as exc:
        raise DecodeError(f"key configuration {key_id}: {exc}") from None
    suites_len = r.uint(2, "cipher suites length")
    if suites_len == 0 or suites_len % 4:
        raise DecodeError("cipher suites length must be a positive multiple of 4")
    if suites_len // 4 > MAX_SUITES_PER_CONFIG:
        raise DecodeError("too many cipher suites in one key configuration")
    suites: list[SymmetricSuite] = []
    raw = Reader(r.read(suites_len, "cipher suites"))
    while not raw.at_end():
        kdf_id, aead_id = raw.uint(2), raw.uint(2)
        try:
            suite = SymmetricSuite(hpke.kdf_by_id(kdf_id), hpke.aead_by_id(aead_id))
        except UnsupportedError:
            if skip_unknown_suites:
                continue
            raise
        if suite.aead.export_only:
            continue  # cannot carry OHTTP messages
        if suite not in suites:
            suites.append(suite)
    if not suites:
        raise UnsupportedError(f"key configuration {key_id} offers no suite privproc supports")
    return KeyConfig(key_id, public_key, tuple(suites))


def encode_key_configs(configs: Iterable[KeyConfig]) -> bytes:
    """The `application/ohttp-keys` format: each configuration behind a two-byte length."""
    out = bytearray()
    for c in configs:
        raw = c.encode()
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def decode_key_configs(data: bytes | memoryview) -> list[KeyConfig]:
    """Decode `application/ohttp-keys`, skipping configurations privproc cannot use.

    Raises `DecodeError` for a malformed document and `UnsupportedError` if nothing usable is left.
    """
    if len(data) > MAX_KEYS_DOCUMENT:
        raise DecodeError(f"key configuration list exceeds {MAX_KEYS_DOCUMENT} bytes")
    r = Reader(data)
    out: list[KeyConfig] = []
    while not r.at_end():
        length = r.uint(2, "key configuration length")
        body = Reader(r.read(length, "key configuration"))
        try:
            config = _read_config(body, skip_unknown_suites=True)
        except UnsupportedError:
            continue  # an unknown KEM, or no known suite: not for us
        if not body.at_end():
            raise TrailingDataError("bytes follow a key configuration inside its length")
        out.append(config)
    if not out:
        raise UnsupportedError("the gateway offers no key configuration that privproc supports")
    return out


class GatewayKey:
    """A key configuration together with its private key (gateway side only)."""

    __slots__ = ("config", "private_key")

    def __init__(self, config: KeyConfig, private_key: hpke.PrivateKey) -> None:
        if private_key.public_key != config.public_key:
            raise InvalidKeyError("the private key does not match the key configuration")
        self.config = config
        self.private_key = private_key

    @classmethod
    def generate(
        cls, key_id: int, kem: hpke.Kem, suites: Sequence[tuple[hpke.Kdf, hpke.Aead]]
    ) -> GatewayKey:
        sk = kem.generate_key_pair()
        config = KeyConfig(key_id, sk.public_key, tuple(SymmetricSuite(k, a) for k, a in suites))
        return cls(config, sk)

    def __repr__(self) -> str:
        return f"<GatewayKey {self.config!r}>"


# The configurations a fresh gateway offers, in order. The first offers exactly X25519 /
# HKDF-SHA256 / AES-128-GCM, the suite every RFC 9458 client knows; the others add a
# post-quantum hybrid (X-Wing), pure ML-KEM-768 and P-256.
DEFAULT_CONFIG_SPECS: tuple[tuple[hpke.Kem, tuple[tuple[hpke.Kdf, hpke.Aead], ...]], ...] = (
    (hpke.KEM_X25519_HKDF_SHA256, ((hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM),)),
    (
        hpke.KEM_XWING,
        (
            (hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_256_GCM),
            (hpke.KDF_HKDF_SHA256, hpke.AEAD_CHACHA20_POLY1305),
        ),
    ),
    (hpke.KEM_MLKEM768, ((hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_256_GCM),)),
    (
        hpke.KEM_P256_HKDF_SHA256,
        (
            (hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM),
            (hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_256_GCM),
        ),
    ),
)


class KeyRing:
    """Every key a gateway can decapsulate with, and the subset it currently advertises.

    Rotation: `rotate()` generates a fresh set under unused key ids and advertises it; the previous
    set stays live (requests encapsulated to it still work) until `retire()` removes it.
    """

    def __init__(self, keys: Iterable[GatewayKey] = ()) -> None:
        self._live: dict[int, GatewayKey] = {}
        self._advertised: list[int] = []
        for key in keys:
            self.add(key)

    @classmethod
    def generate(
        cls,
        specs: Sequence[
            tuple[hpke.Kem, Sequence[tuple[hpke.Kdf, hpke.Aead]]]
        ] = DEFAULT_CONFIG_SPECS,
    ) -> KeyRing:
        ring = cls()
        ring.rotate(specs)
        return ring

    def _unused_key_id(self) -> int:
        free = [i for i in range(256) if i not in self._live]
        if not free:
            raise UnsupportedError("all 256 key ids are live; retire some before rotating")
        return secrets.choice(free)

    def add(self, key: GatewayKey, *, advertise: bool = True) -> None:
        key_id = key.config.key_id
        if key_id in self._live:
            raise UsageError(f"key id {key_id} is already live")
        self._live[key_id] = key
        if advertise:
            self._advertised.append(key_id)

    def rotate(
        self,
        specs: Sequence[
            tuple[hpke.Kem, Sequence[tuple[hpke.Kdf, hpke.Aead]]]
        ] = DEFAULT_CONFIG_SPECS,
    ) -> list[int]:
        """Generate and advertise a fresh key set; the old set stays live. Returns the old ids."""
        previous = list(self._advertised)
        self._advertised = []
        for kem, suites in specs:
            self.add(GatewayKey.generate(self._unused_key_id(), kem, suites))
        return previous

    def retire(self, key_ids: Iterable[int]) -> None:
        for key_id in key_ids:
            self._live.pop(key_id, None)
            if key_id in self._advertised:
                self._advertised.remove(key_id)

    def get(self, key_id: int) -> GatewayKey | None:
        return self._live.get(key_id)

    @property
    def live_ids(self) -> list[int]:
        return sorted(self._live)

    @property
    def advertised(self) -> list[KeyConfig]:
        return [self._live[i].config for i in self._advertised]

    def keys_document(self) -> bytes:
        """The `application/ohttp-keys` body for the advertised configurations."""
        return encode_key_configs(self.advertised)

    # --- The gateway's own key file -----------------------------------------------------------

    def to_file_bytes(self) -> bytes:
        """Every live key, private halves included, as a versioned JSON document: advertised keys
        first, in their advertised order, then the keys kept live for rotation. For the gateway's
        own state directory only (write it 0600)."""
        order = self._advertised + [i for i in self._live if i not in self._advertised]
        keys = [
            {
                "config": base64.b64encode(self._live[i].config.encode()).decode(),
                "private_key": base64.b64encode(self._live[i].private_key.to_bytes()).decode(),
                "advertised": i in self._advertised,
            }
            for i in order
        ]
        doc = {"format": KEY_FILE_FORMAT, "version": KEY_FILE_VERSION, "keys": keys}
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def from_file_bytes(cls, data: bytes) -> KeyRing:
        """The key ring `to_file_bytes` wrote; `KeyFileError` for anything else (not JSON, another
        format or version, a malformed or unsupported configuration, a private key that does not
        match its configuration, a repeated key id, nothing advertised)."""
        if len(data) > MAX_KEY_FILE:
            raise KeyFileError(f"the key file exceeds {MAX_KEY_FILE} bytes")
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raise KeyFileError("the key file is not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
            raise KeyFileError(f"the key file is not a {KEY_FILE_FORMAT} document")
        if doc.get("version") != KEY_FILE_VERSION:
            raise KeyFileError(f"key file version {doc.get('version')!r} is not supported")
        entries = doc.get("keys")
        if not isinstance(entries, list) or not entries:
            raise KeyFileError("the key file holds no keys")
        ring = cls()
        for n, entry in enumerate(entries):
            try:
                if not isinstance(entry, dict) or not isinstance(entry.get("advertised"), bool):
                    raise KeyFileError("not an object with config, private_key, advertised")
                config = KeyConfig.decode(
                    base64.b64decode(entry["config"], validate=True), skip_unknown_suites=False
                )
                raw = base64.b64decode(entry["private_key"], validate=True)
                key = GatewayKey(config, config.kem.deserialize_private_key(raw))
                ring.add(key, advertise=entry["advertised"])
            except KeyFileError as exc:
                raise KeyFileError(f"key file entry {n}: {exc}") from None
            except (KeyError, TypeError, binascii.Error) as exc:
                raise KeyFileError(f"key file entry {n} is malformed ({exc!r})") from None
            except (PrivprocError, ValueError) as exc:
                raise KeyFileError(f"key file entry {n}: {exc}") from None
        if not ring.advertised:
            raise KeyFileError("the key file advertises no key")
        return ring
