"""`privproc attest`: verify real and virtual reports with exit codes 0/1/2, simulate, measure."""

from __future__ import annotations

import json
from pathlib import Path

from privproc.net.commands import party_state
from tests.servers import privproc_cli as _cli

VECTORS = Path(__file__).parent / "vectors" / "sev"


def test_verify_real_reports_and_refuse_the_wrong_product_chain() -> None:
    vlek = [
        "attest", "verify", str(VECTORS / "trustee" / "test-vlek-report.bin"),
        "--vcek", str(VECTORS / "trustee" / "test-vlek.der"), "--json", "--at", "2025-06-01",
    ]  # fmt: skip
    milan_vlek = str(VECTORS / "go-sev-guest" / "ask_ark_milan_vlek.pem")
    # Genuine AMD evidence, but requested at VMPL 1 on firmware older than the minimum TCB:
    # the default policy refuses it for both, and only for those.
    old = _cli(*vlek, "--chain", milan_vlek)
    assert old.returncode == 1, old.stdout + old.stderr
    failed = {
        c["id"]: c["reason"] for c in json.loads(old.stdout)["checks"] if c["status"] == "fail"
    }
    assert list(failed) == ["policy.vmpl", "policy.min-tcb"]
    assert "snp 24 < 27, microcode 217 < 219" in failed["policy.min-tcb"]
    # The hardware checks alone pass, with a warning that the policy was off.
    ok = _cli(*vlek, "--chain", milan_vlek, "--no-policy")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    assert "WARNING: --no-policy" in ok.stderr
    wrong = _cli(*vlek, "--chain", str(VECTORS / "go-sev-guest" / "ask_ark_genoa_vlek.pem"))
    assert wrong.returncode == 1
    failed_ids = [c["id"] for c in json.loads(wrong.stdout)["checks"] if c["status"] == "fail"]
    assert {"chain.ark-pinned", "chain.vcek-signature"} <= set(failed_ids)
    assert all(f.startswith(("chain.", "vcek.", "policy.")) for f in failed_ids)
    usage = _cli("attest", "verify", str(VECTORS / "trustee" / "test-report.bin"), "--vcek")
    assert usage.returncode == 2
    assert _cli(*vlek, "--no-policy", "--measurement", "00" * 48).returncode == 2


def test_simulate_verify_and_measure(tmp_path: Path) -> None:
    rd = "ab" * 64
    out = tmp_path / "report.bin"
    sim = _cli("attest", "simulate", "--state", str(tmp_path / "p"), "--out", str(out),
               "--report-data", rd)  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    common = ["attest", "verify", str(out), "--vcek", str(out.with_suffix(".vcek.pem")),
              "--chain", str(out.with_suffix(".chain.pem"))]  # fmt: skip
    chain = party_state(tmp_path / "p", "platform") / "chain.pem"  # under --state, its own folder
    trusted = _cli(*common, "--trust-root", str(chain), "--report-data", rd)
    assert trusted.returncode == 0, trusted.stdout
    assert "[pass] policy.report-data" in trusted.stdout
    assert _cli(*common).returncode == 1  # AMD's roots do not know the virtual ARK
    other = _cli(*common, "--trust-root", str(chain), "--report-data", "00" * 64)
    assert other.returncode == 1
    assert "[fail] policy.report-data" in other.stdout
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text("x = 1\n")
    first = _cli("attest", "measure", "--code", str(tmp_path / "code"),
                 "--manifest-out", str(tmp_path / "m.txt"))  # fmt: skip
    assert first.returncode == 0
    assert len(bytes.fromhex(first.stdout.strip())) == 48
    assert (tmp_path / "m.txt").read_text().startswith("privproc-measurement v1\ncode ")
    assert _cli("attest", "measure", "--code", str(tmp_path / "code")).stdout == first.stdout
