"""Benchmark (not a test): the transparency log at 1,000,000 entries.

    make bench            # or: .venv/bin/python bench/bench_tlog.py [--entries 1000000]

Measures, each in a fresh process so peak memory is its own:
- appending N entries to SQLite and publishing them as tlog-tiles (tiles, bundles, checkpoint);
  peak memory at N/4 and at N, to show it does not grow with the log;
- a client that accepts the checkpoint, then proves inclusion of random entries through tiles
  (cold: the sans-IO core names the tiles and the device's shell reads them; then with the
  core's tile cache warm, nothing to read), and proves consistency from an old size.
Targets: append + publish of 1,000,000 entries under 60 s, memory flat; an inclusion proof with
cached tiles under 10 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from privproc.parties.device.logfetch import LogReader, directory_fetcher
from privproc.parties.log.publisher import publish
from privproc.tlog.client import LogPolicy
from privproc.tlog.log import TransparencyLog

ORIGIN = "bench.example/log"


def entry(i: int) -> bytes:
    return i.to_bytes(8, "big") * 12  # 96 bytes, about the size of a release entry


def build(state: Path, out: Path, n: int) -> dict[str, float]:
    log = TransparencyLog.init(state, ORIGIN)
    start = time.perf_counter()
    log.append_many(entry(i) for i in range(n))
    appended = time.perf_counter()
    publish(log, out, 0)
    published = time.perf_counter()
    log.close()
    return {
        "append_s": appended - start,
        "publish_s": published - appended,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def client_side(state: Path, out: Path, n: int, old_size: int) -> dict[str, float]:
    log = TransparencyLog(state)
    policy = LogPolicy(ORIGIN, (log.verifier,), (), 0)
    log.close()
    client = LogReader(policy, directory_fetcher(out))
    rng = random.Random(1)
    start = time.perf_counter()
    client.update()
    accepted = time.perf_counter() - start
    indices = [rng.randrange(n) for _ in range(200)]
    start = time.perf_counter()
    for i in indices:
        client.prove_inclusion(i, entry(i))
    cold = (time.perf_counter() - start) / len(indices)
    start = time.perf_counter()
    for i in indices:
        client.prove_inclusion(i, entry(i))
    warm = (time.perf_counter() - start) / len(indices)
    # Consistency: a client that accepted `old_size` moves to `n`.
    from privproc.tlog import merkle
    from privproc.tlog.tiles import TileHashReader, tile_path

    fetch = directory_fetcher(out)
    reader = TileHashReader(n, lambda lv, ix, w: fetch(tile_path(lv, ix, w)))
    start = time.perf_counter()
    proof = merkle.consistency_proof_from(reader.hash_at, old_size, n)
    old_root = merkle.root_from(reader.hash_at, old_size)
    merkle.verify_consistency(old_size, n, old_root, client.current.root, proof)  # type: ignore[union-attr]
    consistency = time.perf_counter() - start
    return {
        "accept_checkpoint_ms": accepted * 1000,
        "inclusion_cold_ms": cold * 1000,
        "inclusion_cached_ms": warm * 1000,
        "consistency_ms": consistency * 1000,
    }


def child(args: argparse.Namespace) -> None:
    state, out = Path(args.dir) / "state", Path(args.dir) / "out"
    result = build(state, out, args.entries)
    if args.client:
        result.update(client_side(state, out, args.entries, args.entries // 3))
    print(json.dumps(result))


def run(n: int, client: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--child", "--entries", str(n), "--dir", tmp]
        if client:
            command.append("--client")
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    quarter = run(args.entries // 4, client=False)
    full = run(args.entries, client=True)
    total = full["append_s"] + full["publish_s"]
    print(f"entries                        {args.entries:>10}")
    print(f"append                         {full['append_s']:>9.1f} s")
    print(f"publish (tiles, bundles)       {full['publish_s']:>9.1f} s")
    memory = f"{quarter['peak_rss_mb']:>6.0f} MB {full['peak_rss_mb']:>6.0f} MB"
    print(f"peak memory at N/4 and N       {memory}")
    print(f"client: accept checkpoint      {full['accept_checkpoint_ms']:>9.2f} ms")
    print(f"client: inclusion, cold tiles  {full['inclusion_cold_ms']:>9.2f} ms")
    print(f"client: inclusion, cached      {full['inclusion_cached_ms']:>9.2f} ms")
    print(f"client: consistency from N/3   {full['consistency_ms']:>9.2f} ms")
    print(
        f"\nappend + publish: {total:.1f} s (target < 60 s); "
        f"inclusion with cached tiles: {full['inclusion_cached_ms']:.2f} ms (target < 10 ms)"
    )


if __name__ == "__main__":
    main()
