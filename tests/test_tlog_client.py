"""The log client as an attacker's target: forks, rollbacks, tampered tiles and bundles, missing
cosignatures; and the honest path over real HTTP, with the accepted checkpoint persisted."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from privproc.errors import DecodeError, PrivprocError
from privproc.parties.device.logfetch import directory_fetcher, http_fetcher
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.client import (
    AcceptedCheckpoint,
    CheckpointRejectedError,
    LogClient,
    LogPolicy,
    QuorumNotMetError,
    RollbackError,
    SplitViewError,
    describe,
)
from privproc.tlog.log import TransparencyLog
from privproc.tlog.note import Note, parse_note
from privproc.tlog.tiles import TileError, entries_path, tile_path
from privproc.tlog.witness import Witness, encode_add_checkpoint

ORIGIN = "log.example/client"


class World:
    """A log, two witnesses and the directory a CDN would serve."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.out = tmp / "cdn"
        self.log = TransparencyLog.init(tmp / "log", ORIGIN)
        self.witnesses = [Witness.init(tmp / f"w{i}", f"witness.example/{i}") for i in (1, 2)]
        for w in self.witnesses:
            w.add_log(ORIGIN, [self.log.verifier.encode()])
        self.sizes = {id(w): 0 for w in self.witnesses}

    def policy(self, quorum: int = 2) -> LogPolicy:
        return LogPolicy(
            ORIGIN, (self.log.verifier,), tuple(w.verifier for w in self.witnesses), quorum
        )

    def publish(self, n: int, witnesses: int = 2, log: TransparencyLog | None = None) -> bytes:
        log = log or self.log
        start = log.size
        log.append_many(f"entry {i}".encode() for i in range(start, start + n))
        note = log.stage(self.out)
        size = Checkpoint.parse(note.text).size
        lines = []
        for w in self.witnesses[:witnesses]:
            old = self.sizes[id(w)]
            proof = log.consistency_proof(old, size) if 0 < old < size else []
            lines.append(w.add_checkpoint(encode_add_checkpoint(old, proof, note.encode())))
            self.sizes[id(w)] = size
        cosigned = parse_note(note.text + "\n" + "".join(lines))
        note = note.with_signatures(cosigned.signatures)
        log.commit(self.out, note)
        return note.encode()

    def client(self, quorum: int = 2, state: str = "client") -> LogClient:
        accepted = AcceptedCheckpoint(self.tmp / state / "log.json")
        return LogClient(self.policy(quorum), directory_fetcher(self.out), accepted)

    def close(self) -> None:
        self.log.close()
        for w in self.witnesses:
            w.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def test_honest_growth_is_accepted_and_remembered(world: World) -> None:
    world.publish(10)
    client = world.client()
    first = client.update()
    assert first.size == 10
    assert first.cosigners == ("witness.example/1", "witness.example/2")
    assert client.entry(7) == b"entry 7"
    world.publish(500)
    # A new client instance starts from what the last one accepted and demands consistency.
    again = world.client()
    assert again.current is not None
    assert again.current.size == 10
    assert again.update().size == 510
    assert again.entry(300) == b"entry 300"
    assert (world.tmp / "client" / "log.json").stat().st_mode & 0o777 == 0o600


def test_inclusion_of_a_given_entry(world: World) -> None:
    world.publish(300)
    client = world.client()
    client.update()
    client.prove_inclusion(299, b"entry 299")
    with pytest.raises(merkle.ProofError):
        client.prove_inclusion(299, b"entry 298")
    with pytest.raises(merkle.ProofError):
        client.prove_inclusion(300, b"entry 300")


def test_missing_quorum_is_refused_and_changes_nothing(world: World) -> None:
    world.publish(4)
    client = world.client()
    client.update()
    world.publish(4, witnesses=1)
    with pytest.raises(QuorumNotMetError):
        client.update()
    assert client.current is not None
    assert client.current.size == 4
    assert world.client().current.size == 4  # type: ignore[union-attr]
    assert world.client(quorum=1).update().size == 8


def test_checkpoints_without_the_log_signature_or_for_another_log(world: World) -> None:
    note = parse_note(world.publish(3))
    _log_sig, *cosigs = note.signatures
    (world.out / "checkpoint").write_bytes(Note(note.text, tuple(cosigs)).encode())
    with pytest.raises(CheckpointRejectedError, match="not signed by the log"):
        world.client().update()
    other = LogPolicy("log.example/other", (world.log.verifier,), (), 0)
    (world.out / "checkpoint").write_bytes(note.encode())
    with pytest.raises(CheckpointRejectedError, match="another log"):
        LogClient(other, directory_fetcher(world.out)).update()


