"""Benchmark (not a test): load with faults, every party a real process on loopback.

    .venv/bin/python bench/soak.py [--seconds 60] [--clients 16] [--chat-every 0] [--deadline 30]

Many concurrent clients (threads, each its own `PrivateProcessingClient` on the same device
state) call `GET /v1/models` as a use of `chat` over and over (no inference), each answer checked
exactly against the enclave handler's own; with `--chat-every N`, every Nth call of a client is
a real chat completion. Meanwhile, at fixed fractions of the run, the parties fail:
    20%: the enclave stopped (SIGTERM) and started again;
    40%: the enclave SIGKILLed and started again;
    60%: the gateway restarted (SIGTERM; same port, same OHTTP keys from its state directory);
    80%: the gateway SIGKILLed and restarted.
Every call must succeed or fail with a typed error marked `retryable` (`EnclaveLostError`, a
502/503/504 refusal, a cut stream); the SDK itself tries such calls again, backing off, within
its 20 s budget (each retry is counted, by cause, with the time waited before it). A success
whose answer is not the expected one is *garbled*; a call that takes longer than `--deadline`
seconds (default 30: more than the retry budget) is a *hang*. Exit status 1 if any call was
garbled, hung or failed without a retryable error.
By default every client shares one device's state directory (its wallet and usage report, as
several apps of one device would); `--separate-devices` gives each its own copy (N devices).
Memory: the RSS of the gateway, the enclave and this process at the start and the end (the
gateway and the enclave are new processes after their restarts), and the peaks seen.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from privproc.errors import PeerRejectedError, PrivprocError
from privproc.parties.device.controls import Settings
from privproc.parties.device.private import PrivateProcessingClient
from privproc.parties.enclave.handler import ApiResponse, handle
from privproc.parties.enclave.inference.backends import MODEL_NAME
from privproc.system import System

PARTIES = ("gateway", "enclave")


class _NoModel:
    model = MODEL_NAME


def _expected_models() -> object:
    """What `GET /v1/models` must answer: the enclave handler's own answer, called here."""
    answer = handle(_NoModel(), "GET", "/v1/models", b"")  # type: ignore[arg-type]
    assert isinstance(answer, ApiResponse)
    assert answer.status == 200
    return json.loads(answer.body)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass  # it has just exited (a restart)
    return 0


_RETRY_STEP = re.compile(r"\((\w+)\): trying again in ([\d.]+) s$")


