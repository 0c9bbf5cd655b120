"""C2SP tlog-tiles: paths and widths from the spec, the log writer against the RFC 6962 reference,
and an independent reader and writer (PyPI tlog-scales) reading and rebuilding our log."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from privproc.errors import DecodeError, UsageError
from privproc.parties.log.publisher import publish
from privproc.tlog import merkle
from privproc.tlog.log import LogError, TransparencyLog
from privproc.tlog.note import Verifier, open_note
from privproc.tlog.tiles import (
    TileError,
    TileHashReader,
    decode_bundle,
    encode_bundle,
    encode_index,
    entries_path,
    tile_path,
    tile_width,
)

V: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "c2sp" / "c2sp-vectors.json").read_text()
)
ORIGIN = "log.example/test"


def _entries(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 80)) for _ in range(n)]


@pytest.mark.parametrize(("n", "path"), V["tile_paths"])
def test_tile_index_paths(n: int, path: str) -> None:
    assert encode_index(n) == path


def test_tile_paths_and_widths() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 0, 17) == "tile/1/000.p/17"
    assert entries_path(273, 112) == "tile/entries/273.p/112"
    for size, rows in V["tile_counts"].items():
        if size.startswith("_"):
            continue
        for level, full, partial in rows:
            assert tile_width(level, full, int(size)) == partial
            if full:
                assert tile_width(level, full - 1, int(size)) == 256
    for bad in ((-1, 0, 256), (64, 0, 256), (0, 0, 0), (0, 0, 257)):
        with pytest.raises(UsageError):
            tile_path(*bad)


def test_bundles() -> None:
    entries = [b"", b"a", bytes(300), bytes(65535)]
    data = encode_bundle(entries)
    assert decode_bundle(data, 4) == entries
    for bad, count in ((data[:-1], 4), (data + b"\x00", 4), (data, 5), (data, 3)):
        with pytest.raises(DecodeError):
            decode_bundle(bad, count)
    with pytest.raises(UsageError):
        encode_bundle([bytes(65536)])


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 513, 65536 + 300])
def test_tile_reader_answers_like_the_reference(size: int) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    tiles: dict[tuple[int, int], bytes] = {}
    level_hashes = leaves
    level = 0
    while level_hashes:
        for i in range(0, len(level_hashes), 256):
            tiles[(level, i // 256)] = b"".join(level_hashes[i : i + 256])
        full = [level_hashes[i : i + 256] for i in range(0, len(level_hashes) - 255, 256)]
        level_hashes = [merkle.root_from_leaf_hashes(t) for t in full]
        level += 1
    reader = TileHashReader(size, lambda lv, ix, w: tiles[(lv, ix)][: w * 32])
    assert merkle.root_from(reader.hash_at, size) == merkle.root_from_leaf_hashes(leaves)
    index = size // 3
    assert merkle.inclusion_proof_from(reader.hash_at, size, index) == merkle.inclusion_proof(
        leaves, index
    )
    short = TileHashReader(size, lambda lv, ix, w: tiles[(lv, ix)][: w * 32 - 1])
    with pytest.raises(TileError):
        merkle.root_from(short.hash_at, size)


def _new_log(tmp: Path) -> TransparencyLog:
    return TransparencyLog.init(tmp / "state", ORIGIN)


def test_state_and_key_files(tmp_path: Path) -> None:
    log = _new_log(tmp_path)
    key = tmp_path / "state" / "log.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().startswith("PRIVATE+KEY+log.example/test+")
    assert log.verifier.name == ORIGIN
    with pytest.raises(LogError, match="already exists"):
        TransparencyLog.init(tmp_path / "state", ORIGIN)
    with pytest.raises(LogError, match="no log"):
        TransparencyLog(tmp_path / "nothing")
    with pytest.raises(UsageError):
        log.append(bytes(65536))
    log.close()


def test_incremental_publishes_match_the_reference_and_one_big_publish(tmp_path: Path) -> None:
    entries = _entries(70_000)
    log = _new_log(tmp_path / "a")
    out = tmp_path / "a" / "out"
    sizes = [1, 255, 256, 257, 1000, 65_536, 65_537, 70_000]
    done = 0
    for size in sizes:
        log.append_many(entries[done:size])
        done = size
        note, _ = publish(log, out, 0)
        opened = open_note(note.encode(), [log.verifier])
        leaves = [merkle.leaf_hash(e) for e in entries[:size]]
        assert opened.text.split("\n")[1] == str(size)
        assert log.root(size) == merkle.root_from_leaf_hashes(leaves)
    # Every consistency proof between the published sizes verifies.
    for old, new in itertools.pairwise(sizes):
        merkle.verify_consistency(
            old, new, log.root(old), log.root(new), log.consistency_proof(old, new)
        )
    # The same entries published at once give byte-identical full tiles and bundles.
    other = _new_log(tmp_path / "b")
    other.append_many(entries)
    publish(other, tmp_path / "b" / "out", 0)
    for path in sorted((tmp_path / "b" / "out" / "tile").rglob("*")):
        if path.is_file():
            twin = out / path.relative_to(tmp_path / "b" / "out")
            assert twin.read_bytes() == path.read_bytes(), path
    log.close()
    other.close()


def test_an_independent_reader_reads_our_log(tmp_path: Path) -> None:
    from tlog_scales import backend, reader, signing, tlog

    entries = _entries(70_123, seed=7)
    log = _new_log(tmp_path)
    log.append_many(entries)
    out = tmp_path / "out"
    publish(log, out, 0)
    theirs = reader.TilesReader(backend.LocalBackend(out))
    checkpoint = theirs.get_checkpoint()
    checkpoint.verify(signing.Vkey.from_string(log.verifier.encode()))
    assert checkpoint.size == len(entries)
    assert theirs.calculate_root_hash() == log.root(len(entries))
    rng = random.Random(3)
    for index in [0, 255, 256, 65_535, 65_536, len(entries) - 1, *rng.sample(range(70_123), 20)]:
        assert theirs.get_entry(index) == entries[index]
        proof = theirs.get_inclusion_proof(index, len(entries))
        merkle.verify_inclusion(
            merkle.leaf_hash(entries[index]),
            index,
            len(entries),
            list(proof.node_hashes),
            log.root(len(entries)),
        )
    old = 12_345
    consistency = theirs.get_consistency_proof(old, len(entries))
    assert list(consistency.node_hashes) == log.consistency_proof(old, len(entries))
    assert isinstance(checkpoint, tlog.Checkpoint)
    log.close()


def test_an_independent_writer_builds_the_same_tiles(tmp_path: Path) -> None:
    from tlog_scales import writer

    entries = _entries(66_000, seed=11)
    theirs = writer.TilesWriter.create(tmp_path / "theirs", ORIGIN)
    for entry in entries:
        theirs.add_leaf(entry)
    theirs.commit([], gc=False)
    log = _new_log(tmp_path)
    log.append_many(entries)
    publish(log, tmp_path / "ours", 0)
    their_files = {
        p.relative_to(tmp_path / "theirs"): p.read_bytes()
        for p in (tmp_path / "theirs" / "tile").rglob("*")
        if p.is_file()
    }
    our_files = {
        p.relative_to(tmp_path / "ours"): p.read_bytes()
        for p in (tmp_path / "ours" / "tile").rglob("*")
        if p.is_file()
    }
    assert their_files == our_files
    log.close()


def test_commit_refuses_foreign_or_smaller_checkpoints(tmp_path: Path) -> None:
    log = _new_log(tmp_path)
    log.append_many(_entries(10))
    note, _ = publish(log, tmp_path / "out", 0)
    other = TransparencyLog.init(tmp_path / "other", ORIGIN)
    other.append_many(_entries(10, seed=99))
    foreign = other.stage(tmp_path / "elsewhere")
    with pytest.raises(LogError, match="not one this log staged"):
        log.commit(tmp_path / "out", foreign)
    log.append_many(_entries(5, seed=5))
    bigger = log.stage(tmp_path / "out")
    log.commit(tmp_path / "out", bigger)
    with pytest.raises(LogError, match="smaller"):
        log.commit(tmp_path / "out", note)
    assert Verifier.parse(log.verifier.encode()) == log.verifier
    log.close()
    other.close()


def test_each_entry_type_is_described_field_by_field() -> None:
    from privproc.ohttp.keys import KeyRing
    from privproc.tlog.entries import (
        EnclaveRelease,
        LogEntry,
        OhttpKeyConfigSet,
        decode_entry,
        describe_entry,
        encode_entry,
    )

    release = EnclaveRelease(b"\x01" * 48, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, "rev", 7)
    keys = KeyRing.generate().keys_document()
    configs = OhttpKeyConfigSet("gw.example", keys, 9)
    cases: list[tuple[LogEntry, dict[str, object]]] = [
        (
            release,
            {"type": "enclave-release", "measurement": "01" * 48, "image_digest": "02" * 32,
             "model_digest": "03" * 32, "config_digest": "04" * 32, "source_revision": "rev",
             "time": 7},
        ),
        (
            configs,
            {"type": "ohttp-key-configs", "gateway": "gw.example", "key_configs": keys.hex(),
             "not_before": 9},
        ),
    ]  # fmt: skip
    for entry, expected in cases:
        assert json.loads(describe_entry(decode_entry(encode_entry(entry)))) == expected
