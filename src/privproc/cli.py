"""The `privproc` command line.

Every command explains itself with --help. Errors print one line that says what failed and exit
non-zero; no traceback for the errors privproc raises on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from privproc import __version__, logs
from privproc.errors import PrivprocError

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)


def _fail_cleanly(fn: F) -> F:
    """Turn privproc's typed errors into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrivprocError as exc:
            console.print(f"[red]error:[/red] {exc} ({type(exc).__name__})")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _run_until_stopped(main_coro: Coroutine[Any, Any, None]) -> None:
    """Run a service until Ctrl-C or SIGTERM, and stop cleanly either way (exit status 0)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_coro)
    click.echo("stopped")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="privproc")
def main() -> None:
    """privproc: private AI processing with Oblivious HTTP, Privacy Pass, a transparency log and
    attested TLS. Start with `privproc up`, or see `privproc COMMAND --help`."""


# --- serve -------------------------------------------------------------------------------------


@main.group()
def serve() -> None:
    """Run one party's service in the foreground (Ctrl-C stops it)."""


@serve.command("gateway")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8404, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option(
    "--conformance",
    is_flag=True,
    help="Also serve POST /gateway-echo, which echoes the decapsulated request (interop tests).",
)
@click.option(
    "--max-request-bytes",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(64, 64 << 20),
    help="Largest encapsulated request accepted.",
)
@_fail_cleanly
def serve_gateway(host: str, port: int, conformance: bool, max_request_bytes: int) -> None:
    """The Oblivious HTTP gateway (RFC 9458) with fresh keys.

    Serves its key configurations at GET /.well-known/ohttp-gateway (RFC 9540) and the gateway
    resource at POST /.well-known/ohttp-gateway. The keys live in memory only.
    """
    from privproc.ohttp.keys import KeyRing
    from privproc.services.gateway import KEYS_PATH, create_gateway_app
    from privproc.services.http import bind, serve

    logs.configure()
    keys = KeyRing.generate()
    app = create_gateway_app(keys, conformance=conformance, max_request=max_request_bytes)
    sock = bind(host, port)

    def ready(url: str) -> None:
        logs.event("gateway", "listening", configs=len(keys.advertised))
        click.echo(f"ready gateway {url}{KEYS_PATH}", err=False)
        sys.stdout.flush()

    _run_until_stopped(serve(app, sock, ready))


# --- ohttp -------------------------------------------------------------------------------------


@main.group()
def ohttp() -> None:
    """Talk to any Oblivious HTTP gateway (RFC 9458)."""


def _kem_choice() -> click.Choice[str]:
    from privproc.client.ohttp import KEM_NAMES

    return click.Choice(sorted(KEM_NAMES))


