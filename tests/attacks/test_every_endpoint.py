"""Oversized and malformed input at every endpoint of every party, against the real processes.

Actor: a malicious client (or anyone who can reach a service). What must hold: every answer is
a clear 4xx (or, where garbage is a well-formed request of its kind, an ordinary answer), never a
5xx, never a hang; afterwards every party still serves a genuine private request.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from privproc.parties.device.private import PrivateProcessingClient
from privproc.system import System
from tests.servers import privproc_process

GARBAGE = os.urandom(1024)
HUGE = b"\x00" * (4 << 20)


def _base(system: System, name: str) -> str:
    url = next(p.url for p in system.parties if p.name == name)
    return url.split("/.well-known")[0].rstrip("/")


def _endpoints(system: System) -> Iterator[tuple[str, str, str, str]]:
    """(party, method, url, content-type) for every endpoint a request can reach."""
    issuer, witness = _base(system, "issuer"), _base(system, "witness")
    gateway, relay = _base(system, "gateway"), _base(system, "relay")
    cdn, enclave = _base(system, "cdn"), _base(system, "enclave")
    session = "/sessions/" + "5a" * 16
    yield "issuer", "POST", issuer + "/token-request", "application/private-token-request"
    yield "issuer", "GET", issuer + "/.well-known/private-token-issuer-directory", ""
    yield "issuer", "GET", issuer + "/v1/token-keys", ""
    yield "witness", "POST", witness + "/add-checkpoint", "text/plain"
    yield "witness", "GET", witness + "/" + "ab" * 32 + "/checkpoint", ""
    for kind in ("message/ohttp-req", "message/ohttp-chunked-req", "text/plain"):
        yield "gateway", "POST", gateway + "/.well-known/ohttp-gateway", kind
        yield "relay", "POST", relay + "/", kind
    yield "gateway", "GET", gateway + "/.well-known/ohttp-gateway", ""
    yield "cdn", "GET", cdn + "/checkpoint", ""
    yield "cdn", "GET", cdn + "/tile/0/x001/../../../etc/passwd", ""
    yield "cdn", "POST", cdn + "/checkpoint", "text/plain"
    for method in ("PUT", "POST"):
        yield "enclave", method, enclave + session, "application/octet-stream"
    yield "enclave", "POST", enclave + session + "/stream", "application/octet-stream"
    yield "enclave", "DELETE", enclave + session, ""
    for party in ("issuer", "witness", "gateway", "relay", "cdn", "enclave"):
        yield party, "GET", _base(system, party) + "/metrics", ""


@pytest.mark.parametrize("body", ["empty", "garbage", "huge", "many-headers"])
def test_bad_input_anywhere_is_a_clear_4xx(system: System, body: str) -> None:
    content = {"empty": b"", "garbage": GARBAGE, "huge": HUGE, "many-headers": GARBAGE}[body]
    extra = {f"x-flood-{i}": "v" * 1000 for i in range(64)} if body == "many-headers" else {}
    with httpx.Client(timeout=30) as http:
        for party, method, url, kind in _endpoints(system):
            headers = {"content-type": kind, **extra} if kind else extra
            send = content if method in ("POST", "PUT") else None
            answer = http.request(method, url, content=send, headers=headers)
            assert answer.status_code < 500, (party, method, url, body, answer.status_code)
            if body == "huge" and method in ("POST", "PUT") and party != "cdn":
                assert answer.status_code in (400, 401, 405, 413, 415), (
                    party,
                    url,
                    answer.status_code,
                )
            assert b"Traceback" not in answer.content


# Paths no client would send: NUL and control bytes (raw and escaped), invalid UTF-8, overlong
# encodings, traversal, a very long path, an escaped query. Each must get a 4xx, never a 5xx.
ODD_PATHS = [
    "%00", "a%00b", "checkpoint%00", "tile/%00", ".well-known/%00", "%0d%0aSet-Cookie:%20x=1",
    "%ff%fe", "%c0%ae%c0%ae/", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd", "%25",
    "%e9", "\u00e9", "a" * 6000, "sessions/%00", "v1/%00", "x?%00=%00", "%7f", "%1b[2J",
]  # fmt: skip


def test_odd_paths_get_a_4xx_at_every_server(system: System, tmp_path: Path) -> None:
    """Every party's server, and the local proxy, with each odd path, GET and POST."""
    args = ["proxy", "--port", "0", "--state", str(system.state)]
    with (
        privproc_process(args, "ready proxy ", tmp_path) as proxy,
        httpx.Client(timeout=30) as http,
    ):
        bases = {p: _base(system, p) for p in ("issuer", "witness", "gateway", "relay", "cdn",
                                                "enclave")}  # fmt: skip
        bases["proxy"] = proxy.url.rstrip("/")
        for party, base in bases.items():
            for path in ODD_PATHS:
                for method in ("GET", "POST"):
                    url = httpx.URL(base + "/" + path)
                    json_body = {"content-type": "application/json"}
                    status = http.request(method, url, headers=json_body).status_code
                    where = (party, method, path[:40], status)
                    assert 400 <= status < 500, (where, proxy.logs()[-3000:])
        assert proxy.process.poll() is None
    assert all(p.process.poll() is None for p in system.parties)


def test_bad_input_at_the_local_proxy(system: System, tmp_path: Path) -> None:
    """`privproc proxy` (the device's local OpenAI endpoint) answers bad input with 4xx too."""
    args = ["proxy", "--port", "0", "--state", str(system.state)]
    with (
        privproc_process(args, "ready proxy ", tmp_path) as proxy,
        httpx.Client(timeout=30) as http,
    ):
        url = proxy.url.rstrip("/")
        cases = [
            ("POST", url + "/chat/completions", GARBAGE, 400),
            ("POST", url + "/chat/completions", b"[" * 5000, 400),
            ("POST", url + "/chat/completions", HUGE, 413),
            ("POST", url + "/chat/completions", b'{"messages": []}', 400),
            ("GET", url.removesuffix("/v1") + "/admin", b"", 404),
        ]
        json_body = {"content-type": "application/json"}
        for method, target, body, status in cases:
            answer = http.request(method, target, content=body, headers=json_body)
            assert answer.status_code == status, (target, body[:20], answer.status_code)
        # A body that is not declared JSON is refused before it is read.
        assert http.post(url + "/chat/completions", content=GARBAGE).status_code == 415
        assert proxy.process.poll() is None


def test_every_party_still_serves_afterwards(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    chat = [{"sender": "A", "time": "1", "text": "the picnic moved to Sunday at noon"}]
    assert client.summarize(chat).text
    client.close()
    for party in system.parties:
        assert party.process.poll() is None, party.name  # none of them died
