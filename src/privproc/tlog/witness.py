"""A C2SP tlog-witness: cosign a log's checkpoint only if it is consistent with the last one seen.

`add-checkpoint` request body:

    old <size>\\n
    <base64 consistency proof hash>\\n      (0 to 63 lines)
    \\n
    <checkpoint signed note>

Checks, in the spec's order, each with its status: a malformed body 400; an unknown origin 404;
no valid signature by a key trusted for the origin, or a trusted key's signature failing, 403;
old size above the checkpoint size 400; old size not the size last cosigned 409 (body
`<size>\\n`, `text/x.tlog.size`); a size-0 checkpoint without the empty root, a non-empty proof
from size 0, a same-size checkpoint with another root, or a consistency proof that does not
verify 422. Then the new (size, root, note) is stored and a cosignature/v1 line returned.

Rules: check-and-store is one SQLite transaction under a lock, so two racing requests cannot roll
the witness back (the race tlog-witness warns about); the cosignature's timestamp never goes
backwards; the state is one row per log.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from privproc.errors import PrivprocError, UsageError
from privproc.storage import create_private_file, transaction
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint, parse_decimal
from privproc.tlog.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Note,
    NoteError,
    NoteVerificationError,
    Signer,
    Verifier,
    b64_decode,
    open_note,
    parse_note,
)

__all__ = [
    "MAX_REQUEST",
    "MEDIA_TYPE_SIZE",
    "Witness",
    "WitnessRefusal",
    "encode_add_checkpoint",
    "parse_add_checkpoint",
]

MAX_REQUEST = 64 * 1024
MAX_PROOF_LINES = 63
MEDIA_TYPE_SIZE = "text/x.tlog.size"
DB_NAME = "witness.sqlite3"
KEY_NAME = "witness.key"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    vkeys TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    root BLOB,
    note BLOB
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class WitnessRefusal(PrivprocError):
    """The witness will not cosign; `status` is the HTTP status tlog-witness assigns."""

    def __init__(self, status: int, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.size = size  # for 409: the size the witness last cosigned


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: list[bytes]
    note: bytes


def encode_add_checkpoint(old_size: int, proof: list[bytes], note: bytes) -> bytes:
    from privproc.tlog.note import b64_encode

    lines = [f"old {old_size}\n", *(b64_encode(h) + "\n" for h in proof), "\n"]
    return "".join(lines).encode() + note


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    if len(body) > MAX_REQUEST:
        raise WitnessRefusal(400, f"the request is larger than {MAX_REQUEST} bytes")
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise WitnessRefusal(400, "the request has no empty line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise WitnessRefusal(400, "the request's header lines are not ASCII") from None
    if not lines[0].startswith("old "):
        raise WitnessRefusal(400, "the request starts with an 'old <size>' line")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusal(400, f"a consistency proof has at most {MAX_PROOF_LINES} hashes")
    try:
        old = parse_decimal(lines[0][4:], "old size")
        proof = [b64_decode(line, "proof hash") for line in lines[1:]]
    except NoteError as exc:
        raise WitnessRefusal(400, str(exc)) from None
    if any(len(h) != merkle.HASH_SIZE for h in proof):
        raise WitnessRefusal(400, "a proof hash is 32 bytes")
    return AddCheckpoint(old, proof, note)


class Witness:
    """The witness's state (`STATE/witness.sqlite3`) and key (`STATE/witness.key`, 0600)."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        path = state_dir / DB_NAME
        if not path.exists():
            raise UsageError(f"no witness in {state_dir}; create one with `privproc witness init`")
        self.signer = Signer.parse((state_dir / KEY_NAME).read_text().strip())
        if self.signer.sig_type != SIG_COSIGNATURE_V1:
            raise UsageError("the witness key is not a cosignature/v1 key")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        self._clock = clock

    @classmethod
    def init(cls, state_dir: Path, name: str) -> Witness:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if (state_dir / DB_NAME).exists():
            raise UsageError(f"a witness already exists in {state_dir}")
        signer = Signer.generate(name, SIG_COSIGNATURE_V1)
        create_private_file(state_dir / KEY_NAME, (signer.encode() + "\n").encode())
        db = sqlite3.connect(state_dir / DB_NAME, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
        finally:
            db.close()
        return cls(state_dir)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    def add_log(self, origin: str, vkeys: list[str]) -> None:
        """Trust `vkeys` (Ed25519, type 0x01) to sign checkpoints of the log `origin`."""
        Checkpoint(origin, 0, merkle.EMPTY_ROOT)
        verifiers = [Verifier.parse(v) for v in vkeys]
        if not verifiers or any(v.sig_type != SIG_ED25519 for v in verifiers):
            raise UsageError("a log is trusted through Ed25519 (type 0x01) verifier keys")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO logs (origin, vkeys) VALUES (?, ?) "
                "ON CONFLICT (origin) DO UPDATE SET vkeys = excluded.vkeys",
                (origin, "\n".join(v.encode() for v in verifiers)),
            )

    def logs(self) -> list[tuple[str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT origin, size FROM logs ORDER BY origin").fetchall()
        return [(str(o), int(s)) for o, s in rows]

    def latest(self, origin: str) -> bytes | None:
        """The latest cosigned checkpoint note for `origin` (log signatures and ours)."""
        with self._lock:
            row = self._db.execute("SELECT note FROM logs WHERE origin = ?", (origin,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def add_checkpoint(self, body: bytes) -> str:
        """Handle one add-checkpoint request; returns the cosignature line or raises
        `WitnessRefusal` with the status the spec assigns."""
        request = parse_add_checkpoint(body)
        try:
            note = parse_note(request.note)
            checkpoint = Checkpoint.parse(note.text)
        except PrivprocError as exc:
            raise WitnessRefusal(400, f"the checkpoint is malformed: {exc}") from None
        with self._transaction() as db:
            row = db.execute(
                "SELECT vkeys, size, root FROM logs WHERE origin = ?", (checkpoint.origin,)
            ).fetchone()
            if row is None:
                raise WitnessRefusal(404, "this witness does not know that log")
            trusted = [Verifier.parse(v) for v in str(row[0]).split("\n")]
            try:
                opened = open_note(note, trusted)
            except NoteVerificationError as exc:
                raise WitnessRefusal(403, str(exc)) from None
            size, root = int(row[1]), (bytes(row[2]) if row[2] is not None else merkle.EMPTY_ROOT)
            if request.old_size > checkpoint.size:
                raise WitnessRefusal(400, "the old size is larger than the checkpoint's")
            if request.old_size != size:
                raise WitnessRefusal(409, "the old size is not the size last cosigned", size)
            self._check_consistency(request, checkpoint, root)
            timestamp = max(int(self._clock()), self._last_timestamp(db) + 1)
            line = self.signer.sign(note.text, timestamp)
            # Keep what the monitoring API serves: the verified log signatures, then ours.
            trusted_ids = {(v.name, v.key_id) for v in opened.verified}
            log_signatures = tuple(s for s in note.signatures if (s.name, s.key_id) in trusted_ids)
            stored = Note(note.text, (*log_signatures, line)).encode()
            db.execute(
                "UPDATE logs SET size = ?, root = ?, note = ? WHERE origin = ?",
                (checkpoint.size, checkpoint.root, stored, checkpoint.origin),
            )
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_timestamp', ?)", (str(timestamp),)
            )
        return line.line()

    @staticmethod
    def _last_timestamp(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'last_timestamp'").fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _check_consistency(request: AddCheckpoint, checkpoint: Checkpoint, root: bytes) -> None:
        old, new = request.old_size, checkpoint.size
        if new == 0 and checkpoint.root != merkle.EMPTY_ROOT:
            raise WitnessRefusal(422, "a checkpoint of size 0 has the empty tree's root")
        if old == 0:
            if request.proof:
                raise WitnessRefusal(422, "a proof from the empty tree is empty")
            return
        if old == new:
            if request.proof or checkpoint.root != root:
                raise WitnessRefusal(422, "a checkpoint of the same size has another root")
            return
        try:
            merkle.verify_consistency(old, new, root, checkpoint.root, request.proof)
        except merkle.ProofError:
            raise WitnessRefusal(422, "the consistency proof does not verify") from None
