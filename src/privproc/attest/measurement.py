"""The workload measurement: a canonical manifest of the enclave's code, model and configuration,
hashed to the 48 bytes an SEV-SNP report carries in MEASUREMENT.

The manifest is UTF-8 text, one header line and one line per file, sorted by (kind, path) in
byte order, each line ending in a newline:

    privproc-measurement v1
    <kind> <sha384 of the file, hex> <size in bytes> <path>

`kind` is `code`, `model` or `config`; `path` is the file's path relative to its root, with `/`
separators, no `.` or `..` parts, no control characters. The measurement is SHA-384 of the
manifest's bytes; the release's image, model and config digests are SHA-256 of the lines of each
kind. Anyone can recompute it with standard tools (this exact recipe is a test):

    { echo 'privproc-measurement v1'
      cd CODE_ROOT && find . -type f | sed 's|^\\./||' | LC_ALL=C sort | while read -r f; do
        echo "code $(sha384sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $f"; done
      # ... then the model files as "model ...", then the config files as "config ..."
    } | sha384sum

Rules: same inputs, same bytes, same measurement, whatever the file system's order, the time or
the machine; a manifest is parsed strictly (`DecodeError`) so one measurement has one manifest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from privproc.errors import DecodeError, TooLargeError, UsageError

__all__ = ["KINDS", "Manifest", "ManifestEntry", "hash_file", "measure_tree"]

HEADER = "privproc-measurement v1"
KINDS = ("code", "model", "config")
MAX_MANIFEST = 4 << 20
MAX_FILES = 100_000
_LINE = re.compile(r"(code|model|config) ([0-9a-f]{96}) (0|[1-9][0-9]{0,15}) ([^\x00-\x1f\x7f]+)")
_CHUNK = 1 << 20


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"manifest paths are relative, without empty, '.' or '..' parts: {path!r}")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in path):
        raise UsageError("manifest paths have no control characters")
    return path


@dataclass(frozen=True, order=True)
class ManifestEntry:
    kind: str
    path: str
    sha384: bytes
    size: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"a manifest entry's kind is one of {', '.join(KINDS)}")
        _check_path(self.path)
        if len(self.sha384) != 48 or self.size < 0:
            raise UsageError("a manifest entry has a 48-byte SHA-384 and a size")

    def line(self) -> str:
        return f"{self.kind} {self.sha384.hex()} {self.size} {self.path}\n"

    def sort_key(self) -> tuple[int, bytes]:
        return KINDS.index(self.kind), self.path.encode("utf-8")


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]

    def __post_init__(self) -> None:
        keys = [e.sort_key() for e in self.entries]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise UsageError("manifest entries are sorted by kind then path, without duplicates")

    @classmethod
    def of(cls, entries: Iterable[ManifestEntry]) -> Manifest:
        return cls(tuple(sorted(entries, key=ManifestEntry.sort_key)))

    def encode(self) -> bytes:
        return (HEADER + "\n" + "".join(e.line() for e in self.entries)).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        if len(data) > MAX_MANIFEST:
            raise TooLargeError(f"a manifest is at most {MAX_MANIFEST} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("a manifest is UTF-8") from None
        if not text.endswith("\n"):
            raise DecodeError("a manifest ends with a newline")
        header, *lines = text[:-1].split("\n")
        if header != HEADER:
            raise DecodeError("not a privproc-measurement v1 manifest")
        entries = []
        for line in lines:
            m = _LINE.fullmatch(line)
            if m is None:
                raise DecodeError("a manifest line is '<kind> <sha384> <size> <path>'")
            try:
                entries.append(
                    ManifestEntry(
                        m.group(1), m.group(4), bytes.fromhex(m.group(2)), int(m.group(3))
                    )
                )
            except UsageError as exc:
                raise DecodeError(str(exc)) from None
        try:
            manifest = cls(tuple(entries))
        except UsageError as exc:
            raise DecodeError(str(exc)) from None
        if manifest.encode() != data:
            raise DecodeError("the manifest is not in its canonical form")
        return manifest

    @property
    def measurement(self) -> bytes:
        """The 48-byte SHA-384 of the manifest: what SEV-SNP's MEASUREMENT field carries."""
        return hashlib.sha384(self.encode()).digest()

    def digest_of(self, kind: str) -> bytes:
        """SHA-256 over the manifest lines of one kind (the release's image/model/config digest)."""
        if kind not in KINDS:
            raise UsageError(f"kind is one of {', '.join(KINDS)}")
        lines = "".join(e.line() for e in self.entries if e.kind == kind)
        return hashlib.sha256(lines.encode("utf-8")).digest()


def hash_file(path: Path) -> tuple[bytes, int]:
    """The SHA-384 and the size of a file, read in bounded chunks."""
    digest = hashlib.sha384()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.digest(), size


def measure_tree(roots: Mapping[str, Iterable[Path]]) -> Manifest:
    """The manifest of files grouped by kind: `{"code": [dir or file, ...], "model": [...], ...}`.

    A directory contributes every regular file below it, named relative to that directory; a file
    contributes itself under its own name. Symbolic links are refused (they would measure what
    they point to today, not what the path will hold tomorrow)."""
    entries: list[ManifestEntry] = []
    for kind, paths in roots.items():
        for root in paths:
            if root.is_symlink():
                raise UsageError(f"{root} is a symbolic link; measure what it points to instead")
            files = (
                [root] if root.is_file() else sorted(p for p in root.rglob("*") if not p.is_dir())
            )
            for path in files:
                if path.is_symlink() or not path.is_file():
                    raise UsageError(f"{path} is not a regular file")
                name = path.name if path == root else path.relative_to(root).as_posix()
                sha384, size = hash_file(path)
                entries.append(ManifestEntry(kind, name, sha384, size))
                if len(entries) > MAX_FILES:
                    raise TooLargeError(f"a manifest holds at most {MAX_FILES} files")
    return Manifest.of(entries)
