"""The OpenAI ecosystem over the private path: httpx transports, and a local proxy app.

    from openai import AsyncOpenAI, OpenAI
    client = PrivateProcessingClient.from_state(state / "client")
    ai = OpenAI(base_url="http://private.invalid/v1", api_key="unused",
                http_client=httpx.Client(transport=PrivateTransport(client)))
    aclient = AsyncPrivateProcessingClient.from_state(state / "client")      # native asyncio
    async_ai = AsyncOpenAI(base_url="http://private.invalid/v1", api_key="unused",
                           http_client=httpx.AsyncClient(transport=AsyncPrivateTransport(aclient)))

Every request that reaches a transport (or the proxy) goes to the enclave's OpenAI-compatible
API through the relay, the gateway and attested TLS; nothing goes to the base URL's host. Chat
completions count as the `chat` feature (off until the user enables it) and appear in the report.
The asyncio transport and the proxy run the native asyncio client (aio.py): no thread.

Streamed completions (`stream: true`) come back as the enclave produces them (chunked OHTTP on
the wire): the server-sent events reach the SDK piece by piece. A stream cut on the way (by the
relay, the gateway or the network) is an error where the SDK reads it (`httpx.RemoteProtocolError`
from a transport, a connection closed mid-body from the proxy), never a short answer.

Rules: only `/v1/...` paths are served; the answer is the enclave's status and JSON (or its
event stream); one request at a time goes through one client's attested session (a stream holds
it until it is read to the end or closed, or its reader leaves; a call waits at most `LOCK_WAIT`
for it, then gets 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from privproc.errors import PrivprocError
from privproc.limits import MAX_BODY
from privproc.net.http import BodyError, StreamAborted, StreamedBody, read_body
from privproc.parties.device.aio import AsyncPrivateProcessingClient
from privproc.parties.device.answers import AsyncStreamedAnswer, StreamedAnswer
from privproc.parties.device.controls import AIDisabledError
from privproc.parties.device.guard import ProxyGuard
from privproc.parties.device.private import PrivateProcessingClient
from privproc.wire import load_json

__all__ = ["AsyncPrivateTransport", "PrivateTransport", "create_proxy_app"]

LOCK_WAIT = 120.0  # how long a call waits for the session another call's answer holds
CLOSE_WAIT = 2.0  # how long the proxy's stop waits for the session to end it


@dataclass(frozen=True)
class _Call:
    """One OpenAI API request, checked: the enclave's path, its JSON body, whether it streams."""

    method: str
    path: str
    doc: Any
    streamed: bool


def _error(status: int, message: str, kind: str) -> tuple[int, Any]:
    return status, {"error": {"message": message, "type": kind}}


def _checked(method: str, path: str, body: bytes) -> _Call | tuple[int, Any]:
    """The request to forward, or the error answer it gets without leaving the device."""
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
    return _Call(method, api_path, doc, isinstance(doc, dict) and bool(doc.get("stream")))


def _failed(exc: Exception) -> tuple[int, Any]:
    """The answer for a call that failed on the private path."""
    if isinstance(exc, AIDisabledError):
        return _error(403, str(exc), "permission_error")
    # 503 for a failure worth retrying shortly (a party restarting, a session lost), which
    # OpenAI clients retry on their own; 502 for the rest.
    retryable = isinstance(exc, PrivprocError) and exc.retryable
    return _error(503 if retryable else 502, f"the private path failed: {exc}", "api_error")


_BUSY = _error(503, "another request holds the private session; try again", "api_error")


def _json_error(content: bytes) -> Any:
    return load_json(content[:MAX_BODY], "the error") if content else None


# --- Blocking: PrivateTransport ----------------------------------------------------------------


