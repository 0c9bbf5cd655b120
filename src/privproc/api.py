"""The contract the parties share about the enclave: what a device, a gateway and the enclave
must agree on, and nothing any one of them does.

- `ModelCard`: the model that answers, as the enclave names it on every answer and the device
  shows it (`from_dict` checks a card read from the wire).
- `MAX_PROMPT_CHARS`, `MAX_TOKENS`: the bounds of one request to the enclave's API.
- `parse_chat` and `ChatLine`: what a chat to summarise is (the device refuses a bad chat file
  before anything leaves it; the enclave parses the same way); `STYLE_NAMES`: the writing-help
  styles.
- `SessionPolicy`: how many attested sessions an enclave holds and how long each lives; the
  enclave enforces it (it is part of its measured configuration) and the gateway's router forgets
  a session on the same clock.

Rules: a contract imports only the base (`errors`); it holds shapes and bounds, no behaviour of a
party, no I/O. A change here is a change to every party that speaks it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from privproc.errors import DecodeError, UsageError

__all__ = [
    "DEMONSTRATION_NOTE",
    "DIGEST_SHAPE",
    "ENGINE_EMBEDDED",
    "ENGINE_REMOTE",
    "MAX_CHAT_LINES",
    "MAX_FIELD",
    "MAX_PROMPT_CHARS",
    "MAX_TEXT",
    "MAX_TOKENS",
    "STYLE_NAMES",
    "ChatLine",
    "ModelCard",
    "SessionPolicy",
    "parse_chat",
    "printable",
]

MAX_PROMPT_CHARS = 16_000  # characters of every message of one request together
MAX_TOKENS = 512  # tokens one answer may hold
MAX_CHAT_LINES = 200  # messages in one chat to summarise
MAX_TEXT = 4000  # characters of one chat message kept (the rest is cut)
STYLE_NAMES = ("rephrase", "professional", "funny", "supportive", "proofread")
ENGINE_EMBEDDED = "embedded llama.cpp"
ENGINE_REMOTE = "OpenAI-compatible engine"
DEMONSTRATION_NOTE = "a small demonstration model; expect simple, sometimes wrong answers"
MAX_FIELD = 200  # characters in any field of a card
DIGEST_SHAPE = re.compile(r"sha256:[0-9a-f]{64}")


def printable(value: object, what: str, *, empty: bool = True) -> str:
    """`value` if it is printable text of at most `MAX_FIELD` characters (and, unless `empty`,
    not blank); else `DecodeError` naming `what`."""
    if not isinstance(value, str) or len(value) > MAX_FIELD or not value.isprintable():
        raise DecodeError(f"a model card's {what} is printable text of at most {MAX_FIELD}")
    if not empty and not value.strip():
        raise DecodeError(f"a model card's {what} is not empty")
    return value


@dataclass(frozen=True)
class ModelCard:
    """The model that answers, as the user is told. `size` and `quantisation` are "" when not
    known (a remote engine's model declared by digest alone)."""

    name: str
    size: str  # "135M", "8B": the model's parameter count, as its file names it
    quantisation: str  # "Q4_1", "Q8_0", "F16", ...
    digest: str  # "sha256:<hex>" of the weights file
    engine: str  # ENGINE_EMBEDDED or ENGINE_REMOTE
    demonstration: bool  # the small embedded model (or its file, served by an engine)

    def label(self) -> str:
        """One plain line: 'SmolLM2-135M-Instruct, 135M parameters, Q4_1, sha256:1a2b3c4d...,
        on embedded llama.cpp: a small demonstration model; expect simple, sometimes wrong
        answers'."""
        parts = [self.name]
        if self.size:
            parts.append(f"{self.size} parameters")
        if self.quantisation:
            parts.append(self.quantisation)
        parts.append(self.digest[: len("sha256:") + 8] + "..." if self.digest else "no digest")
        text = ", ".join(parts) + f", on {self.engine}"
        return text + (f": {DEMONSTRATION_NOTE}" if self.demonstration else "")

    def to_dict(self) -> dict[str, Any]:
        """The card on the wire (with its label, for readers without this code)."""
        return {
            "name": self.name,
            "size": self.size,
            "quantisation": self.quantisation,
            "digest": self.digest,
            "engine": self.engine,
            "demonstration": self.demonstration,
            "label": self.label(),
        }

    @classmethod
    def from_dict(cls, doc: object) -> ModelCard:
        """A card read from an answer; its label is made anew from its fields."""
        if not isinstance(doc, dict):
            raise DecodeError("a model card is a JSON object")
        demonstration = doc.get("demonstration")
        if not isinstance(demonstration, bool):
            raise DecodeError("a model card says whether it is a demonstration model")
        digest = printable(doc.get("digest"), "digest")
        if digest and not DIGEST_SHAPE.fullmatch(digest):
            raise DecodeError("a model card's digest is sha256: and 64 hex digits")
        return cls(
            name=printable(doc.get("name"), "name", empty=False),
            size=printable(doc.get("size"), "size"),
            quantisation=printable(doc.get("quantisation"), "quantisation"),
            digest=digest,
            engine=printable(doc.get("engine"), "engine", empty=False),
            demonstration=demonstration,
        )


@dataclass(frozen=True)
class SessionPolicy:
    """How many sessions an enclave holds and how long each may live (docs/THREAT_MODEL.md works
    out what these defaults cost a squatter)."""

    max_sessions: int = 256
    idle_timeout: float = 300.0  # seconds without application data: the session is forgotten
    lifetime: float = 600.0  # seconds from its start, however busy
    max_requests: int = 50  # requests one session may carry
    evictable_after: float = 30.0  # seconds idle: it gives way to a new session when full

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_requests < 1:
            raise UsageError("a session policy allows at least one session and one request")
        if not 0 < self.evictable_after <= self.idle_timeout:
            raise UsageError("evictable_after is positive and at most idle_timeout")
        if self.lifetime <= 0:
            raise UsageError("a session's lifetime is positive")

    def config(self) -> dict[str, float | int]:
        """The policy as the measured configuration records it."""
        return asdict(self)


@dataclass(frozen=True)
class ChatLine:
    """One message of a chat export."""

    sender: str
    time: str
    text: str


def parse_chat(doc: object) -> list[ChatLine]:
    """A chat export: a JSON list of objects with `sender`, `time` and `text` strings."""
    if not isinstance(doc, list) or not doc:
        raise DecodeError("a chat is a non-empty list of messages")
    if len(doc) > MAX_CHAT_LINES:
        raise DecodeError(f"a chat has at most {MAX_CHAT_LINES} messages")
    lines = []
    for item in doc:
        if not isinstance(item, dict):
            raise DecodeError("each chat message is an object")
        values = [item.get(k) for k in ("sender", "time", "text")]
        if not all(isinstance(v, str) for v in values):
            raise DecodeError("each chat message has string sender, time and text")
        sender, time, text = (str(v) for v in values)
        lines.append(ChatLine(sender[:80], time[:40], text[:MAX_TEXT]))
    return lines
