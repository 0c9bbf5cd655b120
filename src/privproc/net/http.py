"""What every privproc service shares: bounded request bodies, streamed answers that can be cut
on purpose, and a uvicorn runner.

Rules: bodies are read with a size bound and a time bound, so a slow or huge upload costs the
server nothing unbounded; servers run without access logs (they would record client addresses)
and without a `Server` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from privproc.errors import TooLargeError
from privproc.limits import ConnectionLimits
from privproc.net.connections import guarded_protocol

BODY_READ_TIMEOUT = 15.0


class BodyError(Exception):
    """The request body broke a bound; `response` is what the client gets."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def read_body(request: Request, limit: int) -> bytes:
    """Read the whole body, refusing more than `limit` bytes (413) or a stalled upload (408)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyError(Response(status_code=400))
        if int(declared) > limit:
            raise BodyError(Response(status_code=413))
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyError(Response(status_code=413))
    except TimeoutError:
        raise BodyError(Response(status_code=408)) from None
    return bytes(body)


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed `response` from another party, read no further than `limit` bytes:
    one that sends more is cut off there (`TooLargeError`), not read to its end first."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise TooLargeError(f"the answer exceeds {limit} bytes")
    return bytes(body)


class StreamAborted(Exception):
    """Raised by a streamed answer's source that failed: the answer must not look complete."""


class StreamedBody(Response):
    """An answer sent chunk by chunk as its source yields them.

    When the source raises `StreamAborted`, the connection is closed without the body's last
    chunk, so the receiver sees a cut stream, never a short answer that looks whole. When the
    receiver goes away, the source is closed at once (its `finally` stops the work feeding it).
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], media_type: str, headers: dict[str, str]
    ) -> None:
        self.chunks = chunks
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)  # no body attribute: no content-length, so chunked coding

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            try:
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except StreamAborted:
                return  # no final chunk: the server closes the connection mid-body
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch(task: asyncio.Task[None]) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            task.cancel()

        task = asyncio.create_task(stream())
        watcher = asyncio.create_task(watch(task))
        try:
            await asyncio.wait([task])  # the watcher may cancel it; that is not an error here
            if not task.cancelled():
                task.result()
        finally:
            task.cancel()
            watcher.cancel()
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it back with getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
    # TCP, and without it every small response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, but Ctrl-C and SIGTERM only ask it to stop.

    uvicorn re-raises the captured signal after shutting down, which turns a requested stop into
    a death by signal; a service that was asked to stop and did should exit with status 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        for sig in stop_signals:
            loop.add_signal_handler(sig, self._ask_to_stop)
        try:
            yield
        finally:
            for sig in stop_signals:
                loop.remove_signal_handler(sig)

    def _ask_to_stop(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second Ctrl-C: stop without waiting for connections
        self.should_exit = True


class UnavailableWhenStopping:
    """ASGI middleware: a request still running when the graceful shutdown's time is up is
    cancelled by uvicorn, which would then answer 500. That is a party stopping, not a fault in
    the request: it gets `503` with `retry-after: 1` instead (a new process is usually coming).
    An answer already under way is cut, as it must be (the client sees it end early)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except asyncio.CancelledError:
            if started:
                raise
            headers = [(b"retry-after", b"1"), (b"content-length", b"0")]
            with contextlib.suppress(Exception):  # the connection may be gone already
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": b""})


def make_server(
    app: ASGIApp,
    *,
    limits: ConnectionLimits | None = None,
    lifespan: bool = False,
    graceful_shutdown: int = 5,
) -> uvicorn.Server:
    """uvicorn, serving `app` under privproc's connection rules (`services.connections`: header
    deadline, connection cap shedding the longest-idle first, per-client cap)."""
    limits = limits or ConnectionLimits()
    config = uvicorn.Config(
        UnavailableWhenStopping(app),
        http=guarded_protocol(limits),
        access_log=False,
        server_header=False,
        date_header=True,
        log_level="warning",
        lifespan="on" if lifespan else "off",
        # uvicorn's own limit answers 503 to everyone once reached: the cap above sheds idle
        # connections long before (those being closed still count here for a moment).
        limit_concurrency=2 * limits.max_connections,
        # Idle between requests: never before the header deadline (services.connections).
        timeout_keep_alive=math.ceil(limits.header_timeout),
        timeout_graceful_shutdown=graceful_shutdown,  # a stream that never ends can't hold a stop
    )
    return _Server(config)


async def serve(
    app: ASGIApp,
    sock: socket.socket,
    on_ready: Callable[[str], Awaitable[bool | None] | bool | None] | None = None,
    *,
    lifespan: bool = False,
    graceful_shutdown: int = 5,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve `app` on `sock` until the server is asked to exit (Ctrl-C or SIGTERM).

    `on_ready` runs once the socket accepts connections; if it returns False the server stops.
    `lifespan` runs the app's startup and shutdown hooks (a failing startup stops the server).
    `graceful_shutdown`: seconds that requests under way get to finish once asked to stop.
    """
    server = make_server(app, limits=limits, lifespan=lifespan, graceful_shutdown=graceful_shutdown)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises what made the server fail to start
            return
        await asyncio.sleep(0.01)
    if on_ready is not None:
        result = on_ready(url_of(sock))
        if inspect.isawaitable(result):
            result = await result
        if result is False:
            server.should_exit = True
    await task


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `work` as a task for the duration of the block, then cancel it and wait for it."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
