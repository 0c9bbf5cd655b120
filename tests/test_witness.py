"""The witness (C2SP tlog-witness): every status the spec assigns, the race it warns about, and
the service on loopback (content types, monitoring API, never a 5xx)."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from privproc.net.commands import party_state
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.log import TransparencyLog
from privproc.tlog.merkle import EMPTY_ROOT
from privproc.tlog.note import SIG_COSIGNATURE_V1, Note, Signer, open_note
from privproc.tlog.witness import Witness, WitnessRefusal, encode_add_checkpoint
from tests.servers import Running, privproc_process

ORIGIN = "log.example/w"


class Fixture:
    def __init__(self, tmp: Path) -> None:
        self.out = tmp / "out"
        self.log = TransparencyLog.init(tmp / "log", ORIGIN)
        # where `--state TMP` keeps the witness's files
        self.witness = Witness.init(party_state(tmp, "witness"), "witness.example/w")
        self.witness.add_log(ORIGIN, [self.log.verifier.encode()])
        self.witness_verifier = self.witness.verifier

    def grow(self, n: int) -> Note:
        start = self.log.size
        self.log.append_many(i.to_bytes(8, "big") for i in range(start, start + n))
        return self.log.stage(self.out)

    def body(self, old: int, note: Note) -> bytes:
        size = Checkpoint.parse(note.text).size
        proof = self.log.consistency_proof(old, size) if 0 < old < size else []
        return encode_add_checkpoint(old, proof, note.encode())


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Fixture]:
    f = Fixture(tmp_path)
    yield f
    f.log.close()
    f.witness.close()


def _status(fx: Fixture, body: bytes) -> int:
    try:
        fx.witness.add_checkpoint(body)
    except WitnessRefusal as exc:
        return exc.status
    return 200


def test_cosigns_a_consistent_history(fx: Fixture) -> None:
    first = fx.grow(5)
    line = fx.witness.add_checkpoint(fx.body(0, first))
    cosigned = first.text + "\n" + first.signatures[0].line() + line
    opened = open_note(cosigned, [fx.log.verifier, fx.witness.verifier])
    assert len(opened.cosignatures) == 1
    assert opened.cosignatures[0].timestamp > 0
    second = fx.grow(300)
    second_line = fx.witness.add_checkpoint(fx.body(5, second))
    again = open_note(second.text + "\n" + second_line, [fx.witness.verifier])
    assert again.cosignatures[0].timestamp > opened.cosignatures[0].timestamp - 1
    assert fx.witness.logs() == [(ORIGIN, 305)]
    # The same checkpoint again (old == size, same root) is cosigned again.
    assert _status(fx, fx.body(305, second)) == 200


def test_every_refusal_has_its_status(fx: Fixture, tmp_path: Path) -> None:
    first = fx.grow(8)
    assert fx.witness.add_checkpoint(fx.body(0, first))
    second = fx.grow(8)
    body = fx.body(8, second)
    head, _, note = body.partition(b"\n\n")
    # 400: malformed bodies.
    for bad in (
        b"",
        b"old 8\n" + note,
        b"new 8\n\n" + note,
        b"old 08\n\n" + note,
        b"old 8\n" + b"AAAA\n\n" + note,
        b"old 8\n" + b"\n".join([b"A" * 43 + b"="] * 64) + b"\n\n" + note,
        head + b"\n\n" + b"not a note",
        b"old 99\n\n" + note,  # old size above the checkpoint's
        head + b"\n\n" + note + bytes(70_000),
    ):
        assert _status(fx, bad) == 400, bad[:40]
    # 404: a log this witness does not know.
    stranger = TransparencyLog.init(tmp_path / "stranger", "log.example/stranger")
    stranger.append(b"x")
    assert _status(fx, encode_add_checkpoint(0, [], stranger.stage(tmp_path / "s").encode())) == 404
    # 403: no signature by the log's key (a key with the log's name but another ID is ignored).
    impostor = Signer.generate(ORIGIN)
    forged = Note(second.text, (impostor.sign(second.text),))
    assert _status(fx, encode_add_checkpoint(8, [], forged.encode())) == 403
    # 403: the log's key, but a broken signature.
    sig = second.signatures[0]
    broken = Note(second.text, (type(sig)(sig.name, sig.key_id, bytes(64)),))
    assert _status(fx, encode_add_checkpoint(8, [], broken.encode())) == 403
    # 409: an old size the witness did not cosign last, with its size.
    with pytest.raises(WitnessRefusal) as err:
        fx.witness.add_checkpoint(fx.body(3, second))
    assert (err.value.status, err.value.size) == (409, 8)
    # 422: a consistency proof that does not verify.
    proof = fx.log.consistency_proof(8, 16)
    proof[0] = bytes(32)
    assert _status(fx, encode_add_checkpoint(8, proof, second.encode())) == 422
    # 422: same size, another root (a fork the log itself signed).
    fork = TransparencyLog.init(tmp_path / "fork", ORIGIN)
    (tmp_path / "fork" / "log.key").write_text((tmp_path / "log" / "log.key").read_text())
    fork = TransparencyLog(tmp_path / "fork")
    fork.append_many(i.to_bytes(8, "big") for i in range(7))
    fork.append(b"different")
    forked = fork.stage(tmp_path / "f")
    assert _status(fx, encode_add_checkpoint(8, [], forked.encode())) == 422
    # Nothing of that changed the witness's view.
    assert fx.witness.logs() == [(ORIGIN, 8)]
    assert _status(fx, body) == 200
    stranger.close()
    fork.close()


def test_empty_tree_rules(fx: Fixture) -> None:
    empty = fx.log.stage(fx.out)
    assert Checkpoint.parse(empty.text).root == EMPTY_ROOT
    assert _status(fx, encode_add_checkpoint(0, [], empty.encode())) == 200
    grown = fx.grow(4)
    assert _status(fx, encode_add_checkpoint(0, [bytes(32)], grown.encode())) == 422
    assert _status(fx, fx.body(0, grown)) == 200


def test_racing_requests_cannot_roll_the_witness_back(fx: Fixture) -> None:
    notes = [fx.grow(10) for _ in range(6)]  # sizes 10, 20, ..., 60
    bodies = [fx.body(0, notes[0])] + [fx.body(10 * i, notes[i]) for i in range(1, 6)]
    fx.witness.add_checkpoint(bodies[0])
    results: list[int] = []
    lock = threading.Lock()

    def submit(body: bytes) -> None:
        status = _status(fx, body)
        with lock:
            results.append(status)

    # Submit every later checkpoint many times at once: each is accepted at most once, and the
    # witness only ever moves forward.
    threads = [threading.Thread(target=submit, args=(b,)) for b in bodies[1:] * 4]
    random.Random(1).shuffle(threads)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    size = fx.witness.logs()[0][1]
    assert size % 10 == 0
    assert results.count(200) <= 5
    latest = fx.witness.latest(ORIGIN)
    assert latest is not None
    assert Checkpoint.parse(open_note(latest, [fx.log.verifier]).text).size == size


def test_witness_key_files(tmp_path: Path) -> None:
    witness = Witness.init(tmp_path / "w", "witness.example/k")
    assert (tmp_path / "w" / "witness.key").stat().st_mode & 0o777 == 0o600
    assert witness.verifier.sig_type == SIG_COSIGNATURE_V1
    with pytest.raises(Exception, match="already exists"):
        Witness.init(tmp_path / "w", "witness.example/k")
    witness.close()


# --- The service -------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, Fixture]]:
    fx = Fixture(tmp_path)
    fx.witness.close()
    args = ["serve", "witness", "--port", "0", "--state", str(tmp_path)]
    with privproc_process(args, "ready witness ", tmp_path) as running:
        yield running, fx
    fx.log.close()


def test_service_statuses_and_monitoring(served: tuple[Running, Fixture]) -> None:
    running, fx = served
    url = running.url
    first = fx.grow(3)
    ok = httpx.post(url + "/add-checkpoint", content=fx.body(0, first))
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert ok.text.startswith("\u2014 witness.example/w ")
    second = fx.grow(3)
    conflict = httpx.post(url + "/add-checkpoint", content=fx.body(0, second))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "text/x.tlog.size"
    assert conflict.text == "3\n"
    assert httpx.post(url + "/add-checkpoint", content=b"x" * 70_000).status_code == 413
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    latest = httpx.get(f"{url}/{origin_hash}/checkpoint")
    assert latest.status_code == 200
    opened = open_note(latest.content, [fx.log.verifier, fx.witness_verifier])
    assert Checkpoint.parse(opened.text).size == 3
    assert httpx.get(f"{url}/{'0' * 64}/checkpoint").status_code == 404
    rng = random.Random(5)
    for _ in range(40):
        body = rng.randbytes(rng.randrange(300)) + b"\n\n" + rng.randbytes(rng.randrange(100))
        status = httpx.post(url + "/add-checkpoint", content=body).status_code
        assert status in {400, 403, 404, 409, 422}
    assert "witness.example" not in running.logs()
