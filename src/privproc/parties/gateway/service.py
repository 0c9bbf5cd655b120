"""The Oblivious Gateway Resource (RFC 9458 §6, discovery as RFC 9540) as an ASGI app.

Endpoints:
- `GET /.well-known/ohttp-gateway`: the advertised key configurations (`application/ohttp-keys`).
- `POST /.well-known/ohttp-gateway`: the gateway resource: decapsulate, hand the Binary HTTP
  request to the inner router (the session router; without one every well-formed request gets an
  encapsulated 404), encapsulate its answer. A chunked OHTTP request
  (`message/ohttp-chunked-req`, draft-ietf-ohai-chunked-ohttp) gets a chunked response
  (`message/ohttp-chunked-res`) whose chunks are sealed and sent as the inner answer is produced;
  one whose inner answer breaks off is aborted without its final chunk, so it cannot pass for
  complete.
- `POST /gateway-echo`, only in conformance mode: the encapsulated response carries exactly the
  decapsulated request bytes (the convention interoperability tests use). It takes no token.

With a token gate (`redemption.TokenGate`, the gateway's one redemption path), every inner
request must carry `Authorization: PrivateToken token=...` (RFC 9577) with an unspent token for
this gateway's challenge: the session router spends one per new session once it is placed;
without a router, `token_guard` spends it before the inner handler runs. Otherwise the
encapsulated answer is the gate's: 401 with a `WWW-Authenticate: PrivateToken` challenge, the same
for every reason (missing, malformed, wrong challenge, unknown or expired key, bad signature,
spent, in flight); a spent-token store that cannot answer gives 503: the request is refused, the
token is not burnt.

Rules: every failure to decapsulate (truncated, wrong key id, unsupported suite, tampered bytes)
gets the same bare 400, so the answer reveals nothing about which check failed; errors found after
decapsulation (malformed Binary HTTP) travel inside an encapsulated response as RFC 9458 §5.2 asks,
readable only by the client. Nothing about a request is logged but its outcome and size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc import logs
from privproc.errors import PrivprocError, TooLargeError, TransportError, UsageError
from privproc.net.cookies import no_cookies
from privproc.net.http import (
    BodyError,
    StreamAborted,
    StreamedBody,
    in_background,
    media_type,
    read_body,
    read_bounded,
)
from privproc.net.metrics import instrument, metrics_of
from privproc.ohttp import bhttp
from privproc.ohttp.chunked import (
    MEDIA_TYPE_CHUNKED_REQUEST,
    MEDIA_TYPE_CHUNKED_RESPONSE,
    ChunkedRequestDecoder,
    ChunkedResponseEncoder,
)
from privproc.ohttp.keys import MEDIA_TYPE_KEYS, KeyFileError, KeyRing
from privproc.ohttp.messages import (
    DEFAULT_MAX_MESSAGE,
    MEDIA_TYPE_REQUEST,
    MEDIA_TYPE_RESPONSE,
    ServerContext,
    decapsulate_request,
)
from privproc.parties.gateway.answers import answer
from privproc.parties.gateway.redemption import TokenGate
from privproc.parties.gateway.router import SessionRouter
from privproc.parties.gateway.verifier import TokenVerifier
from privproc.storage import create_private_file
from privproc.tokens.directory import KEY_SET_PATH, MAX_DOCUMENT, KeySet

PARTY = "gateway"
KEYS_PATH = "/.well-known/ohttp-gateway"
ECHO_PATH = "/gateway-echo"

# An inner handler takes the decapsulated bytes and returns the bytes to encapsulate; a streaming
# one yields them in pieces, each sealed and sent on as it comes.
InnerHandler = Callable[[bytes], Awaitable[bytes]]
StreamingHandler = Callable[[bytes], AsyncIterator[bytes]]


def streaming(handler: InnerHandler) -> StreamingHandler:
    """A whole-answer handler as a streaming one (its answer is one piece)."""

    async def pieces(inner: bytes) -> AsyncIterator[bytes]:
        yield await handler(inner)

    return pieces


KEY_REFRESH_SECONDS = 60
SEALED_CHUNK = 1 << 14
KEY_FILE = "ohttp-keys"


def gateway_key_ring(state_dir: Path | None) -> KeyRing:
    """The gateway's OHTTP keys: without a state directory, fresh ones held in memory only; with
    one, those kept in `STATE/ohttp-keys`, made and saved there (mode 0600, from the first byte)
    at the first start, so that the configurations published and logged stay valid across
    restarts. A key file that is malformed, or readable by anyone but its owner, is refused
    with a `KeyFileError` (the gateway does not start)."""
    if state_dir is None:
        return KeyRing.generate()
    path = state_dir / KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then linked into place: a crash leaves no partial
        # key file, and of two gateways starting at once on one directory, both use the first.
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        create_private_file(tmp, KeyRing.generate().to_file_bytes())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        dir_fd = os.open(state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the gateway's key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"the gateway's key file {path} is readable by others (mode {mode & 0o777:o}); "
            "it holds private keys: make it 0600"
        )
    try:
        return KeyRing.from_file_bytes(data)
    except KeyFileError as exc:
        raise KeyFileError(f"the gateway's key file {path} is refused: {exc}") from None


def token_guard(gate: TokenGate, handler: InnerHandler) -> InnerHandler:
    """Wrap an inner handler so that it runs only for requests that redeem a valid token: the
    gate's simple use (the token is spent before the handler runs; a refusal is the gate's)."""

    async def guarded(inner: bytes) -> bytes:
        try:
            request = bhttp.decode_request(inner)
        except PrivprocError:
            return answer(400)
        refused = await gate.redeem(request.header("authorization"))
        if refused is not None:
            return refused
        return await handler(inner)

    return guarded


async def fetch_key_set(http: httpx.AsyncClient, issuer_url: str) -> KeySet:
    """The issuer's verification key set; a typed error if it cannot be had."""
    url = issuer_url.rstrip("/") + KEY_SET_PATH
    try:
        async with http.stream("GET", url) as response:
            if response.status_code != 200:
                raise TransportError(f"the issuer at {url} answered {response.status_code}")
            body = await read_bounded(response, MAX_DOCUMENT)  # cut off at the bound
    except httpx.HTTPError as exc:
        raise TransportError(f"could not reach the issuer at {url}: {type(exc).__name__}") from None
    except TooLargeError:
        raise TransportError(f"the issuer's key set at {url} is over the bound") from None
    return KeySet.decode(body)


