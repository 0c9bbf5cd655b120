"""C2SP signed-note with Ed25519 signatures, and C2SP tlog-cosignature `cosignature/v1` lines.

A signed note is a UTF-8 text ending in a newline, a blank line, then one or more lines
`— <key name> base64(key ID || signature)`. Keys:
- verifier key (vkey): `<name>+<hex key ID>+base64(type || public key)`;
- signer key (the golang.org/x/mod/sumdb/note convention):
  `PRIVATE+KEY+<name>+<hex key ID>+base64(type || Ed25519 seed)`;
- key ID = SHA-256(name || 0x0A || type || public key)[:4], big-endian uint32.
Types: 0x01 Ed25519 over the note text (logs); 0x04 Ed25519 cosignature/v1 (witnesses), whose
signature is `timestamp(8, big-endian) || Ed25519(message)` with message
`"cosignature/v1\\ntime <timestamp>\\n" || note text`.

Rules of this module:
- Pure functions; base64 must be canonical, names non-empty without spaces or `+`, notes valid
  UTF-8 without control characters other than newline, at most `MAX_SIGNATURES` lines.
- Opening a note follows signed-note exactly: signatures from unknown (name, ID) pairs are ignored;
  a known key whose signature fails rejects the whole note; no verified signature rejects it too.
- Malformed input is a `NoteError` (a `DecodeError`); a signature problem is a
  `NoteVerificationError` (a `CryptoError`). Messages never carry key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privproc.errors import CryptoError, DecodeError, UsageError

__all__ = [
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "Cosignature",
    "Note",
    "NoteError",
    "NoteVerificationError",
    "OpenedNote",
    "Signature",
    "Signer",
    "Verifier",
    "b64_decode",
    "b64_encode",
    "key_id",
    "open_note",
    "parse_note",
]

_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
MAX_NOTE_SIZE = 1 << 20
_DASH = "\u2014 "
_COSIGNATURE_HEADER = b"cosignature/v1\n"


class NoteError(DecodeError):
    """A note, key or signature line is malformed."""


class NoteVerificationError(CryptoError):
    """A signature by a known key failed, or no known key signed the note."""


def b64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64_decode(text: str, what: str) -> bytes:
    """Standard base64 with padding, canonical only (signed-note v1.1, tlog-checkpoint)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"the {what} is not base64") from None
    if b64_encode(data) != text:
        raise NoteError(f"the {what} is not canonical base64")
    return data


def _check_name(name: str) -> str:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise NoteError("a key name is non-empty, without spaces or '+'")
    if any(ord(ch) < 0x20 for ch in name):
        raise NoteError("a key name has no control characters")
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes((sig_type,)) + public_key)
    return int.from_bytes(digest.digest()[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _cosigned_message(text: bytes, timestamp: int) -> bytes:
    return _COSIGNATURE_HEADER + b"time " + str(timestamp).encode("ascii") + b"\n" + text


@dataclass(frozen=True)
class Signature:
    """One signature line: who (name, key ID) and the signature bytes after the key ID."""

    name: str
    key_id: int
    signature: bytes = field(repr=False)

    def line(self) -> str:
        payload = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_DASH}{self.name} {b64_encode(payload)}\n"


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature/v1: which witness and the time it vouched for."""

    verifier: Verifier
    timestamp: int


@dataclass(frozen=True)
class Verifier:
    """A public key that can check one type of signature: Ed25519 (0x01) or cosignature/v1."""

    name: str
    sig_type: int
    public_key: bytes  # 32 raw Ed25519 bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise NoteError("only Ed25519 (0x01) and cosignature/v1 (0x04) keys are supported")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError:
            raise NoteError("the Ed25519 public key is not a valid point") from None

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.sig_type, self.public_key)

    def encode(self) -> str:
        """The vkey string."""
        material = b64_encode(bytes((self.sig_type,)) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{material}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        name, sep1, rest = vkey.partition("+")
        hex_id, sep2, material = rest.partition("+")
        # Exactly eight lowercase hex digits: int() alone would take " 3124363" or "0_123456".
        if not (sep1 and sep2) or not _KEY_ID_HEX.fullmatch(hex_id):
            raise NoteError("a verifier key is name+8 lowercase hex digits+base64 key")
        claimed = int(hex_id, 16)
        raw = b64_decode(material, "verifier key")
        if not raw:
            raise NoteError("a verifier key has no key material")
        verifier = cls(name, raw[0], raw[1:])
        if verifier.key_id != claimed:
            raise NoteError("a verifier key's ID does not match its name and key")
        return verifier

    def check(self, text: bytes, signature: bytes) -> int | None:
        """Verify one signature over the note text: for 0x01 returns 0, for a cosignature its
        timestamp; None if it does not verify."""
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        if self.sig_type == SIG_ED25519:
            message, sig, timestamp = text, signature, 0
        else:
            if len(signature) != 8 + 64:
                return None
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp >= 2**63:
                return None
            message, sig = _cosigned_message(text, timestamp), signature[8:]
        if len(sig) != 64:
            return None
        try:
            key.verify(sig, message)
        except InvalidSignature:
            return None
        return timestamp


@dataclass(frozen=True)
class Signer:
    """An Ed25519 private key with a name: signs notes (0x01) or cosigns checkpoints (0x04)."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)
    sig_type: int = SIG_ED25519

    @classmethod
    def generate(cls, name: str, sig_type: int = SIG_ED25519) -> Signer:
        _check_name(name)
        return cls(name, Ed25519PrivateKey.generate(), sig_type)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.sig_type, _raw_public(self.private_key.public_key()))

    def encode(self) -> str:
        """The signer key string (secret: store it 0600)."""
        from cryptography.hazmat.primitives import serialization

        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        material = b64_encode(bytes((self.sig_type,)) + seed)
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id:08x}+{material}"

    @classmethod
    def parse(cls, skey: str) -> Signer:
        if not skey.startswith("PRIVATE+KEY+"):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        name, sep1, rest = skey.removeprefix("PRIVATE+KEY+").partition("+")
        hex_id, sep2, material = rest.partition("+")
        if not (sep1 and sep2) or len(hex_id) != 8:
            raise NoteError("a signer key is PRIVATE+KEY+name+hex key ID+base64 key")
        raw = b64_decode(material, "signer key")
        if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise NoteError("a signer key holds a type byte and a 32-byte Ed25519 seed")
        signer = cls(_check_name(name), Ed25519PrivateKey.from_private_bytes(raw[1:]), raw[0])
        if f"{signer.verifier.key_id:08x}" != hex_id:
            raise NoteError("a signer key's ID does not match its name and key")
        return signer

    def sign(self, text: str, timestamp: int | None = None) -> Signature:
        """A signature line over `text`; cosigners need the cosignature's `timestamp`."""
        data = _note_text(text)
        if self.sig_type == SIG_ED25519:
            if timestamp is not None:
                raise UsageError("log signatures (0x01) carry no timestamp")
            signature = self.private_key.sign(data)
        else:
            if timestamp is None or not 0 < timestamp < 2**63:
                raise UsageError("a cosignature needs a positive timestamp")
            message = _cosigned_message(data, timestamp)
            signature = timestamp.to_bytes(8, "big") + self.private_key.sign(message)
        return Signature(self.name, self.verifier.key_id, signature)


