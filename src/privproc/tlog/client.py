"""The log client, sans IO: trust a checkpoint only with the log's signature and a witness quorum,
only if it is consistent with the last one accepted, and prove entries against it from tiles.

    client = LogClient(policy, accepted=remembered_note)   # the note a shell kept, or None
    current = client.update(resources)     # raises ResourcesNeeded(("checkpoint",)), then the
                                           # tiles its proofs need; the shell fetches, calls again
    remember(current.note)                 # the shell keeps it (parties/device/logfetch.py)
    client.entry(index, resources)         # the entry bundle and tiles, named the same way

Rules of this module:
- It calls nothing outside itself: no fetching, no files. Every operation takes the resources it
  has, a mapping of tlog-tiles path to bytes, and raises `ResourcesNeeded` naming every path its
  next step still lacks, all at once (the checkpoint first, then the tiles and entry bundles its
  proofs need: a tile's width follows from the checkpoint's size, so that is two rounds for
  `update`, one for an entry). The shell fetches them and calls again; nothing is believed until
  every path is at hand. Resources it did not ask for are ignored: never read, never kept.
- The checkpoint must carry a valid signature by one of the log's keys and valid cosignatures by
  at least `quorum` distinct configured witnesses; signatures from unknown keys are ignored, a
  failing signature from a known key rejects the checkpoint (signed-note).
- Every hash read from a tile is proven: the tiles must reproduce the signed root before any
  proof built from them is believed (`TileError` if not), so a tampered tile cannot pass. Only
  tiles that took part in a check that held are kept (a bounded cache); a failed check forgets
  every kept tile, so the next try asks for them afresh.
- A newer checkpoint must be provably consistent with the accepted one; a smaller size is a
  rollback, the same size with another root or a failed consistency proof is a split view. Both
  raise with the two signed checkpoints as evidence, and the accepted one stays.
- The last accepted checkpoint is a value: given to the constructor (verified again under the
  policy), returned by `update` for the shell to keep before it relies on it.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from privproc.errors import CryptoError, PrivprocError, UsageError
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
    HASH_SIZE,
    TILE_WIDTH,
    TileError,
    TileHashReader,
    decode_bundle,
    entries_path,
    tile_of,
    tile_path,
    tile_width,
)

__all__ = [
    "CHECKPOINT_PATH",
    "MAX_BUNDLE",
    "MAX_TILE",
    "CheckpointRejectedError",
    "LogClient",
    "LogPolicy",
    "QuorumNotMetError",
    "ResourcesNeeded",
    "RollbackError",
    "SplitViewError",
    "VerifiedCheckpoint",
    "describe",
    "verify_checkpoint",
]

CHECKPOINT_PATH = "checkpoint"
MAX_TILE = TILE_WIDTH * merkle.HASH_SIZE
MAX_BUNDLE = TILE_WIDTH * (2 + 0xFFFF)
NAMED_IN_MESSAGE = 4  # paths a ResourcesNeeded message lists (`paths` holds them all)


class ResourcesNeeded(PrivprocError):  # a request to the shell more than a failure
    """The operation needs these log resources (tlog-tiles paths) before it can go on: fetch
    them, add them to the resources, and call it again. `paths` names every one its next step
    lacks, in the order they are needed, each once."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(dict.fromkeys(paths))
        if not self.paths:
            raise UsageError("a ResourcesNeeded names at least one path")
        shown = ", ".join(self.paths[:NAMED_IN_MESSAGE])
        more = len(self.paths) - NAMED_IN_MESSAGE
        super().__init__(
            f"the log client needs {shown}" + (f" and {more} more" if more > 0 else "")
        )


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


class _Reading:
    """What one operation reads: tiles from the client's cache, else from the resources it was
    given, and entry bundles from the resources. A path neither holds is noted and read as
    zeros of the length it must have, so that the operation goes on and names every path it
    needs at once; `need()` then raises before anything read is believed. Which paths a proof
    reads follows from the sizes alone, never from the bytes read."""

    def __init__(self, cache: Mapping[str, bytes], resources: Mapping[str, bytes]) -> None:
        self._cache = cache
        self._resources = resources
        self.missing: dict[str, None] = {}  # an ordered set
        self.fed: dict[str, bytes] = {}  # tiles read from the resources
        self.cached: list[str] = []  # tiles read from the cache

    def _tile(self, path: str, length: int) -> bytes:
        data = self._cache.get(path)
        if data is not None:
            self.cached.append(path)
        else:
            data = self._resources.get(path)
            if data is None:
                self.missing[path] = None
                return bytes(length)
            self.fed[path] = data
        return data

    def reader(self, size: int) -> TileHashReader:
        return TileHashReader(
            size, lambda level, index, w: self._tile(tile_path(level, index, w), w * HASH_SIZE)
        )

    def naming_hash_at(self, size: int) -> merkle.HashAt:
        """A `hash_at` that only notes the tiles a proof would read and returns zeros: the
        paths a scan needs, without hashing placeholders."""

        def hash_at(tree_level: int, index: int) -> bytes:
            level, tile_index = tile_of(tree_level, index)
            path = tile_path(level, tile_index, tile_width(level, tile_index, size))
            if path not in self._cache and path not in self._resources:
                self.missing[path] = None
            return bytes(HASH_SIZE)

        return hash_at

    def bundle(self, path: str) -> bytes:
        data = self._resources.get(path)
        if data is None:
            self.missing[path] = None
            return b""
        return data

    def need(self) -> None:
        if self.missing:
            raise ResourcesNeeded(list(self.missing))


