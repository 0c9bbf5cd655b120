"""A cheap denial of service: a flood of connections that send their request headers one byte at a
time (and open again when closed), against the relay, the gateway, the CDN and the issuer, each a
real `privproc serve` process with a small connection cap. A legitimate client's requests must
all be answered, quickly: the servers close connections that take too long over their headers,
and when full they shed the connection idle the longest rather than refuse a new one. The relay
also caps what one client address may hold. (Scaled down: 300 slow connections against a cap of
100; bench/bench_slow_connections.py runs 2,000.)"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from privproc.ohttp import bhttp
from privproc.parties.device.ohttp import OhttpClient, choose_config
from tests.servers import Running, privproc_process
from tests.slowloris import SlowLoris

CAP = ["--max-connections", "100", "--header-timeout", "3"]
SLOW = 300
LEGITIMATE = 40
P99_LIMIT = 2.0


def _port(url: str) -> int:
    return httpx.URL(url).port or 80


@contextmanager
def _server(kind: str, tmp: Path) -> Iterator[tuple[Running, Callable[[], None]]]:
    """(the server under attack, one legitimate request to it, which raises unless answered)."""
    if kind in ("gateway", "relay"):
        gw_args = ["serve", *CAP, "gateway", "--port", "0", "--conformance"]
        with privproc_process(gw_args, "ready gateway ", tmp) as gateway:
            with OhttpClient() as plain:
                config = choose_config(plain.fetch_key_configs(gateway.url))
            echo = gateway.url.replace("/.well-known/ohttp-gateway", "/gateway-echo")
            if kind == "gateway":
                yield gateway, _echo(echo, config)
                return
            relay_args = ["serve", *CAP, "--max-per-client", "50", "relay", "--port", "0",
                          "--gateway", echo]  # fmt: skip
            with privproc_process(relay_args, "ready relay ", tmp) as relay:
                yield relay, _echo(relay.url, config)
    elif kind == "cdn":
        (tmp / "cdn").mkdir()
        (tmp / "cdn" / "checkpoint").write_text("a checkpoint\n")
        args = ["serve", *CAP, "cdn", "--port", "0", "--dir", str(tmp / "cdn")]
        with privproc_process(args, "ready cdn ", tmp) as cdn:
            yield cdn, _get(cdn.url.rstrip("/") + "/checkpoint")
    else:
        args = ["serve", *CAP, "issuer", "--port", "0", "--state", str(tmp / "issuer")]
        with privproc_process(args, "ready issuer ", tmp) as issuer:
            yield issuer, _get(issuer.url + "/.well-known/private-token-issuer-directory")


def _echo(url: str, config: object) -> Callable[[], None]:
    inner = bhttp.Request.build("POST", "https://target.invalid/echo", content=b"legitimate")

    def request() -> None:
        with OhttpClient(timeout=10) as client:  # a new connection each time: it needs a slot
            encoded = bhttp.encode_request(inner, bhttp.Framing.shortest())
            assert client.send(url, config, encoded) == encoded  # type: ignore[arg-type]

    return request


def _get(url: str) -> Callable[[], None]:
    def request() -> None:
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 200, answer.status_code

    return request


@pytest.mark.parametrize("kind", ["relay", "gateway", "cdn", "issuer"])
def test_a_slow_connection_flood_does_not_deny_service(kind: str, tmp_path: Path) -> None:
    with _server(kind, tmp_path) as (server, legitimate):
        flood = SlowLoris("127.0.0.1", _port(server.url), SLOW)
        flood.start()
        try:
            time.sleep(3)  # the flood is on: every slot taken, the slots churning
            assert flood.opened >= 100
            answered, latencies, failures = 0, [], []
            for _ in range(LEGITIMATE):
                began = time.monotonic()
                try:
                    legitimate()
                    answered += 1
                except Exception as exc:  # counted as unanswered, and said why
                    failures.append(repr(exc))
                latencies.append(time.monotonic() - began)
                time.sleep(0.05)
        finally:
            flood.stop()
        latencies.sort()
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        assert answered >= 0.99 * LEGITIMATE, f"{answered}/{LEGITIMATE} answered: {failures}"
        assert p99 <= P99_LIMIT, f"p99 {p99:.2f} s"
        assert flood.closed_by_server > SLOW  # its connections were shed, again and again
        assert server.process.poll() is None


def test_a_connection_slow_with_its_headers_is_closed_at_the_deadline(tmp_path: Path) -> None:
    args = ["serve", "--header-timeout", "2", "cdn", "--port", "0", "--dir", str(tmp_path)]
    with privproc_process(args, "ready cdn ", tmp_path) as cdn:
        with socket.create_connection(("127.0.0.1", _port(cdn.url))) as slow:
            slow.settimeout(10)
            began = time.monotonic()
            closed = False
            for byte in b"GET /checkpoint HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                try:
                    slow.sendall(bytes([byte]))
                    slow.settimeout(0.3)
                    if slow.recv(1024) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
            held = time.monotonic() - began
        assert closed, "the server kept a connection that never finished its headers"
        assert 1.5 <= held <= 4.0, held  # about the deadline, however steadily it sent bytes
        # A keep-alive connection idle after its answer is closed at the same deadline.
        with socket.create_connection(("127.0.0.1", _port(cdn.url))) as idle:
            idle.settimeout(10)
            idle.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.recv(4096).startswith(b"HTTP/1.1 404")
            answered = time.monotonic()
            assert idle.recv(4096) == b""  # then nothing until the server closes it
            assert 1.5 <= time.monotonic() - answered <= 4.0


def test_headers_beyond_the_bound_are_refused_however_they_arrive(tmp_path: Path) -> None:
    """A request's target and fields are at most 16 KiB together (`MAX_HEADER_BYTES`): one
    just under is served; one over gets 400 and its connection closes, whether the excess is
    one field, many small ones, or the target itself, and whether it comes at once or in
    pieces (the parser counts, it does not wait for a line to end)."""
    from privproc.limits import MAX_HEADER_BYTES

    def ask(head: bytes, pieces: int = 1, then: bool = True) -> tuple[bytes, bool]:
        """(the answer's head, whether the server then closed the connection; `then`: look)."""
        with socket.create_connection(("127.0.0.1", _port(cdn.url))) as conn:
            conn.settimeout(5)
            step = -(-len(head) // pieces)
            with contextlib.suppress(OSError):  # closed while sending: read what it said
                for start in range(0, len(head), step):
                    conn.sendall(head[start : start + step])
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := conn.recv(65536)):
                answer += chunk
            try:
                closed = then and conn.recv(65536) == b""
            except TimeoutError:
                closed = False
            return answer, closed

    args = ["serve", "cdn", "--port", "0", "--dir", str(tmp_path)]
    with privproc_process(args, "ready cdn ", tmp_path) as cdn:
        room = MAX_HEADER_BYTES - 200
        fits = b"GET /nothing HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * room + b"\r\n\r\n"
        answer, _ = ask(fits, then=False)
        assert answer.startswith(b"HTTP/1.1 404")  # under the bound: an ordinary answer
        big_field = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"
        many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * (MAX_HEADER_BYTES // 8 + 10)
        long_target = b"GET /" + b"a" * MAX_HEADER_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        for head in (big_field, many + b"\r\n", long_target):
            for pieces in (1, 64):
                said, closed = ask(head, pieces)
                assert said.startswith(b"HTTP/1.1 400"), (len(head), pieces, said[:40])
                assert closed


def test_one_address_cannot_hold_the_relay(tmp_path: Path) -> None:
    """The relay sees client addresses: one that opens many connections keeps at most its
    share (here 20); the connections it opens beyond that shed its own oldest."""
    gw_args = ["serve", "gateway", "--port", "0", "--conformance"]
    with privproc_process(gw_args, "ready gateway ", tmp_path) as gateway:
        relay_args = ["serve", "--max-per-client", "20", "--header-timeout", "30", "relay",
                      "--port", "0", "--gateway", gateway.url]  # fmt: skip
        with privproc_process(relay_args, "ready relay ", tmp_path) as relay:
            flood = SlowLoris("127.0.0.1", _port(relay.url), 60, byte_every=0.2)
            flood.start()
            try:
                time.sleep(4)
                # 60 opened at once, 20 kept: 40 (at least) closed well before the 30 s deadline
                assert flood.closed_by_server >= 40
                assert httpx.get(relay.url, timeout=10).status_code < 500  # another address
            finally:
                flood.stop()
