"""The user's controls, kept on the device: which AI features are on, which chats are closed to
AI (Advanced Chat Privacy), and the Private Processing report of every use.

- `STATE/settings.json`: `{"features": {"summaries": bool, "writing-help": bool, "chat": bool},
  "private_chats": [chat ids]}`. Every feature is off until the user turns it on.
- `STATE/report.jsonl`: one JSON object per use: time, feature, enclave measurement, log index
  and checkpoint size of its release, and the outcome. Never any content.

Rules: a refused feature or a private chat stops the request before anything leaves the device
(`AIDisabledError`, saying how to turn it on); both files are private (0600). The settings are
rewritten atomically; the report is appended to, one whole line per use under a lock, so that
clients sharing a device's state never lose each other's entries (a line torn by a crash is
skipped when read, and the next line starts on its own).
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
MAX_REPORT_LINE = 4096  # far above any entry (a few hundred bytes)


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


@dataclass(frozen=True)
class ReportEntry:
    time: float
    feature: str
    outcome: str  # "ok", or what failed ("attestation: log.release", "transport", ...)
    measurement: str = ""  # hex, of the enclave that answered or was refused
    log_index: int | None = None
    checkpoint_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 3),
            "feature": self.feature,
            "outcome": self.outcome,
            "measurement": self.measurement,
            "log_index": self.log_index,
            "checkpoint_size": self.checkpoint_size,
        }


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
                doc = load_json(line, str(self.path))
                out.append(
                    ReportEntry(
                        float(doc["time"]),
                        str(doc["feature"]),
                        str(doc["outcome"]),
                        str(doc.get("measurement", "")),
                        doc.get("log_index"),
                        doc.get("checkpoint_size"),
                    )
                )
            except (DecodeError, ValueError, KeyError, TypeError, OverflowError):
                raise DecodeError(f"{self.path} is corrupt") from None
        return out

    @staticmethod
    def now() -> float:
        return time.time()