class Tally:
    """Every call's outcome, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = self.ok = self.garbled = self.hangs = self.chats = 0
        self.latencies: list[float] = []  # ms, every call that returned
        self.ok_latencies: list[float] = []
        self.retryable: collections.Counter[str] = collections.Counter()
        self.fatal: collections.Counter[str] = collections.Counter()
        self.messages: collections.Counter[str] = collections.Counter()
        self.first_fatal: list[str] = []
        self.first_garbled: list[str] = []
        self.retries: collections.Counter[str] = collections.Counter()  # tries again, by cause
        self.waited = 0.0  # seconds the SDK waited before them, in all

    def retried(self, step: str) -> None:
        """A step of a call: "... (EnclaveLostError): trying again in 0.3 s" is one retry."""
        found = _RETRY_STEP.search(step)
        if found is not None:
            with self.lock:
                self.retries[found.group(1)] += 1
                self.waited += float(found.group(2))

    def outcome(self, ms: float, deadline_ms: float, error: BaseException | None, bad: str) -> None:
        with self.lock:
            self.calls += 1
            self.latencies.append(ms)
            if ms > deadline_ms:
                self.hangs += 1
            if error is None and not bad:
                self.ok += 1
                self.ok_latencies.append(ms)
            elif error is None:
                self.garbled += 1
                if len(self.first_garbled) < 3:
                    self.first_garbled.append(bad)
            else:
                name = type(error).__name__
                if isinstance(error, PeerRejectedError):
                    name += f"({error.status})"
                self.messages[f"{name}: {error}"] += 1
                if isinstance(error, PrivprocError) and error.retryable:
                    self.retryable[name] += 1
                else:
                    self.fatal[name] += 1
                    if len(self.first_fatal) < 3:
                        self.first_fatal.append("".join(traceback.format_exception(error)).rstrip())


def _soak(system: System, args: argparse.Namespace) -> int:
    expected = _expected_models()
    deadline_ms = args.deadline * 1000
    tally = Tally()
    stop_at = time.monotonic() + args.seconds
    started: list[float | None] = [None] * args.clients  # when each client's call began
    events: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        events.append(f"{time.monotonic() - t0:6.1f} s  {what}")

    dirs = [system.client_dir] * args.clients
    if args.separate_devices:
        dirs = [system.state / f"device-{i}" for i in range(args.clients)]
        for d in dirs:
            shutil.copytree(system.client_dir, d)

    def worker(i: int) -> None:
        client = PrivateProcessingClient.from_state(dirs[i], on_step=tally.retried)
        n = 0
        try:
            while time.monotonic() < stop_at:
                n += 1
                chat = bool(args.chat_every) and n % args.chat_every == 0
                error: BaseException | None = None
                bad = ""
                start = time.monotonic()
                started[i] = start
                try:
                    if chat:
                        reply = client.chat("Say hello.", max_tokens=8)
                        if reply.model != MODEL_NAME or not reply.text.strip():
                            bad = f"chat: model {reply.model!r}, text {reply.text!r}"
                    else:
                        status, doc = client.call("GET", "/v1/models", None, feature="chat")
                        if status != 200 or doc != expected:
                            bad = f"models: {status} {doc!r}"[:300]
                except Exception as exc:  # every kind is counted; any but the typed ones fails
                    error = exc
                started[i] = None
                ms = (time.monotonic() - start) * 1000
                tally.outcome(ms, deadline_ms, error, bad)
                if chat:
                    with tally.lock:
                        tally.chats += 1
        finally:
            client.close()

    rss: dict[str, list[int]] = {name: [] for name in (*PARTIES, "bench")}
    peak: dict[str, int] = dict.fromkeys(rss, 0)

    def sample() -> dict[str, int]:
        now = {p.name: _rss_kib(p.process.pid) for p in system.parties if p.name in PARTIES}
        now["bench"] = _rss_kib(os.getpid())
        for name, kib in now.items():
            peak[name] = max(peak[name], kib)
        return now

    first = sample()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    faults: list[tuple[float, str, Callable[[], object]]] = [
        (0.2, "enclave stopped (SIGTERM) and started again", lambda: _restart_enclave(system)),
        (0.4, "enclave SIGKILLed and started again", lambda: _restart_enclave(system, kill=True)),
        (0.6, "gateway restarted (SIGTERM)", lambda: system.restart_party("gateway")),
        (
            0.8,
            "gateway SIGKILLed, started again",
            lambda: system.restart_party("gateway", kill=True),
        ),
    ]
    hung_now: set[int] = set()
    while any(t.is_alive() for t in threads):
        elapsed = time.monotonic() - t0
        if faults and elapsed >= faults[0][0] * args.seconds:
            _, what, act = faults.pop(0)
            begun = time.monotonic()
            act()
            note(f"{what} ({(time.monotonic() - begun):.1f} s)")
        sample()
        now = time.monotonic()
        for i, since in enumerate(started):
            if since is not None and now - since > args.deadline and i not in hung_now:
                hung_now.add(i)  # counted when it returns (its latency), or below if never
                note(f"client {i}: a call has run for over {args.deadline} s")
        if now > stop_at + args.deadline:
            break
        time.sleep(0.2)
    never = sum(1 for t in threads if t.is_alive())
    tally.hangs += never
    time.sleep(0.5)
    last = sample()

    print("\n".join(events))
    lat = sorted(tally.latencies)
    ok_lat = sorted(tally.ok_latencies)

    def q(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

    print(f"\n{args.clients} clients, {args.seconds:.0f} s, deadline {args.deadline:.0f} s")
    print(f"calls {tally.calls} ({tally.calls / args.seconds:.0f}/s), chats {tally.chats}")
    print(f"ok {tally.ok}")
    retry_total = sum(tally.retryable.values())
    retries = sum(tally.retries.values())
    print(
        f"retries inside calls {retries} (waits {tally.waited:.1f} s in all): "
        f"{dict(tally.retries.most_common())}"
    )
    print(f"retryable errors {retry_total}: {dict(tally.retryable.most_common())}")
    fatal_total = sum(tally.fatal.values())
    print(f"non-retryable errors {fatal_total}: {dict(tally.fatal.most_common())}")
    print(f"garbled {tally.garbled}")
    print(f"hangs {tally.hangs} (calls over the deadline {tally.hangs - never}, never returned "
          f"{never})")  # fmt: skip
    if ok_lat:
        print(
            f"latency, ok calls: p50 {statistics.median(ok_lat):.1f} ms, p99 {q(ok_lat, 0.99):.1f}"
            f" ms, max {ok_lat[-1]:.1f} ms; all calls: p50 {statistics.median(lat):.1f} ms, "
            f"p99 {q(lat, 0.99):.1f} ms"
        )
    reports = [d / "report.jsonl" for d in set(dirs)]
    lines = sum(len(r.read_bytes().splitlines()) for r in reports if r.exists())
    print(f"usage report entries: {lines} for {tally.calls} calls")
    print("RSS (KiB)      start      end     peak")
    for name in rss:
        print(f"  {name:9} {first.get(name, 0):8} {last.get(name, 0):8} {peak[name]:8}")
    if tally.messages:
        print("errors seen (count: type: message):")
        for message, count in tally.messages.most_common(12):
            print(f"  {count:6}: {message}")
    for text in tally.first_garbled:
        print(f"GARBLED: {text}")
    for text in tally.first_fatal:
        print(f"NON-RETRYABLE:\n{text}")
    failed = tally.garbled or tally.hangs or fatal_total
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


def _restart_enclave(system: System, *, kill: bool = False) -> None:
    if kill:
        system.kill_party("enclave")
    else:
        system.stop_party("enclave")
    system.start_enclave()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--chat-every", type=int, default=0, help="a real chat every N calls")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds before a hang")
    parser.add_argument(
        "--separate-devices",
        action="store_true",
        help="each client its own copy of the device state (wallet, report): N devices of one "
        "account, instead of N clients sharing one device's state",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        system = System(Path(tmp), quota=1_000_000)
        system.start()
        try:
            controls = Settings.load(system.client_dir)
            controls.set_feature("chat", True)  # the benchmark's user turns chat on
            controls.save()
            status = _soak(system, args)
        finally:
            system.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
