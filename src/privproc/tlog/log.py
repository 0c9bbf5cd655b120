"""The log writer: entries in SQLite, published as C2SP tlog-tiles with a signed checkpoint.

State (`STATE/`): `log.sqlite3` (entries, the hash tiles computed so far, what was published, the
witnesses and the size each last cosigned) and `log.key` (the Ed25519 signer key, mode 0600).

Publishing is two steps so that nothing is served before the witnesses agree:
1. `stage(out)` hashes the entries appended since the last publish into tiles, stored in SQLite
   and written under `out/tile/...` (immutable or not yet referenced, so writing them early is
   harmless), and returns the log-signed checkpoint of the new size.
2. `commit(out, note)` writes `out/checkpoint` (atomically) once the note carries its witness
   cosignatures, and records it as published.

Rules: append-only (nothing is ever rewritten, so the log cannot sign two inconsistent
checkpoints); memory does not grow with the log (tiles are built 256 entries at a time, read back
one tile at a time); every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from privproc.errors import PrivprocError, UsageError
from privproc.storage import create_private_file, transaction, write_atomically
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.note import SIG_COSIGNATURE_V1, Note, Signer, Verifier
from privproc.tlog.tiles import (
    HASH_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileHashReader,
    encode_bundle,
    entries_path,
    subtree_root,
    tile_path,
)

__all__ = ["LogError", "TransparencyLog", "WitnessConfig"]

DB_NAME = "log.sqlite3"
KEY_NAME = "log.key"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS witnesses (
    vkey TEXT PRIMARY KEY, url TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0
);
"""


class LogError(PrivprocError):
    """The log's state or an operation on it is not possible as asked."""


@dataclass(frozen=True)
class WitnessConfig:
    verifier: Verifier
    url: str
    size: int  # the size this witness last cosigned, as far as the log knows


