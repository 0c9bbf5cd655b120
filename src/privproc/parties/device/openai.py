"""The OpenAI ecosystem over the private path: an httpx transport, and a local proxy app.

    from openai import OpenAI
    client = PrivateProcessingClient.from_state(state / "client")
    ai = OpenAI(base_url="http://private.invalid/v1", api_key="unused",
                http_client=httpx.Client(transport=PrivateTransport(client)))
    ai.chat.completions.create(model="SmolLM2-135M-Instruct", messages=[...])

Every request that reaches the transport (or the proxy) goes to the enclave's OpenAI-compatible
API through the relay, the gateway and attested TLS; nothing goes to the base URL's host. Chat
completions count as the `chat` feature (off until the user enables it) and appear in the report.

Streamed completions (`stream: true`) come back as the enclave produces them (chunked OHTTP on
the wire): the server-sent events reach the SDK piece by piece. A stream cut on the way (by the
relay, the gateway or the network) is an error where the SDK reads it (`httpx.RemoteProtocolError`
from the transport, a connection closed mid-body from the proxy), never a short answer.

Rules: only `/v1/...` paths are served; the answer is the enclave's status and JSON (or its
event stream); one request at a time goes through one client's attested session (a stream holds
it until it is read to the end or closed, or its reader leaves; a call waits at most `LOCK_WAIT`
for it, then gets 503). The proxy's blocking work runs in daemon threads, so a stop never waits
for the enclave.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from privproc.errors import PrivprocError
from privproc.limits import MAX_BODY
from privproc.net.http import BodyError, StreamAborted, StreamedBody, read_body
from privproc.parties.device.controls import AIDisabledError
from privproc.parties.device.guard import ProxyGuard
from privproc.parties.device.private import PrivateProcessingClient, StreamedAnswer
from privproc.wire import load_json

__all__ = ["AsyncPrivateTransport", "PrivateTransport", "create_proxy_app"]

T = TypeVar("T")


LOCK_WAIT = 120.0  # how long a call waits for the session another call's answer holds


@dataclass
class Forwarded:
    """The enclave's answer to one API request: JSON, or an event stream read with `next_piece`.
    `release` frees the session for the next request; it may be called from any thread, at any
    time, as often as wanted: while another thread waits for a piece, that thread finishes the
    release when its piece arrives (a generator cannot be closed while it runs), so a reader that
    leaves half-way never leaves the session locked."""

    status: int
    doc: Any = None
    stream: StreamedAnswer | None = None
    lock: threading.Lock | None = None
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pieces: Iterator[bytes] | None = field(default=None, repr=False)
    _reading: bool = field(default=False, repr=False)
    _released: bool = field(default=False, repr=False)
    _finished: bool = field(default=False, repr=False)

    def next_piece(self) -> bytes | None:
        """The next piece of the streamed answer; None at its end or once it is released.
        Blocks until the piece arrives: call it from a worker thread, one at a time."""
        with self._guard:
            if self._released or self.stream is None:
                return None
            if self._pieces is None:
                self._pieces = iter(self.stream)
            pieces, self._reading = self._pieces, True
        try:
            piece = next(pieces, None)
        except BaseException:
            with self._guard:
                self._reading = False
            self.release()
            raise
        with self._guard:
            self._reading = False
            released = self._released
        if released:  # released while the piece was on its way: this thread finishes it
            self._finish()
            return None
        return piece

    def release(self) -> None:
        with self._guard:
            self._released = True
            if self._reading:
                return  # the reading thread finishes the release as soon as its piece arrives
        self._finish()

    def _finish(self) -> None:
        with self._guard:
            if self._finished:
                return
            self._finished = True
            stream, lock, self.lock = self.stream, self.lock, None
        try:
            if stream is not None:
                stream.close()
        finally:
            if lock is not None:
                lock.release()


def _error(status: int, message: str, kind: str) -> Forwarded:
    return Forwarded(status, {"error": {"message": message, "type": kind}})


def forward(
    client: PrivateProcessingClient, lock: threading.Lock, method: str, path: str, body: bytes
) -> Forwarded:
    """One OpenAI API request through the private path. A streamed answer keeps `lock` (one
    attested session, one request at a time) until it is released."""
    index = path.find("/v1/")
    if index < 0 or len(body) > MAX_BODY:
        return _error(404 if index < 0 else 413, "not an OpenAI API path", "invalid_request_error")
    api_path = path[index:]
    if not all("\x21" <= c <= "\x7e" for c in api_path):  # control bytes, spaces, non-ASCII
        return _error(400, "not an OpenAI API path", "invalid_request_error")
    try:
        doc = load_json(body, "the request body", MAX_BODY) if body else None
    except PrivprocError:
        return _error(400, "the request body is not JSON", "invalid_request_error")
    streamed = isinstance(doc, dict) and bool(doc.get("stream"))
    feature = "chat"
    if not lock.acquire(timeout=LOCK_WAIT):
        return _error(503, "another request holds the private session; try again", "api_error")
    kept = False
    try:
        if streamed:
            stream = client.call_stream(method, api_path, doc, feature=feature)
            if stream.status == 200:
                kept = True  # until the stream is read or closed
                return Forwarded(200, stream=stream, lock=lock)
            error = b"".join(stream)[:MAX_BODY]  # an error is a small JSON document
            return Forwarded(stream.status, load_json(error, "the error") if error else None)
        status, answer = client.call(method, api_path, doc, feature=feature)
        return Forwarded(status, answer)
    except AIDisabledError as exc:
        return _error(403, str(exc), "permission_error")
    except (PrivprocError, ValueError) as exc:
        # 503 for a failure worth retrying shortly (a party restarting, a session lost), which
        # OpenAI clients retry on their own; 502 for the rest.
        retryable = isinstance(exc, PrivprocError) and exc.retryable
        return _error(503 if retryable else 502, f"the private path failed: {exc}", "api_error")
    finally:
        if not kept:
            lock.release()


class _Body(httpx.SyncByteStream):
    """A streamed answer as httpx reads it: a cut becomes `httpx.RemoteProtocolError`, what
    httpx raises for a server that closes mid-body; the typed error is its cause."""

    def __init__(self, answer: Forwarded) -> None:
        self.answer = answer

    def __iter__(self) -> Iterator[bytes]:
        try:
            while (piece := self.answer.next_piece()) is not None:
                yield piece
        except PrivprocError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        finally:
            self.answer.release()

    def close(self) -> None:
        self.answer.release()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, answer: Forwarded) -> None:
        self.answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while (piece := await asyncio.to_thread(self.answer.next_piece)) is not None:
                yield piece
        except PrivprocError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        finally:
            await asyncio.to_thread(self.answer.release)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.answer.release)


def _response(answer: Forwarded, request: httpx.Request, stream: bool) -> httpx.Response:
    if answer.stream is None:
        return httpx.Response(answer.status, json=answer.doc, request=request)
    body: httpx.SyncByteStream | httpx.AsyncByteStream = (
        _AsyncBody(answer) if stream else _Body(answer)
    )
    headers = {"content-type": answer.stream.content_type}
    return httpx.Response(answer.status, headers=headers, stream=body, request=request)


class PrivateTransport(httpx.BaseTransport):
    """An httpx transport that sends OpenAI API calls through the private path."""

    def __init__(self, client: PrivateProcessingClient) -> None:
        self.client = client
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = forward(self.client, self._lock, request.method, request.url.path, request.read())
        return _response(answer, request, False)

    def close(self) -> None:
        self.client.close()


class AsyncPrivateTransport(httpx.AsyncBaseTransport):
    """The same, for `AsyncOpenAI`: the private path runs in worker threads."""

    def __init__(self, client: PrivateProcessingClient) -> None:
        self.client = client
        self._lock = threading.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        answer = await asyncio.to_thread(
            forward, self.client, self._lock, request.method, request.url.path, body
        )
        return _response(answer, request, True)

    async def aclose(self) -> None:
        self.client.close()


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """`fn()` in a daemon thread of its own: unlike the default executor's threads, one still
    blocked (on the enclave, or waiting for the session) never holds up the proxy's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="privproc-proxy-call", daemon=True).start()
    return await future


