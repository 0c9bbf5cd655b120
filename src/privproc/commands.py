"""What every party's command shares: typed errors as one line, running a service until it is
stopped, --host/--port, the `ready PARTY URL` line scripts wait for, and the connection limits.

Rules of this module:
- A shell for commands (click), imported by `privproc.cli` and by each party's own entry (the
  enclave's, `privproc.enclave.main`, runs without `cli.py`); it imports no party.
- Light: click, rich and privproc's base modules only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from privproc import logs
from privproc.errors import PrivprocError
from privproc.limits import HEADER_TIMEOUT, MAX_CONNECTIONS, RELAY_MAX_PER_CLIENT, ConnectionLimits

__all__ = [
    "connection_limits",
    "connection_options",
    "console",
    "fail_cleanly",
    "listen",
    "ready",
    "run_until_stopped",
]

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True, soft_wrap=True)  # one message, one line, however narrow


def fail_cleanly(fn: F) -> F:
    """Turn privproc's typed errors into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrivprocError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))} ({type(exc).__name__})")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def run_until_stopped(main_coro: Coroutine[Any, Any, None]) -> None:
    """Run a service until Ctrl-C or SIGTERM, and stop cleanly either way (exit status 0)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_coro)
    click.echo("stopped")


def ready(party: str, suffix: str = "") -> Callable[[str], None]:
    """The callback a service runs once it listens: a log line and `ready PARTY URL` on stdout
    (what scripts and tests wait for)."""

    def announce(url: str) -> None:
        logs.event(party, "listening")
        click.echo(f"ready {party} {url}{suffix}")
        sys.stdout.flush()

    return announce


def listen(default_port: int) -> Callable[[F], F]:
    """--host and --port, as every service takes them."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--port", default=default_port, show_default=True, type=int,
            help="Port; 0 picks a free one.",
        )(fn)  # fmt: skip
        return click.option(
            "--host", default="127.0.0.1", show_default=True, help="Address to listen on."
        )(fn)

    return decorate


def connection_options(fn: F) -> F:
    """--max-connections, --header-timeout, --max-per-client: what slow or idle connections may
    hold (`privproc serve` takes them before the party's name)."""
    options = [
        click.option("--max-connections", default=MAX_CONNECTIONS, show_default=True,
                     type=click.IntRange(1, 1_000_000), help="Open connections at most; beyond, "
                     "the one without a request the longest is closed."),
        click.option("--header-timeout", default=HEADER_TIMEOUT, show_default=True,
                     type=click.FloatRange(0.1, 3600), help="Seconds a connection may take to "
                     "send a request's headers, or stay idle between two."),
        click.option("--max-per-client", default=None, type=click.IntRange(1, 1_000_000),
                     help="Connections from one client address at most [default: "
                     f"{RELAY_MAX_PER_CLIENT} for the relay, else none]."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def connection_limits(per_client: int | None = None) -> ConnectionLimits:
    """The connection limits the command was given (`per_client`: this party's default)."""
    limits = click.get_current_context().find_object(ConnectionLimits) or ConnectionLimits()
    if limits.max_per_client is None and per_client is not None:
        limits = ConnectionLimits(limits.header_timeout, limits.max_connections, per_client)
    return limits
