"""A party that answers without end: an issuer whose key set never stops, an enclave whose records
never stop. The gateway reads each no further than its bound and gives up there, rather than read
everything first and check the size after (memory and time for the attacker's asking)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from privproc.errors import PrivprocError, TransportError
from privproc.limits import MAX_RECORDS
from privproc.parties.gateway.router import Enclave, SessionRouter
from privproc.parties.gateway.service import fetch_key_set
from privproc.tokens.directory import MAX_DOCUMENT
from tests.servers import app_in_thread

CHUNK = b"\x00" * 65536
GIVE_UP = 20.0
# What the sender can push into loopback socket buffers before it sees the reader has gone (read
# to its end, an endless answer would be gigabytes by the time the test gives up).
SLACK = 16 << 20


class Endless:
    """Answers every request with a body that never ends; counts what it managed to send."""

    def __init__(self) -> None:
        self.sent = 0

    def app(self) -> Any:
        async def answer(request: Request) -> StreamingResponse:
            async def forever() -> AsyncIterator[bytes]:
                while True:
                    self.sent += len(CHUNK)
                    yield CHUNK
                    await asyncio.sleep(0)

            return StreamingResponse(forever(), media_type="application/json")

        return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "PUT", "POST"])])


async def test_an_endless_key_set_is_cut_off_at_its_bound() -> None:
    issuer = Endless()
    with app_in_thread(issuer.app()) as url:
        began = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as http, asyncio.timeout(GIVE_UP):
            with pytest.raises(TransportError, match="over the bound"):
                await fetch_key_set(http, url)
        assert time.monotonic() - began < 5
        await asyncio.sleep(0.5)
        assert issuer.sent < MAX_DOCUMENT + SLACK  # read to the bound, no further


async def test_endless_enclave_records_are_cut_off_at_their_bound() -> None:
    enclave = Endless()
    with app_in_thread(enclave.app()) as url:
        router = SessionRouter([url], None)
        try:
            began = time.monotonic()
            with pytest.raises(PrivprocError, match="exceeds"):
                async with asyncio.timeout(GIVE_UP):  # reading on without end fails, not hangs
                    await router._forward("PUT", Enclave(url), "5a" * 16, b"records")
            assert time.monotonic() - began < 10
        finally:
            await router.aclose()
        await asyncio.sleep(0.5)
        assert enclave.sent < MAX_RECORDS + SLACK
