"""The drivers of steps (net/steps.py): `Driver` with blocking I/O, `AsyncDriver` on asyncio.

Rules: a driver follows its step's needs exactly (no retries, no redirects), bounds what it
reads as `net/client.py` does (an answer over its limit is `TooLargeError`, a connection that
fails `TransportError`, a stream that cannot open or breaks off `StreamTruncatedError`, each
thrown into the step), and closes a stream the step left open when the step ends, however it
ends. One stream is open at a time per run; one driver may run many steps at once. The asyncio
driver starts no thread: every wait is awaited on the caller's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, TypeVar

import httpx

from privproc.errors import (
    PrivprocError,
    StreamTruncatedError,
    TooLargeError,
    TransportError,
    UsageError,
)
from privproc.net.client import Answer, bounded_exchange, collect_answer
from privproc.net.steps import (
    CloseStream,
    Emit,
    Exchange,
    Need,
    OpenStream,
    ReadStream,
    Sleep,
    Step,
    StreamHead,
)

__all__ = ["AsyncDriver", "Driver", "run_local"]

T = TypeVar("T")


def _media_type(response: httpx.Response) -> str:
    kind: str = response.headers.get("content-type", "")
    return kind.split(";", 1)[0].strip().lower()


def _broke(url: str, exc: Exception) -> TransportError:
    return TransportError(f"could not reach {url}: {type(exc).__name__}")


def _cut(exc: Exception) -> StreamTruncatedError:
    return StreamTruncatedError(
        f"the answer stream broke off ({type(exc).__name__}); it is not the whole answer"
    )


class _Run:
    """One run of one step: what it was sent or thrown last, and the stream it holds open."""

    def __init__(self, step: Step[Any]) -> None:
        self.step = step
        self.value: Any = None
        self.error: PrivprocError | None = None
        self.stream: httpx.Response | None = None
        self.raw: Any = None  # the open stream's pieces (an iterator or an async iterator)

    def advance(self) -> Need:
        """The step's next need; StopIteration (with its result) when it has returned."""
        value, error, self.value, self.error = self.value, self.error, None, None
        return self.step.throw(error) if error is not None else self.step.send(value)

    def opened(self, response: httpx.Response, raw: object) -> StreamHead:
        self.stream, self.raw = response, raw
        return StreamHead(
            response.status_code, _media_type(response), response.headers.get("retry-after")
        )

    def take_stream(self) -> httpx.Response | None:
        stream, self.stream, self.raw = self.stream, None, None
        return stream


class Driver:
    """Runs steps with blocking I/O on `http` (None: steps that need only pauses). One driver
    may run many steps at once, from several threads: each run keeps its own stream."""

    def __init__(self, http: httpx.Client | None) -> None:
        self.http = http

    def run(self, step: Step[T]) -> T:
        """Run `step` to its result (a step that emits cannot be run, only iterated)."""
        result: list[T] = []
        for value in self._drive(step, result):
            raise UsageError(f"this step hands out values ({type(value).__name__}); iterate it")
        return result[0]

    def iterate(self, step: Step[Any]) -> Iterator[object]:
        """The values `step` emits, as it emits them; closing the iterator closes the step."""
        return self._drive(step, [])

    def _drive(self, step: Step[Any], result: list[Any]) -> Generator[object, None, None]:
        run = _Run(step)
        try:
            while True:
                try:
                    need = run.advance()
                except StopIteration as done:
                    result.append(done.value)
                    return
                if isinstance(need, Emit):
                    yield need.value
                    continue
                try:
                    run.value = self._perform(run, need)
                except PrivprocError as exc:
                    run.error = exc
        finally:
            self._close(run)
            step.close()

    def _perform(self, run: _Run, need: Need) -> Any:
        if isinstance(need, Sleep):
            time.sleep(need.seconds)
            return None
        if isinstance(need, CloseStream):
            self._close(run)
            return None
        if self.http is None:
            raise UsageError(f"this driver has no HTTP client for {type(need).__name__}")
        if isinstance(need, Exchange):
            return bounded_exchange(
                self.http, need.method, need.url, need.limit, need.content, need.headers
            )
        if isinstance(need, OpenStream):
            self._close(run)
            request = self.http.build_request(
                need.method, need.url, content=need.content, headers=need.headers
            )
            try:
                response = self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _cut(exc) from None
            return run.opened(response, response.iter_raw())
        assert isinstance(need, ReadStream)
        if run.raw is None:
            raise UsageError("a stream is read before it is opened")
        try:
            return next(run.raw, b"")
        except httpx.HTTPError as exc:
            raise _cut(exc) from None

    @staticmethod
    def _close(run: _Run) -> None:
        stream = run.take_stream()
        if stream is not None:
            stream.close()


class AsyncDriver:
    """Runs steps with asyncio I/O on `http`: no thread, every wait is awaited. Many runs may
    share one driver (each keeps its own stream)."""

    def __init__(self, http: httpx.AsyncClient | None) -> None:
        self.http = http

    async def run(self, step: Step[T]) -> T:
        """Run `step` to its result (a step that emits cannot be run, only iterated)."""
        run = _Run(step)
        try:
            while True:
                try:
                    need = run.advance()
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                if isinstance(need, Emit):
                    raise UsageError("this step hands out values; iterate it")
                await self._settle(run, need)
        finally:
            await self._close(run)
            step.close()

    async def iterate(self, step: Step[Any]) -> AsyncIterator[object]:
        """The values `step` emits, as it emits them; closing the iterator closes the step."""
        run = _Run(step)
        try:
            while True:
                try:
                    need = run.advance()
                except StopIteration:
                    return
                if isinstance(need, Emit):
                    yield need.value
                else:
                    await self._settle(run, need)
        finally:
            await self._close(run)
            step.close()

    async def _settle(self, run: _Run, need: Need) -> None:
        try:
            run.value = await self._perform(run, need)
        except PrivprocError as exc:
            run.error = exc

    async def _perform(self, run: _Run, need: Need) -> Any:
        if isinstance(need, Sleep):
            await asyncio.sleep(need.seconds)
            return None
        if isinstance(need, CloseStream):
            await self._close(run)
            return None
        if self.http is None:
            raise UsageError(f"this driver has no HTTP client for {type(need).__name__}")
        if isinstance(need, Exchange):
            return await _aexchange(self.http, need)
        if isinstance(need, OpenStream):
            await self._close(run)
            request = self.http.build_request(
                need.method, need.url, content=need.content, headers=need.headers
            )
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _cut(exc) from None
            return run.opened(response, response.aiter_raw())
        assert isinstance(need, ReadStream)
        if run.raw is None:
            raise UsageError("a stream is read before it is opened")
        try:
            return await anext(run.raw, b"")
        except httpx.HTTPError as exc:
            raise _cut(exc) from None

    @staticmethod
    async def _close(run: _Run) -> None:
        stream = run.take_stream()
        if stream is not None:
            await stream.aclose()


async def _aexchange(http: httpx.AsyncClient, need: Exchange) -> Answer:
    try:
        async with http.stream(
            need.method, need.url, content=need.content, headers=need.headers
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > need.limit:
                    raise TooLargeError(f"the answer from {need.url} exceeds {need.limit} bytes")
            return collect_answer(response, (bytes(body),), need.url, need.limit)
    except httpx.HTTPError as exc:
        raise _broke(need.url, exc) from None


def run_local(step: Step[T]) -> T:
    """Run a step that needs no network (pauses at most): a blocking shell's file work."""
    return Driver(None).run(step)