class TransparencyLog:
    def __init__(self, state_dir: Path) -> None:
        path = state_dir / DB_NAME
        if not path.exists():
            raise LogError(f"no log in {state_dir}; create one with `privproc log init`")
        self.state_dir = state_dir
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self.origin = self._meta("origin").decode()
        self.signer = Signer.parse((state_dir / KEY_NAME).read_text().strip())
        if self.signer.name != self.origin:
            raise LogError("the log key's name is not the log's origin")

    @classmethod
    def init(cls, state_dir: Path, origin: str) -> TransparencyLog:
        """Create a log with a fresh Ed25519 key named after its origin."""
        Checkpoint(origin, 0, merkle.EMPTY_ROOT)  # refuses an origin a checkpoint cannot carry
        signer = Signer.generate(origin)
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / DB_NAME
        if path.exists():
            raise LogError(f"a log already exists in {state_dir}")
        create_private_file(state_dir / KEY_NAME, (signer.encode() + "\n").encode())
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            db.execute("INSERT INTO meta VALUES ('origin', ?)", (origin.encode(),))
            db.execute("INSERT INTO meta VALUES ('tiles_size', ?)", (b"0",))
            db.execute("INSERT INTO meta VALUES ('published_size', ?)", (b"0",))
        finally:
            db.close()
        return cls(state_dir)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    def _meta(self, key: str) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise LogError(f"the log's state has no {key}")
        return bytes(row[0])

    def _set_meta(self, db: sqlite3.Connection, key: str, value: bytes) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    # --- Entries -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries appended (published or not)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(idx) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    @property
    def published_size(self) -> int:
        return int(self._meta("published_size"))

    def published_checkpoint(self) -> bytes | None:
        try:
            return self._meta("published_note")
        except LogError:
            return None

    def append_many(self, entries: Iterable[bytes], batch: int = 10_000) -> tuple[int, int]:
        """Append entries in order; returns (index of the first, index after the last)."""
        with self._transaction() as db:
            first = self.size
            index = first
            chunk: list[tuple[int, bytes]] = []
            for entry in entries:
                if len(entry) > 0xFFFF:
                    raise UsageError("a log entry is at most 65535 bytes (tlog-tiles bundles)")
                chunk.append((index, entry))
                index += 1
                if len(chunk) >= batch:
                    db.executemany("INSERT INTO entries VALUES (?, ?)", chunk)
                    chunk.clear()
            db.executemany("INSERT INTO entries VALUES (?, ?)", chunk)
        return first, index

    def append(self, entry: bytes) -> int:
        return self.append_many([entry])[0]

    def entry(self, index: int) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LogError(f"the log has no entry {index}")
        return bytes(row[0])

    def _entries(self, start: int, end: int) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            ).fetchall()
        if len(rows) != end - start:
            raise LogError("the log's entries have a gap")
        return [bytes(r[0]) for r in rows]

    # --- Tiles ---------------------------------------------------------------------------------

    def _tile(self, level: int, index: int) -> bytes:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM tiles WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
        return b"" if row is None else bytes(row[0])

    def hash_reader(self, size: int) -> TileHashReader:
        """Merkle hashes of the tree of `size` entries, read from the stored tiles."""
        if size > int(self._meta("tiles_size")):
            raise LogError("the tiles do not cover that size yet; stage it first")
        return TileHashReader(
            size, lambda level, index, width: self._tile(level, index)[: width * HASH_SIZE]
        )

    def root(self, size: int) -> bytes:
        return merkle.root_from(self.hash_reader(size).hash_at, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return merkle.consistency_proof_from(self.hash_reader(new_size).hash_at, old_size, new_size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof_from(self.hash_reader(size).hash_at, size, index)

    def _extend_tiles(self, out: Path, old: int, new: int) -> None:
        """Hash entries [old, new) into the tiles and write every tile and bundle that changed."""
        # Level 0 (leaf hashes) and the entry bundles, one tile of 256 entries at a time.
        for index in range(old // TILE_WIDTH, (new + TILE_WIDTH - 1) // TILE_WIDTH):
            start = index * TILE_WIDTH
            end = min(new, start + TILE_WIDTH)
            entries = self._entries(start, end)
            have = self._tile(0, index)[: (max(old, start) - start) * HASH_SIZE]
            hashes = have + b"".join(merkle.leaf_hash(e) for e in entries[len(have) // 32 :])
            self._store_tile(out, 0, index, hashes)
            write_atomically(out / entries_path(index, end - start), encode_bundle(entries))
        # Upper levels: each hash is the root of a full tile one level down.
        level = 1
        while new >> (TILE_HEIGHT * level):
            old_count = old >> (TILE_HEIGHT * level)
            new_count = new >> (TILE_HEIGHT * level)
            for index in range(old_count // TILE_WIDTH, (new_count - 1) // TILE_WIDTH + 1):
                first = index * TILE_WIDTH
                last = min(new_count, first + TILE_WIDTH)
                data = bytearray(self._tile(level, index)[: (max(old_count, first) - first) * 32])
                for h in range(first + len(data) // HASH_SIZE, last):
                    below = self._tile(level - 1, h)
                    if len(below) != TILE_WIDTH * HASH_SIZE:
                        raise LogError("a tile below is not full; the tiles are inconsistent")
                    data += subtree_root(
                        [below[i : i + HASH_SIZE] for i in range(0, len(below), HASH_SIZE)]
                    )
                if last > max(old_count, first):
                    self._store_tile(out, level, index, bytes(data))
            level += 1

    def _store_tile(self, out: Path, level: int, index: int, data: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tiles VALUES (?, ?, ?)", (level, index, data))
        write_atomically(out / tile_path(level, index, len(data) // HASH_SIZE), data)

    # --- Publishing ----------------------------------------------------------------------------

    def stage(self, out: Path) -> Note:
        """Bring the tiles up to the current size, write them under `out`, and return the
        log-signed checkpoint note of that size (not yet published)."""
        new = self.size
        old = int(self._meta("tiles_size"))
        if new > old:
            with self._transaction() as db:
                self._extend_tiles(out, old, new)
                self._set_meta(db, "tiles_size", str(new).encode())
        checkpoint = Checkpoint(self.origin, new, self.root(new))
        text = checkpoint.text()
        return Note(text, (self.signer.sign(text),))

    def commit(self, out: Path, note: Note) -> None:
        """Publish `note` (a staged checkpoint, with its cosignatures) as `out/checkpoint`."""
        checkpoint = Checkpoint.parse(note.text)
        if checkpoint.origin != self.origin or checkpoint.root != self.root(checkpoint.size):
            raise LogError("that checkpoint is not one this log staged")
        if checkpoint.size < self.published_size:
            raise LogError("the log never publishes a smaller checkpoint than it did before")
        data = note.encode()
        write_atomically(out / "checkpoint", data)
        with self._transaction() as db:
            self._set_meta(db, "published_size", str(checkpoint.size).encode())
            self._set_meta(db, "published_note", data)

    # --- Witnesses -----------------------------------------------------------------------------

    def add_witness(self, vkey: str, url: str) -> Verifier:
        """Add a witness, or give a known one its new URL (what it last cosigned is kept)."""
        verifier = Verifier.parse(vkey)
        if verifier.sig_type != SIG_COSIGNATURE_V1:
            raise UsageError("a witness key is a cosignature/v1 (type 0x04) verifier key")
        if not url.startswith(("http://", "https://")):
            raise UsageError("a witness URL is http:// or https://")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO witnesses (vkey, url, size) VALUES (?, ?, 0) "
                "ON CONFLICT (vkey) DO UPDATE SET url = excluded.url",
                (verifier.encode(), url.rstrip("/")),
            )
        return verifier

    def witnesses(self) -> list[WitnessConfig]:
        with self._lock:
            rows = self._db.execute(
                "SELECT vkey, url, size FROM witnesses ORDER BY vkey"
            ).fetchall()
        return [WitnessConfig(Verifier.parse(v), u, int(s)) for v, u, s in rows]

    def set_witness_size(self, verifier: Verifier, size: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE witnesses SET size = ? WHERE vkey = ?", (size, verifier.encode()))