def test_rollback_is_detected_with_evidence(world: World) -> None:
    old = world.publish(10)
    new = world.publish(10)
    client = world.client()
    assert client.update().size == 20
    (world.out / "checkpoint").write_bytes(old)
    with pytest.raises(RollbackError) as err:
        client.update()
    assert err.value.accepted == new
    assert err.value.offered == old
    assert "offered checkpoint:" in describe(err.value)


def _fork(world: World, entries: list[bytes]) -> TransparencyLog:
    """A second log with the same key (an operator who forks its own log)."""
    state = world.tmp / f"fork{len(entries)}"
    fork = TransparencyLog.init(state, ORIGIN)
    (state / "log.key").write_text((world.tmp / "log" / "log.key").read_text())
    fork = TransparencyLog(state)
    fork.append_many(entries)
    return fork


def test_same_size_fork_is_a_split_view(world: World) -> None:
    world.publish(10)
    client = world.client(quorum=0)
    accepted = client.update()
    fork = _fork(world, [f"entry {i}".encode() for i in range(9)] + [b"evil"])
    forked = fork.stage(world.tmp / "forkcdn")
    fork.commit(world.tmp / "forkcdn", forked)
    shutil.rmtree(world.out)
    shutil.copytree(world.tmp / "forkcdn", world.out)
    with pytest.raises(SplitViewError) as err:
        client.update()
    assert err.value.accepted == accepted.note
    assert err.value.offered == forked.encode()
    fork.close()


def test_inconsistent_growth_is_a_split_view(world: World) -> None:
    world.publish(20)
    client = world.client(quorum=0)
    client.update()
    # The fork rewrites entry 3 and grows to 40: its own tiles are internally consistent.
    entries = [f"entry {i}".encode() for i in range(40)]
    entries[3] = b"rewritten"
    fork = _fork(world, entries)
    forked = fork.stage(world.tmp / "forkcdn")
    fork.commit(world.tmp / "forkcdn", forked)
    shutil.rmtree(world.out)
    shutil.copytree(world.tmp / "forkcdn", world.out)
    with pytest.raises(SplitViewError, match="not an extension"):
        client.update()
    # Honest witnesses refuse to cosign the fork: they saw size 20 of the real log.
    with pytest.raises(PrivprocError, match="consistency proof"):
        world.witnesses[0].add_checkpoint(
            encode_add_checkpoint(20, fork.consistency_proof(20, 40), forked.encode())
        )
    fork.close()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def test_tampered_tiles_and_bundles_are_caught(world: World) -> None:
    world.publish(700)
    # A tile the root is built from: the checkpoint is refused outright.
    upper = world.out / tile_path(1, 0, 2)
    _flip(upper, 5)
    with pytest.raises(TileError, match="reproduce"):
        world.client().update()
    _flip(upper, 5)
    client = world.client(state="other")
    client.update()
    # A leaf-level tile that only proofs use: any proof through the altered hash fails.
    level0 = world.out / tile_path(0, 1)
    _flip(level0, 40)  # leaf 257's hash
    with pytest.raises(merkle.ProofError):
        client.entry(256)  # its proof needs leaf 257's hash
    _flip(level0, 40)
    assert client.entry(256) == b"entry 256"
    # An altered entry in a bundle does not hash to its leaf.
    bundle = world.out / entries_path(0)
    bundle.write_bytes(bundle.read_bytes().replace(b"entry 17", b"entry 71"))
    with pytest.raises(merkle.ProofError):
        client.entry(17)
    # A truncated partial tile has the wrong length for the checkpoint.
    partial = world.out / tile_path(0, 2, 700 - 512)
    partial.write_bytes(partial.read_bytes()[:-1])
    with pytest.raises(TileError):
        world.client(state="third").update()


def test_corrupt_client_state_is_reported(world: World) -> None:
    world.publish(2)
    world.client().update()
    (world.tmp / "client" / "log.json").write_text("{")
    with pytest.raises(DecodeError, match="corrupt"):
        world.client()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base names it)
        return None


@pytest.fixture
def cdn(world: World) -> Iterator[str]:
    """A real HTTP server on loopback serving the log's directory (a stand-in CDN)."""
    world.out.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_Quiet, directory=str(world.out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_over_http(world: World, cdn: str) -> None:
    world.publish(1000)
    with httpx.Client() as http_client:
        client = LogClient(world.policy(), http_fetcher(cdn, http_client))
        assert client.update().size == 1000
        assert client.entry(999) == b"entry 999"
        world.publish(1)
        assert client.update().size == 1001
        missing = LogClient(world.policy(), http_fetcher(cdn + "/nothing", http_client))
        with pytest.raises(PrivprocError, match="404"):
            missing.update()
