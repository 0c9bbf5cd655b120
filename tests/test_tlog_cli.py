"""The log and witness commands end to end: two witness processes on loopback, a quorum, a client
verifying from the published directory, and a split view reported with evidence."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from privproc.net.commands import party_state
from tests.servers import privproc_process

ORIGIN = "log.example/cli"
DIGEST = ["--image-digest", "01" * 32, "--model-digest", "02" * 32, "--config-digest", "03" * 32]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ok(*args: str) -> str:
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _release(state: Path, revision: str) -> str:
    return _ok(
        "log", "append", "release", "--state", str(state), "--measurement", "ab" * 48,
        *DIGEST, "--source-revision", revision,
    )  # fmt: skip


def test_publish_with_witness_quorum_and_verify(tmp_path: Path) -> None:
    log, cdn = tmp_path / "log", tmp_path / "cdn"
    log_key = _ok("log", "init", "--state", str(log), "--origin", ORIGIN)
    witness_keys = []
    for name in ("w1", "w2"):
        vkey = _ok(
            "witness", "init", "--state", str(tmp_path / name), "--name", f"wit.example/{name}"
        )
        _ok(
            "witness",
            "add-log",
            "--state",
            str(tmp_path / name),
            "--origin",
            ORIGIN,
            "--log-key",
            log_key,
        )
        witness_keys.append(vkey)
    serve = ["serve", "witness", "--port", "0", "--state"]
    with (
        privproc_process([*serve, str(tmp_path / "w1")], "ready witness ", tmp_path) as w1,
        privproc_process([*serve, str(tmp_path / "w2")], "ready witness ", tmp_path) as w2,
    ):
        for vkey, running in zip(witness_keys, (w1, w2), strict=True):
            _ok("log", "add-witness", "--state", str(log), "--vkey", vkey, "--url", running.url)
        assert "appended entry 0" in _release(log, "rev0")
        published = _ok("log", "publish", "--state", str(log), "--out", str(cdn), "--quorum", "2")
        assert "published size 1" in published
        _release(log, "rev1")
        _ok("log", "publish", "--state", str(log), "--out", str(cdn), "--quorum", "2")
    verify = [
        "log", "verify", "--dir", str(cdn), "--origin", ORIGIN, "--log-key", log_key,
        "--witness-key", witness_keys[0], "--witness-key", witness_keys[1], "--quorum", "2",
        "--state", str(tmp_path / "client"),
    ]  # fmt: skip
    out = _ok(*verify, "--entry", "1")
    assert "verified size 2, cosigned by wit.example/w1, wit.example/w2" in out
    assert '"source_revision": "rev1"' in out
    # The witnesses are gone: publishing more cannot reach the quorum, and nothing changes.
    _release(log, "rev2")
    refused = _cli("log", "publish", "--state", str(log), "--out", str(cdn), "--quorum", "2")
    assert refused.returncode == 1
    assert "nothing was published" in refused.stderr
    assert "verified size 2" in _ok(*verify)
    # The log forks itself (same key, entry 1 rewritten): the client shows both checkpoints.
    fork = tmp_path / "fork"
    _ok("log", "init", "--state", str(fork), "--origin", ORIGIN)
    shutil.copy(party_state(log, "log") / "log.key", party_state(fork, "log") / "log.key")
    _release(fork, "rev0")
    _release(fork, "evil")
    _ok("log", "publish", "--state", str(fork), "--out", str(tmp_path / "forkcdn"), "--quorum", "0")
    shutil.rmtree(cdn)
    shutil.copytree(tmp_path / "forkcdn", cdn)
    split = _cli(*verify[:-6], "--quorum", "0", "--state", str(tmp_path / "client"))
    assert split.returncode == 3
    assert "SplitViewError" in split.stderr
    assert split.stderr.count(ORIGIN) >= 2


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    missing = _cli("log", "show", "--state", str(tmp_path / "none"))
    assert missing.returncode == 1
    assert "privproc log init" in missing.stderr
    _ok("log", "init", "--state", str(tmp_path / "log"), "--origin", ORIGIN)
    bad_hex = _cli(
        "log", "append", "release", "--state", str(tmp_path / "log"), "--measurement", "zz",
        *DIGEST, "--source-revision", "r",
    )  # fmt: skip
    assert bad_hex.returncode == 2
    assert "not hexadecimal" in bad_hex.stderr
    no_quorum = _cli(
        "log",
        "publish",
        "--state",
        str(tmp_path / "log"),
        "--out",
        str(tmp_path / "o"),
        "--quorum",
        "1",
    )
    assert no_quorum.returncode == 1
    assert "configured witnesses" in no_quorum.stderr
    bad_origin = _cli("log", "init", "--state", str(tmp_path / "x"), "--origin", "has space")
    assert bad_origin.returncode == 1
    for result in (missing, no_quorum, bad_origin):
        assert "Traceback" not in result.stderr
