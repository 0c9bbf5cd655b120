"""The Oblivious Relay Resource (RFC 9458 §5) as an ASGI app: forwards to one gateway, and nothing
that identifies the client goes with it.

Endpoint: `POST /` with `message/ohttp-req` -> the configured gateway resource, whose answer
(status and `message/ohttp-res` body) comes back unchanged. A chunked OHTTP request
(`message/ohttp-chunked-req`) gets the gateway's chunked answer passed on as it arrives, each
piece as soon as it comes, and cut where the gateway's was cut.

Rules:
- The forwarded request carries exactly `content-type` (and `accept`); every other client header
  (addresses in forwarding headers, cookies, user agent, authorization, anything else) is
  dropped, and nothing is added: the gateway sees the relay, not the client.
- The relay never reads the encapsulated bytes; it bounds their size and time.
- It logs outcome, status, size and duration only; never an address or a header.
- A gateway that cannot be reached is a 502, one that does not answer in time a 504, each with an
  empty body, so the client learns nothing about the gateway's insides.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc import logs
from privproc.limits import MAX_STREAMED
from privproc.net.cookies import no_cookies
from privproc.net.http import BodyError, StreamAborted, StreamedBody, media_type, read_body
from privproc.net.metrics import instrument
from privproc.ohttp.chunked import MEDIA_TYPE_CHUNKED_REQUEST, MEDIA_TYPE_CHUNKED_RESPONSE
from privproc.ohttp.messages import DEFAULT_MAX_MESSAGE, MEDIA_TYPE_REQUEST, MEDIA_TYPE_RESPONSE

PARTY = "relay"
GATEWAY_TIMEOUT = 60.0
_ANSWER_TYPE = {
    MEDIA_TYPE_REQUEST: MEDIA_TYPE_RESPONSE,
    MEDIA_TYPE_CHUNKED_REQUEST: MEDIA_TYPE_CHUNKED_RESPONSE,
}


def create_relay_app(
    gateway_url: str, *, max_request: int = DEFAULT_MAX_MESSAGE, timeout: float = GATEWAY_TIMEOUT
) -> Starlette:
    """A relay for the gateway resource at `gateway_url` (serve it with lifespan on)."""
    clients: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One pooled client: connections to the gateway are reused, never tied to a client.
        async with httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            cookies=no_cookies(),  # a gateway's cookie must never reach another client's request
            headers={"user-agent": "privproc-relay"},
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        ) as client:
            clients.append(client)
            yield
            clients.clear()

    def done(status: int, outcome: str, size: int, started: float) -> None:
        duration = round((time.perf_counter() - started) * 1000, 3)
        logs.event(
            PARTY, "forward", status=status, outcome=outcome, size=size, duration_ms=duration
        )

    def streamed(answer: httpx.Response, size: int, started: float) -> Response:
        """The gateway's chunked answer passed on piece by piece; a cut is passed on as a cut."""

        async def pieces() -> AsyncIterator[bytes]:
            sent, outcome = 0, "forwarded"
            try:
                async for piece in answer.aiter_raw():
                    sent += len(piece)
                    if sent > MAX_STREAMED:
                        outcome = "answer-too-large"
                        raise StreamAborted
                    yield piece
            except httpx.HTTPError:
                outcome = "gateway-cut"
                raise StreamAborted from None
            finally:
                await answer.aclose()
                duration = round((time.perf_counter() - started) * 1000, 3)
                logs.event(PARTY, "stream-end", outcome=outcome, size=sent, duration_ms=duration)

        # The forward is logged when it starts (what was forwarded is known then); the stream's
        # end, with how it ended, when it ends.
        done(answer.status_code, "streaming", size, started)
        kind = answer.headers.get("content-type", MEDIA_TYPE_CHUNKED_RESPONSE)
        return StreamedBody(pieces(), kind, {"cache-control": "no-store"})

    async def whole(answer: httpx.Response, size: int, started: float) -> Response:
        """The gateway's answer read whole, within the size bound."""
        body = bytearray()
        try:
            async for piece in answer.aiter_raw():
                body += piece
                if len(body) > max_request:
                    done(502, "answer-too-large", size, started)
                    return Response(status_code=502)
        except httpx.HTTPError:
            done(502, "gateway-cut", size, started)
            return Response(status_code=502)
        finally:
            await answer.aclose()
        done(answer.status_code, "forwarded", size, started)
        headers = {"cache-control": "no-store"}
        content_type = answer.headers.get("content-type")
        if content_type:
            headers["content-type"] = content_type
        return Response(bytes(body), status_code=answer.status_code, headers=headers)

    async def relay(request: Request) -> Response:
        started = time.perf_counter()
        kind = media_type(request)
        if kind not in _ANSWER_TYPE:
            done(415, "media-type", 0, started)
            return Response(status_code=415)
        try:
            body = await read_body(request, max_request)
        except BodyError as exc:
            done(exc.response.status_code, "body", 0, started)
            return exc.response
        headers = {"content-type": kind, "accept": _ANSWER_TYPE[kind]}
        outgoing = clients[0].build_request("POST", gateway_url, content=body, headers=headers)
        try:
            answer = await clients[0].send(outgoing, stream=True)
        except httpx.TimeoutException:
            done(504, "gateway-timeout", len(body), started)
            return Response(status_code=504)
        except httpx.HTTPError:
            done(502, "gateway-unreachable", len(body), started)
            return Response(status_code=502)
        if kind == MEDIA_TYPE_CHUNKED_REQUEST and answer.status_code == 200:
            return streamed(answer, len(body), started)
        return await whole(answer, len(body), started)

    return instrument(
        Starlette(routes=[Route("/", relay, methods=["POST"])], lifespan=lifespan), PARTY
    )
