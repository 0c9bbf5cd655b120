"""The OpenAI ecosystem over the private path: an httpx transport, and a local proxy app.

    from openai import OpenAI
    client = PrivateProcessingClient.from_state(state / "client")
    ai = OpenAI(base_url="http://private.invalid/v1", api_key="unused",
                http_client=httpx.Client(transport=PrivateTransport(client)))
    ai.chat.completions.create(model="SmolLM2-135M-Instruct", messages=[...])

Every request that reaches the transport (or the proxy) goes to the enclave's OpenAI-compatible
API through the relay, the gateway and attested TLS; nothing goes to the base URL's host. Chat
completions count as the `chat` feature (off until the user enables it) and appear in the report.

Rules: only `/v1/...` paths are served; the answer is the enclave's status and JSON; streamed
completions (`stream: true`) are refused with a clear 400 until chunked OHTTP carries them (a
short answer must never pass for a whole one).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from privproc.client.controls import AIDisabledError
from privproc.client.private import PrivateProcessingClient
from privproc.errors import PrivprocError

__all__ = ["AsyncPrivateTransport", "PrivateTransport", "create_proxy_app"]

MAX_BODY = 256 * 1024


def _error(status: int, message: str, kind: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": kind}}


def forward(
    client: PrivateProcessingClient, lock: threading.Lock, method: str, path: str, body: bytes
) -> tuple[int, Any]:
    """One OpenAI API request through the private path: (status, JSON)."""
    index = path.find("/v1/")
    if index < 0 or len(body) > MAX_BODY:
        return _error(404 if index < 0 else 413, "not an OpenAI API path", "invalid_request_error")
    api_path = path[index:]
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return _error(400, "the request body is not JSON", "invalid_request_error")
    if isinstance(doc, dict) and doc.get("stream"):
        return _error(
            400,
            "streamed completions are not offered yet; call without stream",
            "invalid_request_error",
        )
    feature = "chat"
    try:
        with lock:  # one attested session, one request at a time
            return client.call(method, api_path, doc, feature=feature)
    except AIDisabledError as exc:
        return _error(403, str(exc), "permission_error")
    except PrivprocError as exc:
        return _error(502, f"the private path failed: {exc}", "api_error")


class PrivateTransport(httpx.BaseTransport):
    """An httpx transport that sends OpenAI API calls through the private path."""

    def __init__(self, client: PrivateProcessingClient) -> None:
        self.client = client
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        status, doc = forward(
            self.client, self._lock, request.method, request.url.path, request.read()
        )
        return httpx.Response(status, json=doc, request=request)

    def close(self) -> None:
        self.client.close()


class AsyncPrivateTransport(httpx.AsyncBaseTransport):
    """The same, for `AsyncOpenAI`: the private path runs in a worker thread."""

    def __init__(self, client: PrivateProcessingClient) -> None:
        self.client = client
        self._lock = threading.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        status, doc = await asyncio.to_thread(
            forward, self.client, self._lock, request.method, request.url.path, body
        )
        return httpx.Response(status, json=doc, request=request)

    async def aclose(self) -> None:
        self.client.close()


def create_proxy_app(client: PrivateProcessingClient) -> Starlette:
    """A local OpenAI-compatible endpoint (`privproc proxy`) that forwards privately."""
    lock = threading.Lock()

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        status, doc = await asyncio.to_thread(
            forward, client, lock, request.method, request.url.path, body
        )
        return JSONResponse(doc, status_code=status)

    return Starlette(routes=[Route("/v1/{path:path}", endpoint, methods=["GET", "POST", "DELETE"])])
