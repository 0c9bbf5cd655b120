"""The user's controls, kept on the device: which AI features are on, which chats are closed to
AI (Advanced Chat Privacy), and the Private Processing report of every use.

- `STATE/settings.json`: `{"features": {"summaries": bool, "writing-help": bool, "chat": bool},
  "private_chats": [chat ids]}`. Every feature is off until the user turns it on.
- `STATE/report.jsonl`: one JSON object per use (`ReportEntry`): when (to the minute), the
  feature, the model the enclave named, the enclave release that served it (measurement, log
  index, the checkpoint that proved it, source revision), the relay, the gateway's OHTTP key id,
  the epoch of the token key that paid for the session, whether the use opened a new attested
  session, and the outcome.

Rules: a refused feature or a private chat stops the request before anything leaves the device
(`AIDisabledError`, saying how to turn it on); both files are private (0600). The settings are
rewritten atomically; the report is appended to, one whole line per use under a lock, so that
clients sharing a device's state never lose each other's entries (a line torn by a crash is
skipped when read, and the next line starts on its own). The report never holds content, a
token, a key or an address of the device; its times are rounded down to the minute, because a
time to the second could be matched against a gateway's or a relay's logs to pick out this
device's requests. Every field is bounded; lines written before a field existed still read (the
field is then unknown: empty or None; such a line has no `version`, and reads as version 1).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privproc.errors import DecodeError, PrivprocError, UsageError
from privproc.storage import write_atomically
from privproc.wire import load_json

__all__ = ["FEATURES", "AIDisabledError", "ReportEntry", "Settings", "UsageReport"]

FEATURES = ("summaries", "writing-help", "chat")
MAX_CHAT_ID = 128
MAX_REPORT_LINE = 8192  # above any entry (its text fields are bounded, escaped twice at most)


class AIDisabledError(PrivprocError):
    """The user has not enabled this AI feature, or closed this chat to AI."""


@dataclass
class Settings:
    path: Path
    features: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(FEATURES, False))
    private_chats: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, state_dir: Path) -> Settings:
        path = state_dir / "settings.json"
        corrupt = f"{path} is corrupt; delete it to start over (all features off)"
        try:
            doc = load_json(path.read_bytes(), str(path))
        except FileNotFoundError:
            return cls(path)
        except DecodeError:
            raise DecodeError(corrupt) from None
        features = doc.get("features", {}) if isinstance(doc, dict) else {}
        chats = doc.get("private_chats", []) if isinstance(doc, dict) else []
        if not isinstance(features, dict) or not isinstance(chats, list):
            raise DecodeError(corrupt)
        return cls(
            path,
            {f: features.get(f) is True for f in FEATURES},
            {c for c in chats if isinstance(c, str)},
        )

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        doc = {"features": self.features, "private_chats": sorted(self.private_chats)}
        write_atomically(self.path, json.dumps(doc, indent=2).encode(), private=True)

    def set_feature(self, feature: str, enabled: bool) -> None:
        if feature not in FEATURES:
            raise UsageError(f"the features are {', '.join(FEATURES)}")
        self.features[feature] = enabled

    def set_chat_privacy(self, chat_id: str, on: bool) -> None:
        if not chat_id or len(chat_id) > MAX_CHAT_ID:
            raise UsageError(f"a chat id is 1 to {MAX_CHAT_ID} characters")
        (self.private_chats.add if on else self.private_chats.discard)(chat_id)

    def require(self, feature: str, chat_id: str | None = None) -> None:
        """Refuse, before anything leaves the device, what the user has not allowed."""
        if not self.features.get(feature, False):
            raise AIDisabledError(
                f"AI {feature} is off; turn it on with `privproc settings enable {feature}`"
            )
        if chat_id is not None and chat_id in self.private_chats:
            raise AIDisabledError(
                f"chat {chat_id!r} has Advanced Chat Privacy on: AI features are refused for it "
                f"(`privproc chat-privacy {chat_id} off` to allow them)"
            )


MAX_REPORT_TEXT = 256  # the longest text field of an entry (a relay URL, a model name)
REPORT_VERSION = 2  # entries without a version are of version 1 (time to the millisecond, no model,
# source revision, relay, gateway key id, token key epoch or session)


def report_text(value: str, limit: int = MAX_REPORT_TEXT) -> str:
    """`value` fit for the report: printable ASCII (anything else becomes '?'), at most `limit`
    characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in value[:limit])


def minute(when: float) -> int:
    """Unix seconds rounded down to the minute: what the report keeps of a use's time."""
    return int(when) // 60 * 60


