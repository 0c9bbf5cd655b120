"""C2SP tlog-checkpoint: the signed statement of a log's size and root hash.

    <origin>\\n<size>\\n<base64 root hash>\\n[<extension line>\\n]...

Rules: the origin is non-empty (and, as the log's key name, has no spaces or `+`), the size is
an ASCII decimal without leading zeros below 2**64, the root is canonical base64 of 32 bytes, and
extension lines, if any, are non-empty. `parse(text).text() == text` for every accepted text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from privproc.errors import UsageError
from privproc.tlog.merkle import EMPTY_ROOT
from privproc.tlog.note import NoteError, b64_decode, b64_encode

__all__ = ["Checkpoint", "parse_decimal"]

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
MAX_ORIGIN = 255
MAX_EXTENSIONS = 16


def parse_decimal(text: str, what: str) -> int:
    """An ASCII decimal without leading zeros, below 2**64."""
    if not _DECIMAL.fullmatch(text) or int(text) >= 2**64:
        raise NoteError(f"the {what} is not a decimal number without leading zeros")
    return int(text)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or len(self.origin.encode()) > MAX_ORIGIN or "\n" in self.origin:
            raise UsageError("a checkpoint origin is one non-empty line of at most 255 bytes")
        if not 0 <= self.size < 2**64:
            raise UsageError("a tree size is below 2**64")
        if len(self.root) != 32:
            raise UsageError("a root hash is 32 bytes")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise UsageError("the empty tree's root is SHA-256 of nothing")
        if len(self.extensions) > MAX_EXTENSIONS or any(
            not e or "\n" in e for e in self.extensions
        ):
            raise UsageError("extension lines are non-empty single lines")

    def text(self) -> str:
        lines = [self.origin, str(self.size), b64_encode(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("a checkpoint text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a size and a root hash line")
        origin, size, root, *extensions = lines
        try:
            return cls(
                origin,
                parse_decimal(size, "tree size"),
                b64_decode(root, "root hash"),
                tuple(extensions),
            )
        except UsageError as exc:
            raise NoteError(str(exc)) from None