class _Body(httpx.SyncByteStream):
    """A streamed answer as httpx reads it: a cut becomes `httpx.RemoteProtocolError`, what
    httpx raises for a server that closes mid-body; the typed error is its cause. The session
    lock is released when the body is read to its end or closed."""

    def __init__(self, answer: StreamedAnswer, lock: threading.Lock) -> None:
        self.answer = answer
        self._lock: threading.Lock | None = lock

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.answer
        except PrivprocError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        finally:
            self.close()

    def close(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            try:
                self.answer.close()
            finally:
                lock.release()


class PrivateTransport(httpx.BaseTransport):
    """An httpx transport that sends OpenAI API calls through the private path (blocking)."""

    def __init__(self, client: PrivateProcessingClient) -> None:
        self.client = client
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = _checked(request.method, request.url.path, request.read())
        if not isinstance(call, _Call):
            return httpx.Response(call[0], json=call[1], request=request)
        if not self._lock.acquire(timeout=LOCK_WAIT):
            return httpx.Response(_BUSY[0], json=_BUSY[1], request=request)
        kept = False
        try:
            if call.streamed:
                answer = self.client.call_stream(call.method, call.path, call.doc, feature="chat")
                if answer.status == 200:
                    kept = True  # until the stream is read or closed
                    headers = {"content-type": answer.content_type}
                    body = _Body(answer, self._lock)
                    return httpx.Response(200, headers=headers, stream=body, request=request)
                doc = _json_error(b"".join(answer))
                return httpx.Response(answer.status, json=doc, request=request)
            status, doc = self.client.call(call.method, call.path, call.doc, feature="chat")
        except (PrivprocError, ValueError) as exc:
            status, doc = _failed(exc)
        finally:
            if not kept:
                self._lock.release()
        return httpx.Response(status, json=doc, request=request)

    def close(self) -> None:
        self.client.close()


# --- asyncio: AsyncPrivateTransport and the proxy ---------------------------------------------


@dataclass
class _Forwarded:
    """The enclave's answer to one call: JSON, or a stream (`answer`) whose session `release`
    lets go of (at its end, or when its reader leaves)."""

    status: int
    doc: Any = None
    answer: AsyncStreamedAnswer | None = None
    release: Callable[[], Awaitable[None]] | None = None


async def _aforward(
    client: AsyncPrivateProcessingClient, method: str, path: str, body: bytes
) -> _Forwarded:
    """One OpenAI API request through the private path, natively on the loop."""
    call = _checked(method, path, body)
    if not isinstance(call, _Call):
        return _Forwarded(*call)
    try:  # a call waits for a session another call's answer holds, for so long
        await asyncio.wait_for(client.session_lock.acquire(), LOCK_WAIT)
    except TimeoutError:
        return _Forwarded(*_BUSY)
    client.session_lock.release()
    try:
        if not call.streamed:
            status, doc = await client.call(call.method, call.path, call.doc, feature="chat")
            return _Forwarded(status, doc)
        stack = contextlib.AsyncExitStack()
        answer = await stack.enter_async_context(
            client.call_stream(call.method, call.path, call.doc, feature="chat")
        )
        if answer.status == 200:
            return _Forwarded(200, answer=answer, release=stack.aclose)
        async with stack:
            return _Forwarded(answer.status, _json_error(b"".join([p async for p in answer])))
    except (PrivprocError, ValueError) as exc:
        return _Forwarded(*_failed(exc))


async def _pieces(forwarded: _Forwarded) -> AsyncIterator[bytes]:
    """The stream's pieces; its session is let go of at the end, or when the reader leaves."""
    assert forwarded.answer is not None
    assert forwarded.release is not None
    try:
        async for piece in forwarded.answer:
            yield piece
    finally:
        await forwarded.release()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, forwarded: _Forwarded) -> None:
        self._pieces = _pieces(forwarded)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._pieces:
                yield piece
        except PrivprocError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._pieces.aclose()  # type: ignore[attr-defined]


class AsyncPrivateTransport(httpx.AsyncBaseTransport):
    """The same, for `AsyncOpenAI`, on the native asyncio client (no thread)."""

    def __init__(self, client: AsyncPrivateProcessingClient) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        forwarded = await _aforward(self.client, request.method, request.url.path, body)
        if forwarded.answer is None:
            return httpx.Response(forwarded.status, json=forwarded.doc, request=request)
        headers = {"content-type": forwarded.answer.content_type}
        stream = _AsyncBody(forwarded)
        return httpx.Response(200, headers=headers, stream=stream, request=request)

    async def aclose(self) -> None:
        await self.client.aclose()


def create_proxy_app(client: AsyncPrivateProcessingClient, guard: ProxyGuard) -> Starlette:
    """A local OpenAI-compatible endpoint (`privproc proxy`) that forwards privately what
    `guard` lets through (parties/device/guard.py: no web page, no rebound name). The client is
    closed when the app stops (its session ended, unless a call cut by the stop still holds it
    after `CLOSE_WAIT` seconds: the gateway and the enclave then let go of it alone)."""

    async def events(forwarded: _Forwarded) -> AsyncIterator[bytes]:
        try:
            async for piece in _pieces(forwarded):
                yield piece
        except PrivprocError:
            raise StreamAborted from None  # cut the local answer too: never a short one

    async def endpoint(request: Request) -> Response:
        refused = guard.refusal(request.method, request.headers)
        if refused is not None:
            status, reason, kind = refused
            return JSONResponse(_error(status, reason, kind)[1], status_code=status)
        try:
            body = await read_body(request, MAX_BODY)
        except BodyError as exc:
            return exc.response
        forwarded = await _aforward(client, request.method, request.url.path, body)
        if forwarded.answer is not None:
            headers = {"cache-control": "no-store"}
            return StreamedBody(events(forwarded), forwarded.answer.content_type, headers)
        return JSONResponse(forwarded.doc, status_code=forwarded.status)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with contextlib.suppress(TimeoutError, PrivprocError):
                await asyncio.wait_for(client.aclose(), CLOSE_WAIT)

    routes = [Route("/v1/{path:path}", endpoint, methods=["GET", "POST", "DELETE"])]
    return Starlette(routes=routes, lifespan=lifespan)
