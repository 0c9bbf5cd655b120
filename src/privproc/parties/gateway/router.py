"""The gateway's session router: the inner (Binary HTTP) endpoints behind OHTTP.

- `POST /v1/sessions` with `Authorization: PrivateToken token=...` and the client's first TLS
  records: the token is verified and spent, the least-loaded healthy enclave gets a new session
  with a random 128-bit id; answer `201`, header `session-id`, body the enclave's records.
- `POST /v1/sessions/{id}`: more records for that session, forwarded opaquely; answer `200`.
- `DELETE /v1/sessions/{id}`: `204`.

Streamed (the request came as chunked OHTTP, `handle_stream`): `POST /v1/sessions/{id}` is
answered with an indeterminate-length Binary HTTP response whose content chunks are the enclave's
records as the enclave produces them; if the enclave's stream breaks, the answer is aborted (the
gateway never completes a cut stream), so the client sees it cut short.

Answers the client can act on: `401` + `WWW-Authenticate: PrivateToken` (no or spent token),
`404` (no such session: start a new one), `503` + `retry-after` (`busy`: every session is taken;
`no-enclave`; `unavailable`: the spent-token store), `502` with `{"error": "enclave-lost",
"retry": true}` (the enclave holding the session died: the session is gone, a new one will be
placed elsewhere).

A token is spent only for a session that exists, through the gateway's one redemption path
(`redemption.TokenGate`, the deferred use): the token is admitted (signature, key, challenge, and
that the store has not seen it spent: a replay costs no enclave work, and a copy in flight is
refused at once), then an enclave takes the session (the least loaded first, the next if it is
busy), and only then is the token spent; a session not placed releases its token unspent. So
every answer to `POST /v1/sessions` but `201` leaves the token unspent (a `401` says it was not
acceptable); a token that turns out spent meanwhile (a double spend through another gateway)
gets `401` and its session is closed again. The gate gives, logs and counts every token refusal.

Rules: the router sees sizes, timing and a token (unlinkable), never content: TLS records pass
through untouched. Sessions idle longer than `idle_timeout` are forgotten, and those the enclave
ends (a `404`, an answer marked `session-ended`, or named in `evicted-session` when it made
room) too; at most `max_sessions`
exist, and when they are all taken the one idle longest gives way if it has been idle
`evictable_after`; an enclave that fails a request or a health check gets no new sessions until it
passes one again. Nothing about a session is logged but its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from privproc import logs
from privproc.api import SessionPolicy
from privproc.errors import PrivprocError, UsageError
from privproc.limits import MAX_RECORDS
from privproc.net.cookies import no_cookies
from privproc.net.http import StreamAborted, read_bounded
from privproc.net.metrics import Metrics
from privproc.ohttp import bhttp, bhttp_stream
from privproc.parties.gateway.answers import answer, error_answer
from privproc.parties.gateway.redemption import Admission, TokenGate

__all__ = ["Enclave", "SessionRouter"]

PARTY = "gateway"
_SESSION_PATH = re.compile(r"/v1/sessions/([0-9a-f]{32})")
_BUSY = (("retry-after", "1"),)


class _EnclaveBusy(PrivprocError):
    """The enclave is at its session limit: try later, it is not lost."""


class _SessionGone(PrivprocError):
    """The enclave no longer knows the session (it restarted or dropped it): not a failure."""


@dataclass(frozen=True)
class _Refusal:
    """No enclave took a new session: the answer to give."""

    answer: bytes


@dataclass
class Enclave:
    url: str
    healthy: bool = True
    sessions: int = 0


@dataclass
class _Session:
    enclave: Enclave
    last_used: float = field(default_factory=time.monotonic)


class SessionRouter:
    def __init__(
        self,
        enclave_urls: list[str],
        gate: TokenGate | None,
        *,
        max_sessions: int = 10_000,
        idle_timeout: float = SessionPolicy.idle_timeout,
        evictable_after: float = SessionPolicy.evictable_after,
    ) -> None:
        if not enclave_urls:
            raise UsageError("a router needs at least one enclave")
        self.enclaves = [Enclave(url.rstrip("/")) for url in enclave_urls]
        self.gate = gate  # None: sessions take no token
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.evictable_after = evictable_after
        self._sessions: dict[str, _Session] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self.metrics: Metrics | None = None  # set by the gateway app that serves this router
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(300.0, connect=5.0),
            follow_redirects=False,
            cookies=no_cookies(),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def _placements(self) -> list[Enclave]:
        """The healthy enclaves, the least loaded first."""
        return sorted((e for e in self.enclaves if e.healthy), key=lambda e: e.sessions)

    def _count(self, error: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.sessions.labels(PARTY).set(len(self._sessions))
            if error is not None:
                self.metrics.error(error)

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.enclave.sessions -= 1
        self._count()

    async def _forward(
        self, method: str, enclave: Enclave, session_id: str, body: bytes
    ) -> tuple[bytes, httpx.Headers]:
        """The enclave's records and its answer's headers (`evicted-session`, `session-ended`)."""
        url = f"{enclave.url}/sessions/{session_id}"
        async with self.http.stream(method, url, content=body) as answer:
            if answer.status_code == 503:
                raise _EnclaveBusy
            if answer.status_code == 404:
                raise _SessionGone
            if answer.status_code != 200:
                raise PrivprocError(f"the enclave answered {answer.status_code}")
            # Records are bounded: an enclave that sends more is cut off (TooLargeError).
            records = await read_bounded(answer, MAX_RECORDS)
            return records, answer.headers

    @staticmethod
    def _decode(inner: bytes) -> bhttp.Request | bytes:
        """The inner request, or the answer to a malformed or oversized one."""
        try:
            request = bhttp.decode_request(inner)
        except PrivprocError:
            return answer(400)
        return answer(413) if len(request.content) > MAX_RECORDS else request

    def _lookup(self, request: bhttp.Request) -> tuple[str, _Session] | bytes:
        """The request's session, or the answer when there is none."""
        match = _SESSION_PATH.fullmatch(request.path)
        if match is None:
            return answer(404)
        session_id = match.group(1)
        session = self._sessions.get(session_id)
        if session is None:
            return error_answer(404, "no-such-session", True)
        return session_id, session

    async def handle_stream(self, inner: bytes) -> AsyncIterator[bytes]:
        """The inner handler for chunked OHTTP: the Binary HTTP answer in pieces, each sent on as
        soon as it exists. Only records for a session are streamed; anything else is answered
        whole, as `handle` answers it."""
        request = self._decode(inner)
        found = self._lookup(request) if isinstance(request, bhttp.Request) else request
        if isinstance(request, bytes) or isinstance(found, bytes) or request.method != "POST":
            yield await self.handle(inner)
            return
        session_id, session = found
        url = f"{session.enclave.url}/sessions/{session_id}/stream"
        started = False
        try:
            async with self.http.stream("POST", url, content=request.content) as answer:
                if answer.status_code == 404:
                    self._forget(session_id)
                    yield error_answer(404, "no-such-session", True)
                    return
                if answer.status_code != 200:
                    yield self._lost(session_id, session.enclave)
                    return
                started = True
                yield bhttp_stream.encode_head(200, (("content-type", "application/octet-stream"),))
                async for records in answer.aiter_raw():
                    session.last_used = time.monotonic()
                    yield bhttp_stream.encode_content(records)
                if "session-ended" in answer.headers:  # that answer was the session's last
                    self._forget(session_id)
        except httpx.HTTPError:
            lost = self._lost(session_id, session.enclave)
            if started:  # the head is out: the only honest signal left is to cut the answer
                raise StreamAborted from None
            yield lost
            return
        yield bhttp_stream.encode_end()

    async def handle(self, inner: bytes) -> bytes:
        """The inner handler: one decapsulated Binary HTTP request -> one response."""
        request = self._decode(inner)
        if isinstance(request, bytes):
            return request
        if (request.method, request.path) == ("POST", "/v1/sessions"):
            return await self._open(request)
        found = self._lookup(request)
        if isinstance(found, bytes):
            return found
        session_id, session = found
        if request.method == "DELETE":
            await self._close(session_id)
            return answer(204)
        if request.method != "POST":
            return answer(405)
        try:
            records, headers = await self._forward(
                "POST", session.enclave, session_id, request.content
            )
        except _SessionGone:
            self._forget(session_id)
            return error_answer(404, "no-such-session", True)
        except (httpx.HTTPError, PrivprocError):
            return self._lost(session_id, session.enclave)
        if records:  # an exchange the enclave answered; records it ignored keep nothing alive
            session.last_used = time.monotonic()
        if "session-ended" in headers:  # that answer was the session's last
            self._forget(session_id)
        return answer(200, records, (("content-type", "application/octet-stream"),))

    def _lost(self, session_id: str, enclave: Enclave) -> bytes:
        enclave.healthy = False
        self._forget(session_id)
        self._count("enclave-lost")
        logs.event(PARTY, "session", outcome="enclave-lost", status=502)
        return error_answer(502, "enclave-lost", True)

    async def _open(self, request: bhttp.Request) -> bytes:
        """A new session: token admitted, session placed, then (only then) the token spent."""
        if self.gate is None:
            return await self._start(request.content, None)
        admitted = await self.gate.admit(request.header("authorization"))
        if isinstance(admitted, bytes):
            return admitted  # refused: no, spent, in-flight or bad token; or no store
        with admitted:  # a token whose session is not placed goes back unspent
            return await self._start(request.content, admitted)

    async def _start(self, hello: bytes, admission: Admission | None) -> bytes:
        """Place the session, then spend its token; a session whose token cannot be spent (a
        copy spent meanwhile elsewhere, or no store) is closed again."""
        if len(self._sessions) >= self.max_sessions and not self._make_room():
            return error_answer(503, "busy", True, _BUSY)
        session_id = secrets.token_hex(16)
        placed = await self._place(session_id, hello)
        if isinstance(placed, _Refusal):
            return placed.answer  # busy, no enclave, or lost: the token is not spent
        if admission is not None and (refused := await admission.spend()) is not None:
            await self._close(session_id)
            return refused
        logs.event(PARTY, "session", outcome="opened", status=201)
        headers = (("session-id", session_id), ("content-type", "application/octet-stream"))
        return answer(201, placed, headers)

    async def _place(self, session_id: str, hello: bytes) -> bytes | _Refusal:
        """Open the session on an enclave, the least loaded first and the next while one is busy;
        its first records, or the answer that says why no enclave took it."""
        enclaves = self._placements()
        if not enclaves:
            await self.check_health()  # one may have come back since the last periodic check
            enclaves = self._placements()
        if not enclaves:
            return _Refusal(error_answer(503, "no-enclave", True, (("retry-after", "5"),)))
        busy = False
        for enclave in enclaves:
            self._sessions[session_id] = _Session(enclave)  # counted while it is being placed
            enclave.sessions += 1
            self._count()
            try:
                records, headers = await self._forward("PUT", enclave, session_id, hello)
            except _EnclaveBusy:
                busy = True
                self._forget(session_id)
                continue
            except (httpx.HTTPError, PrivprocError):
                enclave.healthy = False
                self._forget(session_id)
                self._count("enclave-lost")
                continue
            self._evicted(enclave, headers.get("evicted-session"))
            return records
        if busy:
            return _Refusal(error_answer(503, "busy", True, _BUSY))
        logs.event(PARTY, "session", outcome="enclave-lost", status=502)
        return _Refusal(error_answer(502, "enclave-lost", True))

    def _evicted(self, enclave: Enclave, session_id: str | None) -> None:
        """Forget the session the enclave evicted to make room (if it named one of its own)."""
        gone = self._sessions.get(session_id or "")
        if session_id is not None and gone is not None and gone.enclave is enclave:
            self._forget(session_id)

    def _make_room(self) -> bool:
        """Forget the session idle longest, if it has been idle `evictable_after` (its enclave
        is told in the background); False if none may give way."""
        cutoff = time.monotonic() - self.evictable_after
        idle = [(s.last_used, i) for i, s in self._sessions.items() if s.last_used <= cutoff]
        if not idle:
            return False
        _, session_id = min(idle)
        task = asyncio.ensure_future(self._tell(self._sessions[session_id].enclave, session_id))
        self._closing.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._closing.discard)
        self._forget(session_id)
        return True

    async def _close(self, session_id: str) -> None:
        """Forget the session and tell its enclave."""
        session = self._sessions.get(session_id)
        self._forget(session_id)
        if session is not None:
            await self._tell(session.enclave, session_id)

    async def _tell(self, enclave: Enclave, session_id: str) -> None:
        """Ask the enclave to forget a session (it forgets idle ones itself anyway)."""
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(f"{enclave.url}/sessions/{session_id}")

    async def check_health(self) -> None:
        """Ask every enclave how it is; forget idle sessions."""
        for enclave in self.enclaves:
            try:
                answer = await self.http.get(f"{enclave.url}/health", timeout=2.0)
                enclave.healthy = answer.status_code == 200
            except httpx.HTTPError:
                enclave.healthy = False
        cutoff = time.monotonic() - self.idle_timeout
        for session_id, session in list(self._sessions.items()):
            if session.last_used < cutoff:
                self._forget(session_id)

    async def run_health_checks(self, interval: float = 2.0) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(interval)
