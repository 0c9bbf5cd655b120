"""Fuzzing the transparency log's parsers (tlog/note.py, checkpoint.py, entries.py, tiles.py,
witness.py, client.py): signed notes, verifier and signer keys, checkpoints, log entries, entry
bundles, witness add-checkpoint requests, checkpoint verification, and the tiles and bundles fed
to the log client's core. Merkle proof verification
with random proofs is fuzzed in tests/test_merkle.py."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from privproc.ohttp.keys import KeyRing, encode_key_configs
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.client import LogClient, LogPolicy, verify_checkpoint
from privproc.tlog.entries import (
    EnclaveRelease,
    IssuerTokenKey,
    OhttpKeyConfigSet,
    decode_entry,
    encode_entry,
)
from privproc.tlog.note import SIG_COSIGNATURE_V1, Signer, Verifier, open_note, parse_note
from privproc.tlog.tiles import decode_bundle, encode_bundle, entries_path, tile_path
from privproc.tlog.witness import encode_add_checkpoint, parse_add_checkpoint
from tests.fuzz.support import fuzz, mutated, mutated_text, parses
from tests.fuzz.test_fuzz_tokens import TOKEN_KEYS

ORIGIN = "log.example/fuzz"
LOG = Signer.generate(ORIGIN)
WITNESS = Signer.generate("witness.example", SIG_COSIGNATURE_V1)
POLICY = LogPolicy(ORIGIN, (LOG.verifier,), (WITNESS.verifier,), 1)

ROOT = hashlib.sha256(b"root").digest()
CHECKPOINT = Checkpoint(ORIGIN, 12, ROOT, ("extension line",)).text()
NOTE = parse_note(CHECKPOINT + "\n" + LOG.sign(CHECKPOINT).line())
SIGNED = NOTE.with_signatures([WITNESS.sign(CHECKPOINT, 1_700_000_000)]).encode()

ENTRIES = [
    encode_entry(
        EnclaveRelease(b"m" * 48, b"i" * 32, b"o" * 32, b"c" * 32, "v1.2.3", 1_700_000_000)
    ),
    encode_entry(
        OhttpKeyConfigSet("gateway.example", encode_key_configs(KeyRing.generate().advertised), 5)
    ),
    encode_entry(IssuerTokenKey("issuer.example", 2, TOKEN_KEYS[0], 10, 20)),
]
BUNDLE = encode_bundle([b"", b"first entry", ENTRIES[0]])
ADD_CHECKPOINT = encode_add_checkpoint(3, [ROOT, hashlib.sha256(b"x").digest()], SIGNED)

# A log of three entries as a CDN serves it: its checkpoint, leaf tile and entry bundle.
SMALL = [b"a", b"bb", b"ccc"]
SMALL_LEAVES = [merkle.leaf_hash(e) for e in SMALL]
SMALL_TILE = b"".join(SMALL_LEAVES)
SMALL_TEXT = Checkpoint(ORIGIN, 3, merkle.root_from_leaf_hashes(SMALL_LEAVES)).text()
SMALL_CHECKPOINT = (
    parse_note(SMALL_TEXT + "\n" + LOG.sign(SMALL_TEXT).line())
    .with_signatures([WITNESS.sign(SMALL_TEXT, 1_700_000_000)])
    .encode()
)


@fuzz()
@given(st.one_of(mutated(SIGNED), st.binary(max_size=300)))
def test_signed_note(data: bytes) -> None:
    note = parses(parse_note, data)
    if note is not None:
        assert parse_note(note.encode()) == note
        parses(lambda n: open_note(n, [LOG.verifier, WITNESS.verifier]), note)


@fuzz()
@given(mutated(SIGNED))
def test_checkpoint_verification(data: bytes) -> None:
    verified = parses(lambda d: verify_checkpoint(d, POLICY), data)
    if verified is not None:  # only an unchanged checkpoint text carries valid signatures
        assert verified.checkpoint.text() == CHECKPOINT


@fuzz()
@given(mutated_text(CHECKPOINT))
def test_checkpoint_text(text: str) -> None:
    checkpoint = parses(Checkpoint.parse, text)
    if checkpoint is not None:
        assert checkpoint.text() == text


@fuzz()
@given(
    st.one_of(
        mutated_text(st.sampled_from([LOG.verifier.encode(), WITNESS.verifier.encode()])),
        st.text(max_size=120),
    )
)
def test_verifier_key(text: str) -> None:
    verifier = parses(Verifier.parse, text)
    if verifier is not None:
        assert verifier.encode() == text


@fuzz()
@given(mutated_text(st.sampled_from([LOG.encode(), WITNESS.encode()])))
def test_signer_key(text: str) -> None:
    signer = parses(Signer.parse, text)
    if signer is not None:
        assert signer.encode() == text


@fuzz()
@given(st.one_of(mutated(st.sampled_from(ENTRIES)), st.binary(max_size=300)))
def test_log_entry(data: bytes) -> None:
    entry = parses(decode_entry, data)
    if entry is not None:
        assert encode_entry(entry) == data


@fuzz()
@given(st.one_of(mutated(BUNDLE), st.binary(max_size=300)), st.integers(0, 5))
def test_entry_bundle(data: bytes, count: int) -> None:
    entries = parses(lambda d: decode_bundle(d, count), data)
    if entries is not None:
        assert len(entries) == count
        assert encode_bundle(entries) == data


@fuzz()
@given(st.one_of(mutated(ADD_CHECKPOINT), st.binary(max_size=300)))
def test_witness_add_checkpoint(data: bytes) -> None:
    request = parses(parse_add_checkpoint, data)
    if request is not None:
        assert encode_add_checkpoint(request.old_size, request.proof, request.note) == data


@fuzz()
@given(mutated(SMALL_TILE), mutated(encode_bundle(SMALL)), st.integers(0, 2))
def test_log_client_resources(tile: bytes, bundle: bytes, index: int) -> None:
    """Whatever tile and bundle the core is fed, it accepts the checkpoint only with the real
    tile and hands out only the real entry."""
    client = LogClient(POLICY)
    resources = {
        "checkpoint": SMALL_CHECKPOINT,
        tile_path(0, 0, 3): tile,
        entries_path(0, 3): bundle,
    }
    accepted = parses(client.update, resources)
    assert (accepted is not None) == (tile == SMALL_TILE)
    if accepted is not None:
        entry = parses(lambda r: client.entry(index, r), resources)
        assert entry in (None, SMALL[index])
        assert (
            client.entry(index, {**resources, entries_path(0, 3): encode_bundle(SMALL)})
            == (SMALL[index])
        )
