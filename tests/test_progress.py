"""tools/progress.py, which the Makefile runs around the long llama.cpp build: it says what is
happening, shows the build's progress or the time elapsed, and never hides a failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).parent.parent / "tools" / "progress.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_long_step_shows_its_progress_and_its_time() -> None:
    build = 'for i in 1 2 3 4; do echo "[$i/4] Building C object x$i.o"; sleep 0.4; done'
    done = _run("--every", "0.3", "building it (a second)", "--", "bash", "-c", build)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == "==> building it (a second) ..."
    working = [line for line in lines if line.startswith("    still working: ")]
    assert len(working) >= 2  # a line while it works, however quiet its own output
    assert any(line.endswith("% compiled") for line in working)
    assert lines[-1].startswith("==> done in ")
    assert "Building C object" not in done.stdout  # its own output stays quiet when it works


def test_a_failure_shows_what_the_step_said_and_keeps_its_status() -> None:
    done = _run("failing", "--", "bash", "-c", "echo first; echo 'error: no compiler' >&2; exit 3")
    assert done.returncode == 3
    assert "==> failed after" in done.stdout
    assert "first" in done.stdout
    assert "error: no compiler" in done.stdout


def test_bad_usage_is_explained() -> None:
    for args in ([], ["what"], ["what", "cmd"], ["--every", "x", "what", "--", "true"]):
        done = _run(*args)
        assert done.returncode == 2
        assert "usage:" in done.stdout
