"""The log client: trust a checkpoint only with the log's signature and a witness quorum, only if
it is consistent with the last one accepted, and prove entries against it from tiles.

    client = LogClient(policy, fetch, AcceptedCheckpoint(state / "log.json"))  # client.logfetch
    current = client.update()                 # verified, consistent, persisted
    client.prove_inclusion(index, entry)      # or: entry = client.entry(index)

Rules of this module:
- The checkpoint must carry a valid signature by one of the log's keys and valid cosignatures by
  at least `quorum` distinct configured witnesses; signatures from unknown keys are ignored, a
  failing signature from a known key rejects the checkpoint (signed-note).
- Every hash read from a tile is proven: the tiles must reproduce the signed root before any
  proof built from them is believed (`TileError` if not), so a tampered tile cannot pass.
- A newer checkpoint must be provably consistent with the accepted one; a smaller size is a
  rollback, the same size with another root or a failed consistency proof is a split view. Both
  raise with the two signed checkpoints as evidence, and the accepted one stays.
- The accepted checkpoint is persisted atomically (write, fsync, rename) before `update` returns.
- Fetching is a callable (`Fetch`) the caller gives, so the core opens no connection itself;
  the two shells, over HTTP and from a directory, are `privproc.parties.device.logfetch`'s.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from privproc.errors import CryptoError, DecodeError, PrivprocError, UsageError
from privproc.storage import write_atomically
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    NoteVerificationError,
    Verifier,
    open_note,
    parse_note,
)
from privproc.tlog.tiles import (
    TILE_WIDTH,
    TileError,
    TileHashReader,
    decode_bundle,
    entries_path,
    tile_path,
    tile_width,
)
from privproc.wire import load_json

__all__ = [
    "AcceptedCheckpoint",
    "CheckpointRejectedError",
    "Fetch",
    "LogClient",
    "LogPolicy",
    "QuorumNotMetError",
    "RollbackError",
    "SplitViewError",
    "VerifiedCheckpoint",
    "verify_checkpoint",
]

Fetch = Callable[[str], bytes]
MAX_TILE = TILE_WIDTH * merkle.HASH_SIZE
MAX_BUNDLE = TILE_WIDTH * (2 + 0xFFFF)


class CheckpointRejectedError(CryptoError):
    """The checkpoint is not signed as the policy requires."""


class QuorumNotMetError(CheckpointRejectedError):
    """Too few configured witnesses cosigned the checkpoint."""


class _EvidenceError(CryptoError):
    def __init__(self, message: str, accepted: bytes, offered: bytes) -> None:
        super().__init__(message)
        self.accepted = accepted  # the signed checkpoint this client had accepted
        self.offered = offered  # the signed checkpoint that contradicts it

    def evidence(self) -> str:
        return (
            "accepted checkpoint:\n"
            + self.accepted.decode("utf-8", "replace")
            + "\noffered checkpoint:\n"
            + self.offered.decode("utf-8", "replace")
        )


class RollbackError(_EvidenceError):
    """The log offered a checkpoint smaller than one this client already accepted."""


class SplitViewError(_EvidenceError):
    """Two signed checkpoints of the log that cannot both be true: the log showed a split view."""


@dataclass(frozen=True)
class LogPolicy:
    origin: str
    log_keys: tuple[Verifier, ...]
    witnesses: tuple[Verifier, ...]
    quorum: int

    def __post_init__(self) -> None:
        if not self.log_keys or any(k.sig_type != SIG_ED25519 for k in self.log_keys):
            raise UsageError("a log policy names the log's Ed25519 (type 0x01) keys")
        if any(w.sig_type != SIG_COSIGNATURE_V1 for w in self.witnesses):
            raise UsageError("witness keys are cosignature/v1 (type 0x04) keys")
        if not 0 <= self.quorum <= len(self.witnesses):
            raise UsageError("the quorum is between 0 and the number of witnesses")

    @classmethod
    def from_keys(
        cls, origin: str, log_keys: Sequence[str], witness_keys: Sequence[str], quorum: int
    ) -> LogPolicy:
        return cls(
            origin,
            tuple(Verifier.parse(k) for k in log_keys),
            tuple(Verifier.parse(k) for k in witness_keys),
            quorum,
        )


@dataclass(frozen=True)
class VerifiedCheckpoint:
    checkpoint: Checkpoint
    note: bytes  # the signed note as received
    cosigners: tuple[str, ...]

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


def verify_checkpoint(data: bytes, policy: LogPolicy) -> VerifiedCheckpoint:
    """Parse and verify a checkpoint note: origin, log signature, witness quorum."""
    note = parse_note(data)
    checkpoint = Checkpoint.parse(note.text)
    if checkpoint.origin != policy.origin:
        raise CheckpointRejectedError("the checkpoint is for another log")
    try:
        opened = open_note(note, [*policy.log_keys, *policy.witnesses])
    except NoteVerificationError as exc:
        raise CheckpointRejectedError(f"the checkpoint's signatures do not hold: {exc}") from None
    if not any(v.sig_type == SIG_ED25519 for v in opened.verified):
        raise CheckpointRejectedError("the checkpoint is not signed by the log")
    cosigners = tuple(sorted({c.verifier.name for c in opened.cosignatures}))
    if len(opened.cosignatures) < policy.quorum:
        raise QuorumNotMetError(
            f"{len(opened.cosignatures)} witness cosignatures, the policy needs {policy.quorum}"
        )
    return VerifiedCheckpoint(checkpoint, data, cosigners)


class AcceptedCheckpoint:
    """The last checkpoint a client accepted, kept in one JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> bytes | None:
        try:
            doc = load_json(self.path.read_bytes(), str(self.path))
        except FileNotFoundError:
            return None
        except DecodeError:
            raise DecodeError(f"{self.path} is corrupt; remove it to trust the log anew") from None
        note = doc.get("checkpoint") if isinstance(doc, dict) else None
        if not isinstance(note, str):
            raise DecodeError(f"{self.path} is corrupt; remove it to trust the log anew")
        return note.encode()

    def save(self, note: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps({"version": 1, "checkpoint": note.decode()}).encode()
        write_atomically(self.path, data, private=True)


class LogClient:
    def __init__(
        self,
        policy: LogPolicy,
        fetch: Fetch,
        accepted: AcceptedCheckpoint | None = None,
        *,
        cache_tiles: int = 4096,
    ) -> None:
        self.policy = policy
        self._fetch = fetch
        self._accepted = accepted
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_limit = cache_tiles
        self.current: VerifiedCheckpoint | None = None
        if accepted is not None:
            note = accepted.load()
            if note is not None:
                self.current = verify_checkpoint(note, policy)

    def _get(self, path: str) -> bytes:
        data = self._cache.get(path)
        if data is not None:
            self._cache.move_to_end(path)
            return data
        data = self._fetch(path)
        self._cache[path] = data  # full tiles and partial tiles of one width never change
        if len(self._cache) > self._cache_limit:
            self._cache.popitem(last=False)
        return data

    @contextlib.contextmanager
    def _forget_on_failure(self) -> Iterator[None]:
        """A tile that took part in a failed check is not kept: the next try fetches afresh."""
        try:
            yield
        except (merkle.ProofError, TileError):
            self._cache.clear()
            raise

    def _reader(self, size: int) -> TileHashReader:
        return TileHashReader(size, lambda level, index, w: self._get(tile_path(level, index, w)))

    def _proven_reader(self, verified: VerifiedCheckpoint) -> TileHashReader:
        """A tile reader for the checkpoint's tree whose tiles reproduce its signed root."""
        reader = self._reader(verified.size)
        if verified.size and merkle.root_from(reader.hash_at, verified.size) != verified.root:
            raise TileError("the tiles do not reproduce the checkpoint's root hash")
        return reader

    def update(self) -> VerifiedCheckpoint:
        """Fetch, verify and accept the log's current checkpoint (see the module's rules)."""
        with self._forget_on_failure():
            return self._update()

    def _update(self) -> VerifiedCheckpoint:
        offered = verify_checkpoint(self._fetch("checkpoint"), self.policy)
        old = self.current
        if old is not None:
            if offered.size < old.size:
                raise RollbackError(
                    f"the log offered size {offered.size} after size {old.size} was accepted",
                    old.note,
                    offered.note,
                )
            if offered.size == old.size:
                if offered.root != old.root:
                    raise SplitViewError(
                        f"two different roots for size {old.size}", old.note, offered.note
                    )
                return old
            reader = self._proven_reader(offered)
            if old.size > 0:
                proof = merkle.consistency_proof_from(reader.hash_at, old.size, offered.size)
                try:
                    merkle.verify_consistency(old.size, offered.size, old.root, offered.root, proof)
                except merkle.ProofError:
                    raise SplitViewError(
                        f"size {offered.size} is not an extension of the accepted size {old.size}",
                        old.note,
                        offered.note,
                    ) from None
        else:
            self._proven_reader(offered)
        if self._accepted is not None:
            self._accepted.save(offered.note)
        self.current = offered
        return offered

    def _require_current(self) -> VerifiedCheckpoint:
        if self.current is None:
            raise UsageError("no checkpoint accepted yet: call update() first")
        return self.current

    def prove_inclusion(self, index: int, entry: bytes) -> None:
        """Prove that `entry` is leaf `index` of the accepted tree (raises `ProofError`)."""
        current = self._require_current()
        if not 0 <= index < current.size:
            raise merkle.InclusionProofError("that index is beyond the accepted tree")
        with self._forget_on_failure():
            reader = self._reader(current.size)
            proof = merkle.inclusion_proof_from(reader.hash_at, current.size, index)
            merkle.verify_inclusion(
                merkle.leaf_hash(entry), index, current.size, proof, current.root
            )

    def entry(self, index: int) -> bytes:
        """Entry `index` from its bundle, proven to be in the accepted tree."""
        current = self._require_current()
        if not 0 <= index < current.size:
            raise UsageError("that index is beyond the accepted tree")
        bundle, offset = divmod(index, TILE_WIDTH)
        width = tile_width(0, bundle, current.size)
        path = entries_path(bundle, width)
        entry = decode_bundle(self._fetch(path), width)[offset]  # bundles are large: not cached
        self.prove_inclusion(index, entry)
        return entry


def describe(error: PrivprocError) -> str:
    """A message for people, with the evidence of a split view or rollback when there is one."""
    if isinstance(error, _EvidenceError):
        return f"{error}\n{error.evidence()}"
    return str(error)
