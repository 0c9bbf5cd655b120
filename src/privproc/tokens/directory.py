"""The issuer's published documents: the RFC 9578 §4 directory and privproc's verification key set.

- The **issuer directory** (`application/private-token-issuer-directory`, at
  `/.well-known/private-token-issuer-directory`) is what clients need to obtain tokens: the request
  URI and the keys by preference, each with an optional `not-before`.
- The **key set** (`application/json`, at `/v1/token-keys`) is what verifiers need: every key that
  still verifies, with the time its tokens stop being accepted (`expires`). It is privproc's own
  document (RFC 9578 leaves verification key distribution open); the transparency log records it.

Rules: pure encode/decode, bounded input, unknown fields and unknown token types ignored (as a
directory consumer must, to stay compatible), malformed documents raise `DecodeError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from privproc.errors import DecodeError, PrivprocError
from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, b64url_decode, b64url_encode
from privproc.tokens.issuance import decode_token_key
from privproc.wire import load_json

__all__ = [
    "KEY_SET_PATH",
    "MAX_DOCUMENT",
    "DirectoryKey",
    "IssuerDirectory",
    "KeySet",
    "VerificationKey",
]

KEY_SET_PATH = "/v1/token-keys"
MAX_DOCUMENT = 64 * 1024
_MAX_KEYS = 32


def _load(data: bytes, what: str) -> dict[str, Any]:
    doc = load_json(data, f"the {what}", MAX_DOCUMENT)
    if not isinstance(doc, dict):
        raise DecodeError(f"the {what} is not a JSON object")
    return doc


def _string(doc: dict[str, Any], name: str, what: str, max_length: int) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise DecodeError(f"the {what} has no {name}")
    return value


def _key_entries(doc: dict[str, Any], what: str) -> list[dict[str, Any]]:
    entries = doc.get("token-keys")
    if not isinstance(entries, list) or len(entries) > _MAX_KEYS:
        raise DecodeError(f"the {what} has no usable token-keys list")
    usable = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise DecodeError(f"a token-keys entry of the {what} is not an object")
        if entry.get("token-type") != TOKEN_TYPE_BLIND_RSA:
            continue  # another token type: not ours to judge
        usable.append(entry)
    return usable


def _timestamp(entry: dict[str, Any], name: str) -> int:
    value = entry.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**40:
        raise DecodeError(f"{name} is a Unix time in seconds")
    return value


def _token_key(entry: dict[str, Any]) -> bytes:
    text = entry.get("token-key")
    if not isinstance(text, str):
        raise DecodeError("a token key entry has no token-key string")
    spki = b64url_decode(text, "token-key")
    try:
        decode_token_key(spki)
    except PrivprocError as exc:
        raise DecodeError(f"a published token key is unusable: {exc}") from None
    return spki


@dataclass(frozen=True)
class DirectoryKey:
    token_key: bytes  # the RFC 9578 §6.5 SPKI
    not_before: int | None = None


@dataclass(frozen=True)
class IssuerDirectory:
    request_uri: str
    keys: tuple[DirectoryKey, ...]

    def encode(self) -> bytes:
        entries = []
        for key in self.keys:
            entry: dict[str, Any] = {
                "token-type": TOKEN_TYPE_BLIND_RSA,
                "token-key": b64url_encode(key.token_key),
            }
            if key.not_before is not None:
                entry["not-before"] = key.not_before
            entries.append(entry)
        doc = {"issuer-request-uri": self.request_uri, "token-keys": entries}
        return json.dumps(doc, indent=2).encode()

    @classmethod
    def decode(cls, data: bytes) -> IssuerDirectory:
        doc = _load(data, "issuer directory")
        uri = _string(doc, "issuer-request-uri", "issuer directory", 2048)
        keys = tuple(
            DirectoryKey(_token_key(e), _timestamp(e, "not-before") if "not-before" in e else None)
            for e in _key_entries(doc, "issuer directory")
        )
        return cls(uri, keys)

    def preferred(self, now: float) -> DirectoryKey:
        """RFC 9578 §4: the first key without a not-before, or whose not-before has passed."""
        for key in self.keys:
            if key.not_before is None or key.not_before <= now:
                return key
        raise DecodeError("the issuer directory lists no type 0x0002 key usable now")


@dataclass(frozen=True)
class VerificationKey:
    token_key: bytes
    not_before: int
    expires: int

    def valid_at(self, now: float) -> bool:
        return now < self.expires


@dataclass(frozen=True)
class KeySet:
    issuer_name: str
    keys: tuple[VerificationKey, ...]

    def encode(self) -> bytes:
        doc = {
            "issuer-name": self.issuer_name,
            "token-keys": [
                {
                    "token-type": TOKEN_TYPE_BLIND_RSA,
                    "token-key": b64url_encode(k.token_key),
                    "not-before": k.not_before,
                    "expires": k.expires,
                }
                for k in self.keys
            ],
        }
        return json.dumps(doc, indent=2).encode()

    @classmethod
    def decode(cls, data: bytes) -> KeySet:
        doc = _load(data, "token key set")
        name = _string(doc, "issuer-name", "token key set", 255)
        keys = []
        for entry in _key_entries(doc, "token key set"):
            keys.append(
                VerificationKey(
                    _token_key(entry), _timestamp(entry, "not-before"), _timestamp(entry, "expires")
                )
            )
        return cls(name, tuple(keys))
