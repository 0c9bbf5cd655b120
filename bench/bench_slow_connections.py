"""A slow-connection flood against the relay and the gateway, full size: 2,000 connections that
send their headers a byte at a time and reopen when closed, held while a legitimate client sends
OHTTP requests through the relay (or straight to the gateway). Reports how many legitimate
requests were answered and their p50/p99, next to the floor: the same requests without the flood.

    .venv/bin/python bench/bench_slow_connections.py [--slow 2000] [--requests 200]

The servers run with their defaults (1,024 connections, 10 s for headers, the relay 64 per
client address); the flood comes from 127.0.0.2, the client from 127.0.0.1. Target: >= 99%
answered, p99 <= 2 s.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from tests.servers import privproc_process
from tests.slowloris import SlowLoris

from privproc.ohttp import bhttp
from privproc.parties.device.ohttp import OhttpClient, choose_config


def _measure(request: Callable[[], None], count: int) -> tuple[int, list[float]]:
    answered, latencies = 0, []
    for _ in range(count):
        began = time.monotonic()
        try:
            request()
            answered += 1
        except Exception:
            pass
        latencies.append(time.monotonic() - began)
        time.sleep(0.02)
    return answered, sorted(latencies)


def _row(name: str, answered: int, count: int, latencies: list[float]) -> str:
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    return (
        f"| {name} | {answered}/{count} ({100 * answered / count:.1f}%) | {p50:.1f} | {p99:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.slow + 1024)), hard))
    print("| target | answered | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        gw_args = ["serve", "gateway", "--port", "0", "--conformance"]
        with privproc_process(gw_args, "ready gateway ", Path(tmp)) as gateway:
            with OhttpClient() as plain:
                config = choose_config(plain.fetch_key_configs(gateway.url))
            echo = gateway.url.replace("/.well-known/ohttp-gateway", "/gateway-echo")
            relay_args = ["serve", "relay", "--port", "0", "--gateway", echo]
            with privproc_process(relay_args, "ready relay ", Path(tmp)) as relay:
                encoded = bhttp.encode_request(
                    bhttp.Request.build("POST", "https://t.invalid/echo", content=b"hello")
                )
                for name, url in (("relay", relay.url), ("gateway", echo)):

                    def request(url: str = url) -> None:
                        with OhttpClient(timeout=10) as client:
                            assert client.send(url, config, encoded) == encoded

                    answered, latencies = _measure(request, args.requests)
                    print(_row(f"{name}, no flood (floor)", answered, args.requests, latencies))
                    flood = SlowLoris("127.0.0.1", httpx.URL(url).port or 80, args.slow)
                    flood.start()
                    time.sleep(5)
                    answered, latencies = _measure(request, args.requests)
                    flood.stop()
                    print(_row(f"{name}, {args.slow} slow connections", answered, args.requests,
                               latencies))  # fmt: skip
                    print(f"<!-- {name}: the flood opened {flood.opened} connections -->")


if __name__ == "__main__":
    main()