@dataclass(frozen=True)
class ReportEntry:
    """One use of Private Processing, as the user's report keeps it (never content)."""

    time: int  # Unix seconds, rounded down to the minute (`minute`); finer times are cut on entry
    feature: str
    outcome: str  # "ok", or what failed ("attestation refused: log.release", "failed: ...")
    measurement: str = ""  # hex, of the enclave that answered or was refused
    log_index: int | None = None  # of its release in the transparency log
    checkpoint_size: int | None = None  # of the witnessed checkpoint that proved the release
    source_revision: str = ""  # the release's source revision, as logged
    model: str = ""  # the model's name, as the enclave answered it
    model_digest: str = ""  # the model's digest, where the enclave's answer gave one
    relay: str = ""  # the relay's URL, as configured (scheme, host, port, path)
    gateway_key_id: int | None = None  # the gateway's OHTTP key config id the use was sealed to
    token_key_epoch: int | None = None  # when the paying token's key began signing (Unix s)
    token_key_log_index: int | None = None  # that key's entry in the transparency log
    fresh_session: bool | None = None  # a new attested session (True), one reused (False), none
    version: int = REPORT_VERSION  # 1: a line written before the fields from source_revision on

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", minute(self.time))
        for name in _TEXT_FIELDS:
            object.__setattr__(self, name, report_text(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "feature": self.feature,
            "outcome": self.outcome,
            "measurement": self.measurement,
            "log_index": self.log_index,
            "checkpoint_size": self.checkpoint_size,
            "source_revision": self.source_revision,
            "model": self.model,
            "model_digest": self.model_digest,
            "relay": self.relay,
            "gateway_key_id": self.gateway_key_id,
            "token_key_epoch": self.token_key_epoch,
            "token_key_log_index": self.token_key_log_index,
            "fresh_session": self.fresh_session,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, doc: object) -> ReportEntry:
        """An entry read back; a field it lacks (an older line) takes its default. `DecodeError`
        for a field of the wrong type or size."""
        if not isinstance(doc, dict):
            raise DecodeError("a report entry is a JSON object")
        when = doc.get("time")
        if not isinstance(when, int | float) or isinstance(when, bool):
            raise DecodeError("a report entry's time is a number")
        try:
            seconds = int(when)
        except (ValueError, OverflowError):  # NaN, infinity
            seconds = -1
        if not 0 <= seconds < 2**64:
            raise DecodeError("a report entry's time is a number of seconds from 0 to 2^64 - 1")
        return cls(
            seconds,
            _text(doc, "feature", required=True),
            _text(doc, "outcome", required=True),
            _text(doc, "measurement"),
            _number(doc, "log_index"),
            _number(doc, "checkpoint_size"),
            _text(doc, "source_revision"),
            _text(doc, "model"),
            _text(doc, "model_digest"),
            _text(doc, "relay"),
            _number(doc, "gateway_key_id"),
            _number(doc, "token_key_epoch"),
            _number(doc, "token_key_log_index"),
            _flag(doc, "fresh_session"),
            _number(doc, "version") or 1,
        )


_TEXT_FIELDS = (
    "feature", "outcome", "measurement", "source_revision", "model", "model_digest", "relay"
)  # fmt: skip


def _text(doc: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = doc.get(name, None if required else "")
    if not isinstance(value, str):
        raise DecodeError(f"a report entry's {name} is text")
    return value  # bounded by the entry (`report_text`)


def _number(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise DecodeError(f"a report entry's {name} is a number from 0 to 2^64 - 1")
    return value


def _flag(doc: dict[str, Any], name: str) -> bool | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, bool):
        raise DecodeError(f"a report entry's {name} is true, false or null")
    return value


class UsageReport:
    """The Private Processing report: an append-only list of uses, on the device."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "report.jsonl"

    def add(self, entry: ReportEntry) -> None:
        line = (json.dumps(entry.to_dict(), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time: whole lines, none lost
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A line torn by a crash mid-write: cut it off, so the file holds whole lines.
                tail = os.pread(fd, min(size, MAX_REPORT_LINE), size - min(size, MAX_REPORT_LINE))
                os.ftruncate(fd, size - len(tail) + tail.rfind(b"\n") + 1)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[ReportEntry]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.splitlines()
        if lines and not data.endswith(b"\n"):
            lines.pop()  # torn by a crash mid-write: not an entry
        out = []
        for line in lines:
            try:
                out.append(ReportEntry.from_dict(load_json(line, str(self.path), MAX_REPORT_LINE)))
            except DecodeError:
                raise DecodeError(f"{self.path} is corrupt") from None
        return out

    @staticmethod
    def now() -> int:
        """The present, as the report keeps it: rounded down to the minute."""
        return minute(time.time())
