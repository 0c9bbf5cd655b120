"""The README's quick start and tour, run as a newcomer runs them: in a fresh home directory, with
nothing of privproc on the PATH, each command exactly as the README writes it (the blocks marked
`<!-- readme-test: ... -->`), each checked to succeed. `make up` runs twice (stopped with Ctrl-C
in between: the second resumes), a second terminal pastes the tour, a third runs the proxy, and
the Python example talks to it. (`make test`, the quick start's other command, is what runs this.)

A command that serves until Ctrl-C (`make up`, `privproc proxy`) is started, awaited until it
says `ready`, and stopped with SIGINT to its process group, as a terminal's Ctrl-C does. A tour
line whose comment starts with "refused" must be refused: exit status 1 and a one-line reason.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVES = ("make up", "privproc proxy")  # commands that run until Ctrl-C
STOP_WITHIN = 15.0  # `make up` stops six parties, each given a moment to finish


def _blocks(kind: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    found = re.findall(rf"<!-- readme-test: {kind} -->\n```\w+\n(.*?)```", text, re.S)
    assert found, f"the README has no {kind} block"
    return found


def _commands(block: str) -> list[tuple[str, str]]:
    """(command, comment) for each line of a shell block, as a person would paste them."""
    out = []
    for line in block.splitlines():
        if not line.strip():
            continue
        command, _, comment = line.partition("  #")
        out.append((command.strip(), comment.strip()))
    return out


def _newcomer(home: Path) -> dict[str, str]:
    """A new user's environment: a fresh HOME, no virtual environment, nothing of privproc's on
    the PATH, no state directory chosen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "XDG_"))}
    env.pop("PYTHONPATH", None)
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p + "/"
    )
    return env


@contextmanager
def _serving(command: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a command that serves until Ctrl-C, wait for its `ready`, and stop it with SIGINT
    to its process group when the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, shell=True, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, executable="/bin/bash",
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not re.search(r"^ready\b", log.read_text(errors="replace"), re.M):
            assert process.poll() is None, f"{command!r} stopped:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{command!r} never got ready"
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            try:
                process.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                pytest.fail(f"{command!r} did not stop within {STOP_WITHIN} s of one Ctrl-C")


def _run_terminal(block: str, env: dict[str, str], tmp: Path, name: str) -> list[str]:
    """Paste the block's lines into one new shell, in order; each must succeed (or be refused
    when its comment says so). A serving line is started and left running: its pid is written
    to `tmp/NAME.pid`. Returns each line's output."""
    script, expected = ["exec 2>&1"], []  # one terminal shows both streams
    for index, (command, comment) in enumerate(_commands(block)):
        refused = comment.startswith("refused")
        expected.append((command, refused))
        if command.startswith(SERVES):
            log = tmp / f"{name}-{index}.log"
            script += [
                f"{command} > {log} 2>&1 &",
                f"echo $! > {tmp / name}.pid",
                f"for _ in $(seq 600); do grep -q '^ready' {log} && break; sleep 0.2; done",
                f"grep -q '^ready' {log}; echo \"@@readme {index} $?\"",
            ]
        else:
            script += [command, f'echo "@@readme {index} $?"']
    done = subprocess.run(
        ["/bin/bash", "-c", "\n".join(script)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    outputs: list[str] = []
    statuses: list[int] = []
    current: list[str] = []
    for line in (done.stdout + "\n").splitlines():
        marker = re.fullmatch(r"@@readme (\d+) (\d+)", line)
        if marker:
            outputs.append("\n".join(current))
            statuses.append(int(marker.group(2)))
            current = []
        else:
            current.append(line)
    assert len(statuses) == len(expected), done.stdout + done.stderr
    for (command, refused), status, output in zip(expected, statuses, outputs, strict=True):
        if refused:
            assert status == 1, f"{command!r} was not refused:\n{output}\n{done.stderr}"
        else:
            assert status == 0, f"{command!r} failed ({status}):\n{output}\n{done.stderr}"
    for (command, refused), output in zip(expected, outputs, strict=True):
        if not refused:
            assert "error:" not in output, (command, output)
    return outputs


def _state_is_free(home: Path) -> bool:
    """Whether no system holds the default state (every party has stopped)."""
    with (home / ".local" / "state" / "privproc" / "system.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_the_quick_start_and_the_tour_work_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _newcomer(home)
    quick = [command for command, _ in _commands(_blocks("quick-start")[0])]
    assert quick == ["make up", "make test"]  # `make test` is what runs this test

    # make up, Ctrl-C, make up again: the second start resumes the first's state.
    with _serving("make up", env, tmp_path / "up-1.log"):
        pass
    first = (tmp_path / "up-1.log").read_text()
    assert "private summary" in first
    assert "stopped" in first.splitlines()
    assert _state_is_free(home)
    with _serving("make up", env, tmp_path / "up-2.log"):
        second = (tmp_path / "up-2.log").read_text()
        assert "resuming the system" in second
        # What it says to run next works in a new terminal: privproc by its full path.
        assert f"source {shlex.quote(str(ROOT / '.venv' / 'bin' / 'activate'))}" in second
        tour, proxy = _blocks("terminal")
        outputs = _run_terminal(tour, env, tmp_path, "tour")
        assert "[pass] log.release" in outputs[1]  # summarize --verbose: every step
        _run_terminal(proxy, env, tmp_path, "proxy")
        proxy_pid = int((tmp_path / "proxy.pid").read_text())
        try:
            example = subprocess.run(
                ["/bin/bash", "-c", "source .venv/bin/activate && python -"],
                input=_blocks("python")[0], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=300, check=False,
            )  # fmt: skip
            assert example.returncode == 0, example.stderr
            assert example.stdout.strip()
        finally:
            os.kill(proxy_pid, signal.SIGINT)  # Ctrl-C in the third terminal
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(proxy_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(proxy_pid, signal.SIGKILL)
                pytest.fail("the proxy did not stop on Ctrl-C")
    assert "stopped" in (tmp_path / "up-2.log").read_text().splitlines()
    assert _state_is_free(home)


def test_make_up_installs_what_the_readme_uses_and_announces_the_long_build() -> None:
    """The README's Python example needs the official `openai` package: `make up` installs it
    (the `openai` extra). The llama.cpp build goes through tools/progress.py, which says what it
    is doing while it does it. (`make -n`: the commands make would run, none run.)"""
    planned = subprocess.run(
        ["make", "-n", "-B", "install"], cwd=ROOT, capture_output=True, text=True, check=True,
        timeout=60,
    ).stdout  # fmt: skip
    assert "pip install --quiet -e '.[openai]'" in planned
    assert "tools/progress.py" in planned
    assert "building llama.cpp" in planned
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^openai = \["openai==[\d.]+"\]$', pyproject, re.M)


def test_the_sample_chat_is_the_one_up_summarises() -> None:
    import json

    from privproc.cli.up import SAMPLE_CHAT

    sample = json.loads((ROOT / "examples" / "chat.json").read_text())
    assert sample == {"chat_id": "family", "messages": SAMPLE_CHAT}
