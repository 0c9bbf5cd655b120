"""The log client as an attacker's target: forks, rollbacks, tampered tiles and bundles, missing
cosignatures; and the honest path over real HTTP, with the accepted checkpoint persisted.

Most tests run the sans-IO core (`tlog/client.py`) in the device's shell (`LogReader`, over a
directory or HTTP); the core's own tests feed it resources by hand: what it names, what it
ignores, what it refuses; and the shell's bounds."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from privproc.attest.appraisal import logged_release_checks, unreadable_log_checks
from privproc.attest.verify import Check
from privproc.errors import DecodeError, PrivprocError, UsageError
from privproc.parties.device.logfetch import (
    AcceptedCheckpoint,
    LogReader,
    LogReadLimitError,
    directory_fetcher,
    http_fetcher,
)
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.client import (
    CheckpointRejectedError,
    LogClient,
    LogPolicy,
    QuorumNotMetError,
    ResourcesNeeded,
    RollbackError,
    SplitViewError,
    describe,
)
from privproc.tlog.entries import EnclaveRelease, encode_entry
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

    def client(self, quorum: int = 2, state: str = "client") -> LogReader:
        accepted = AcceptedCheckpoint(self.tmp / state / "log.json")
        return LogReader(self.policy(quorum), directory_fetcher(self.out), accepted)

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
        LogReader(other, directory_fetcher(world.out)).update()


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
        client = LogReader(world.policy(), http_fetcher(cdn, http_client))
        assert client.update().size == 1000
        assert client.entry(999) == b"entry 999"
        world.publish(1)
        assert client.update().size == 1001
        missing = LogReader(world.policy(), http_fetcher(cdn + "/nothing", http_client))
        with pytest.raises(PrivprocError, match="404"):
            missing.update()


# --- The sans-IO core, fed by hand ----------------------------------------------------------


def _files(world: World, *paths: str) -> dict[str, bytes]:
    return {path: (world.out / path).read_bytes() for path in paths}


def _needs(operation: Callable[[], object]) -> tuple[str, ...]:
    with pytest.raises(ResourcesNeeded) as needed:
        operation()
    return needed.value.paths


def test_the_core_names_exactly_what_it_lacks(world: World) -> None:
    world.publish(700)  # 512 + 188: the root is two level-1 hashes and the partial leaf tile
    core = LogClient(world.policy())
    assert _needs(lambda: core.update({})) == ("checkpoint",)
    have = _files(world, "checkpoint")
    root_tiles = (tile_path(1, 0, 2), tile_path(0, 2, 188))
    assert _needs(lambda: core.update(have)) == root_tiles
    assert core.current is None  # nothing is believed before every path is at hand
    have |= _files(world, root_tiles[0])
    assert _needs(lambda: core.update(have)) == root_tiles[1:]
    have |= _files(world, root_tiles[1])
    current = core.update(have)
    assert (current.size, current.note) == (700, have["checkpoint"])
    # An entry: its bundle and the tiles its proof needs beyond those kept, in one round.
    assert _needs(lambda: core.entry(3, have)) == (entries_path(0), tile_path(0, 0))
    have |= _files(world, entries_path(0), tile_path(0, 0))
    assert core.entry(3, have) == b"entry 3"
    core.prove_inclusion(3, b"entry 3", {})  # the tiles of checks that held are kept
    # A scan: every bundle and tile at once, each once.
    assert _needs(lambda: core.need_entries(range(700), {})) == (
        entries_path(0),
        entries_path(1),
        tile_path(0, 1),
        entries_path(2, 188),
    )
    core.need_entries(range(256), have)  # nothing missing: it returns
    with pytest.raises(UsageError):
        core.need_entries([700], have)


def test_growth_names_the_root_and_consistency_tiles_in_one_round(world: World) -> None:
    old = world.publish(10)
    world.publish(500)
    core = LogClient(world.policy(), old)  # the remembered checkpoint is a value
    assert core.current is not None
    assert core.current.note == old
    have = _files(world, "checkpoint")
    have |= _files(world, *_needs(lambda: core.update(have)))
    current = core.update(have)
    assert current.size == 510
    assert current.note == have["checkpoint"] != old  # the one the shell keeps from now on
    assert core.update(have) is current  # the log did not grow: nothing new to keep
    assert LogClient(world.policy(), current.note).current == current


def test_resources_never_asked_for_are_ignored(world: World) -> None:
    """Decided: the core reads only the paths it computes from the checkpoint; anything else
    fed is never read and never kept (the shell fetches only what is named anyway)."""
    world.publish(700)
    core = LogClient(world.policy())
    needed = ("checkpoint", tile_path(1, 0, 2), tile_path(0, 2, 188))
    junk = {
        tile_path(0, 0): bytes(8192),  # a tile a later proof needs, forged before it is asked
        tile_path(0, 2, 5): b"short",  # a width this size never has
        entries_path(0): b"not a bundle",
        "../../etc/passwd": b"",
        "tile/0/x999": b"?",
    }
    assert core.update(_files(world, *needed) | junk).size == 700
    # The forged tile was not kept: the entry's proof asks for the tile and checks the real one.
    have = _files(world, entries_path(0))
    assert _needs(lambda: core.entry(3, have)) == (tile_path(0, 0),)
    assert core.entry(3, have | _files(world, tile_path(0, 0))) == b"entry 3"
    # A kept tile is read from what was kept; one fed again under its path is not asked for.
    assert core.entry(3, have | {tile_path(0, 0): junk[tile_path(0, 0)]}) == b"entry 3"


def test_tampered_resources_fed_back_fail_as_before(world: World) -> None:
    world.publish(700)
    core = LogClient(world.policy())
    have = _files(world, "checkpoint", tile_path(1, 0, 2), tile_path(0, 2, 188))
    bad = bytearray(have[tile_path(0, 2, 188)])
    bad[5] ^= 1
    with pytest.raises(TileError, match="reproduce"):
        core.update(have | {tile_path(0, 2, 188): bytes(bad)})
    assert core.current is None
    # A tile of the wrong length fails at once, even while other paths are missing.
    with pytest.raises(TileError, match="wrong length"):
        core.update({"checkpoint": have["checkpoint"], tile_path(1, 0, 2): b"\0" * 63})
    core.update(have)
    # An entry bundle altered, and a leaf tile altered: the proof against the root fails, and
    # the failed check forgets every kept tile (the next try asks for them again).
    full = _files(world, entries_path(0), tile_path(0, 0))
    doctored = full[entries_path(0)].replace(b"entry 17", b"entry 71")
    with pytest.raises(merkle.ProofError):
        core.entry(17, full | {entries_path(0): doctored})
    assert _needs(lambda: core.entry(17, {})) == (
        entries_path(0),
        tile_path(0, 2, 188),
        tile_path(1, 0, 2),
        tile_path(0, 0),
    )
    flipped = bytearray(full[tile_path(0, 0)])
    flipped[32 * 18] ^= 1  # leaf 18: the sibling in entry 17's proof
    with pytest.raises(merkle.ProofError):
        core.entry(17, have | full | {tile_path(0, 0): bytes(flipped)})
    assert core.entry(17, have | full) == b"entry 17"
    # A truncated bundle does not decode.
    with pytest.raises(DecodeError):
        core.entry(17, have | full | {entries_path(0): full[entries_path(0)][:-1]})


def test_a_rollback_or_split_view_fed_to_the_core_keeps_the_accepted_value(world: World) -> None:
    old = world.publish(10)
    new = world.publish(10)
    core = LogClient(world.policy(), new)
    with pytest.raises(RollbackError) as err:
        core.update({"checkpoint": old})
    assert (err.value.accepted, err.value.offered) == (new, old)
    assert core.current is not None
    assert core.current.note == new


# --- The shell: fetch what is named, bounded --------------------------------------------------


class _Recording:
    def __init__(self, fetch: Callable[[str], bytes]) -> None:
        self.fetch = fetch
        self.paths: list[str] = []

    def __call__(self, path: str) -> bytes:
        self.paths.append(path)
        return self.fetch(path)


def test_the_shell_fetches_exactly_what_is_named_in_few_rounds(world: World) -> None:
    world.publish(700)
    fetch = _Recording(directory_fetcher(world.out))
    reader = LogReader(world.policy(), fetch)
    assert reader.update().size == 700
    assert fetch.paths == ["checkpoint", tile_path(1, 0, 2), tile_path(0, 2, 188)]
    fetch.paths.clear()
    assert reader.entries([3, 300, 699]) == [b"entry 3", b"entry 300", b"entry 699"]
    assert fetch.paths == [entries_path(0), tile_path(0, 0), entries_path(1), tile_path(0, 1),
                           entries_path(2, 188)]  # fmt: skip
    fetch.paths.clear()
    reader.prove_inclusion(300, b"entry 300")
    assert fetch.paths == []  # every tile it needs is kept
    assert reader.update().size == 700
    assert fetch.paths == ["checkpoint"]  # the checkpoint is always read afresh


def test_the_shell_stops_at_its_round_and_byte_bounds(world: World) -> None:
    world.publish(700)
    fetch = directory_fetcher(world.out)
    with pytest.raises(LogReadLimitError, match="after 1 rounds"):
        LogReader(world.policy(), fetch, max_rounds=1).update()  # update takes two
    assert LogReader(world.policy(), fetch, max_rounds=2).update().size == 700
    checkpoint = len((world.out / "checkpoint").read_bytes())
    with pytest.raises(LogReadLimitError, match=f"more than {checkpoint + 100} bytes"):
        LogReader(world.policy(), fetch, max_bytes=checkpoint + 100).update()
    # A core that keeps naming new paths, or names again what it was given, is stopped too.
    reader = LogReader(world.policy(), lambda path: b"x")

    def greedy(have: Mapping[str, bytes]) -> None:
        raise ResourcesNeeded([tile_path(0, len(have))])

    with pytest.raises(LogReadLimitError, match="after 4 rounds"):
        reader.run(greedy)

    def forgetful(have: Mapping[str, bytes]) -> None:
        raise ResourcesNeeded(["checkpoint"])

    with pytest.raises(LogReadLimitError, match="asked again"):
        reader.run(forgetful)


def test_the_device_keeps_the_accepted_checkpoint_in_its_format(world: World) -> None:
    older = world.publish(10)
    state = world.tmp / "device" / "log-checkpoint.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"version": 1, "checkpoint": older.decode()}))  # as kept before
    newer = world.publish(5)
    reader = LogReader(world.policy(), directory_fetcher(world.out), AcceptedCheckpoint(state))
    assert reader.current is not None
    assert reader.current.note == older
    assert reader.update().note == newer
    assert json.loads(state.read_text()) == {"version": 1, "checkpoint": newer.decode()}
    assert state.stat().st_mode & 0o777 == 0o600
    inode = state.stat().st_ino
    reader.update()  # the same checkpoint: nothing new to keep, the file is not rewritten
    assert state.stat().st_ino == inode


# --- The release checks of `attest verify`, read through the shell ---------------------------


def _release_log(world: World) -> bytes:
    measurement = hashlib.sha384(b"the build").digest()
    release = EnclaveRelease(measurement, b"i" * 32, b"o" * 32, b"c" * 32, "v1", 1_700_000_000)
    world.log.append(encode_entry(release))
    world.publish(3)
    return measurement


def _statuses(checks: list[Check]) -> list[tuple[str, str]]:
    return [(c.id, c.status.value) for c in checks]


def test_the_release_checks_name_what_they_need_and_never_fetch(world: World) -> None:
    measurement = _release_log(world)
    core = LogClient(world.policy())
    assert _needs(lambda: logged_release_checks(measurement, core, {})) == ("checkpoint",)
    fetch = _Recording(directory_fetcher(world.out))
    reader = LogReader(world.policy(), fetch)
    checks = reader.run(lambda have: logged_release_checks(measurement, reader.client, have))
    assert _statuses(checks) == [
        ("log.checkpoint", "pass"), ("log.inclusion", "pass"), ("log.release", "pass")
    ]  # fmt: skip
    assert "(entry 0)" in checks[2].reason
    assert fetch.paths == ["checkpoint", tile_path(0, 0, 4), entries_path(0, 4)]
    other = LogReader(world.policy(), directory_fetcher(world.out))
    checks = other.run(lambda have: logged_release_checks(b"\0" * 48, other.client, have))
    assert _statuses(checks)[2] == ("log.release", "fail")


def test_what_the_shell_cannot_read_is_a_failed_check(world: World) -> None:
    measurement = _release_log(world)
    for missing, failing, reason in [
        ("checkpoint", "log.checkpoint", "cannot read checkpoint"),
        (entries_path(0, 4), "log.inclusion", "could not be read: cannot read tile/entries"),
    ]:
        out = world.tmp / f"without-{missing.replace('/', '-')}"
        shutil.copytree(world.out, out)
        (out / missing).unlink()
        reader = LogReader(world.policy(), directory_fetcher(out))
        client = reader.client

        def checks_of(have: Mapping[str, bytes], client: LogClient = client) -> list[Check]:
            return logged_release_checks(measurement, client, have)

        with pytest.raises(PrivprocError) as err:
            reader.run(checks_of)
        checks = unreadable_log_checks(err.value, reader.current)
        assert [c.id for c in checks if c.failed] == [failing]
        assert reason in next(c.reason for c in checks if c.failed)
