"""One typed error hierarchy for the whole of privproc.

Rules:
- Every parser and every cryptographic check raises a subclass of `PrivprocError`, never a bare
  `ValueError`, `KeyError` or `IndexError`.
- Messages say what failed and, where it helps, what to do; they never contain key material,
  plaintext, tokens or client addresses (DESIGN.md §6). A message may name a size or an algorithm
  identifier, never the bytes themselves.
"""

from __future__ import annotations

import re


class PrivprocError(Exception):
    """Base class of every error privproc raises on purpose.

    `retryable` is true where the same request may well succeed if sent again shortly: the
    failure was a party restarting or a session lost, and says nothing against the request;
    `retry_after`, when the party said how long to wait first."""

    retryable: bool = False
    retry_after: float | None = None  # seconds, when the party that refused said when to retry


# --- Malformed or out-of-bounds input ---------------------------------------------------------


class DecodeError(PrivprocError):
    """Untrusted bytes do not follow the wire format."""


class TruncatedError(DecodeError):
    """The input ended before the structure it announced was complete."""


class TooLargeError(DecodeError):
    """The input, or a length it announces, exceeds a configured bound."""


class TrailingDataError(DecodeError):
    """Bytes follow a structure that must end the input."""


# --- Negotiation -------------------------------------------------------------------------------


class UnsupportedError(PrivprocError):
    """An algorithm, suite or format version that this implementation does not offer."""


class UnknownKeyError(PrivprocError):
    """A message names a key identifier that no live key configuration has."""


# --- Cryptography ------------------------------------------------------------------------------


class CryptoError(PrivprocError):
    """A cryptographic operation failed."""


class OpenError(CryptoError):
    """Authenticated decryption failed: wrong key, tampered or truncated ciphertext."""


class InvalidKeyError(CryptoError):
    """A public or private key is malformed or not a valid group element."""


class DeriveKeyPairError(CryptoError):
    """Deterministic key derivation did not find a valid key (negligible probability)."""


class MessageLimitReachedError(CryptoError):
    """An HPKE context has used every nonce its AEAD allows."""


class UsageError(PrivprocError):
    """The caller combined arguments in a way the specification forbids."""


# --- Talking to other parties ------------------------------------------------------------------


class TransportError(PrivprocError):
    """A party could not be reached, or answered outside the protocol."""


# A party restarting or overloaded, or a relay that cannot reach the party behind it.
RETRYABLE_STATUSES = frozenset({502, 503, 504})


class PeerRejectedError(TransportError):
    """A party answered with an HTTP error status; `status` holds it. It is `retryable` when the
    status says the party is unavailable for now (502, 503, 504), unless the caller knows better;
    `retry_after` is the party's Retry-After, in seconds, when it gave one."""

    def __init__(
        self,
        message: str,
        status: int,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = status in RETRYABLE_STATUSES if retryable is None else retryable
        self.retry_after = retry_after


class StreamTruncatedError(TransportError):
    """A streamed answer ended before its authenticated end: what arrived is not the whole
    answer (a relay, the gateway or the network cut it). Send the request again."""

    retryable = True


# --- What the model made of a task -------------------------------------------------------------


class UnusableAnswerError(PrivprocError):
    """The model's answer to a task was empty, or a copy of its input, and so was its answer to a
    second phrasing: nothing is passed off as a summary or a rewrite. Sending the same request
    again gives the same answer (the tasks decode greedily). The enclave's API answers it as a
    422 whose error type is `API_TYPE`; the client raises it again from that."""

    API_TYPE = "unusable_answer"


MAX_RETRY_AFTER = 60.0  # a Retry-After larger than this is taken as this
_DELTA_SECONDS = re.compile(r"[0-9]{1,9}")


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After in delta-seconds (RFC 9110 §10.2.3: ASCII digits only), bounded; None if
    absent or not that (str.isdigit would take "²", which int() refuses)."""
    if value is None or not _DELTA_SECONDS.fullmatch(value.strip()):
        return None
    return min(float(value.strip()), MAX_RETRY_AFTER)
