"""The CDN's command: `privproc serve cdn`.

Rules: a command shell over `service.py`; it imports no other party.
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
)
from privproc.net.commands import ready as ready_line

__all__ = ["serve_cdn"]


@click.command("cdn")
@listen(8402)
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The published directory (log tiles and checkpoint, key configs, issuer documents).",
)
@fail_cleanly
def serve_cdn(host: str, port: int, directory: Path) -> None:
    """A static CDN for the published directory, with the right media types and caching."""
    from privproc.net.http import bind, serve
    from privproc.parties.cdn.service import create_cdn_app

    logs.configure()
    app = create_cdn_app(directory)
    sock = bind(host, port)

    ready = ready_line("cdn", "/")

    run_until_stopped(serve(app, sock, ready, limits=connection_limits()))
