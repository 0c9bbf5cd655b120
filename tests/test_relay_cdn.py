"""The relay and the CDN as real servers on loopback: what the gateway sees of a client through
the relay (its address from a different loopback address, its headers), and what the CDN serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from privproc.ohttp import bhttp
from privproc.ohttp.keys import KeyRing
from privproc.ohttp.messages import encapsulate_request
from privproc.parties.device.ohttp import OhttpClient, choose_config
from privproc.parties.gateway.service import KEYS_PATH, create_gateway_app
from tests.servers import Running, app_in_thread, privproc_process

CANARY = "canary-relay-3b1f: the meeting is at 6"


class Recorder:
    """ASGI middleware around the real gateway app: records what each request arrived with."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append({"client": scope["client"], "headers": list(scope["headers"])})
        await self.app(scope, receive, send)


@pytest.fixture
def recorded_gateway() -> Iterator[tuple[str, Recorder]]:
    """Our conformance gateway in a thread on 127.0.0.1, wrapped to record what it receives."""
    recorder = Recorder(create_gateway_app(KeyRing.generate(), conformance=True))
    with app_in_thread(recorder) as url:
        yield url, recorder


def test_the_gateway_sees_the_relay_not_the_client(
    recorded_gateway: tuple[str, Recorder], tmp_path: Path
) -> None:
    gateway, recorder = recorded_gateway
    args = [
        "serve",
        "relay",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--gateway",
        gateway + "/gateway-echo",
    ]
    with privproc_process(args, "ready relay ", tmp_path) as relay:
        with OhttpClient() as plain:
            config = choose_config(plain.fetch_key_configs(gateway + KEYS_PATH))
        inner = bhttp.encode_request(
            bhttp.Request.build("POST", "https://enclave.invalid/v1/x", content=CANARY.encode())
        )
        body, context = encapsulate_request(config, inner)
        # The client connects from 127.0.0.2, with identifying headers of every kind.
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport) as client:
            answer = client.post(
                relay.url,
                content=body,
                headers={
                    "content-type": "message/ohttp-req",
                    "x-forwarded-for": "203.0.113.9",
                    "forwarded": "for=203.0.113.9",
                    "cookie": "session=alice",
                    "user-agent": "AliceBrowser/1.0",
                    "authorization": "Bearer alice-secret",
                    "x-real-ip": "203.0.113.9",
                },
            )
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "message/ohttp-res"
        assert context.decapsulate_response(answer.content) == inner
        relay_logs = relay.logs()
    # Every connection the gateway saw came from 127.0.0.1 (the relay and this test's key
    # fetch), none from the client's 127.0.0.2.
    assert {s["client"][0] for s in recorder.seen} == {"127.0.0.1"}
    forwarded = [s for s in recorder.seen if any(n == b"content-type" for n, _ in s["headers"])]
    assert forwarded
    for request in forwarded:
        assert request["client"][0] == "127.0.0.1"  # the relay's address, never 127.0.0.2
        names = {n.decode() for n, _ in request["headers"]}
        assert names <= {"host", "content-type", "accept", "content-length", "user-agent",
                         "accept-encoding", "connection"}  # fmt: skip
        values = b" ".join(v for _, v in request["headers"])
        for leak in (b"203.0.113.9", b"alice", b"AliceBrowser", b"127.0.0.2"):
            assert leak not in values
    assert "127.0.0.2" not in relay_logs
    assert CANARY not in relay_logs


def test_relay_refusals(tmp_path: Path) -> None:
    args = ["serve", "relay", "--port", "0", "--gateway", "http://127.0.0.1:1/nowhere"]
    with privproc_process(args, "ready relay ", tmp_path) as relay:
        assert (
            httpx.post(relay.url, content=b"x", headers={"content-type": "text/plain"}).status_code
            == 415
        )
        ohttp = {"content-type": "message/ohttp-req"}
        assert httpx.post(relay.url, content=b"x" * (2 << 20), headers=ohttp).status_code == 413
        assert httpx.post(relay.url, content=b"x", headers=ohttp).status_code == 502
        chunked = {"content-type": "message/ohttp-chunked-req"}
        assert httpx.post(relay.url, content=b"x", headers=chunked).status_code == 502
        assert httpx.post(relay.url, content=b"x" * (2 << 20), headers=chunked).status_code == 413
        assert httpx.get(relay.url).status_code == 405


@pytest.fixture
def cdn(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    root = tmp_path / "pub"
    (root / "tile" / "0").mkdir(parents=True)
    (root / "tile" / "0" / "000.p").mkdir()
    (root / "tile" / "0" / "000.p" / "3").write_bytes(bytes(96))
    (root / "checkpoint").write_text("log.example/x\n3\nAAAA\n")
    (root / "ohttp-keys").write_bytes(b"\x00\x01")
    (root / ".well-known").mkdir()
    (root / ".well-known" / "private-token-issuer-directory").write_text("{}")
    (root / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "link").symlink_to(tmp_path / "outside.txt")
    with privproc_process(
        ["serve", "cdn", "--port", "0", "--dir", str(root)], "ready cdn ", tmp_path
    ) as running:
        yield running, root


def test_cdn_types_and_caching(cdn: tuple[Running, Path]) -> None:
    running, _ = cdn
    base = running.url
    checkpoint = httpx.get(base + "checkpoint")
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    assert "no-cache" in checkpoint.headers["cache-control"]
    tile = httpx.get(base + "tile/0/000.p/3")
    assert tile.content == bytes(96)
    assert tile.headers["content-type"] == "application/octet-stream"
    assert "immutable" in tile.headers["cache-control"]
    assert httpx.get(base + "ohttp-keys").headers["content-type"] == "application/ohttp-keys"
    directory = httpx.get(base + ".well-known/private-token-issuer-directory")
    assert directory.headers["content-type"] == "application/private-token-issuer-directory"
    head = httpx.head(base + "tile/0/000.p/3")
    assert head.status_code == 200
    assert head.content == b""


def test_cdn_serves_nothing_outside_its_files(cdn: tuple[Running, Path]) -> None:
    running, _ = cdn
    base = running.url
    for path in (
        "",
        "tile",
        "tile/0",
        ".secret",
        "link",
        "../outside.txt",
        "%2e%2e/outside.txt",
        "nothing",
    ):
        assert httpx.get(base + path).status_code == 404, path
    assert httpx.post(base + "checkpoint").status_code == 405