class LogClient:
    """The client's state: the policy, the accepted checkpoint (`current`) and the tiles that
    took part in checks that held. Each operation takes the resources the shell has fetched."""

    def __init__(
        self, policy: LogPolicy, accepted: bytes | None = None, *, cache_tiles: int = 4096
    ) -> None:
        self.policy = policy
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_limit = cache_tiles
        self.current: VerifiedCheckpoint | None = None
        if accepted is not None:
            self.current = verify_checkpoint(accepted, policy)

    def _keep(self, reading: _Reading) -> None:
        """Keep the tiles a check that held was built from (full tiles and partial tiles of one
        width never change), and mark those it used from the cache as recently used."""
        for path in reading.cached:
            if path in self._cache:
                self._cache.move_to_end(path)
        for path, data in reading.fed.items():
            self._cache[path] = data
            self._cache.move_to_end(path)
        while len(self._cache) > self._cache_limit:
            self._cache.popitem(last=False)

    @contextlib.contextmanager
    def _forget_on_failure(self) -> Iterator[None]:
        """A tile that took part in a failed check is not kept: the next try asks afresh."""
        try:
            yield
        except (merkle.ProofError, TileError):
            self._cache.clear()
            raise

    def _reading(self, resources: Mapping[str, bytes]) -> _Reading:
        return _Reading(self._cache, resources)

    def update(self, resources: Mapping[str, bytes]) -> VerifiedCheckpoint:
        """Verify and accept the log's checkpoint from `resources` (see the module's rules): the
        checkpoint the shell keeps from now on, or the one accepted before if the log has not
        grown. Raises `ResourcesNeeded` for the checkpoint, then for the tiles its proofs need."""
        data = resources.get(CHECKPOINT_PATH)
        if data is None:
            raise ResourcesNeeded((CHECKPOINT_PATH,))
        offered = verify_checkpoint(data, self.policy)
        with self._forget_on_failure():
            return self._update(offered, self._reading(resources))

    def _update(self, offered: VerifiedCheckpoint, reading: _Reading) -> VerifiedCheckpoint:
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
        reader = reading.reader(offered.size)
        root = merkle.root_from(reader.hash_at, offered.size) if offered.size else None
        proof = None
        if old is not None and old.size > 0:
            proof = merkle.consistency_proof_from(reader.hash_at, old.size, offered.size)
        reading.need()
        if root is not None and root != offered.root:
            raise TileError("the tiles do not reproduce the checkpoint's root hash")
        if old is not None and proof is not None:
            try:
                merkle.verify_consistency(old.size, offered.size, old.root, offered.root, proof)
            except merkle.ProofError:
                raise SplitViewError(
                    f"size {offered.size} is not an extension of the accepted size {old.size}",
                    old.note,
                    offered.note,
                ) from None
        self._keep(reading)
        self.current = offered
        return offered

    def _require_current(self) -> VerifiedCheckpoint:
        if self.current is None:
            raise UsageError("no checkpoint accepted yet: call update() first")
        return self.current

    def prove_inclusion(self, index: int, entry: bytes, resources: Mapping[str, bytes]) -> None:
        """Prove that `entry` is leaf `index` of the accepted tree (raises `ProofError`, or
        `ResourcesNeeded` for the tiles the proof needs)."""
        current = self._require_current()
        if not 0 <= index < current.size:
            raise merkle.InclusionProofError("that index is beyond the accepted tree")
        with self._forget_on_failure():
            reading = self._reading(resources)
            reader = reading.reader(current.size)
            proof = merkle.inclusion_proof_from(reader.hash_at, current.size, index)
            reading.need()
            merkle.verify_inclusion(
                merkle.leaf_hash(entry), index, current.size, proof, current.root
            )
            self._keep(reading)

    def _locate(self, index: int, current: VerifiedCheckpoint) -> tuple[str, int, int]:
        """(bundle path, bundle width, offset in it) of entry `index`."""
        if not 0 <= index < current.size:
            raise UsageError("that index is beyond the accepted tree")
        bundle, offset = divmod(index, TILE_WIDTH)
        width = tile_width(0, bundle, current.size)
        return entries_path(bundle, width), width, offset

    def need_entries(self, indices: Iterable[int], resources: Mapping[str, bytes]) -> None:
        """Raise `ResourcesNeeded` naming every entry bundle and tile that `entry` needs for
        these indices and `resources` lacks, all at once (a scan asks once, not per entry);
        return if nothing is missing. Nothing is read or checked here: `entry` checks each."""
        current = self._require_current()
        reading = self._reading(resources)
        hash_at = reading.naming_hash_at(current.size)
        bundles: set[str] = set()
        for index in indices:
            path, _width, _offset = self._locate(index, current)
            if path not in bundles:
                bundles.add(path)
                reading.bundle(path)
            merkle.inclusion_proof_from(hash_at, current.size, index)
        reading.need()

    def entry(self, index: int, resources: Mapping[str, bytes]) -> bytes:
        """Entry `index` from its bundle, proven to be in the accepted tree. Raises
        `ResourcesNeeded` for the bundle and the tiles its proof needs, together."""
        current = self._require_current()
        path, width, offset = self._locate(index, current)
        with self._forget_on_failure():
            reading = self._reading(resources)
            data = reading.bundle(path)  # bundles are large: read from the resources, not kept
            reader = reading.reader(current.size)
            proof = merkle.inclusion_proof_from(reader.hash_at, current.size, index)
            reading.need()
            entry = decode_bundle(data, width)[offset]
            merkle.verify_inclusion(
                merkle.leaf_hash(entry), index, current.size, proof, current.root
            )
            self._keep(reading)
        return entry


def describe(error: PrivprocError) -> str:
    """A message for people, with the evidence of a split view or rollback when there is one."""
    if isinstance(error, _EvidenceError):
        return f"{error}\n{error.evidence()}"
    return str(error)
