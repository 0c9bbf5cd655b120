"""What every party's command shares: typed errors as one line, running a service until it is
stopped, --host/--port, the `ready PARTY URL` line scripts wait for, the connection limits, and
the one way to name the state directory.

- `--state DIR` means the same for every command: the state directory `privproc up` uses
  (default `$XDG_STATE_HOME/privproc`, else `~/.local/state/privproc`). Each party keeps its files
  in its own folder of it (`STATE_FOLDERS`: the device in `DIR/client`, the issuer in
  `DIR/system/issuer`, ...), so a command run beside `privproc up` finds that party's state
  without being told, and two parties never share a file.

Rules of this module:
- A shell for commands (click), imported by `privproc.cli` and by each party's own entry (the
  enclave's, `privproc.parties.enclave.main`, runs without `cli.py`); it imports no party.
- Light: click, rich and privproc's base modules only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import uvloop
from rich.console import Console
from rich.markup import escape

from privproc import logs
from privproc.errors import PrivprocError
from privproc.limits import HEADER_TIMEOUT, MAX_CONNECTIONS, RELAY_MAX_PER_CLIENT, ConnectionLimits

__all__ = [
    "STATE_FOLDERS",
    "connection_limits",
    "connection_options",
    "console",
    "default_state",
    "fail_cleanly",
    "hex_bytes",
    "listen",
    "party_state",
    "ready",
    "run_until_stopped",
    "state_option",
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
        uvloop.run(main_coro)  # libuv's loop: issue 18 (bench/bench_http.py)
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


# Where each party keeps its files in the one state directory (as `privproc up` lays it out).
STATE_FOLDERS: dict[str, tuple[str, ...]] = {
    "device": ("client",),
    "issuer": ("system", "issuer"),
    "gateway": ("system", "gateway"),
    "log": ("system", "log"),
    "witness": ("system", "witness"),
    "platform": ("system", "platform"),
}


def default_state() -> Path:
    """The state directory when none is named: `$XDG_STATE_HOME/privproc`, else
    `~/.local/state/privproc`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "privproc"


def party_state(root: Path, party: str) -> Path:
    """The folder of the state directory `root` that holds `party`'s files."""
    return root.joinpath(*STATE_FOLDERS[party])


def state_option(party: str | None, *, optional: bool = False) -> Callable[[F], F]:
    """`--state DIR`, the one state directory; the command receives `state_dir`: its party's
    folder in it (`party` None: the directory itself, for `privproc up`). `optional`: without
    --state the party keeps no state (None), instead of using the default directory."""
    folder = "/".join(STATE_FOLDERS[party]) if party is not None else ""
    default = "none: nothing is kept" if optional else "~/.local/state/privproc"

    def resolve(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        if value is None and optional:
            return None
        root = value or default_state()
        return party_state(root, party) if party is not None else root

    what = f"; this uses its {folder} folder" if folder else ", every party's and the device's"
    return click.option(
        "--state",
        "state_dir",
        default=None,
        type=click.Path(file_okay=False, path_type=Path),
        callback=resolve,
        help=f"The state directory, as `privproc up` uses it{what} [default: {default}].",
    )


def hex_bytes(size: int) -> click.ParamType[bytes, Any]:
    """A click type for exactly `size` bytes written in hexadecimal."""

    class HexBytes(click.ParamType[bytes, Any]):
        name = f"HEX{size * 8}"

        def convert(self, value: Any, param: Any, ctx: Any) -> bytes:
            try:
                raw = bytes.fromhex(str(value))
            except ValueError:
                self.fail(f"{value!r} is not hexadecimal", param, ctx)
            if len(raw) != size:
                self.fail(f"expected {size} bytes ({size * 2} hex digits)", param, ctx)
            return raw

    return HexBytes()
