"""The enclave service: attested TLS sessions, forwarded record by record by the gateway.

Internal API (the operator's network, gateway -> enclave; never reachable by clients directly):
- `PUT /sessions/{id}`: a new session; the body is the client's first TLS records, the answer
  the enclave's records (`application/octet-stream`).
- `POST /sessions/{id}`: more records for that session; answered with records. Complete HTTP
  requests that arrive inside TLS are answered by the API (`handler.py`) before the
  answer's records are returned.
- `POST /sessions/{id}/stream`: the same, but the answer's records are sent as they are produced
  (a streamed chat completion token by token), in a chunked HTTP body.
- `DELETE /sessions/{id}`: forget the session.
- `GET /health`: `{"sessions": n, "max_sessions": m, "model": name}` for the gateway's placement.

Answers about sessions: `503` + `retry-after` to a `PUT` when every session is taken and none may
give way (the gateway then spends no token); `404` when the session does not exist or has been
idle too long (the client opens a new one); the answer that uses up a session's requests, or the
first after its lifetime, carries `connection: close` inside TLS and `session-ended: 1` outside
(the client opens a new session for its next request; the gateway forgets this one); a `PUT`
that made room names the session it evicted in `evicted-session`, so the gateway forgets it too.

Rules: the enclave sees only TLS records and the gateway's session ids, never a client address or
a token; it logs events without content; sessions live by a `SessionPolicy`
(`sessions.py`: bounded, only application data counts as activity, an absolute
lifetime and a request budget, the longest-idle gives way first), and one is dropped on any
error (its last records, an alert, still go out); CPU-heavy work (TLS, evidence, inference) runs
off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from privproc import logs
from privproc.api import SessionPolicy
from privproc.errors import PrivprocError
from privproc.limits import MAX_RECORDS
from privproc.net.http import BodyError, StreamedBody, in_background, read_body
from privproc.net.metrics import instrument, metrics_of
from privproc.net.ratls import EvidenceProvider, supply_evidence
from privproc.parties.enclave.connection import EnclaveConnection
from privproc.parties.enclave.handler import ApiStream, handle
from privproc.parties.enclave.inference.backends import Backend
from privproc.parties.enclave.sessions import SessionsBusyError, SessionTable
from privproc.ratls.tls import ServerIdentity

PARTY = "enclave"
_SESSION_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class _Slot:
    connection: EnclaveConnection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def in_use(self) -> bool:
        return self.lock.locked()

    def counters(self) -> tuple[int, int]:
        """(application bytes, requests) received so far: what tells activity from keep-alive."""
        return self.connection.application_bytes, self.connection.requests_received


def _ended(ended: bool) -> dict[str, str]:
    """The header that tells the gateway this exchange ended the session (it forgets it)."""
    return {"session-ended": "1"} if ended else {}


def create_enclave_app(
    backend: Backend,
    identity: ServerIdentity,
    provider: EvidenceProvider,
    *,
    policy: SessionPolicy | None = None,
) -> Starlette:
    policy = policy or SessionPolicy()
    sessions: SessionTable[_Slot] = SessionTable(policy, _Slot.in_use)

    def drop(session_id: str, outcome: str) -> None:
        if sessions.remove(session_id):
            logs.event(PARTY, "session-closed", outcome=outcome)
            metrics.sessions.labels(PARTY).set(len(sessions))
            if outcome == "failed":
                metrics.error("session-failed")

    def serve_records(
        connection: EnclaveConnection,
        records: bytes,
        emit: Callable[[bytes], None] | None = None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> bytes:
        """Records in, records out, answering every request that completes (one worker-thread
        hop per exchange: TLS, evidence and inference are all CPU work). With `emit`, a streamed
        answer's records are handed out piece by piece as the model produces them."""
        requests = connection.receive(records)
        supply_evidence(connection.tls, provider)  # once the handshake is done: evidence first
        for request in requests:
            answer = handle(backend, request.method, request.path, request.body)
            logs.event(PARTY, "request", status=answer.status)
            if not isinstance(answer, ApiStream):
                connection.respond(answer.status, answer.body)
                continue
            connection.start_stream(answer.status, answer.content_type)
            try:
                for chunk in answer.chunks:
                    connection.stream_data(chunk)
                    if emit is not None:
                        emit(connection.send_pending())
                    if stopped():
                        raise PrivprocError("the stream's reader went away")
            finally:
                close = getattr(answer.chunks, "close", None)
                if close is not None:
                    close()  # stops the generation now if the reader went away
            connection.end_stream()
        return connection.send_pending()

    def settle(slot: _Slot, session_id: str, before: tuple[int, int]) -> bool:
        """After an exchange: activity counted only if it carried application data; a session
        whose last answer went out is dropped (True)."""
        after = slot.counters()
        if after[0] > before[0]:
            sessions.touch(session_id, time.monotonic(), after[1] - before[1])
        if slot.connection.finished:
            drop(session_id, "ended")
            return True
        return False

    async def exchange(slot: _Slot, session_id: str, records: bytes) -> Response:
        async with slot.lock:
            before = slot.counters()
            slot.connection.last_answer = sessions.last_answer(session_id, time.monotonic())
            try:
                out = await run_in_threadpool(serve_records, slot.connection, records)
            except PrivprocError:
                out = slot.connection.send_pending()  # the alert or close_notify, for the client
                drop(session_id, "failed")
            ended = settle(slot, session_id, before)
            return Response(out, media_type="application/octet-stream", headers=_ended(ended))

    def streamed_exchange(slot: _Slot, session_id: str, records: bytes) -> Response:
        last = sessions.last_answer(session_id, time.monotonic())

        async def pieces() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            stop = threading.Event()

            def emit(data: bytes) -> None:
                if data:
                    loop.call_soon_threadsafe(queue.put_nowait, data)

            def work() -> None:
                try:
                    emit(serve_records(slot.connection, records, emit, stop.is_set))
                except PrivprocError:
                    emit(slot.connection.send_pending())  # the alert, for the client
                    loop.call_soon_threadsafe(drop, session_id, "failed")
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, None)

            async with slot.lock:
                before = slot.counters()
                slot.connection.last_answer = last
                worker = asyncio.ensure_future(asyncio.to_thread(work))
                try:
                    while (piece := await queue.get()) is not None:
                        yield piece
                    await worker
                finally:
                    if not worker.done():
                        # The reader left mid-answer: stop generating; the session is unusable.
                        stop.set()
                        drop(session_id, "failed")
                    settle(slot, session_id, before)

        headers = {"cache-control": "no-store", **_ended(last)}
        return StreamedBody(pieces(), "application/octet-stream", headers)

    async def session_records(request: Request, *, stream: bool) -> Response:
        session_id = request.path_params["session_id"]
        if not _SESSION_ID.fullmatch(session_id):
            return Response(status_code=404)
        try:
            body = await read_body(request, MAX_RECORDS)
        except BodyError as exc:
            return exc.response
        headers = {}
        if request.method == "PUT":
            if stream:
                return Response(status_code=405)
            if session_id in sessions:
                return Response(status_code=409)
            try:
                evicted = sessions.open(
                    session_id, _Slot(EnclaveConnection(identity)), time.monotonic()
                )
            except SessionsBusyError:
                return Response(status_code=503, headers={"retry-after": "1"})
            if evicted is not None:
                logs.event(PARTY, "session-closed", outcome="evicted")
                headers["evicted-session"] = evicted
            metrics.sessions.labels(PARTY).set(len(sessions))
            logs.event(PARTY, "session-opened")
        elif sessions.idle(session_id, time.monotonic()):
            drop(session_id, "idle")
        if (slot := sessions.get(session_id)) is None:
            return Response(status_code=404)
        if stream:
            return streamed_exchange(slot, session_id, body)
        answer = await exchange(slot, session_id, body)
        answer.headers.update(headers)
        return answer

    async def records(request: Request) -> Response:
        return await session_records(request, stream=False)

    async def streamed_records(request: Request) -> Response:
        return await session_records(request, stream=True)

    async def close(request: Request) -> Response:
        drop(request.path_params["session_id"], "deleted")
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"sessions": len(sessions), "max_sessions": policy.max_sessions, "model": backend.model}
        )

    async def reap() -> None:
        while True:
            await asyncio.sleep(min(10.0, policy.evictable_after / 2))
            for session_id, reason in sessions.expired(time.monotonic()):
                drop(session_id, reason)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with in_background(reap()):
            yield
        sessions.clear()

    app = instrument(
        Starlette(
            routes=[
                Route("/sessions/{session_id}", records, methods=["PUT", "POST"]),
                Route("/sessions/{session_id}/stream", streamed_records, methods=["POST"]),
                Route("/sessions/{session_id}", close, methods=["DELETE"]),
                Route("/health", health, methods=["GET"]),
            ],
            lifespan=lifespan,
        ),
        PARTY,
    )
    metrics = metrics_of(app)
    return app
