"""The `privproc` command: the root that mounts each party's commands.

Every command explains itself with --help. Errors print one line that says what failed and exit
non-zero; no traceback for the errors privproc raises on purpose. `--state DIR` means the same
everywhere: the state directory `privproc up` uses (`privproc.net.commands.state_option`).

Rules of this package: the commands live with their parties (`parties/*/commands.py`, the
device's tools in `parties/device/tools.py`); this package mounts them and holds only what is
no party's: `up` (every party together, `up.py`), the attestation and release tools
(`attest.py`), and `serve enclave`, which execs the enclave's own entry.
"""

from __future__ import annotations

import os
import sys

import click

from privproc import __version__
from privproc.cli.attest import attest_group
from privproc.cli.up import up
from privproc.net.commands import connection_options
from privproc.parties.cdn.commands import serve_cdn
from privproc.parties.device import commands as device
from privproc.parties.device.tools import log_verify, ohttp, tokens
from privproc.parties.gateway.commands import serve_gateway
from privproc.parties.issuer.commands import issuer, serve_issuer
from privproc.parties.log.commands import log_group
from privproc.parties.relay.commands import serve_relay
from privproc.parties.witness.commands import serve_witness, witness_group
from privproc.storage import private_by_default

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="privproc")
def main() -> None:
    """privproc: private AI processing with Oblivious HTTP, Privacy Pass, a transparency log and
    attested TLS. Start with `privproc up`, or see `privproc COMMAND --help`."""
    private_by_default()  # every file and directory privproc makes is its owner's alone


@main.group()
@connection_options
@click.pass_context
def serve(
    ctx: click.Context, max_connections: int, header_timeout: float, max_per_client: int | None
) -> None:
    """Run one party's service in the foreground (Ctrl-C stops it). The connection options
    (before the party's name) bound what slow or idle connections can hold."""
    from privproc.limits import ConnectionLimits

    ctx.obj = ConnectionLimits(header_timeout, max_connections, max_per_client)


@serve.command(
    "enclave",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def serve_enclave(ctx: click.Context) -> None:
    """The enclave: attested TLS sessions running the model (--help: its own options).

    This runs the enclave's own entry, privproc.parties.enclave.main, in place of the command
    line."""
    from privproc.limits import ConnectionLimits
    from privproc.parties.enclave.closure import ENTRY

    limits = ctx.find_object(ConnectionLimits) or ConnectionLimits()
    args = ["--max-connections", str(limits.max_connections)]
    args += ["--header-timeout", str(limits.header_timeout)]
    if limits.max_per_client is not None:
        args += ["--max-per-client", str(limits.max_per_client)]
    # The interpreter's own options (-I, -X ...) carry over when it was started as `python ... -m`.
    argv = sys.orig_argv
    flags = argv[1 : argv.index("-m")] if "-m" in argv else []
    sys.stdout.flush()
    # The process becomes the enclave's entry: nothing of the command line runs beside it, so
    # what runs is what the release measures (privproc.parties.enclave.closure).
    os.execv(sys.executable, [sys.executable, *flags, "-m", ENTRY, *args, *ctx.args])  # noqa: S606


for command in (serve_gateway, serve_issuer, serve_witness, serve_relay, serve_cdn):
    serve.add_command(command)
log_group.add_command(log_verify)  # the client's check of the log, beside the operator's commands
for command in (
    up,
    issuer,
    ohttp,
    tokens,
    log_group,
    witness_group,
    attest_group,
    device.summarize,
    device.rewrite,
    device.chat,
    device.proxy,
    device.settings,
    device.chat_privacy,
    device.report,
):
    main.add_command(command)
