"""The witness's commands: `privproc serve witness` and `privproc witness` (init, add-log).

Rules: a command shell over `service.py` and the `privproc.tlog.witness` core; it imports no
other party. The root command (`privproc.cli`) mounts them.
"""

from __future__ import annotations

from pathlib import Path

import click

from privproc import logs
from privproc.net.commands import (
    connection_limits,
    fail_cleanly,
    listen,
    run_until_stopped,
    state_option,
)
from privproc.net.commands import ready as ready_line

__all__ = ["serve_witness", "witness_group"]


@click.command("witness")
@listen(8406)
@state_option("witness")
@fail_cleanly
def serve_witness(host: str, port: int, state_dir: Path) -> None:
    """A C2SP tlog-witness: POST /add-checkpoint cosigns checkpoints that are consistent with
    the last one it saw for that log; GET /<sha256(origin)>/checkpoint shows that one."""
    from privproc.net.http import bind, serve
    from privproc.parties.witness.service import create_witness_app
    from privproc.tlog.witness import Witness

    logs.configure()
    witness = Witness(state_dir)
    app = create_witness_app(witness)
    sock = bind(host, port)

    ready = ready_line("witness")

    try:
        run_until_stopped(serve(app, sock, ready, limits=connection_limits()))
    finally:
        witness.close()


@click.group("witness")
def witness_group() -> None:
    """A transparency-log witness (C2SP tlog-witness): set-up commands."""


@witness_group.command("init")
@state_option("witness")
@click.option("--name", required=True, help="The witness's key name, e.g. witness.example/w1.")
@fail_cleanly
def witness_init(state_dir: Path, name: str) -> None:
    """Create a witness with a fresh key and print its cosignature/v1 verifier key."""
    from privproc.tlog.witness import Witness

    witness = Witness.init(state_dir, name)
    click.echo(witness.verifier.encode())
    witness.close()


@witness_group.command("add-log")
@state_option("witness")
@click.option("--origin", required=True, help="The log's origin.")
@click.option("--log-key", "log_keys", multiple=True, required=True, help="Log verifier key.")
@fail_cleanly
def witness_add_log(state_dir: Path, origin: str, log_keys: tuple[str, ...]) -> None:
    """Witness the log ORIGIN, trusting these keys for its checkpoints."""
    from privproc.tlog.witness import Witness

    witness = Witness(state_dir)
    try:
        witness.add_log(origin, list(log_keys))
    finally:
        witness.close()
    click.echo(f"witnessing {origin}")
