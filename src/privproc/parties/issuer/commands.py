"""The issuer's commands: `privproc serve issuer` and `privproc issuer` (its accounts).

Rules: a command shell over `service.py` and `store.py`; it imports no other party. The root
command (`privproc.cli`) mounts `serve_issuer` under `serve` and the `issuer` group.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from privproc import logs
from privproc.net.commands import (
    connection_limits,
    fail_cleanly,
    listen,
    run_until_stopped,
    state_option,
)
from privproc.net.commands import ready as ready_line
from privproc.parties.issuer.store import DEFAULT_EPOCH_SECONDS, DEFAULT_QUOTA

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["issuer", "serve_issuer"]


def _epoch_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--epoch-seconds",
        default=DEFAULT_EPOCH_SECONDS,
        show_default=True,
        type=click.IntRange(1, 366 * 86_400),
        help=help_text,
    )


@click.command("issuer")
@listen(8401)
@state_option("issuer")
@click.option(
    "--name",
    default=None,
    help="Issuer name in token challenges (host[:port]) [default: the address it listens on].",
)
@click.option(
    "--quota",
    default=DEFAULT_QUOTA,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Tokens each account may obtain per epoch.",
)
@_epoch_option("Length of a quota epoch and of a token key's signing period.")
@fail_cleanly
def serve_issuer(
    host: str, port: int, state_dir: Path, name: str | None, quota: int, epoch_seconds: int
) -> None:
    """The Privacy Pass issuer (RFC 9578, token type 0x0002, blind RSA 2048).

    Serves the issuer directory at GET /.well-known/private-token-issuer-directory, issues tokens
    at POST /token-request to accounts holding a Bearer secret (see `privproc issuer
    add-account`), and lists the keys verifiers accept at GET /v1/token-keys. Keys rotate every
    epoch; a key's tokens verify until the end of the following epoch.
    """
    from privproc.net.http import bind, serve
    from privproc.parties.issuer.service import create_issuer_app
    from privproc.parties.issuer.store import IssuerStore
    from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, TokenChallenge

    logs.configure()
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    issuer_name = name or f"{bound_host}:{bound_port}"
    TokenChallenge(TOKEN_TYPE_BLIND_RSA, issuer_name)  # refuses a name challenges cannot carry
    store = IssuerStore(state_dir, epoch_seconds=epoch_seconds, quota=quota)
    app = create_issuer_app(store, issuer_name)

    ready = ready_line("issuer")

    try:
        run_until_stopped(serve(app, sock, ready, lifespan=True, limits=connection_limits()))
    finally:
        store.close()


@click.group()
def issuer() -> None:
    """Manage the issuer's accounts (run beside `privproc serve issuer`, same --state)."""


@issuer.command("add-account")
@click.argument("name")
@state_option("issuer")
@fail_cleanly
def issuer_add_account(name: str, state_dir: Path) -> None:
    """Create account NAME and print its secret, once.

    The client presents it as `Authorization: Bearer SECRET` when it asks for tokens. Only a
    hash of it is stored: a lost secret cannot be shown again (remove the account and add it anew).
    """
    import time

    from privproc.parties.issuer.store import IssuerStore

    store = IssuerStore(state_dir)
    try:
        click.echo(store.add_account(name, time.time()))
    finally:
        store.close()


@issuer.command("remove-account")
@click.argument("name")
@state_option("issuer")
@fail_cleanly
def issuer_remove_account(name: str, state_dir: Path) -> None:
    """Delete account NAME; its secret stops working at once."""
    from privproc.parties.issuer.store import IssuerStore

    store = IssuerStore(state_dir)
    try:
        store.remove_account(name)
    finally:
        store.close()
    click.echo(f"removed {name}")


@issuer.command("accounts")
@state_option("issuer")
@_epoch_option("The epoch length the issuer runs with (to count this epoch's tokens).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@fail_cleanly
def issuer_accounts(state_dir: Path, epoch_seconds: int, as_json: bool) -> None:
    """List the accounts and how many tokens each obtained this epoch."""
    import time

    from privproc.parties.issuer.store import IssuerStore

    store = IssuerStore(state_dir, epoch_seconds=epoch_seconds)
    try:
        rows = store.accounts(time.time())
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([{"name": n, "used": u} for n, u in rows]))
        return
    table = Table(title="issuer accounts")
    table.add_column("account")
    table.add_column("tokens this epoch", justify="right")
    for account, used in rows:
        table.add_row(account, str(used))
    Console().print(table)
