"""Cookies as a tracking tag: a party hands out an identifier to be sent back.

- The operator's gateway sets a cookie on its answer to one client: the relay (a real `privproc
  serve relay`) must neither store it, so as to send it with the next client's request (linking
  the two), nor pass it on to the client.
- A relay or an issuer sets a cookie on a device: the device's client must not send it back (it
  would link that device's requests over time).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc.net.client import bounded_exchange, new_client
from privproc.ohttp.messages import MEDIA_TYPE_REQUEST, MEDIA_TYPE_RESPONSE
from tests.servers import app_in_thread, privproc_process


class Tagger:
    """An attacker's server: a new cookie on every answer; what came back is recorded."""

    def __init__(self, media_type: str) -> None:
        self.media_type = media_type
        self.cookies_seen: list[str | None] = []
        self.numbers = itertools.count()

    def app(self) -> Any:
        async def answer(request: Request) -> Response:
            await request.body()
            self.cookies_seen.append(request.headers.get("cookie"))
            tag = f"track={next(self.numbers)}; Path=/; Max-Age=86400"
            return Response(b"\x00" * 40, media_type=self.media_type, headers={"set-cookie": tag})

        return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


def test_the_relay_keeps_and_passes_on_no_cookie(tmp_path: Path) -> None:
    gateway = Tagger(MEDIA_TYPE_RESPONSE)
    with app_in_thread(gateway.app()) as url:
        args = ["serve", "relay", "--port", "0", "--gateway", url + "/gateway"]
        with privproc_process(args, "ready relay ", tmp_path) as relay:
            for client in ("alice", "bob", "carol"):
                transport = httpx.HTTPTransport(local_address="127.0.0.2")
                with httpx.Client(transport=transport) as http:
                    answer = http.post(
                        relay.url,
                        content=client.encode() * 10,
                        headers={"content-type": MEDIA_TYPE_REQUEST},
                    )
                assert answer.status_code == 200
                assert "set-cookie" not in answer.headers  # not passed on
                assert not http.cookies
    assert len(gateway.cookies_seen) == 3
    assert gateway.cookies_seen == [None, None, None]  # no tag came back, for anyone


def test_a_device_sends_no_cookie_back() -> None:
    relay = Tagger("application/octet-stream")
    with app_in_thread(relay.app()) as url, new_client(5) as http:
        for _ in range(3):
            answer = bounded_exchange(http, "POST", url + "/", 1024, content=b"x")
            assert answer.status == 200
        assert not http.cookies
    assert relay.cookies_seen == [None, None, None]
