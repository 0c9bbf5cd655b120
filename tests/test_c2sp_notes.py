"""C2SP signed-note, tlog-checkpoint and tlog-cosignature, byte for byte: the specs' examples,
golang.org/x/mod/sumdb/note's vectors, every malformed case, and an independent implementation
(PyPI tlog-scales) checking our signatures."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import PrivprocError, UsageError
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.merkle import EMPTY_ROOT
from privproc.tlog.note import (
    SIG_COSIGNATURE_V1,
    NoteError,
    NoteVerificationError,
    Signer,
    Verifier,
    key_id,
    open_note,
    parse_note,
)

V: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "c2sp" / "c2sp-vectors.json").read_text()
)
GO = V["go_note"]
TEXT = GO["text"]
PETER = Verifier.parse(GO["peter_vkey"])
ENOCH = Verifier.parse(GO["enoch_vkey"])


def test_c2sp_verifier_key_example() -> None:
    example = V["c2sp_example"]
    verifier = Verifier.parse(example["vkey"])
    assert verifier.encode() == example["vkey"]
    assert verifier.key_id == 0x530D903A
    opened = open_note(example["note"].encode(), [verifier])
    assert opened.text == "This is an example message.\n"
    assert opened.verified == (verifier,)


def test_go_signer_reproduces_the_reference_signature() -> None:
    signer = Signer.parse(GO["peter_skey"])
    assert signer.encode() == GO["peter_skey"]
    assert signer.verifier.encode() == GO["peter_vkey"]
    assert signer.sign(TEXT).line() == GO["peter_sig"]  # Ed25519 is deterministic
    assert key_id("PeterNeumann", 1, PETER.public_key) == 0xC74F20A3


def test_go_open_cases() -> None:
    both = TEXT + "\n" + GO["peter_sig"] + GO["enoch_sig"]
    opened = open_note(both, [PETER])
    assert opened.verified == (PETER,)
    assert [s.name for s in opened.unverified] == ["EnochRoot"]
    assert len(open_note(both, [PETER, ENOCH]).verified) == 2
    with pytest.raises(NoteVerificationError, match="no signature from a known key"):
        open_note(both, [])
    # A known key whose signature fails rejects the whole note.
    peter = GO["peter_sig"]
    tampered = TEXT + "\n" + peter[:60] + "ABCD" + peter[60:]
    with pytest.raises(PrivprocError):
        open_note(tampered, [PETER])
    # Duplicates are checked once; unknown and broken-but-unknown lines are only listed.
    enoch = GO["enoch_sig"]
    duplicated = TEXT + "\n" + peter + peter + enoch + enoch + enoch[:60] + "ABCD" + enoch[60:]
    opened = open_note(duplicated, [PETER])
    assert opened.verified == (PETER,)
    assert len(opened.unverified) == 2


@pytest.mark.parametrize(
    "note",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + GO["peter_sig"][:-1],
        "\x01" + TEXT + "\n" + GO["peter_sig"],
        TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC"
        "2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        TEXT + "\n" + GO["peter_sig"] + "Unexpected line.\n",
        TEXT + "\n" + GO["peter_sig"] * 101,
    ],
    ids=["text-only", "no-signatures", "no-final-newline", "control", "bad-name", "junk", "101"],
)
def test_go_malformed_notes(note: str) -> None:
    with pytest.raises(NoteError):
        parse_note(note)


def test_invalid_utf8_note() -> None:
    with pytest.raises(NoteError):
        parse_note(b"\xff" + (TEXT + "\n" + GO["peter_sig"]).encode())


def test_go_bad_verifier_keys() -> None:
    vkey = GO["peter_vkey"]
    for bad in GO["bad_vkeys"]:
        with pytest.raises(NoteError):
            Verifier.parse(bad)
    for i in range(len(vkey)):  # every proper prefix and every single-byte increment
        with pytest.raises(NoteError):
            Verifier.parse(vkey[:i])
        bumped = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :]
        with pytest.raises(NoteError):
            Verifier.parse(bumped)


def test_non_canonical_base64_is_refused() -> None:
    peter = GO["peter_sig"].rstrip("\n")
    payload = peter.rsplit(" ", 1)[1]
    raw = base64.b64decode(payload)
    assert base64.b64encode(raw).decode() == payload
    # Same bytes, a different spare bit before the padding: must not be accepted.
    last = payload[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    other = alphabet[alphabet.index(last) ^ 1]
    forged = peter[: -len(payload)] + payload[:-2] + other + "="
    assert base64.b64decode(forged.rsplit(" ", 1)[1]) == raw
    with pytest.raises(NoteError, match="canonical"):
        parse_note(TEXT + "\n" + forged + "\n")


def test_cosignature_v1_vector_and_checkpoint() -> None:
    d = V["derived_cosignature"]
    log_signer = Signer.parse(d["log_skey"])
    witness = Signer("witness.example/w1", log_signer.private_key, SIG_COSIGNATURE_V1)
    assert witness.verifier.encode() == d["witness_vkey"]
    assert log_signer.sign(d["checkpoint_text"]).line() == d["log_line"]
    assert witness.sign(d["checkpoint_text"], d["timestamp"]).line() == d["cosignature_line"]
    note = d["checkpoint_text"] + "\n" + d["log_line"] + d["cosignature_line"]
    log_v, witness_v = Verifier.parse(d["log_vkey"]), Verifier.parse(d["witness_vkey"])
    opened = open_note(note, [log_v, witness_v])
    assert [c.timestamp for c in opened.cosignatures] == [d["timestamp"]]
    # A cosignature key is not a log key: the same key under type 0x01 does not match the line.
    assert open_note(note, [log_v]).cosignatures == ()
    # The cosignature covers its timestamp: moving it breaks the signature.
    line = d["cosignature_line"]
    raw = bytearray(base64.b64decode(line.rsplit(" ", 1)[1]))
    raw[11] ^= 1
    moved = line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(NoteVerificationError):
        open_note(d["checkpoint_text"] + "\n" + d["log_line"] + moved, [log_v, witness_v])
    with pytest.raises(UsageError):
        witness.sign(d["checkpoint_text"])  # a cosignature needs its time
    with pytest.raises(UsageError):
        log_signer.sign(d["checkpoint_text"], 5)  # a log signature has none


def test_checkpoint_example_parses_and_round_trips() -> None:
    note = parse_note(V["checkpoint_example"])
    checkpoint = Checkpoint.parse(note.text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint.text() == note.text
    assert [s.name for s in note.signatures] == [
        "example.com/behind-the-sofa",
        "witness.example.com/w1",
    ]
    assert note.encode().decode() == V["checkpoint_example"]


@pytest.mark.parametrize(
    "text",
    [
        "o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n+12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n18446744073709551616\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n",
        "o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
        "o\n12\nAAAA\n",
        "o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
        "\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n12\n",
        "o\n0\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
    ],
    ids=[
        "leading-zero",
        "plus",
        "2**64",
        "non-canonical-root",
        "unpadded-root",
        "short-root",
        "empty-extension",
        "empty-origin",
        "no-root",
        "size-0-not-empty-root",
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_checkpoint_extensions_and_empty_tree() -> None:
    text = "o.example\n0\n" + base64.b64encode(EMPTY_ROOT).decode() + "\next one\n"
    checkpoint = Checkpoint.parse(text)
    assert checkpoint.extensions == ("ext one",)
    assert checkpoint.text() == text


# --- An independent implementation checks ours -------------------------------------------------


def test_tlog_scales_verifies_our_log_signature_and_cosignature() -> None:
    from tlog_scales import signing, tlog

    log = Signer.generate("log.example/x")
    witness = Signer.generate("witness.example/x", SIG_COSIGNATURE_V1)
    text = Checkpoint("log.example/x", 7, bytes(range(32))).text()
    note = (text + "\n" + log.sign(text).line() + witness.sign(text, 1_800_000_000).line()).encode()
    theirs = tlog.Checkpoint.from_text(note.decode())
    theirs.verify(signing.Vkey.from_string(log.verifier.encode()))
    theirs.verify(signing.Vkey.from_string(witness.verifier.encode()))
    # And ours checks what theirs would call valid; a wrong key is refused by both.
    other = Signer.generate("log.example/x").verifier.encode()
    with pytest.raises(Exception):  # noqa: B017 (tlog-scales raises its own types)
        theirs.verify(signing.Vkey.from_string(other))


# --- Fuzzing -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_note_parsers(text: str) -> None:
    for parse in (parse_note, Verifier.parse, Signer.parse, Checkpoint.parse):
        with contextlib.suppress(NoteError):
            parse(text)
    with contextlib.suppress(NoteError, NoteVerificationError):
        open_note(text, [PETER])


def test_a_verifier_key_id_is_exactly_eight_lowercase_hex_digits() -> None:
    """Found by fuzzing: Python's int() took " 3124363" (and "0_123456", "+1234567") as a key
    ID, so a non-canonical vkey parsed and encoded to another string."""
    from privproc.tlog.note import NoteError, Verifier

    good = "witness.example+03124363+BAtU+UBOzuXjB+kOwzvfyCJ+MFgtHlDMNzKR/Ynt7Nqb"
    for bad_id in (" 3124363", "0_312436", "+3124363", "3124363 ", "\t3124363"):
        with pytest.raises(NoteError, match="8 lowercase hex digits"):
            Verifier.parse(good.replace("03124363", bad_id))
