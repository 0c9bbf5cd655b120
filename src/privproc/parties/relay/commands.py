"""The relay's command: `privproc serve relay`.

Rules: a command shell over `service.py`; it imports no other party.
"""

from __future__ import annotations

import click

from privproc import logs
from privproc.limits import RELAY_MAX_PER_CLIENT
from privproc.net.commands import (
    connection_limits,
    fail_cleanly,
    listen,
    run_until_stopped,
)
from privproc.net.commands import ready as ready_line

__all__ = ["serve_relay"]


@click.command("relay")
@listen(8403)
@click.option(
    "--gateway",
    "gateway_url",
    required=True,
    help="The gateway resource to forward to, e.g. http://127.0.0.1:8404/.well-known/ohttp-gateway.",
)
@fail_cleanly
def serve_relay(host: str, port: int, gateway_url: str) -> None:
    """The Oblivious HTTP relay (RFC 9458): POST / forwards message/ohttp-req to the one gateway
    and strips everything that identifies the client. It logs no address."""
    from privproc.net.http import bind, serve
    from privproc.parties.relay.service import create_relay_app

    if not gateway_url.startswith(("http://", "https://")):
        raise click.BadParameter("an http:// or https:// URL", param_hint="--gateway")
    logs.configure()
    app = create_relay_app(gateway_url)
    sock = bind(host, port)

    ready = ready_line("relay", "/")
    # The relay sees client addresses: one address may hold only so many connections.
    limits = connection_limits(per_client=RELAY_MAX_PER_CLIENT)
    run_until_stopped(serve(app, sock, ready, lifespan=True, limits=limits))