def _release_later(answer: Forwarded) -> None:
    """Release in the background: closing a stream ends its session with a request of its own,
    which a handler that is being cancelled (a client gone, the proxy stopping) cannot wait for."""
    threading.Thread(target=answer.release, name="privproc-proxy-release", daemon=True).start()


def create_proxy_app(
    client: PrivateProcessingClient, guard: ProxyGuard, lock: threading.Lock | None = None
) -> Starlette:
    """A local OpenAI-compatible endpoint (`privproc proxy`) that forwards privately what
    `guard` lets through (parties/device/guard.py: no web page, no rebound name). `lock` (held
    while a
    request uses the client's attested session) lets the caller wait for the session to be free
    before it closes the client."""
    session = lock or threading.Lock()

    async def events(answer: Forwarded) -> AsyncIterator[bytes]:
        try:
            while (piece := await _in_daemon_thread(answer.next_piece)) is not None:
                yield piece
        except PrivprocError:
            raise StreamAborted from None  # cut the local answer too: never a short one
        finally:
            _release_later(answer)

    async def endpoint(request: Request) -> Response:
        refused = guard.refusal(request.method, request.headers)
        if refused is not None:
            status, reason, kind = refused
            return JSONResponse(_error(status, reason, kind).doc, status_code=status)
        try:
            body = await read_body(request, MAX_BODY)
        except BodyError as exc:
            return exc.response
        answer = await _in_daemon_thread(
            functools.partial(forward, client, session, request.method, request.url.path, body)
        )
        if answer.stream is not None:
            headers = {"cache-control": "no-store"}
            return StreamedBody(events(answer), answer.stream.content_type, headers)
        return JSONResponse(answer.doc, status_code=answer.status)

    return Starlette(routes=[Route("/v1/{path:path}", endpoint, methods=["GET", "POST", "DELETE"])])
