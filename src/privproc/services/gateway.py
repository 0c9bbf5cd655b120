"""The Oblivious Gateway Resource (RFC 9458 §6, discovery as RFC 9540) as an ASGI app.

Endpoints:
- `GET /.well-known/ohttp-gateway`: the advertised key configurations (`application/ohttp-keys`).
- `POST /.well-known/ohttp-gateway`: the gateway resource: decapsulate, hand the Binary HTTP
  request to the inner router, encapsulate its answer. Until the session router arrives the inner
  router knows no target, so every well-formed request gets an encapsulated 404.
- `POST /gateway-echo`, only in conformance mode: the encapsulated response carries exactly the
  decapsulated request bytes (the convention interoperability tests use).

Rules: every failure to decapsulate (truncated, wrong key id, unsupported suite, tampered bytes)
gets the same bare 400, so the answer reveals nothing about which check failed; errors found after
decapsulation (malformed Binary HTTP) travel inside an encapsulated response as RFC 9458 §5.2 asks,
readable only by the client. Nothing about a request is logged but its outcome and size.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc import logs
from privproc.errors import PrivprocError
from privproc.ohttp import bhttp
from privproc.ohttp.keys import MEDIA_TYPE_KEYS, KeyRing
from privproc.ohttp.messages import (
    DEFAULT_MAX_MESSAGE,
    MEDIA_TYPE_REQUEST,
    MEDIA_TYPE_RESPONSE,
    ServerContext,
    decapsulate_request,
)
from privproc.services.http import BodyError, media_type, read_body

PARTY = "gateway"
KEYS_PATH = "/.well-known/ohttp-gateway"
ECHO_PATH = "/gateway-echo"

# An inner handler takes the decapsulated bytes and returns the bytes to encapsulate.
InnerHandler = Callable[[bytes], Awaitable[bytes]]


def _error_response(status: int) -> bytes:
    return bhttp.encode_response(bhttp.Response(status), bhttp.Framing.shortest())


async def echo_handler(inner: bytes) -> bytes:
    """Conformance: answer with the request bytes themselves, once they parse as Binary HTTP."""
    try:
        bhttp.decode_request(inner)
    except PrivprocError:
        return _error_response(400)
    return inner


async def no_target_handler(inner: bytes) -> bytes:
    try:
        bhttp.decode_request(inner)
    except PrivprocError:
        return _error_response(400)
    return _error_response(404)


def create_gateway_app(
    keys: KeyRing,
    *,
    conformance: bool = False,
    max_request: int = DEFAULT_MAX_MESSAGE,
    inner: InnerHandler = no_target_handler,
) -> Starlette:
    """Build the gateway's ASGI app over a key ring."""

    async def key_configs(request: Request) -> Response:
        return Response(
            keys.keys_document(),
            media_type=MEDIA_TYPE_KEYS,
            headers={"cache-control": "max-age=300"},
        )

    async def oblivious(request: Request, handler: InnerHandler) -> Response:
        started = time.perf_counter()
        if media_type(request) != MEDIA_TYPE_REQUEST:
            return Response(status_code=415)
        try:
            body = await read_body(request, max_request)
        except BodyError as exc:
            return exc.response
        try:
            inner_request, context = decapsulate_request(keys, body, max_size=max_request)
        except PrivprocError:
            # One answer for every failure: no oracle on key ids, suites or ciphertexts.
            logs.event(PARTY, "decapsulate", outcome="rejected", size=len(body))
            return Response(status_code=400)
        answer = await handler(inner_request)
        logs.event(
            PARTY,
            "decapsulate",
            outcome="ok",
            size=len(body),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return _encapsulated(context, answer)

    async def gateway(request: Request) -> Response:
        return await oblivious(request, inner)

    async def echo(request: Request) -> Response:
        return await oblivious(request, echo_handler)

    routes = [
        Route(KEYS_PATH, key_configs, methods=["GET"]),
        Route(KEYS_PATH, gateway, methods=["POST"]),
    ]
    if conformance:
        routes.append(Route(ECHO_PATH, echo, methods=["POST"]))
    return Starlette(routes=routes)


def _encapsulated(context: ServerContext, answer: bytes) -> Response:
    return Response(
        context.encapsulate_response(answer),
        media_type=MEDIA_TYPE_RESPONSE,
        headers={"cache-control": "no-store"},
    )
