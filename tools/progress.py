"""Run one long set-up step so that a person can tell work from a hang.

    python tools/progress.py [--every SECONDS] "building llama.cpp (about 6 minutes)" -- CMD ARGS...

It says what is about to happen and about how long it takes, runs CMD with its output captured,
and prints a line at least every `HEARTBEAT` seconds (or --every): the time elapsed and the
build's own progress (`[37/112]` from ninja, `[ 45%]` from make) when CMD shows it. On success
it says how long the step took; on failure it prints the last lines CMD wrote and exits with
CMD's status.

Rules: standard library only (it runs before anything is installed); it never hides a failure.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import threading
import time

HEARTBEAT = 20.0  # seconds between two lines, at most
TAIL = 60  # lines of CMD's output shown when it fails
PROGRESS = re.compile(rb"^\s*\[\s*(\d+)/(\d+)\]|^\s*\[\s*(\d+)%\]")


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def run(what: str, command: list[str], every: float = HEARTBEAT) -> int:
    print(f"==> {what} ...", flush=True)
    started = time.monotonic()
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL)
    latest: list[str] = []  # the build's last progress figure, if it shows one
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line)
            found = PROGRESS.match(line)
            if found:
                done, total, percent = found.groups()
                latest[:] = [f"{int(done) * 100 // int(total)}%" if total else f"{int(percent)}%"]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while process.poll() is None:
        try:
            process.wait(every)
        except subprocess.TimeoutExpired:
            shown = f", {latest[0]} compiled" if latest else ""
            print(f"    still working: {_elapsed(time.monotonic() - started)}{shown}", flush=True)
    reader.join(5)
    if process.returncode != 0:
        print(f"==> failed after {_elapsed(time.monotonic() - started)}; its last lines:")
        sys.stdout.buffer.write(b"".join(tail))
        sys.stdout.flush()
        return process.returncode
    print(f"==> done in {_elapsed(time.monotonic() - started)}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    every = HEARTBEAT
    if argv[:1] == ["--every"] and len(argv) > 1:
        try:
            every = float(argv[1])
        except ValueError:
            every = 0
        argv = argv[2:]
    if len(argv) < 3 or argv[1] != "--" or not every > 0:
        print('usage: progress.py [--every SECONDS] "what is happening (how long)" -- COMMAND...')
        return 2
    return run(argv[0], argv[2:], every)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