def _note_text(text: str) -> bytes:
    if not text.endswith("\n"):
        raise UsageError("a note text ends with a newline")
    data = text.encode("utf-8")
    _check_characters(text)
    return data


def _check_characters(text: str) -> None:
    for ch in text:
        if ord(ch) < 0x20 and ch != "\n":
            raise NoteError("a note holds no control characters other than newline")


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) signed note."""

    text: str
    signatures: tuple[Signature, ...]

    def encode(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")

    def with_signatures(self, extra: Iterable[Signature]) -> Note:
        """The note with more signature lines, skipping any (name, ID) it already carries."""
        seen = {(s.name, s.key_id) for s in self.signatures}
        added = [s for s in extra if (s.name, s.key_id) not in seen]
        return Note(self.text, self.signatures + tuple(added))


def parse_note(data: bytes | str) -> Note:
    """Split a signed note into its text and signature lines; checks structure only."""
    if len(data) > MAX_NOTE_SIZE:
        raise NoteError(f"a signed note is at most {MAX_NOTE_SIZE} bytes")
    if isinstance(data, bytes):
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a signed note is UTF-8") from None
    else:
        message = data
    _check_characters(message)
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteError("a signed note has a blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("a signed note ends with at least one signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a signed note carries at most {MAX_SIGNATURES} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_DASH):
        raise NoteError("a signature line starts with an em dash and a space")
    name, sep, payload = line[len(_DASH) :].partition(" ")
    if not sep:
        raise NoteError("a signature line is '— name signature'")
    raw = b64_decode(payload, "signature")
    if len(raw) < 5:
        raise NoteError("a signature holds a key ID and signature bytes")
    return Signature(_check_name(name), int.from_bytes(raw[:4], "big"), raw[4:])


@dataclass(frozen=True)
class OpenedNote:
    """A note with at least one verified signature."""

    note: Note
    verified: tuple[Verifier, ...]
    cosignatures: tuple[Cosignature, ...]
    unverified: tuple[Signature, ...]

    @property
    def text(self) -> str:
        return self.note.text


def open_note(data: bytes | str | Note, verifiers: Sequence[Verifier]) -> OpenedNote:
    """Parse and verify a signed note against the verifiers the caller trusts."""
    note = data if isinstance(data, Note) else parse_note(data)
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        if (v.name, v.key_id) in known and known[(v.name, v.key_id)] != v:
            raise UsageError(f"two different verifiers share the key {v.name}+{v.key_id:08x}")
        known[(v.name, v.key_id)] = v
    text = note.text.encode("utf-8")
    verified: list[Verifier] = []
    cosignatures: list[Cosignature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    for sig in note.signatures:
        ident = (sig.name, sig.key_id)
        verifier = known.get(ident)
        if verifier is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if ident in seen:
            continue  # a duplicate line of a key already checked
        seen.add(ident)
        timestamp = verifier.check(text, sig.signature)
        if timestamp is None:
            raise NoteVerificationError(
                f"the signature by {verifier.name}+{verifier.key_id:08x} does not verify"
            )
        verified.append(verifier)
        if verifier.sig_type == SIG_COSIGNATURE_V1:
            cosignatures.append(Cosignature(verifier, timestamp))
    if not verified:
        raise NoteVerificationError("the note has no signature from a known key")
    return OpenedNote(note, tuple(verified), tuple(cosignatures), tuple(unverified))
