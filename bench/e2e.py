"""Benchmark (not a test): the private path end to end, every party a real process on loopback.

    .venv/bin/python bench/e2e.py [--requests 200]

Model time is excluded by asking for `GET /v1/models` (answered without inference), so what is
measured is the privacy layers: OHTTP through the relay and gateway, TLS records forwarded to the
enclave, and for a fresh session the token, the attested handshake and the client's appraisal.
Compared with a direct call of the same enclave handler in this process. Also: throughput with
1, 8 and 64 concurrent sessions, and what an idle session costs the gateway (its RSS growth per
session, over 200 idle sessions).
Targets: warm p50 <= direct + 5 ms; fresh p50 <= 30 ms; an idle session <= 64 KiB at the gateway.

Streaming (`--stream-runs N`, with the model): the time to the first piece of a streamed answer
and to its end, private (chunked OHTTP through relay and gateway) against the same model in this
process, and the whole answer unstreamed for comparison. Target: the first private piece within
direct first piece + 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from privproc.api import ModelCard
from privproc.parties.device.controls import Settings
from privproc.parties.device.private import PrivateProcessingClient
from privproc.parties.enclave.handler import handle
from privproc.parties.enclave.inference.backends import MODEL_NAME, Completion, Delta, Message
from privproc.system import System


class _NoModel:
    model = MODEL_NAME
    card = ModelCard(MODEL_NAME, "", "", "", "a stand-in", True)

    def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Completion:
        raise AssertionError("GET /v1/models needs no inference")

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Iterator[Delta]:
        raise AssertionError("GET /v1/models needs no inference")


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _throughput(system: System, sessions: int, seconds: float = 5.0) -> float:
    clients = [PrivateProcessingClient.from_state(system.client_dir) for _ in range(sessions)]
    for c in clients:
        c.request("GET", "/v1/models")
    done = [0] * sessions
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            clients[i].request("GET", "/v1/models")
            done[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(done) / (time.perf_counter() - start)
    for c in clients:
        c.close()
    return rate


STREAM_PROMPT = "Write a short story about a red kite on a windy beach."
STREAM_TOKENS = 64


def _timed(pieces: Iterator[str]) -> tuple[float, float, int]:
    """(ms to the first piece, ms to the end, number of pieces) of a stream started just now."""
    start = time.perf_counter()
    first, count = 0.0, 0
    for _ in pieces:
        count += 1
        if count == 1:
            first = (time.perf_counter() - start) * 1000
    return first, (time.perf_counter() - start) * 1000, count


def stream_run(system: System, runs: int) -> None:
    from privproc.parties.enclave.inference.backends import EmbeddedBackend

    model = EmbeddedBackend()
    question = [Message("user", STREAM_PROMPT)]

    def direct() -> Iterator[str]:
        return (d.text for d in model.stream(question, max_tokens=STREAM_TOKENS, temperature=0.2))

    controls = Settings.load(system.client_dir)
    controls.set_feature("chat", True)  # the benchmark's user turns chat on
    controls.save()
    client = PrivateProcessingClient.from_state(system.client_dir)
    client.chat("Say hello.", max_tokens=4)  # warm: keys, tokens, one session
    rows: dict[str, list[tuple[float, float, int]]] = {"direct": [], "private": []}
    whole = []
    for _ in range(runs):
        rows["direct"].append(_timed(direct()))
        rows["private"].append(_timed(client.chat_stream(STREAM_PROMPT, max_tokens=STREAM_TOKENS)))
        start = time.perf_counter()
        client.chat(STREAM_PROMPT, max_tokens=STREAM_TOKENS)
        whole.append((time.perf_counter() - start) * 1000)
    client.close()
    title = f"stream ({STREAM_TOKENS} tokens)"
    print(f"\n{title:34} {'first ms':>9} {'end ms':>9} {'pieces':>7}")
    for name, samples in rows.items():
        first = statistics.median(s[0] for s in samples)
        end = statistics.median(s[1] for s in samples)
        pieces = statistics.median(s[2] for s in samples)
        print(f"{name + ', streamed':34} {first:9.1f} {end:9.1f} {pieces:7.0f}")
    print(f"{'private, unstreamed (whole)':34} {'':9} {statistics.median(whole):9.1f}")
    gap = statistics.median(s[0] for s in rows["private"]) - statistics.median(
        s[0] for s in rows["direct"]
    )
    print(f"first private piece: +{gap:.1f} ms over direct (target <= 10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream-runs", type=int, default=10, help="0 skips the model runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        system = System(Path(tmp), quota=1_000_000)
        system.start()
        try:
            run(system, args.requests)
            if args.stream_runs:
                stream_run(system, args.stream_runs)
        finally:
            system.stop()


def run(system: System, n: int) -> None:
    backend = _NoModel()
    direct = []
    for _ in range(n):
        start = time.perf_counter()
        handle(backend, "GET", "/v1/models", b"")
        direct.append((time.perf_counter() - start) * 1000)
    client = PrivateProcessingClient.from_state(system.client_dir)
    client.request("GET", "/v1/models")  # warm: keys, tokens, one session
    warm = []
    for _ in range(n):
        start = time.perf_counter()
        status, _ = client.request("GET", "/v1/models")
        warm.append((time.perf_counter() - start) * 1000)
        assert status == 200
    fresh = []
    for _ in range(max(20, n // 10)):
        client.close_session()
        start = time.perf_counter()
        client.request("GET", "/v1/models")  # a new session: token, handshake, attestation
        fresh.append((time.perf_counter() - start) * 1000)
    d50, d99 = _quantiles(direct)
    w50, w99 = _quantiles(warm)
    f50, f99 = _quantiles(fresh)
    print(f"{'path':34} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'direct call of the handler':34} {d50:8.3f} {d99:8.3f}")
    print(f"{'private, warm session':34} {w50:8.2f} {w99:8.2f}   (+{w50 - d50:.2f} ms p50)")
    print(f"{'private, fresh session':34} {f50:8.2f} {f99:8.2f}   (token, handshake, attestation)")
    for sessions in (1, 8, 64):
        rate = _throughput(system, sessions)
        print(f"throughput, {sessions:2} concurrent sessions      {rate:8.0f} requests/s")
    gateway = next(p for p in system.parties if p.name == "gateway")
    before = _rss_kib(gateway.process.pid)
    idle = [PrivateProcessingClient.from_state(system.client_dir) for _ in range(200)]
    for c in idle:
        c.request("GET", "/v1/models")
    time.sleep(0.5)
    after = _rss_kib(gateway.process.pid)
    per_session = (after - before) / len(idle)
    print(f"gateway memory per idle session      {per_session:8.1f} KiB")
    print(
        f"\nwarm: +{w50 - d50:.2f} ms over direct at p50 (target <= 5); fresh: {f50:.1f} ms p50 "
        f"(target <= 30); idle session: {per_session:.1f} KiB at the gateway (target <= 64)"
    )
    for c in idle:
        c.close()
    client.close()


if __name__ == "__main__":
    main()