@contextlib.asynccontextmanager
async def refreshing_keys(
    verifier: TokenVerifier, issuer_url: str, interval: float = KEY_REFRESH_SECONDS
) -> AsyncIterator[None]:
    """Keep the verifier's keys in step with the issuer's key set while the gateway runs.

    A failed refresh keeps the keys it has (they carry their own expiry) and tries again."""

    async def loop(http: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                verifier.update_keys((await fetch_key_set(http, issuer_url)).keys)
            except PrivprocError:
                logs.event(PARTY, "issuer-keys", outcome="refresh-failed")

    async with (
        httpx.AsyncClient(timeout=10, follow_redirects=False, cookies=no_cookies()) as http,
        in_background(loop(http)),
    ):
        yield


async def echo_handler(inner: bytes) -> bytes:
    """Conformance: answer with the request bytes themselves, once they parse as Binary HTTP."""
    try:
        bhttp.decode_request(inner)
    except PrivprocError:
        return answer(400)
    return inner


async def no_target_handler(inner: bytes) -> bytes:
    try:
        bhttp.decode_request(inner)
    except PrivprocError:
        return answer(400)
    return answer(404)


def create_gateway_app(
    keys: KeyRing,
    *,
    conformance: bool = False,
    max_request: int = DEFAULT_MAX_MESSAGE,
    inner: InnerHandler = no_target_handler,
    gate: TokenGate | None = None,
    issuer_url: str | None = None,
    router: SessionRouter | None = None,
) -> Starlette:
    """Build the gateway's ASGI app over a key ring.

    With `router`, the inner endpoints are the session router's (which spends a token per new
    session through its gate, the gateway's one); otherwise, with `gate`, every inner request
    needs a token (`token_guard`). With `issuer_url`, the gate's verifier keys are refreshed from
    the issuer's key set while the app runs (serve it with lifespan on)."""
    if router is not None:
        if gate is not None and gate is not router.gate:
            raise UsageError("a gateway has one token gate: give the router's")
        inner = router.handle
        gate = router.gate
    elif gate is not None:
        inner = token_guard(gate, inner)

    async def key_configs(request: Request) -> Response:
        return Response(
            keys.keys_document(),
            media_type=MEDIA_TYPE_KEYS,
            headers={"cache-control": "max-age=300"},
        )

    def rejected(size: int) -> Response:
        # One answer for every failure: no oracle on key ids, suites or ciphertexts.
        logs.event(PARTY, "decapsulate", outcome="rejected", size=size)
        metrics.error("decapsulate")
        return Response(status_code=400)

    async def chunked(body: bytes, handler: StreamingHandler) -> Response:
        decoder = ChunkedRequestDecoder(
            keys, max_chunk_size=max_request, max_message_size=max_request
        )
        try:
            inner_request = b"".join(decoder.receive(body, end_of_stream=True))
            encoder = decoder.response_encoder()
        except PrivprocError:
            return rejected(len(body))
        return StreamedBody(
            _sealed(encoder, handler(inner_request)),
            MEDIA_TYPE_CHUNKED_RESPONSE,
            {"cache-control": "no-store"},
        )

    async def oblivious(
        request: Request, handler: InnerHandler, stream_handler: StreamingHandler
    ) -> Response:
        kind = media_type(request)
        if kind not in (MEDIA_TYPE_REQUEST, MEDIA_TYPE_CHUNKED_REQUEST):
            return Response(status_code=415)
        try:
            body = await read_body(request, max_request)
        except BodyError as exc:
            return exc.response
        if kind == MEDIA_TYPE_CHUNKED_REQUEST:
            return await chunked(body, stream_handler)
        try:
            inner_request, context = decapsulate_request(keys, body, max_size=max_request)
        except PrivprocError:
            return rejected(len(body))
        # Counted and timed by the metrics (`privproc_requests`, `privproc_request_seconds`);
        # a log line per answered request would cost the hot path more than its HTTP does.
        return _encapsulated(context, await handler(inner_request))

    inner_stream = router.handle_stream if router is not None else streaming(inner)

    async def gateway(request: Request) -> Response:
        return await oblivious(request, inner, inner_stream)

    async def echo(request: Request) -> Response:
        return await oblivious(request, echo_handler, streaming(echo_handler))

    routes = [
        Route(KEYS_PATH, key_configs, methods=["GET"]),
        Route(KEYS_PATH, gateway, methods=["POST"]),
    ]
    if conformance:
        routes.append(Route(ECHO_PATH, echo, methods=["POST"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if gate is not None and issuer_url is not None:
                await stack.enter_async_context(refreshing_keys(gate.verifier, issuer_url))
            if router is not None:
                stack.push_async_callback(router.aclose)
                await stack.enter_async_context(in_background(router.run_health_checks()))
            yield

    app = instrument(Starlette(routes=routes, lifespan=lifespan), PARTY)
    metrics = metrics_of(app)
    if router is not None:
        router.metrics = metrics
    if gate is not None:
        gate.metrics = metrics
    return app


async def _sealed(
    encoder: ChunkedResponseEncoder, pieces: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """The chunked response: the nonce, a sealed chunk per piece, then the final chunk, sent only
    when the inner answer ended as it should (otherwise the stream is cut: `StreamAborted`)."""
    yield encoder.header()
    try:
        async for piece in pieces:
            # Chunks of at most 2^14 bytes: the size every implementation must accept (draft §4).
            for start in range(0, len(piece), SEALED_CHUNK):
                yield encoder.chunk(piece[start : start + SEALED_CHUNK])
    except StreamAborted:
        logs.event(PARTY, "stream", outcome="aborted")
        raise
    yield encoder.chunk(b"", final=True)


def _encapsulated(context: ServerContext, answer: bytes) -> Response:
    return Response(
        context.encapsulate_response(answer),
        media_type=MEDIA_TYPE_RESPONSE,
        headers={"cache-control": "no-store"},
    )
