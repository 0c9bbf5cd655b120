"""The log client's shell on the device: it runs the sans-IO core (`privproc.tlog.client`),
fetches what the core names, feeds it back and calls again; and it keeps the last accepted
checkpoint in a file.

    reader = LogReader(policy, http_fetcher(url, http), AcceptedCheckpoint(state / "log.json"))
    current = reader.update()      # checkpoint, then tiles: verified, consistent, kept on disk
    entry = reader.entry(index)    # the bundle and tiles together, proven
    checks = reader.run(lambda resources: core_operation(reader.client, resources))

    reader = LogReader(policy, http_steps(url), accepted)   # the same, as steps (net/steps.py):
    current = yield from reader.update_step()               # any driver, blocking or asyncio

Rules:
- Fetching and keeping only; every byte is verified by the core, never here. The shell fetches
  exactly the paths a `ResourcesNeeded` names, each with the bound its kind allows (over HTTP),
  never one it was not asked for.
- One operation is bounded: at most `max_rounds` rounds of fetching and `max_bytes` bytes in all;
  past either it stops with `LogReadLimitError`. A round that names only what was fed already
  is a fault of the core, refused the same way rather than fetched again.
- The accepted checkpoint is written (0600, write-fsync-rename: `privproc.storage`) before
  `update` returns it, in one JSON file of the device's state (`{"version": 1, "checkpoint":
  note}`); a file that does not read is reported, never ignored or replaced silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar, Union

import httpx

from privproc.errors import DecodeError, PeerRejectedError, PrivprocError, TransportError
from privproc.net.drivers import Driver, run_local
from privproc.net.steps import Exchange, Step
from privproc.storage import write_atomically
from privproc.tlog.client import (
    CHECKPOINT_PATH,
    MAX_BUNDLE,
    MAX_TILE,
    LogClient,
    LogPolicy,
    ResourcesNeeded,
    VerifiedCheckpoint,
)
from privproc.tlog.note import MAX_NOTE_SIZE
from privproc.wire import load_json

__all__ = [
    "MAX_READ_BYTES",
    "MAX_READ_ROUNDS",
    "AcceptedCheckpoint",
    "Fetch",
    "LogReadLimitError",
    "LogReader",
    "directory_fetcher",
    "http_fetcher",
    "http_steps",
]

T = TypeVar("T")
# A tlog-tiles path -> its bytes (or a PrivprocError); or, as `http_steps` makes, a step that
# gives them, for a reader run by a client's driver.
Fetch = Callable[[str], Union[bytes, Step[bytes]]]  # noqa: UP007

# One operation: the checkpoint, the tiles its proofs need, then entry bundles (a scan) is three
# rounds; a fourth is slack. 64 MiB holds a scan of about 800 bundles of release-sized entries.
MAX_READ_ROUNDS = 4
MAX_READ_BYTES = 64 << 20


class LogReadLimitError(TransportError):
    """Reading the log for one operation took more rounds or more bytes than the shell allows."""


def _fetch_step(base: str, path: str) -> Step[bytes]:
    if path == CHECKPOINT_PATH:
        limit = MAX_NOTE_SIZE
    elif path.startswith("tile/entries/"):
        limit = MAX_BUNDLE
    else:
        limit = MAX_TILE
    answer = yield Exchange("GET", f"{base}/{path}", limit)
    if answer.status != 200:
        raise PeerRejectedError(f"{base}/{path} answered {answer.status}", answer.status)
    body: bytes = answer.body
    return body


def http_steps(base_url: str) -> Fetch:
    """Fetch log resources from `base_url` (the CDN) as steps, each with the bound its kind
    allows: the reader's `*_step` methods then run under the caller's driver."""
    base = base_url.rstrip("/")
    return lambda path: _fetch_step(base, path)


def http_fetcher(base_url: str, http: httpx.Client) -> Callable[[str], bytes]:
    """Fetch log resources from `base_url` (the CDN) on `http`, blocking."""
    base = base_url.rstrip("/")

    def fetch(path: str) -> bytes:
        return Driver(http).run(_fetch_step(base, path))

    return fetch


def directory_fetcher(root: Path) -> Callable[[str], bytes]:
    """Read log resources from a published directory on disk."""

    def fetch(path: str) -> bytes:
        target = root / path
        try:
            return target.read_bytes()
        except OSError as exc:
            raise PrivprocError(f"cannot read {path} under {root}: {exc.strerror}") from None

    return fetch


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


class LogReader:
    """A `LogClient` core with its fetch and, optionally, its remembered checkpoint."""

    def __init__(
        self,
        policy: LogPolicy,
        fetch: Fetch,
        accepted: AcceptedCheckpoint | None = None,
        *,
        max_rounds: int = MAX_READ_ROUNDS,
        max_bytes: int = MAX_READ_BYTES,
        cache_tiles: int = 4096,
    ) -> None:
        remembered = accepted.load() if accepted is not None else None
        self.client = LogClient(policy, remembered, cache_tiles=cache_tiles)
        self._fetch = fetch
        self._accepted = accepted
        self.max_rounds = max_rounds
        self.max_bytes = max_bytes

    @property
    def current(self) -> VerifiedCheckpoint | None:
        return self.client.current

    def run(self, operation: Callable[[Mapping[str, bytes]], T]) -> T:
        """`operation(resources)`, called again with what each `ResourcesNeeded` it raises
        names, fetched, until it returns (or a bound is reached). Blocking: the fetch must give
        bytes (a step fetch is run by `run_step` under a driver)."""
        return run_local(self.run_step(operation))

    def run_step(self, operation: Callable[[Mapping[str, bytes]], T]) -> Step[T]:
        """`run`, as a step."""
        have: dict[str, bytes] = {}
        total = 0
        rounds = 0
        while True:
            try:
                return operation(have)
            except ResourcesNeeded as needed:
                wanted = [path for path in needed.paths if path not in have]
                if not wanted:
                    raise LogReadLimitError(
                        f"the log client asked again for what it was given: {needed}"
                    ) from None
                if rounds == self.max_rounds:
                    raise LogReadLimitError(
                        f"the log still needed more after {rounds} rounds of fetching: {needed}"
                    ) from None
                rounds += 1
            for path in wanted:
                fetched = self._fetch(path)
                data = fetched if isinstance(fetched, bytes) else (yield from fetched)
                total += len(data)
                if total > self.max_bytes:
                    raise LogReadLimitError(
                        f"reading the log took more than {self.max_bytes} bytes (at {path})"
                    )
                have[path] = data

    def update(self) -> VerifiedCheckpoint:
        """Fetch, verify and accept the log's current checkpoint; a new one is kept on disk
        before it is returned."""
        return run_local(self.update_step())

    def update_step(self) -> Step[VerifiedCheckpoint]:
        """`update`, as a step."""
        before = self.client.current
        current = yield from self.run_step(self.client.update)
        if self._accepted is not None and (before is None or current.note != before.note):
            self._accepted.save(current.note)
        return current

    def prove_inclusion(self, index: int, entry: bytes) -> None:
        """Prove that `entry` is leaf `index` of the accepted tree (raises `ProofError`)."""
        self.run(lambda resources: self.client.prove_inclusion(index, entry, resources))

    def entry(self, index: int) -> bytes:
        """Entry `index` from its bundle, proven to be in the accepted tree."""
        return self.run(lambda resources: self.client.entry(index, resources))

    def entries(self, indices: Iterable[int]) -> list[bytes]:
        """These entries, each proven; every bundle and tile they need fetched in one round."""
        return run_local(self.entries_step(indices))

    def entries_step(self, indices: Iterable[int]) -> Step[list[bytes]]:
        """`entries`, as a step."""
        wanted = list(indices)

        def read(resources: Mapping[str, bytes]) -> list[bytes]:
            self.client.need_entries(wanted, resources)
            return [self.client.entry(index, resources) for index in wanted]

        return (yield from self.run_step(read))
