"""Benchmark (not a test): what HTTP costs the gateway and the relay per request, next to its
floors measured in the same run (issue 18).

    make bench            # or: .venv/bin/python bench/bench_http.py [--seconds 3]

Every server is a real process pinned to CPU 0; the load comes from this process, pinned to
CPU 1 (uvloop, keep-alive connections, one request at a time on each). A server's cost per
request is the CPU time it used (user + system, all its threads, from /proc) over the requests
it answered: what it would take a core to serve, whatever the load generator's own speed.

- crypto floor: decapsulate one OHTTP request and encapsulate its response, in process (and a
  bare one-shot HPKE open beside it: that ratio's target is <= 1.3).
- HTTP floors: a keep-alive HTTP/1.1 echo of the same bytes on a bare asyncio protocol with
  uvloop and httptools; uvicorn with uvloop and httptools; uvicorn with h11.
- the gateway (`privproc serve gateway --conformance`, its echo endpoint), target
  <= crypto floor + HTTP floor + 10%; the relay forwarding to the bare echo, target
  <= 2 x HTTP floor + 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httptools
import uvloop
from cryptography.hazmat.primitives import hpke as chpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tests.servers import privproc_process

from privproc import hpke
from privproc.ohttp import bhttp
from privproc.ohttp.keys import GatewayKey, KeyRing, decode_key_configs
from privproc.ohttp.messages import (
    MEDIA_TYPE_REQUEST,
    decapsulate_request,
    encapsulate_request,
)
from timing import rate

SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 16
TICKS = os.sysconf("SC_CLK_TCK")


# --- The floors' servers (each run as `bench_http.py --serve KIND PORT`) -----------------------


class _Echo(asyncio.Protocol):
    """Keep-alive HTTP/1.1: each request's body comes back as the response's."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        head = b"HTTP/1.1 200 OK\r\ncontent-type: message/ohttp-res\r\ncontent-length: "
        self.transport.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _asgi_echo(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [
        (b"content-type", b"message/ohttp-res"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_floor(kind: str, port_file: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    Path(port_file).write_text(str(sock.getsockname()[1]))
    if kind == "bare":
        loop = uvloop.new_event_loop()
        server = loop.run_until_complete(loop.create_server(_Echo, sock=sock))
        loop.run_until_complete(server.serve_forever())
        return
    import uvicorn

    http = "httptools" if kind == "uvicorn-httptools" else "h11"
    loop_kind = "uvloop" if kind == "uvicorn-httptools" else "asyncio"
    config = uvicorn.Config(_asgi_echo, http=http, loop=loop_kind, log_level="warning",
                            access_log=False, lifespan="off")  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def floor_server(kind: str) -> Iterator[tuple[int, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port_file)])
        try:
            deadline = time.monotonic() + 20
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start")
                time.sleep(0.05)
            yield proc.pid, f"http://127.0.0.1:{port_file.read_text()}/"
        finally:
            proc.terminate()
            proc.wait(10)


# --- The load, and what it cost the server -----------------------------------------------------


def _pin(pid: int, cpu: int) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class _Client(asyncio.Protocol):
    def __init__(self, done: Callable[[], None]) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done = done
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() != 200:
            raise RuntimeError(f"the server answered {self.parser.get_status_code()}")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _load(url: str, body: bytes, seconds: float) -> int:
    host_port = url.split("//", 1)[1].split("/", 1)
    host, port = host_port[0].split(":")
    path = "/" + host_port[1]
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: {MEDIA_TYPE_REQUEST}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    count = 0
    stop = loop.time() + seconds

    async def one() -> None:
        nonlocal count
        _, client = await loop.create_connection(lambda: _Client(lambda: None), host, int(port))
        while loop.time() < stop:
            client.waiter = loop.create_future()
            client.transport.write(request)
            await client.waiter
            count += 1
        client.transport.close()

    await asyncio.gather(*(one() for _ in range(CONNECTIONS)))
    return count


def cost_per_request(pid: int, url: str, body: bytes, seconds: float) -> tuple[float, float]:
    """(server CPU µs per request, requests per second) under keep-alive load."""
    _pin(pid, SERVER_CPU)
    uvloop.run(_load(url, body, 0.5))  # warm up: connections, caches, the JIT-less Python paths
    before = _cpu_seconds(pid)
    began = time.perf_counter()
    count = uvloop.run(_load(url, body, seconds))
    elapsed = time.perf_counter() - began
    used = _cpu_seconds(pid) - before
    return 1e6 * used / count, count / elapsed


# --- The run ------------------------------------------------------------------------------------


def crypto_floor(seconds: float) -> tuple[float, float, bytes, KeyRing]:
    """(µs per decapsulate + response, µs per bare one-shot HPKE open, a request, its ring)."""
    kem, aead = hpke.KEM_X25519_HKDF_SHA256, hpke.AEAD_AES_128_GCM
    gateway_key = GatewayKey.generate(1, kem, [(hpke.KDF_HKDF_SHA256, aead)])
    ring = KeyRing([gateway_key])
    inner = bhttp.encode_request(
        bhttp.Request.build("POST", "https://t.invalid/echo", content=os.urandom(512)),
        bhttp.Framing.shortest(),
    )
    body, _ = encapsulate_request(gateway_key.config, inner)

    def work() -> bytes:
        _request, context = decapsulate_request(ring, body)
        return context.encapsulate_response(inner)

    bare = X25519PrivateKey.generate()
    csuite = chpke.Suite(chpke.KEM.X25519, chpke.KDF.HKDF_SHA256, chpke.AEAD.AES_128_GCM)
    blob = csuite.encrypt(inner, bare.public_key(), info=b"bench")
    ours = rate(work, seconds)
    floor = rate(lambda: csuite.decrypt(blob, bare, info=b"bench"), seconds)
    return 1e6 / ours, 1e6 / floor, body, ring


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="load time per server")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_floor(*args.serve)
        return
    os.sched_setaffinity(0, {LOAD_CPU})
    crypto, bare_open, _, _ = crypto_floor(args.seconds / 2)
    rows: list[tuple[str, float, float]] = []
    floors: dict[str, tuple[int, str]] = {}
    with floor_server("bare") as bare, tempfile.TemporaryDirectory() as tmp:
        for kind in ("bare", "uvicorn-httptools", "uvicorn-h11"):
            with floor_server(kind) if kind != "bare" else _same(bare) as (pid, url):
                floors[kind] = (pid, url)
                cost, per_second = cost_per_request(pid, url, b"x" * 600, args.seconds)
                rows.append((f"HTTP floor: {kind}", cost, per_second))
        gw_args = ["serve", "gateway", "--port", "0", "--conformance"]
        with privproc_process(gw_args, "ready gateway ", Path(tmp)) as gateway:
            keys = _get(gateway.url)
            config = decode_key_configs(keys)[0]
            inner = bhttp.encode_request(
                bhttp.Request.build("POST", "https://t.invalid/echo", content=os.urandom(512)),
                bhttp.Framing.shortest(),
            )
            body, _ = encapsulate_request(config, inner)
            echo = gateway.url.replace("/.well-known/ohttp-gateway", "/gateway-echo")
            cost, per_second = cost_per_request(gateway.process.pid, echo, body, args.seconds)
            rows.append(("gateway (OHTTP echo)", cost, per_second))
        relay_args = ["serve", "relay", "--port", "0", "--gateway", bare[1]]
        with privproc_process(relay_args, "ready relay ", Path(tmp)) as relay:
            cost, per_second = cost_per_request(
                relay.process.pid, relay.url, b"x" * 600, args.seconds
            )
            rows.append(("relay (forwarding to the bare echo)", cost, per_second))
    http_floor = rows[0][1]
    print(f"{'server':40} {'µs/request':>11} {'requests/s':>11}")
    print(f"{'crypto floor: decapsulate + response':40} {crypto:11.1f}")
    print(f"{'  bare one-shot HPKE open':40} {bare_open:11.1f}   ratio {crypto / bare_open:.2f}"
          " (target <= 1.3)")  # fmt: skip
    for name, cost, per_second in rows:
        print(f"{name:40} {cost:11.1f} {per_second:11.0f}")
    gateway_cost = rows[3][1]
    relay_cost = rows[4][1]
    gateway_target = 1.1 * (crypto + http_floor)
    relay_target = 1.1 * 2 * http_floor
    print(
        f"\ngateway: {gateway_cost:.0f} µs a request, target <= {gateway_target:.0f} "
        f"(crypto {crypto:.0f} + HTTP {http_floor:.0f}, +10%): "
        f"{gateway_cost / (crypto + http_floor):.2f}x the floors"
    )
    print(
        f"relay: {relay_cost:.0f} µs a request, target <= {relay_target:.0f} (2 x HTTP "
        f"{http_floor:.0f}, +10%): {relay_cost / (2 * http_floor):.2f}x the floor"
    )


@contextmanager
def _same(server: tuple[int, str]) -> Iterator[tuple[int, str]]:
    yield server


def _get(url: str) -> bytes:
    import httpx

    return httpx.get(url, timeout=10).content


if __name__ == "__main__":
    main()
