"""The `privproc` command: the main job, the OHTTP commands, and clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Running
from tests.servers import privproc_cli as _privproc

KEYS = "/.well-known/ohttp-gateway"


def test_up_once_brings_the_system_up_and_summarises_privately(tmp_path: Path) -> None:
    done = _privproc("up", "--once", "--state", str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "ready" in lines
    assert "stopped" in lines
    assert "private summary" in done.stdout
    for party in ("issuer", "witness", "gateway", "enclave", "relay", "cdn"):
        assert party in done.stdout
    # It says which model answers, plainly a demonstration, and how to get better answers.
    assert "model: SmolLM2-135M-Instruct, 135M parameters, Q4_1, sha256:" in done.stdout
    assert "a small demonstration model; expect simple, sometimes wrong answers" in done.stdout
    assert "privproc up --engine URL --engine-model NAME" in done.stdout
    # The sample chat never reaches a party's log or state file.
    for path in (tmp_path / "system").rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".sqlite3"):
            assert b"blue kite" not in path.read_bytes(), path
    assert (tmp_path / "client" / "client.json").exists()


def test_ohttp_keys_and_request(conformance_gateway: Running) -> None:
    base = conformance_gateway.url.removesuffix(KEYS)
    keys = _privproc("ohttp", "keys", "--keys-url", base + KEYS, "--json")
    assert keys.returncode == 0, keys.stderr
    rows = json.loads(keys.stdout)
    assert rows[0]["kem"] == "DHKEM(X25519, HKDF-SHA256)"
    assert rows[0]["suites"] == ["HKDF-SHA256/AES-128-GCM"]

    for kem in ("x25519", "xwing", "mlkem768", "p256"):
        done = _privproc(
            "ohttp", "request", "--keys-url", base + KEYS, "--gateway", base + "/gateway-echo",
            "--kem", kem, "-H", "X-Test: 1", "--data", "hello",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("echo verified")

    inner404 = _privproc("ohttp", "request", "--keys-url", base + KEYS, "--gateway", base + KEYS)
    assert inner404.returncode == 0, inner404.stderr
    assert inner404.stdout.startswith("status 404")


def test_errors_are_one_clean_line() -> None:
    done = _privproc(
        "ohttp",
        "request",
        "--keys-url",
        "http://127.0.0.1:9/k",
        "--gateway",
        "http://127.0.0.1:9/g",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "could not reach" in done.stderr
    bad_header = _privproc("ohttp", "request", "--keys-url", "u", "--gateway", "g", "-H", "nocolon")
    assert bad_header.returncode == 2
    assert "Name: value" in bad_header.stderr


def test_help_explains_each_command() -> None:
    for args in (
        ["--help"],
        ["up", "--help"],
        ["serve", "gateway", "--help"],
        ["ohttp", "request", "--help"],
    ):
        done = _privproc(*args)
        assert done.returncode == 0
        assert "Usage:" in done.stdout


def test_services_stop_cleanly_on_ctrl_c_and_sigterm(tmp_path: Path) -> None:
    import signal

    for args, sig in (
        (["up", "--state", str(tmp_path)], signal.SIGINT),
        (["serve", "gateway", "--port", "0"], signal.SIGTERM),
    ):
        proc = subprocess.Popen(
            [sys.executable, "-m", "privproc.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready"):
                break
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert proc.stdout.read().strip().endswith("stopped")
    # `up` stopped every party it started: none is left running with its state directory.
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_credential_commands_explain_bad_arguments(tmp_path: Path) -> None:
    bad_name = _privproc(
        "serve", "issuer", "--port", "0", "--state", str(tmp_path), "--name", "a b"
    )
    assert bad_name.returncode == 1
    assert "not a server name" in bad_name.stderr
    bad_account = _privproc("issuer", "add-account", "no spaces please", "--state", str(tmp_path))
    assert bad_account.returncode == 1
    assert "account name" in bad_account.stderr
    orphan = _privproc("serve", "gateway", "--port", "0", "--name", "gw.example")
    assert orphan.returncode == 2
    assert "only make sense with --issuer" in orphan.stderr
    no_store = _privproc("serve", "gateway", "--port", "0", "--issuer", "http://127.0.0.1:1")
    assert no_store.returncode == 2
    assert "--state DIR or --spent-store" in no_store.stderr
    unreachable = _privproc(
        "serve",
        "gateway",
        "--port",
        "0",
        "--issuer",
        "http://127.0.0.1:1",
        "--state",
        str(tmp_path),
    )
    assert unreachable.returncode == 1
    assert "could not reach the issuer" in unreachable.stderr
    for result in (bad_name, bad_account, unreachable):
        assert "Traceback" not in result.stderr
