"""`privproc up`, as a person runs it: stopped and started again on the same state it resumes (the
same log, whose new checkpoint extends the one the client remembers; the same keys and account),
`--fresh` starts over and resets the client's trust with it, and two systems never share a state
(real processes: the whole system, twice)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from privproc.ohttp.keys import KeyRing
from privproc.parties.device.controls import Settings
from privproc.system import COMPLETE, PartyError, System
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.entries import OhttpKeyConfigSet, encode_entry
from privproc.tlog.log import TransparencyLog
from privproc.tlog.note import parse_note


def _up(state: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "privproc.cli", "up", "--once", "--state", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready" in done.stdout.splitlines()
    assert "private summary" in done.stdout
    return done.stdout


def _accepted(state: Path) -> Checkpoint:
    """The checkpoint the client remembers (it accepted it while serving the sample)."""
    doc = json.loads((state / "client" / "log-checkpoint.json").read_text())
    return Checkpoint.parse(parse_note(doc["checkpoint"]).text)


def _client_config(state: Path) -> dict[str, object]:
    return json.loads((state / "client" / "client.json").read_text())  # type: ignore[no-any-return]


def test_up_twice_resumes_and_the_client_accepts_the_extension(tmp_path: Path) -> None:
    state = tmp_path / "privproc"
    first_out = _up(state)
    assert "starting a new system" in first_out
    first, first_config = _accepted(state), _client_config(state)
    secret = (state / "client" / "account.secret").read_text()
    # The log grows while the system is down (an operator logs something): the next start
    # publishes a checkpoint the client has to prove consistent with the one it remembers.
    log = TransparencyLog(state / "system" / "log")
    other = KeyRing.generate().keys_document()
    log.append(encode_entry(OhttpKeyConfigSet("elsewhere.example", other, 1)))
    log.close()

    second_out = _up(state)
    assert "resuming the system" in second_out
    second, second_config = _accepted(state), _client_config(state)
    assert second.size > first.size  # the client accepted the grown log
    log = TransparencyLog(state / "system" / "log")
    proof = log.consistency_proof(first.size, second.size)
    log.close()
    merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
    for anchor in ("log", "hardware_roots", "policy", "gateway_origin"):
        assert second_config[anchor] == first_config[anchor], anchor  # the same system
    assert (state / "client" / "account.secret").read_text() == secret  # the same account
    # Everything `up` made, keys, databases and logs, is its owner's alone, and was from birth
    # (a umask, not a chmod after the fact).
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_up_fresh_starts_over_and_resets_the_clients_trust(tmp_path: Path) -> None:
    state = tmp_path / "privproc"
    _up(state)
    before = _client_config(state)
    controls = Settings.load(state / "client")
    controls.set_feature("chat", True)
    controls.save()

    out = _up(state, "--fresh")
    assert "starting over (--fresh)" in out
    assert "trust in the old system is reset" in out
    assert "log-checkpoint.json" in out
    after = _client_config(state)
    assert after["log"] != before["log"]  # a new log, which the client now trusts
    assert after["hardware_roots"] != before["hardware_roots"]  # a new platform
    assert _accepted(state).size >= 1
    assert Settings.load(state / "client").features["chat"] is True  # the user's choices stay


def test_a_start_that_never_completed_is_started_over(tmp_path: Path) -> None:
    state = tmp_path / "privproc"
    (state / "system" / "log").mkdir(parents=True)  # the remains of a start cut short
    (state / "client").mkdir()
    (state / "client" / "log-checkpoint.json").write_text("{}")
    system = System(state)
    messages: list[str] = []
    system.say = messages.append
    try:
        system.start()
        assert not system.resumed
        assert (state / "system" / COMPLETE).exists()
        assert any("trust in the old system is reset" in m for m in messages)
        assert not (state / "client" / "log-checkpoint.json").exists()
    finally:
        system.stop()


def test_two_systems_never_share_a_state(tmp_path: Path) -> None:
    first, second = System(tmp_path), System(tmp_path)
    first._lock_state()
    try:
        with pytest.raises(PartyError, match="another privproc system is running"):
            second._lock_state()
    finally:
        first.stop()  # stopping lets go of the state
    second._lock_state()
    second.stop()