@ohttp.command("keys")
@click.option("--keys-url", required=True, help="URL of an application/ohttp-keys document.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_fail_cleanly
def ohttp_keys(keys_url: str, as_json: bool) -> None:
    """Fetch and show a gateway's key configurations."""
    from privproc.client.ohttp import OhttpClient

    with OhttpClient() as client:
        configs = client.fetch_key_configs(keys_url)
    rows: list[dict[str, Any]] = [
        {
            "key_id": c.key_id,
            "kem": c.kem.name,
            "suites": [f"{s.kdf.name}/{s.aead.name}" for s in c.suites],
        }
        for c in configs
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title=f"OHTTP key configurations at {keys_url}")
    for col in ("key id", "KEM", "KDF / AEAD"):
        table.add_column(col)
    for row in rows:
        table.add_row(str(row["key_id"]), str(row["kem"]), ", ".join(row["suites"]))
    Console().print(table)


@ohttp.command("request")
@click.option("--keys-url", required=True, help="URL of the gateway's application/ohttp-keys.")
@click.option("--gateway", "gateway_url", required=True, help="URL of the gateway resource.")
@click.option("--method", default=None, help="Inner request method [default: GET, POST with data].")
@click.option(
    "--url",
    "target",
    default="https://example.com/",
    show_default=True,
    help="Absolute URL of the inner request (the target behind the gateway).",
)
@click.option("-H", "--header", "headers", multiple=True, help="Inner header 'Name: value'.")
@click.option("--data", default=None, help="Inner request body (UTF-8 text).")
@click.option("--kem", type=_kem_choice(), default=None, help="Use the gateway's key for this KEM.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@_fail_cleanly
def ohttp_request(
    keys_url: str,
    gateway_url: str,
    method: str | None,
    target: str,
    headers: tuple[str, ...],
    data: str | None,
    kem: str | None,
    as_json: bool,
) -> None:
    """Send one request through an Oblivious HTTP gateway and print the response.

    Against a conformance gateway's /gateway-echo, the gateway returns the request itself; this
    command recognises that and reports the echo as verified.
    """
    from privproc.client.ohttp import KEM_NAMES, OhttpClient, choose_config
    from privproc.ohttp import bhttp

    parsed_headers = []
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {h!r}", param_hint="--header")
        parsed_headers.append((name.strip(), value.strip()))
    content = data.encode() if data is not None else b""
    request = bhttp.Request.build(
        method or ("POST" if data is not None else "GET"),
        target,
        headers=parsed_headers,
        content=content,
    )
    inner = bhttp.encode_request(request, bhttp.Framing.shortest())
    with OhttpClient() as client:
        config = choose_config(client.fetch_key_configs(keys_url), KEM_NAMES[kem] if kem else None)
        answer = client.send(gateway_url, config, inner)
    suite = config.cipher_suite()
    result: dict[str, Any] = {
        "key_id": config.key_id,
        "suite": [suite.kem.name, suite.kdf.name, suite.aead.name],
    }
    if answer == inner:
        result.update(echo=True, bytes=len(answer))
    else:
        response = bhttp.decode_response(answer)
        result.update(
            echo=False,
            status=response.status,
            headers=[[n.decode(), v.decode("latin-1")] for n, v in response.headers],
            body=response.content.decode("utf-8", "replace"),
        )
    if as_json:
        click.echo(json.dumps(result))
    elif result["echo"]:
        click.echo(
            f"echo verified: the gateway returned the {len(answer)}-byte request unchanged "
            f"(key {config.key_id}, {', '.join(result['suite'])})"
        )
    else:
        click.echo(f"status {result['status']}")
        for name, value in result["headers"]:
            click.echo(f"{name}: {value}")
        click.echo()
        click.echo(result["body"])


# --- up ----------------------------------------------------------------------------------------

SAMPLE_MESSAGE = (
    "Summarise this chat, please: Ana: are we still on for Saturday? Ben: yes, 10am at the park, "
    "bring the blue kite. Ana: great, I will bring lunch."
)


def _sample_round_trips(keys_url: str, echo_url: str) -> list[dict[str, Any]]:
    """One private request per advertised key configuration, through the conformance echo."""
    import time

    from privproc.client.ohttp import OhttpClient
    from privproc.ohttp import bhttp

    request = bhttp.Request.build(
        "POST",
        "https://enclave.invalid/v1/tasks/summarize",
        headers=[("content-type", "text/plain; charset=utf-8")],
        content=SAMPLE_MESSAGE.encode(),
    )
    inner = bhttp.encode_request(request, bhttp.Framing.shortest())
    results = []
    with OhttpClient() as client:
        for config in client.fetch_key_configs(keys_url):
            started = time.perf_counter()
            answer = client.send(echo_url, config, inner)
            suite = config.cipher_suite()
            results.append(
                {
                    "kem": config.kem.name,
                    "key_id": config.key_id,
                    "suite": f"{suite.kdf.name} / {suite.aead.name}",
                    "ok": answer == inner,
                    "ms": (time.perf_counter() - started) * 1000,
                }
            )
    return results


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to use.")
@click.option(
    "--gateway-port", default=8404, show_default=True, type=int, help="0 picks a free port."
)
@click.option("--once", is_flag=True, help="Stop after the sample request instead of serving on.")
@_fail_cleanly
def up(host: str, gateway_port: int, once: bool) -> None:
    """Start the private-processing parties on loopback with fresh keys, send a sample private
    request, print `ready`, and serve until Ctrl-C.

    At this stage of the project the parties are the Oblivious HTTP gateway in conformance mode;
    the issuer, relay, CDN, log, witness and enclave join as they are built.
    """
    from privproc.ohttp.keys import KeyRing
    from privproc.services.gateway import ECHO_PATH, KEYS_PATH, create_gateway_app
    from privproc.services.http import bind, serve

    logs.configure()
    keys = KeyRing.generate()
    app = create_gateway_app(keys, conformance=True)
    sock = bind(host, gateway_port)
    out = Console()

    async def ready(url: str) -> bool:
        parties = Table(title="privproc parties")
        parties.add_column("party")
        parties.add_column("URL")
        parties.add_row("gateway (OHTTP, RFC 9458)", url + KEYS_PATH)
        parties.add_row("gateway echo (conformance)", url + ECHO_PATH)
        out.print(parties)
        results = await asyncio.to_thread(_sample_round_trips, url + KEYS_PATH, url + ECHO_PATH)
        table = Table(title="sample private request, once per key configuration")
        for col in ("key id", "KEM", "KDF / AEAD", "result", "ms"):
            table.add_column(col)
        for r in results:
            verdict = "[green]ok[/green]" if r["ok"] else "[red]MISMATCH[/red]"
            table.add_row(str(r["key_id"]), r["kem"], r["suite"], verdict, f"{r['ms']:.1f}")
        out.print(table)
        if not all(r["ok"] for r in results):
            out.print("[red]the sample request did not come back intact[/red]")
            sys.exit(1)
        click.echo("ready" + ("" if once else " (Ctrl-C stops)"))
        sys.stdout.flush()
        return not once

    _run_until_stopped(serve(app, sock, ready))


if __name__ == "__main__":  # pragma: no cover
    main()
