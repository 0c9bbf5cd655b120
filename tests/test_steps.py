"""Steps (net/steps.py, net/drivers.py): one piece of client I/O written once, run by the
blocking driver and by the asyncio driver against a real HTTP server on loopback, with the same
results: bounded answers, streams read piece by piece, failures thrown into the step where it
can catch them, emitted values for whoever iterates, and the asyncio driver starting no thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from privproc.errors import StreamTruncatedError, TooLargeError, TransportError, UsageError
from privproc.net.client import Answer
from privproc.net.drivers import AsyncDriver, Driver, run_local
from privproc.net.steps import (
    Emit,
    Exchange,
    OpenStream,
    ReadStream,
    Sleep,
    Step,
    StreamHead,
    immediate,
)
from tests.servers import app_in_thread


async def _echo(request: Request) -> Response:
    body = await request.body()
    return Response(body + b"!", media_type="application/x-echo; charset=utf-8")


async def _pieces(request: Request) -> Response:
    cut = request.query_params.get("cut") == "1"

    async def body() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"piece {i};".encode()
            await asyncio.sleep(0.01)
        if cut:
            raise RuntimeError("the server breaks off")  # the connection is dropped mid-body

    return StreamingResponse(body(), media_type="text/plain")


APP = Starlette(
    routes=[Route("/echo", _echo, methods=["POST"]), Route("/pieces", _pieces, methods=["GET"])]
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with app_in_thread(APP) as url:
        yield url


def _both(step: Callable[[], Step[Any]]) -> tuple[Any, Any]:
    """The step's result under each driver."""
    with httpx.Client() as http:
        blocking = Driver(http).run(step())

    async def run() -> Any:
        async with httpx.AsyncClient() as ahttp:
            return await AsyncDriver(ahttp).run(step())

    return blocking, asyncio.run(run())


def test_an_exchange_gives_the_same_bounded_answer_under_both_drivers(base: str) -> None:
    def echo() -> Step[tuple[int, str, bytes]]:
        answer = yield Exchange("POST", base + "/echo", 100, b"hello")
        return answer.status, answer.media_type, answer.body

    assert _both(echo) == ((200, "application/x-echo", b"hello!"),) * 2

    def too_big() -> Step[str]:
        try:
            yield Exchange("POST", base + "/echo", 5, b"hello")  # 6 bytes come back
        except TooLargeError as exc:  # thrown into the step, where it can be caught
            return f"refused: {type(exc).__name__}"
        return "read"

    assert _both(too_big) == ("refused: TooLargeError",) * 2

    def unreachable() -> Step[str]:
        try:
            yield Exchange("GET", "http://127.0.0.1:9/", 100)
        except TransportError as exc:
            return str(exc)
        return "reached"

    blocking, asyncio_ = _both(unreachable)
    assert blocking == asyncio_ == "could not reach http://127.0.0.1:9/: ConnectError"


def _read_all(url: str) -> Step[tuple[int, list[bytes]]]:
    head: StreamHead = yield OpenStream("GET", url, b"")
    pieces = []
    while piece := (yield ReadStream()):
        pieces.append(piece)
    return head.status, pieces


def test_a_stream_is_read_piece_by_piece_and_a_cut_one_is_truncated(base: str) -> None:
    blocking, asyncio_ = _both(lambda: _read_all(base + "/pieces"))
    for status, pieces in (blocking, asyncio_):
        assert status == 200
        assert b"".join(pieces) == b"piece 0;piece 1;piece 2;"
        assert len(pieces) >= 2  # as the server sent them, not joined at the end

    def cut() -> Step[str]:
        try:
            yield from _read_all(base + "/pieces?cut=1")
        except StreamTruncatedError as exc:
            return str(exc)
        return "whole"

    for said in _both(cut):
        assert "broke off" in said


def test_emitted_values_go_to_whoever_iterates_and_closing_closes_the_step() -> None:
    closed: list[str] = []

    def counting() -> Step[None]:
        try:
            for i in range(5):
                yield Sleep(0)
                yield Emit(i)
        finally:
            closed.append("closed")

    run = Driver(None).iterate(counting())
    assert [next(run), next(run)] == [0, 1]
    run.close()  # type: ignore[attr-defined]
    assert closed == ["closed"]
    with pytest.raises(UsageError, match="iterate it"):
        Driver(None).run(counting())

    async def asynchronously() -> list[object]:
        return [value async for value in AsyncDriver(None).iterate(counting())]

    assert asyncio.run(asynchronously()) == [0, 1, 2, 3, 4]


def test_a_driver_without_http_refuses_network_needs_and_takes_pauses() -> None:
    def fetching() -> Step[object]:
        yield Sleep(0.01)
        return (yield Exchange("GET", "http://127.0.0.1:9/", 10))

    with pytest.raises(UsageError, match="no HTTP client"):
        run_local(fetching())
    assert run_local(immediate(7)) == 7


def test_the_asyncio_driver_starts_no_thread(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    original = threading.Thread.start

    def noting(self: threading.Thread) -> None:
        started.append(self.name)
        original(self)

    def work() -> Step[int]:
        yield Sleep(0.01)
        answer: Answer = yield Exchange("POST", base + "/echo", 100, b"x")
        status, pieces = yield from _read_all(base + "/pieces")
        return answer.status + status + len(pieces)

    async def run() -> int:
        async with httpx.AsyncClient() as http:
            monkeypatch.setattr(threading.Thread, "start", noting)
            try:
                return await AsyncDriver(http).run(work())
            finally:
                monkeypatch.setattr(threading.Thread, "start", original)

    assert asyncio.run(run()) >= 402
    assert started == []
