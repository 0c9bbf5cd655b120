"""The gateway's command: `privproc serve gateway`.

Rules: a command shell over `service.py` (the app), `router.py` and the token gate (one per
gateway, shared by the app and the router, over the token verifier); it imports no other party.
The root command (`privproc.cli`) mounts it under `serve`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from privproc import logs
from privproc.net.commands import (
    connection_limits,
    fail_cleanly,
    listen,
    run_until_stopped,
    state_option,
)
from privproc.ohttp.messages import DEFAULT_MAX_MESSAGE

__all__ = ["serve_gateway"]


@click.command("gateway")
@listen(8404)
@click.option(
    "--conformance",
    is_flag=True,
    help="Also serve POST /gateway-echo, which echoes the decapsulated request (interop tests).",
)
@click.option(
    "--max-request-bytes",
    default=DEFAULT_MAX_MESSAGE,
    show_default=True,
    type=click.IntRange(64, 64 << 20),
    help="Largest encapsulated request accepted.",
)
@click.option(
    "--issuer",
    "issuer_url",
    default=None,
    help="Require a Privacy Pass token from this issuer (its base URL) on every inner request.",
)
@click.option(
    "--enclave",
    "enclaves",
    multiple=True,
    help="An enclave's internal URL (repeatable): serve the session endpoints, placing sessions "
    "on the least-loaded healthy enclave.",
)
@click.option(
    "--name",
    default=None,
    help="This gateway's origin name in token challenges [default: the address it listens on].",
)
@click.option(
    "--spent-store",
    default=None,
    help="Where spent tokens are remembered: sqlite:PATH or redis://HOST:PORT/DB (shared by "
    "several gateways) [default: sqlite: spent.sqlite3 in the gateway's folder of --state].",
)
@state_option("gateway", optional=True)
@fail_cleanly
def serve_gateway(
    host: str,
    port: int,
    conformance: bool,
    max_request_bytes: int,
    issuer_url: str | None,
    name: str | None,
    spent_store: str | None,
    state_dir: Path | None,
    enclaves: tuple[str, ...],
) -> None:
    """The Oblivious HTTP gateway (RFC 9458).

    Serves its key configurations at GET /.well-known/ohttp-gateway (RFC 9540) and the gateway
    resource at POST /.well-known/ohttp-gateway. With --state, its keys are kept in
    STATE/system/gateway/ohttp-keys (made at the first start, mode 0600) so that the published
    and logged key configurations stay valid across restarts; without it, fresh keys live in
    memory only. With --issuer, every inner request must redeem a Privacy Pass token (RFC 9577)
    issued for this gateway.
    """
    from privproc.net.http import bind, serve
    from privproc.parties.gateway.service import KEYS_PATH, create_gateway_app, gateway_key_ring

    if issuer_url is None and (spent_store or name):
        raise click.UsageError("--name and --spent-store only make sense with --issuer")
    if issuer_url is not None and spent_store is None:
        if state_dir is None:
            raise click.UsageError("with --issuer, give --state DIR or --spent-store SPEC")
        spent_store = f"sqlite:{state_dir / 'spent.sqlite3'}"
    logs.configure()
    keys = gateway_key_ring(state_dir)
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]

    async def main_coro() -> None:
        verifier = None
        store = None
        if issuer_url is not None and spent_store is not None:
            verifier, store = await _token_verifier(
                issuer_url, name or f"{bound_host}:{bound_port}", spent_store
            )
        from privproc.parties.gateway.redemption import TokenGate
        from privproc.parties.gateway.router import SessionRouter

        gate = TokenGate(verifier) if verifier is not None else None  # the gateway's one
        router = SessionRouter(list(enclaves), gate) if enclaves else None
        app = create_gateway_app(
            keys,
            conformance=conformance,
            max_request=max_request_bytes,
            gate=gate,
            issuer_url=issuer_url,
            router=router,
        )

        def ready(url: str) -> None:
            logs.event("gateway", "listening", configs=len(keys.advertised))
            click.echo(f"ready gateway {url}{KEYS_PATH}", err=False)
            sys.stdout.flush()

        try:
            await serve(app, sock, ready, lifespan=True, limits=connection_limits())
        finally:
            if store is not None:
                await store.aclose()

    run_until_stopped(main_coro())


async def _token_verifier(issuer_url: str, origin: str, spent_store: str) -> tuple[Any, Any]:
    """A verifier for this gateway's challenge, with the issuer's current keys and a store."""
    import httpx

    from privproc.parties.gateway.service import fetch_key_set
    from privproc.parties.gateway.spent import open_spent_store
    from privproc.parties.gateway.verifier import TokenVerifier
    from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, TokenChallenge

    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
        key_set = await fetch_key_set(http, issuer_url)
    store = await open_spent_store(spent_store)
    challenge = TokenChallenge(TOKEN_TYPE_BLIND_RSA, key_set.issuer_name, b"", (origin,))
    return TokenVerifier([challenge], store, key_set.keys), store
