"""The Privacy Pass issuer (RFC 9578, token type 0x0002) as an ASGI app.

Endpoints:
- `GET /.well-known/private-token-issuer-directory`: the current key, then the next one with its
  `not-before`; cacheable until the next rotation.
- `POST /token-request`: `Authorization: Bearer SECRET` and an `application/private-token-request`
  body -> `application/private-token-response`. 401 for a missing or wrong secret, 415 for another
  media type, 413 for an oversized body, 422 for a request RFC 9578 §6.2 refuses, 429 with
  `Retry-After` once the account's quota for this epoch is spent.
- `GET /v1/token-keys`: every key that still verifies, with its expiry (for verifiers).

Rules: the request is validated before the quota is charged, so a malformed request costs
nothing; SQLite and the blind signature (about 1.2 ms of CPU) run in worker threads, never on the
event loop. The issuer learns the
account and the time, and nothing about the token: it logs neither the account nor any byte of
the request or response, and its records carry no time finer than the start of the quota epoch
(`logs.coarsen_time`): the operator's log of issuance cannot be joined by time with the gateway's
log of redemptions. (Its own server still sees each request arrive; the client's wallet fetches
ahead, at random times, so that this says nothing about sessions: parties/device/wallet.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc import logs
from privproc.errors import PrivprocError
from privproc.net.http import BodyError, in_background, media_type, read_body
from privproc.net.metrics import instrument
from privproc.parties.issuer.store import IssuerKey, IssuerStore
from privproc.tokens import issuance
from privproc.tokens.directory import (
    KEY_SET_PATH,
    DirectoryKey,
    IssuerDirectory,
    KeySet,
    VerificationKey,
)
from privproc.tokens.issuance import TokenRequest

PARTY = "issuer"
REQUEST_PATH = "/token-request"
MAX_REQUEST = 1024  # a type 0x0002 TokenRequest is 259 bytes
MAX_DIRECTORY_CACHE = 3600


def create_issuer_app(
    store: IssuerStore, issuer_name: str, *, clock: Callable[[], float] = time.time
) -> Starlette:
    """Build the issuer's ASGI app over its store. `issuer_name` goes into the key set."""
    logs.coarsen_time(PARTY, store.epoch_seconds)

    def cache_seconds(now: float) -> int:
        return min(MAX_DIRECTORY_CACHE, store.seconds_to_next_epoch(now))

    async def directory(request: Request) -> Response:
        now = clock()
        doc = IssuerDirectory(
            REQUEST_PATH,
            tuple(DirectoryKey(k.spki, k.not_before) for k in store.directory_keys(now)),
        )
        return Response(
            doc.encode(),
            media_type=issuance.MEDIA_TYPE_DIRECTORY,
            headers={"cache-control": f"max-age={cache_seconds(now)}"},
        )

    async def key_set(request: Request) -> Response:
        now = clock()
        doc = KeySet(
            issuer_name,
            tuple(VerificationKey(k.spki, k.not_before, k.expires) for k in store.keys(now)),
        )
        return Response(
            doc.encode(),
            media_type="application/json",
            headers={"cache-control": f"max-age={cache_seconds(now)}"},
        )

    def refuse(status: int, outcome: str, headers: dict[str, str] | None = None) -> Response:
        logs.event(PARTY, "token-request", status=status, outcome=outcome)
        return Response(status_code=status, headers=headers)

    def issue(
        account: str, key: IssuerKey, token_request: TokenRequest, now: float
    ) -> bytes | None:
        """Charge the quota and sign (in a worker thread: SQLite and 1 ms of RSA); None if the
        quota is spent. A signing failure refunds the charge."""
        if not store.charge(account, now):
            return None
        assert key.private_key is not None
        try:
            return issuance.sign_request(key.private_key, token_request)
        except PrivprocError:
            store.refund(account, now)
            raise

    async def token_request(request: Request) -> Response:
        started = time.perf_counter()
        now = clock()
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        account = None
        if scheme.lower() == "bearer":
            account = await run_in_threadpool(store.authenticate, secret.strip())
        if account is None:
            return refuse(401, "unauthenticated", {"www-authenticate": 'Bearer realm="issuer"'})
        if media_type(request) != issuance.MEDIA_TYPE_REQUEST:
            return refuse(415, "media-type")
        try:
            body = await read_body(request, MAX_REQUEST)
        except BodyError as exc:
            return refuse(exc.response.status_code, "body")
        # RFC 9578 §6.2: everything checkable is checked before the quota is charged.
        try:
            token_request = TokenRequest.decode(body)
        except PrivprocError:
            return refuse(422, "malformed")
        keys = store.signing_keys(token_request.truncated_token_key_id, now)
        if not keys:
            return refuse(422, "unknown-key")
        key = keys[0]
        if int.from_bytes(token_request.blinded_msg, "big") >= key.modulus:
            return refuse(422, "out-of-range")
        try:
            blind_sig = await run_in_threadpool(issue, account, key, token_request, now)
        except PrivprocError:
            return refuse(500, "sign-failed")
        if blind_sig is None:
            retry = str(store.seconds_to_next_epoch(now))
            return refuse(429, "quota", {"retry-after": retry})
        logs.event(
            PARTY,
            "token-request",
            status=200,
            outcome="issued",
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return Response(
            blind_sig,
            media_type=issuance.MEDIA_TYPE_RESPONSE,
            headers={"cache-control": "no-store"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Rotate keys at every epoch boundary (and shortly after it, when the previous key stops
        # signing), off the event loop: key generation takes a moment.
        async def rotate_forever() -> None:
            while True:
                now = clock()
                await run_in_threadpool(store.rotate, now)
                wait = min(store.seconds_to_next_epoch(now), 60)
                await asyncio.sleep(max(0.5, wait))

        await run_in_threadpool(store.rotate, clock())
        async with in_background(rotate_forever()):
            yield

    return instrument(Starlette(
        routes=[
            Route(issuance.WELL_KNOWN_DIRECTORY, directory, methods=["GET"]),
            Route(KEY_SET_PATH, key_set, methods=["GET"]),
            Route(REQUEST_PATH, token_request, methods=["POST"]),
        ],
        lifespan=lifespan,
    ), PARTY)  # fmt: skip
