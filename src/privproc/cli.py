"""The `privproc` command line.

Every command explains itself with --help. Errors print one line that says what failed and exit
non-zero; no traceback for the errors privproc raises on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from privproc import __version__, logs
from privproc.commands import (
    connection_limits,
    connection_options,
    console,
    fail_cleanly,
    listen,
    run_until_stopped,
)
from privproc.commands import ready as ready_line
from privproc.enclave.options import declared_engine, engine_options
from privproc.errors import PrivprocError, UsageError
from privproc.issuer.store import DEFAULT_EPOCH_SECONDS, DEFAULT_QUOTA
from privproc.limits import RELAY_MAX_PER_CLIENT
from privproc.ohttp.messages import DEFAULT_MAX_MESSAGE
from privproc.storage import private_by_default

if TYPE_CHECKING:
    from privproc.client.controls import ReportEntry

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="privproc")
def main() -> None:
    """privproc: private AI processing with Oblivious HTTP, Privacy Pass, a transparency log and
    attested TLS. Start with `privproc up`, or see `privproc COMMAND --help`."""
    private_by_default()  # every file and directory privproc makes is its owner's alone


def _state_option(help_text: str, *, required: bool = True) -> Callable[[F], F]:
    return click.option(
        "--state",
        "state_dir",
        required=required,
        default=None,
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
    )


def _epoch_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--epoch-seconds",
        default=DEFAULT_EPOCH_SECONDS,
        show_default=True,
        type=click.IntRange(1, 366 * 86_400),
        help=help_text,
    )


# --- serve -------------------------------------------------------------------------------------


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


@serve.command("gateway")
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
    "several gateways) [default: sqlite:STATE/spent.sqlite3].",
)
@_state_option(
    "State directory: the gateway's OHTTP keys (STATE/ohttp-keys, kept across restarts) and the "
    "default spent-token store.",
    required=False,
)
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
    STATE/ohttp-keys (made at the first start, mode 0600) so that the published and logged key
    configurations stay valid across restarts; without it, fresh keys live in memory only. With
    --issuer, every inner request must redeem a Privacy Pass token (RFC 9577) issued for this
    gateway.
    """
    from privproc.services.gateway import KEYS_PATH, create_gateway_app, gateway_key_ring
    from privproc.services.http import bind, serve

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
        from privproc.services.router import SessionRouter

        router = SessionRouter(list(enclaves), verifier) if enclaves else None
        app = create_gateway_app(
            keys,
            conformance=conformance,
            max_request=max_request_bytes,
            verifier=verifier,
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

    from privproc.services.gateway import fetch_key_set
    from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, TokenChallenge
    from privproc.tokens.spent import open_spent_store
    from privproc.tokens.verifier import TokenVerifier

    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
        key_set = await fetch_key_set(http, issuer_url)
    store = await open_spent_store(spent_store)
    challenge = TokenChallenge(TOKEN_TYPE_BLIND_RSA, key_set.issuer_name, b"", (origin,))
    return TokenVerifier([challenge], store, key_set.keys), store


@serve.command("issuer")
@listen(8401)
@_state_option("Directory for the issuer's database (accounts, quota counters, keys).")
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
    from privproc.issuer.store import IssuerStore
    from privproc.services.http import bind, serve
    from privproc.services.issuer import create_issuer_app
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


@serve.command("witness")
@listen(8406)
@_state_option("The witness's state directory (see `privproc witness init`).")
@fail_cleanly
def serve_witness(host: str, port: int, state_dir: Path) -> None:
    """A C2SP tlog-witness: POST /add-checkpoint cosigns checkpoints that are consistent with
    the last one it saw for that log; GET /<sha256(origin)>/checkpoint shows that one."""
    from privproc.services.http import bind, serve
    from privproc.services.witness import create_witness_app
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


@serve.command("relay")
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
    from privproc.services.http import bind, serve
    from privproc.services.relay import create_relay_app

    if not gateway_url.startswith(("http://", "https://")):
        raise click.BadParameter("an http:// or https:// URL", param_hint="--gateway")
    logs.configure()
    app = create_relay_app(gateway_url)
    sock = bind(host, port)

    ready = ready_line("relay", "/")
    # The relay sees client addresses: one address may hold only so many connections.
    limits = connection_limits(per_client=RELAY_MAX_PER_CLIENT)
    run_until_stopped(serve(app, sock, ready, lifespan=True, limits=limits))


@serve.command("cdn")
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
    from privproc.services.cdn import create_cdn_app
    from privproc.services.http import bind, serve

    logs.configure()
    app = create_cdn_app(directory)
    sock = bind(host, port)

    ready = ready_line("cdn", "/")

    run_until_stopped(serve(app, sock, ready, limits=connection_limits()))


@serve.command(
    "enclave",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def serve_enclave(ctx: click.Context) -> None:
    """The enclave: attested TLS sessions running the model (--help: its own options).

    This runs the enclave's own entry, privproc.enclave.main, in place of the command line."""
    from privproc.enclave.closure import ENTRY
    from privproc.limits import ConnectionLimits

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
    # what runs is what the release measures (privproc.enclave.closure).
    os.execv(sys.executable, [sys.executable, *flags, "-m", ENTRY, *args, *ctx.args])  # noqa: S606


# --- issuer administration ---------------------------------------------------------------------

_STATE_OPTION = _state_option("The issuer's state directory (as given to `privproc serve issuer`).")


@main.group()
def issuer() -> None:
    """Manage the issuer's accounts (run beside `privproc serve issuer`, same --state)."""


@issuer.command("add-account")
@click.argument("name")
@_STATE_OPTION
@fail_cleanly
def issuer_add_account(name: str, state_dir: Path) -> None:
    """Create account NAME and print its secret, once.

    The client presents it as `Authorization: Bearer SECRET` when it asks for tokens. Only a
    hash of it is stored: a lost secret cannot be shown again (remove the account and add it anew).
    """
    import time

    from privproc.issuer.store import IssuerStore

    store = IssuerStore(state_dir)
    try:
        click.echo(store.add_account(name, time.time()))
    finally:
        store.close()


@issuer.command("remove-account")
@click.argument("name")
@_STATE_OPTION
@fail_cleanly
def issuer_remove_account(name: str, state_dir: Path) -> None:
    """Delete account NAME; its secret stops working at once."""
    from privproc.issuer.store import IssuerStore

    store = IssuerStore(state_dir)
    try:
        store.remove_account(name)
    finally:
        store.close()
    click.echo(f"removed {name}")


@issuer.command("accounts")
@_STATE_OPTION
@_epoch_option("The epoch length the issuer runs with (to count this epoch's tokens).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@fail_cleanly
def issuer_accounts(state_dir: Path, epoch_seconds: int, as_json: bool) -> None:
    """List the accounts and how many tokens each obtained this epoch."""
    import time

    from privproc.issuer.store import IssuerStore

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
@fail_cleanly
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
@click.option(
    "--wallet",
    "wallet_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="If the gateway asks for a Privacy Pass token (401), answer with one from this state "
    "directory's wallet (see `privproc tokens fetch`) and send the request again.",
)
@fail_cleanly
def ohttp_request(
    keys_url: str,
    gateway_url: str,
    method: str | None,
    target: str,
    headers: tuple[str, ...],
    data: str | None,
    kem: str | None,
    as_json: bool,
    wallet_dir: Path | None,
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

    def encoded(extra: list[tuple[str, str]]) -> bytes:
        request = bhttp.Request.build(
            method or ("POST" if data is not None else "GET"),
            target,
            headers=parsed_headers + extra,
            content=content,
        )
        return bhttp.encode_request(request, bhttp.Framing.shortest())

    inner = encoded([])
    with OhttpClient() as client:
        config = choose_config(client.fetch_key_configs(keys_url), KEM_NAMES[kem] if kem else None)
        answer = client.send(gateway_url, config, inner)
        if wallet_dir is not None and answer != inner:
            authorization = _token_for(bhttp.decode_response(answer), wallet_dir)
            if authorization is not None:
                inner = encoded([("authorization", authorization)])
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


def _token_for(response: Any, wallet_dir: Path) -> str | None:
    """For a 401 with PrivateToken challenges, an Authorization value from the wallet."""
    import time

    from privproc.client.wallet import Wallet
    from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, parse_www_authenticate

    if response.status != 401:
        return None
    challenges = parse_www_authenticate(response.header("www-authenticate") or "")
    wallet = Wallet(wallet_dir)
    for challenge in challenges:
        if challenge.token_type == TOKEN_TYPE_BLIND_RSA:
            authorization = wallet.take(challenge.challenge, time.time())
            if authorization is not None:
                return authorization
    raise PrivprocError(
        "the gateway asks for a Privacy Pass token and the wallet holds none for its challenge; "
        "run `privproc tokens fetch` first"
    )


# --- tokens ------------------------------------------------------------------------------------


@main.group()
def tokens() -> None:
    """The client's Privacy Pass token wallet (RFC 9578 type 0x0002 tokens)."""


@tokens.command("fetch")
@click.option("--issuer", "issuer_url", required=True, help="The issuer's base URL.")
@click.option(
    "--origin",
    required=True,
    help="The gateway's origin name (host:port) that the tokens are for, as in its challenge.",
)
@_state_option("The client's state directory; tokens go to STATE/tokens.json (mode 0600).")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File holding the account secret [default: the PRIVPROC_ISSUER_SECRET variable].",
)
@click.option(
    "--threshold",
    default=None,
    type=click.IntRange(0, 1000),
    help="Fetch only if fewer tokens than this are held [default: a quarter of --target].",
)
@click.option(
    "--target",
    default=20,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many tokens to hold after fetching.",
)
@fail_cleanly
def tokens_fetch(
    issuer_url: str,
    origin: str,
    state_dir: Path,
    secret_file: Path | None,
    threshold: int | None,
    target: int,
) -> None:
    """Refill the wallet with tokens for a gateway's challenge, if it runs low.

    The secret is read from a file or the environment, never from the command line (where
    other users of the machine could see it).
    """
    import os
    import time

    from privproc.client.issuer import IssuerClient
    from privproc.client.wallet import Wallet
    from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, TokenChallenge

    if secret_file is not None:
        secret = secret_file.read_text().strip()
    else:
        secret = os.environ.get("PRIVPROC_ISSUER_SECRET", "").strip()
    if not secret:
        raise click.UsageError("give --secret-file or set PRIVPROC_ISSUER_SECRET")
    if threshold is None:
        threshold = max(1, target // 4)
    if threshold > target:
        raise click.UsageError("--threshold cannot exceed --target")
    now = time.time()
    with IssuerClient(issuer_url, secret) as issuer:
        key_set = issuer.key_set()
        token_key = issuer.directory().preferred(now).token_key
        challenge = TokenChallenge(TOKEN_TYPE_BLIND_RSA, key_set.issuer_name, b"", (origin,))
        wallet = Wallet(state_dir)
        fetched = wallet.refill(
            issuer,
            challenge.encode(),
            token_key,
            key_set,
            threshold=threshold,
            target=target,
            now=now,
        )
        held = wallet.count(challenge.encode(), now)
    click.echo(f"fetched {fetched} token(s); the wallet holds {held} for {origin}")


@tokens.command("show")
@_state_option("The client's state directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@fail_cleanly
def tokens_show(state_dir: Path, as_json: bool) -> None:
    """How many usable tokens the wallet holds, per challenge (never the tokens themselves)."""
    import time

    from privproc.client.wallet import Wallet
    from privproc.tokens.auth import TokenChallenge

    rows: list[dict[str, Any]] = []
    for raw, count in Wallet(state_dir).counts(time.time()):
        challenge = TokenChallenge.decode(raw)
        rows.append(
            {
                "issuer": challenge.issuer_name,
                "origins": list(challenge.origin_info),
                "context": "bound" if challenge.redemption_context else "none",
                "tokens": count,
            }
        )
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title=f"tokens in {state_dir}")
    for col in ("issuer", "origins", "redemption context", "tokens"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            str(row["issuer"]), ", ".join(row["origins"]), str(row["context"]), str(row["tokens"])
        )
    Console().print(table)


# --- transparency log and witness --------------------------------------------------------------


def _hex_bytes(size: int) -> click.ParamType[bytes, Any]:
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


@main.group("log")
def log_group() -> None:
    """The transparency log (C2SP tlog-tiles, checkpoints cosigned by witnesses)."""


_LOG_STATE = _state_option("The log's state directory (entries, tiles, its signing key).")


@log_group.command("init")
@_LOG_STATE
@click.option("--origin", required=True, help="The log's origin line, e.g. log.example/privproc.")
@fail_cleanly
def log_init(state_dir: Path, origin: str) -> None:
    """Create a log with a fresh Ed25519 key and print its verifier key."""
    from privproc.tlog.log import TransparencyLog

    log = TransparencyLog.init(state_dir, origin)
    click.echo(log.verifier.encode())
    log.close()


@log_group.command("add-witness")
@_LOG_STATE
@click.option("--vkey", required=True, help="The witness's cosignature/v1 verifier key.")
@click.option("--url", required=True, help="The witness's submission prefix (base URL).")
@fail_cleanly
def log_add_witness(state_dir: Path, vkey: str, url: str) -> None:
    """Ask this witness to cosign every checkpoint the log publishes."""
    from privproc.tlog.log import TransparencyLog

    log = TransparencyLog(state_dir)
    try:
        verifier = log.add_witness(vkey, url)
    finally:
        log.close()
    click.echo(f"witness {verifier.name} added")


@log_group.group("append")
def log_append() -> None:
    """Append one entry (enclave release, OHTTP key-config set, issuer token key)."""


def _append(state_dir: Path, entry: Any) -> None:
    from privproc.tlog.entries import describe_entry, encode_entry
    from privproc.tlog.log import TransparencyLog

    log = TransparencyLog(state_dir)
    try:
        index = log.append(encode_entry(entry))
    finally:
        log.close()
    click.echo(f"appended entry {index}: {describe_entry(entry)}")


def _now() -> int:
    import time

    return int(time.time())


@log_append.command("release")
@_LOG_STATE
@click.option("--measurement", required=True, type=_hex_bytes(48), help="48-byte measurement.")
@click.option("--image-digest", required=True, type=_hex_bytes(32), help="SHA-256 of the image.")
@click.option("--model-digest", required=True, type=_hex_bytes(32), help="SHA-256 of the model.")
@click.option("--config-digest", required=True, type=_hex_bytes(32), help="SHA-256 of the config.")
@click.option("--source-revision", required=True, help="Source revision (e.g. a git commit).")
@click.option("--time", "when", type=int, default=None, help="Unix time [default: now].")
@fail_cleanly
def log_append_release(
    state_dir: Path,
    measurement: bytes,
    image_digest: bytes,
    model_digest: bytes,
    config_digest: bytes,
    source_revision: str,
    when: int | None,
) -> None:
    """An enclave release clients may accept."""
    from privproc.tlog.entries import EnclaveRelease

    entry = EnclaveRelease(
        measurement, image_digest, model_digest, config_digest, source_revision, when or _now()
    )
    _append(state_dir, entry)


@log_append.command("ohttp-keys")
@_LOG_STATE
@click.option("--gateway", required=True, help="The gateway's name (host:port).")
@click.option(
    "--keys-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The gateway's application/ohttp-keys document.",
)
@click.option("--not-before", type=int, default=None, help="Unix time [default: now].")
@fail_cleanly
def log_append_ohttp_keys(
    state_dir: Path, gateway: str, keys_file: Path, not_before: int | None
) -> None:
    """A gateway's OHTTP key configurations."""
    from privproc.tlog.entries import OhttpKeyConfigSet

    _append(state_dir, OhttpKeyConfigSet(gateway, keys_file.read_bytes(), not_before or _now()))


@log_append.command("token-key")
@_LOG_STATE
@click.option("--issuer", required=True, help="The issuer's name (host:port).")
@click.option("--token-key", required=True, help="The key as in the issuer directory (base64url).")
@click.option("--not-before", type=int, required=True, help="Unix time the key starts signing.")
@click.option("--expires", type=int, required=True, help="Unix time its tokens stop verifying.")
@fail_cleanly
def log_append_token_key(
    state_dir: Path, issuer: str, token_key: str, not_before: int, expires: int
) -> None:
    """A Privacy Pass issuer key (token type 0x0002)."""
    from privproc.tlog.entries import IssuerTokenKey
    from privproc.tokens.auth import b64url_decode

    key = b64url_decode(token_key, "token key")
    _append(state_dir, IssuerTokenKey(issuer, 2, key, not_before, expires))


@log_group.command("publish")
@_LOG_STATE
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory the CDN serves (checkpoint and tile/...).",
)
@click.option(
    "--quorum",
    default=1,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Witness cosignatures needed before the checkpoint is published.",
)
@fail_cleanly
def log_publish(state_dir: Path, out: Path, quorum: int) -> None:
    """Write the new tiles, gather witness cosignatures, and publish the checkpoint.

    Without the quorum nothing is published and the command fails, naming each witness's answer.
    """
    from privproc.tlog.checkpoint import Checkpoint
    from privproc.tlog.log import TransparencyLog
    from privproc.tlog.publisher import QuorumError, publish

    log = TransparencyLog(state_dir)
    try:
        note, outcomes = publish(log, out, quorum)
    except QuorumError as exc:
        for outcome in exc.outcomes:
            console.print(f"witness {outcome.witness}: {outcome.detail}")
        raise
    finally:
        log.close()
    checkpoint = Checkpoint.parse(note.text)
    for outcome in outcomes:
        click.echo(f"witness {outcome.witness}: {outcome.detail}")
    click.echo(f"published size {checkpoint.size} to {out / 'checkpoint'}")


@log_group.command("show")
@_LOG_STATE
@click.option("--entry", "index", type=int, default=None, help="Show this entry.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def log_show(state_dir: Path, index: int | None, as_json: bool) -> None:
    """The log's origin, key, sizes and witnesses, or one entry."""
    from privproc.tlog.entries import decode_entry, describe_entry
    from privproc.tlog.log import TransparencyLog

    log = TransparencyLog(state_dir)
    try:
        if index is not None:
            click.echo(describe_entry(decode_entry(log.entry(index))))
            return
        info: dict[str, Any] = {
            "origin": log.origin,
            "verifier_key": log.verifier.encode(),
            "entries": log.size,
            "published_size": log.published_size,
            "witnesses": [
                {"key": w.verifier.encode(), "url": w.url, "cosigned_size": w.size}
                for w in log.witnesses()
            ],
        }
    finally:
        log.close()
    if as_json:
        click.echo(json.dumps(info))
        return
    for key in ("origin", "verifier_key", "entries", "published_size"):
        click.echo(f"{key}: {info[key]}")
    for w in info["witnesses"]:
        click.echo(f"witness: {w['key']} at {w['url']} (cosigned size {w['cosigned_size']})")


@log_group.command("verify")
@click.option("--url", default=None, help="Base URL the log is served from (the CDN).")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Or a published directory on disk.",
)
@click.option("--origin", required=True, help="The log's origin.")
@click.option("--log-key", "log_keys", multiple=True, required=True, help="Log verifier key.")
@click.option("--witness-key", "witness_keys", multiple=True, help="Witness verifier key.")
@click.option("--quorum", default=1, show_default=True, type=int, help="Cosignatures needed.")
@_state_option("Where this client keeps the last checkpoint it accepted.")
@click.option("--entry", "index", type=int, default=None, help="Also fetch and prove this entry.")
@fail_cleanly
def log_verify(
    url: str | None,
    directory: Path | None,
    origin: str,
    log_keys: tuple[str, ...],
    witness_keys: tuple[str, ...],
    quorum: int,
    state_dir: Path,
    index: int | None,
) -> None:
    """As a client: verify the log's checkpoint (signature, witness quorum, consistency with the
    last one accepted) and, with --entry, prove an entry's inclusion.

    A split view or rollback is reported with both signed checkpoints as evidence (exit 3).
    """
    import httpx

    from privproc.client.logfetch import directory_fetcher, http_fetcher
    from privproc.tlog.client import (
        AcceptedCheckpoint,
        LogClient,
        LogPolicy,
        RollbackError,
        SplitViewError,
        describe,
    )
    from privproc.tlog.entries import decode_entry, describe_entry

    if (url is None) == (directory is None):
        raise click.UsageError("give exactly one of --url and --dir")
    policy = LogPolicy.from_keys(origin, log_keys, witness_keys, quorum)
    with httpx.Client(timeout=15, follow_redirects=False) as http:
        fetch = directory_fetcher(directory) if directory else http_fetcher(str(url), http)
        client = LogClient(policy, fetch, AcceptedCheckpoint(state_dir / "log-checkpoint.json"))
        try:
            current = client.update()
        except (SplitViewError, RollbackError) as exc:
            console.print(f"[red]{type(exc).__name__}:[/red] {escape(describe(exc))}")
            sys.exit(3)
        click.echo(f"verified size {current.size}, cosigned by {', '.join(current.cosigners)}")
        if index is not None:
            click.echo(f"entry {index}: {describe_entry(decode_entry(client.entry(index)))}")


@main.group("witness")
def witness_group() -> None:
    """A transparency-log witness (C2SP tlog-witness): set-up commands."""


_WITNESS_STATE = _state_option("The witness's state directory (its key and its view of logs).")


@witness_group.command("init")
@_WITNESS_STATE
@click.option("--name", required=True, help="The witness's key name, e.g. witness.example/w1.")
@fail_cleanly
def witness_init(state_dir: Path, name: str) -> None:
    """Create a witness with a fresh key and print its cosignature/v1 verifier key."""
    from privproc.tlog.witness import Witness

    witness = Witness.init(state_dir, name)
    click.echo(witness.verifier.encode())
    witness.close()


@witness_group.command("add-log")
@_WITNESS_STATE
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


# --- attestation -------------------------------------------------------------------------------


@main.group("attest")
def attest_group() -> None:
    """AMD SEV-SNP attestation: verify reports, simulate a virtual SNP, measure a workload."""


@attest_group.command("verify")
@click.argument("report", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--vcek",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The VCEK or VLEK certificate that signed the report (PEM or DER).",
)
@click.option(
    "--chain",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="ASK/ASVK + ARK, PEM [default: the pinned AMD chain for the product].",
)
@click.option(
    "--product",
    type=click.Choice(["Milan", "Genoa", "Turin"], case_sensitive=False),
    default=None,
    help="Needed only when neither the report (v2) nor the certificate names it.",
)
@click.option("--report-data", default=None, help="Expected REPORT_DATA, hex (64 bytes).")
@click.option(
    "--trust-root",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Trust this ASK + ARK (PEM) instead of AMD's pinned roots, e.g. a virtual SNP's.",
)
@click.option(
    "--at",
    "at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
    default=None,
    help="Check certificate validity at this time (UTC) instead of now, e.g. to audit an old "
    "report.",
)
@click.option(
    "--measurement",
    "measurements",
    multiple=True,
    type=_hex_bytes(48),
    help="Accept only this MEASUREMENT (48 bytes, hex; repeat for several).",
)
@click.option("--log-url", default=None, help="Require MEASUREMENT to be a release in this log.")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Or in this published log directory.",
)
@click.option("--log-origin", default=None, help="The log's origin (with --log-url/--log-dir).")
@click.option("--log-key", "log_keys", multiple=True, help="The log's verifier key.")
@click.option("--witness-key", "witness_keys", multiple=True, help="A witness's verifier key.")
@click.option("--quorum", default=1, show_default=True, type=int, help="Cosignatures needed.")
@click.option(
    "--no-policy",
    is_flag=True,
    help="Run the hardware checks only (prints a warning): debug guests, old firmware and any "
    "measurement pass.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verification report as JSON.")
def attest_verify(
    report: Path,
    vcek: Path,
    chain: Path | None,
    product: str | None,
    report_data: str | None,
    trust_root: Path | None,
    at: Any,
    measurements: tuple[bytes, ...],
    log_url: str | None,
    log_dir: Path | None,
    log_origin: str | None,
    log_keys: tuple[str, ...],
    witness_keys: tuple[str, ...],
    quorum: int,
    no_policy: bool,
    as_json: bool,
) -> None:
    """Verify an SEV-SNP attestation report and print every check.

    The hardware checks (chain to AMD's pinned root, signature, TCB and chip binding), then the
    default policy: a debuggable guest, a migration agent, a VMPL above 0 and firmware below
    the product's minimum TCB are refused; with --measurement the measurement must be listed,
    with a log (--log-url or --log-dir, --log-origin, --log-key) it must be a logged release.

    Exit status: 0 valid, 1 invalid, 2 usage error.
    """
    from datetime import UTC

    from privproc.attest.amd import TrustAnchors, TrustedChain
    from privproc.attest.appraisal import AttestationPolicy, apply_policy
    from privproc.attest.snp import AttestationReport, SigningKey
    from privproc.attest.verify import Check, verify_snp_evidence

    expected = None
    if report_data is not None:
        try:
            expected = bytes.fromhex(report_data)
        except ValueError:
            raise click.BadParameter("not hexadecimal", param_hint="--report-data") from None
        if len(expected) != 64:
            raise click.BadParameter("REPORT_DATA is 64 bytes", param_hint="--report-data")
    with_log = log_url is not None or log_dir is not None
    if log_url is not None and log_dir is not None:
        raise click.UsageError("give at most one of --log-url and --log-dir")
    if with_log and (log_origin is None or not log_keys):
        raise click.UsageError("a log needs --log-origin and --log-key")
    if no_policy and (measurements or with_log):
        raise click.UsageError("--no-policy checks no measurement: drop it or the policy options")
    try:
        roots = None
        if trust_root is not None:
            pem = trust_root.read_bytes()
            products = [product] if product else ["Milan", "Genoa", "Turin"]
            roots = TrustAnchors.of(
                TrustedChain.from_pem(pem, name, SigningKey.VCEK, str(trust_root))
                for name in products
            )
        raw = report.read_bytes()
        result = verify_snp_evidence(
            raw,
            vcek.read_bytes(),
            chain.read_bytes() if chain else None,
            product=product,
            roots=roots,
            now=None if at is None else at.replace(tzinfo=at.tzinfo or UTC),
        )
        if not no_policy:
            policy = AttestationPolicy(measurements=frozenset(measurements))
            result = apply_policy(result, policy, expected)
            if with_log and result.report is not None:
                result = result.with_checks(
                    *_attest_log_checks(
                        result.report.measurement,
                        log_url,
                        log_dir,
                        str(log_origin),
                        log_keys,
                        witness_keys,
                        quorum,
                    )
                )
    except PrivprocError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)
    if no_policy:
        click.echo(
            "WARNING: --no-policy: only the hardware checks ran. A debuggable guest, firmware "
            "below the minimum TCB, a migration agent, a high VMPL and any measurement are NOT "
            "refused: an OK here does not make this platform safe to send data to.",
            err=True,
        )
        if expected is not None:
            import hmac

            actual = AttestationReport.parse(raw).report_data if result.report else b""
            check = (
                Check.passing("policy.report-data", "REPORT_DATA is the expected value")
                if hmac.compare_digest(actual, expected)
                else Check.failing("policy.report-data", "REPORT_DATA is not the expected value")
            )
            result = result.with_checks(check)
    click.echo(result.to_json() if as_json else result.to_text())
    sys.exit(0 if result.ok else 1)


def _attest_log_checks(
    measurement: bytes,
    log_url: str | None,
    log_dir: Path | None,
    origin: str,
    log_keys: tuple[str, ...],
    witness_keys: tuple[str, ...],
    quorum: int,
) -> list[Any]:
    """The log checks of `attest verify`: the log read once, with no remembered checkpoint."""
    import httpx

    from privproc.attest.appraisal import logged_release_checks
    from privproc.client.logfetch import directory_fetcher, http_fetcher
    from privproc.tlog.client import LogClient, LogPolicy

    policy = LogPolicy.from_keys(origin, log_keys, witness_keys, quorum)
    with httpx.Client(timeout=15, follow_redirects=False) as http:
        fetch = directory_fetcher(log_dir) if log_dir else http_fetcher(str(log_url), http)
        return logged_release_checks(measurement, LogClient(policy, fetch))


@attest_group.command("simulate")
@click.option(
    "--state",
    "state_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The virtual platform's directory (created on first use).",
)
@click.option(
    "--product",
    type=click.Choice(["Milan", "Genoa", "Turin"], case_sensitive=False),
    default="Milan",
    show_default=True,
    help="The product the virtual platform models (on creation).",
)
@click.option("--report-data", default="00" * 64, help="REPORT_DATA, hex (64 bytes).")
@click.option("--measurement", default="00" * 48, help="MEASUREMENT, hex (48 bytes).")
@click.option("--debug", is_flag=True, help="Set the guest policy's debug bit (to test policies).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the report; the VCEK and chain go beside it (.vcek.pem, .chain.pem).",
)
@fail_cleanly
def attest_simulate(
    state_dir: Path,
    product: str,
    report_data: str,
    measurement: str,
    debug: bool,
    out: Path,
) -> None:
    """Produce a report signed by a VIRTUAL SEV-SNP (not AMD: its own local root).

    The report verifies with `privproc attest verify --trust-root STATE/chain.pem` and fails
    against AMD's roots, as it must.
    """
    from privproc.attest.snp import GuestPolicy
    from privproc.attest.virtual import VirtualSnp

    try:
        data, measured = bytes.fromhex(report_data), bytes.fromhex(measurement)
    except ValueError:
        raise click.BadParameter("report data and measurement are hexadecimal") from None
    if (state_dir / "platform").exists():
        platform = VirtualSnp.load(state_dir)
    else:
        platform = VirtualSnp.generate(product)
        platform.save(state_dir)
        (state_dir / "chain.pem").write_bytes(platform.chain_pem())
        console.print(f"created a virtual {platform.product} platform in {state_dir}")
    policy = GuestPolicy.build(abi_major=1, smt=True, debug=debug)
    out.write_bytes(platform.report(data, measured, policy=policy))
    out.with_suffix(".vcek.pem").write_bytes(platform.vcek_pem())
    out.with_suffix(".chain.pem").write_bytes(platform.chain_pem())
    click.echo(f"wrote {out} (virtual {platform.product}), {out.with_suffix('.vcek.pem')}")


@attest_group.command("closure")
@click.option("--list", "show", is_flag=True, help="Also list each file, with its lines.")
def attest_closure(show: bool) -> None:
    """What the enclave's release measures as code: the files of privproc the enclave runs (the
    import closure of its entry, privproc.enclave.main), beside the whole package."""
    import privproc
    from privproc.enclave.closure import ENTRY
    from privproc.enclave.workload import enclave_code

    package = Path(privproc.__file__).parent
    code = enclave_code(package)
    every = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)

    def lines(paths: list[Path]) -> int:
        return sum(len(p.read_bytes().splitlines()) for p in paths if p.suffix == ".py")

    modules = [p for p in code if p.suffix == ".py"]
    click.echo(
        f"the enclave runs {len(modules)} of privproc's {len(every)} modules "
        f"({lines(code):,} of {lines(every):,} lines), plus {len(code) - len(modules)} data "
        f"files, from its entry {ENTRY}; its release measures these, its model and its config"
    )
    if show:
        for path in code:
            shown = f"{lines([path]):>6}" if path.suffix == ".py" else "  data"
            click.echo(f"{shown}  {path.relative_to(package.parent).as_posix()}")


@attest_group.command("measure")
@click.option("--code", "code", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--manifest-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the manifest.",
)
@fail_cleanly
def attest_measure(
    code: tuple[Path, ...],
    model: tuple[Path, ...],
    config: tuple[Path, ...],
    manifest_out: Path | None,
) -> None:
    """Print the 48-byte workload measurement of code, model and config files (hex)."""
    from privproc.attest.measurement import measure_tree

    manifest = measure_tree({"code": code, "model": model, "config": config})
    if manifest_out is not None:
        manifest_out.write_bytes(manifest.encode())
    click.echo(manifest.measurement.hex())


# --- up ----------------------------------------------------------------------------------------

SAMPLE_CHAT = [
    {"sender": "Ana", "time": "10:00", "text": "are we still on for Saturday?"},
    {"sender": "Ben", "time": "10:01", "text": "yes, 10am at the park, bring the blue kite"},
    {"sender": "Ana", "time": "10:02", "text": "great, I will bring lunch for everyone"},
    {"sender": "Ben", "time": "10:05", "text": "perfect, see you there"},
]


def _default_state() -> Path:
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "privproc"


def _next_steps(state: Path, default_state: bool) -> list[str]:
    """The commands to try next, written so that they work pasted into a new terminal: with the
    path to `privproc` when it is not on the PATH, the sample chat by its full path, and each
    feature turned on before it is used (every one is off until the user turns it on)."""
    import os
    import shlex
    import shutil

    bin_dir = Path(sys.executable).parent
    steps = []
    found = shutil.which("privproc")
    if found is None or Path(found).resolve() != (bin_dir / "privproc").resolve():
        steps.append(f"source {shlex.quote(str(bin_dir / 'activate'))}   # puts privproc on PATH")
    where = "" if default_state else f" --state {shlex.quote(str(state))}"
    sample = Path(os.getcwd()) / "examples" / "chat.json"
    if sample.is_file():
        steps.append(f"privproc summarize {shlex.quote(str(sample))} --verbose{where}")
    steps += [
        f"privproc settings enable writing-help{where}",
        f'privproc rewrite --style professional "thx, c u tmrw"{where}',
        f"privproc settings enable chat{where}",
        f'privproc chat "What is the capital of France?"{where}',
        f"privproc report{where}",
    ]
    return steps


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to use.")
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the parties and the client keep their state [default: ~/.local/state/privproc].",
)
@click.option("--once", is_flag=True, help="Stop after the sample request instead of serving on.")
@click.option(
    "--fresh",
    is_flag=True,
    help="Start over: new log, keys, platform and account, and reset the client's trust state "
    "with them (its anchors, remembered checkpoint, tokens and secret; settings and report kept).",
)
@engine_options
@fail_cleanly
def up(
    host: str,
    state_dir: Path | None,
    once: bool,
    fresh: bool,
    engine_url: str | None,
    engine_model: str | None,
    engine_model_file: Path | None,
    engine_model_digest: str | None,
    engine_model_size: str | None,
    engine_model_quantisation: str | None,
) -> None:
    """Start every party on loopback (issuer, witness, gateway, enclave, relay, CDN) with a
    virtual SEV-SNP, log the release, key configs and issuer keys with a witness cosignature,
    write the client's trust anchors, send a sample chat for a private summary by the embedded
    model, print `ready` and the commands to try next, and serve until Ctrl-C.

    A second `up` on the same state resumes it: the same log (its new checkpoint extends the one
    the client remembers), keys and account. `--fresh` starts over. While it serves, the issuer's
    new token keys (one an epoch) are logged every minute, so that clients can go on fetching
    tokens.

    The embedded model is a small demonstration model. For better answers, `--engine URL
    --engine-model NAME --engine-model-file FILE` runs the enclave against an OpenAI-compatible
    engine (llama.cpp's server, vLLM) serving that model: the engine and the model's digest are
    part of the logged release. It says which model answers as it starts.
    """
    import signal
    import time

    import httpx

    from privproc.client.private import PrivateProcessingClient
    from privproc.system import System

    state = state_dir or _default_state()
    out = Console(soft_wrap=True)
    engine = declared_engine(
        engine_url, engine_model, engine_model_file, engine_model_digest, engine_model_size,
        engine_model_quantisation,
    )  # fmt: skip
    system = System(state, host, say=lambda step: out.print(f"  {escape(step)}"), engine=engine)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a process started in the background by a script inherits SIGINT ignored, and
    # then `kill -INT` (or Ctrl-C sent to its group) would not stop it.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        out.print(f"starting the parties on {host} ...")
        system.start(fresh=fresh)  # says whether it resumes, starts over or begins
        table = Table(title="privproc parties")
        table.add_column("party")
        table.add_column("URL")
        for party in system.parties:
            table.add_row(party.name, party.url)
        out.print(table)
        out.print(f"model: {escape(system.card.label())}", highlight=False)
        if system.card.demonstration:
            out.print(
                "  for better answers, run it on a capable engine: privproc up --engine URL "
                "--engine-model NAME --engine-model-file FILE (README: What answers to expect)"
                if engine is None
                else "  for better answers, serve a bigger model on the engine "
                "(README: What answers to expect)",
                highlight=False,
            )
        from privproc.client.controls import Settings

        controls = Settings.load(system.client_dir)
        if not controls.features["summaries"]:
            controls.set_feature("summaries", True)
            controls.save()
            out.print(
                "turned on AI summaries for the sample (`privproc settings disable summaries`)"
            )
        out.print("sample chat:")
        for line in SAMPLE_CHAT:
            out.print(f"  {escape(line['sender'])}: {escape(line['text'])}")
        out.print("  asking the enclave for a private summary (a few seconds) ...")
        client = PrivateProcessingClient.from_state(system.client_dir)
        try:
            client.fill_wallet()  # ahead of use: later requests spend tokens fetched now
            summary = client.summarize(SAMPLE_CHAT)
        finally:
            client.close()
        out.print(
            "[bold]private summary[/bold] (attested enclave, via relay and gateway): "
            + escape(summary.text)
        )
        out.print(f"client trust anchors: {system.client_dir / 'client.json'}")
        if not once:
            out.print("next, in another terminal:")
            for step in _next_steps(state, state_dir is None):
                out.print(f"  {escape(step)}", highlight=False)
        click.echo("ready" + ("" if once else " (Ctrl-C stops)"))
        sys.stdout.flush()
        relogged = time.monotonic()
        while not once:
            time.sleep(1)
            if any(p.process.poll() is not None for p in system.parties):
                raise PrivprocError("a party stopped unexpectedly; see its log in STATE/system")
            if time.monotonic() - relogged >= system.relog_seconds:
                # The issuer makes a token key an epoch; clients take only logged keys.
                relogged = time.monotonic()
                try:
                    if added := system.log_new_issuer_keys():
                        out.print(f"logged {added} new issuer token key(s), witnessed")
                except (PrivprocError, httpx.HTTPError) as exc:
                    out.print(f"[yellow]could not log the issuer's new keys (will retry): {exc}")
    except KeyboardInterrupt:
        pass
    finally:
        system.stop()
        click.echo("stopped")


# --- the private path, as a user ---------------------------------------------------------------


def _client(state_dir: Path | None, verbose: bool) -> Any:
    from privproc.client.private import PrivateProcessingClient

    state = (state_dir or _default_state()) / "client"

    def step(message: str) -> None:
        # markup off: a step such as "[pass] log.release" is text, not a rich tag; soft wrap:
        # one step, one line, however narrow the terminal
        console.print(f"  {message}", markup=False, highlight=False)

    return PrivateProcessingClient.from_state(state, on_step=step if verbose else None)


@contextlib.contextmanager
def _private_client(state_dir: Path | None, verbose: bool) -> Iterator[Any]:
    """The device's client for one command, closed after it; a system that cannot be reached at
    all is most often one that is not running, and the error says so."""
    client = _client(state_dir, verbose)
    try:
        yield client
    except PrivprocError as exc:
        hinted = _hinted(exc)
        if hinted is exc:
            raise
        raise hinted from None
    finally:
        client.close()


def _hinted(exc: PrivprocError) -> PrivprocError:
    """`exc`, or for a system that cannot be reached at all (most often one that is not
    running), the same error with what to do."""
    from privproc.errors import PeerRejectedError, TransportError

    if not isinstance(exc, TransportError) or isinstance(exc, PeerRejectedError):
        return exc
    if not str(exc).startswith("could not reach"):
        return exc
    return TransportError(f"{exc}; is the system running (`make up`, `privproc up`)?")


_CLIENT_STATE = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The state directory `privproc up` used [default: ~/.local/state/privproc].",
)
_VERBOSE = click.option("--verbose", "-v", is_flag=True, help="Show every verification step.")


_CHAT_ID = click.option(
    "--chat-id",
    default=None,
    help="The chat this is for. Advanced Chat Privacy (`privproc chat-privacy ID on`) can only "
    "refuse a request whose chat is known: by this option or, for summarize, the chat file's "
    '"chat_id".',
)


@main.command()
@click.argument("chat_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_CLIENT_STATE
@_VERBOSE
@_CHAT_ID
@fail_cleanly
def summarize(chat_file: Path, state_dir: Path | None, verbose: bool, chat_id: str | None) -> None:
    """Summarise a chat export privately. CHAT_FILE is JSON: a list of messages
    ({"sender", "time", "text"}), or {"chat_id": ID, "messages": [...]}; with a chat id, a chat
    that has Advanced Chat Privacy on is refused before anything leaves the device."""
    doc, chat_id = _read_chat_file(chat_file, chat_id)
    with _private_client(state_dir, verbose) as client:
        click.echo(client.summarize(doc, chat_id=chat_id).text)


def _read_chat_file(path: Path, chat_id: str | None) -> tuple[list[dict[str, str]], str | None]:
    """The messages of a chat file and the chat's id (from --chat-id or the file, which must not
    disagree); a bad file is refused before anything leaves the device."""
    from privproc.inference.tasks import parse_chat

    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise click.BadParameter("not JSON", param_hint="CHAT_FILE") from None
    if isinstance(doc, dict):
        named, doc = doc.get("chat_id"), doc.get("messages")
        if named is not None and not isinstance(named, str):
            raise click.BadParameter('"chat_id" is a string', param_hint="CHAT_FILE")
        if chat_id is not None and named is not None and named != chat_id:
            raise click.BadParameter(
                f"the file is chat {named!r}, --chat-id says {chat_id!r}", param_hint="CHAT_FILE"
            )
        chat_id = chat_id or named
    try:
        parse_chat(doc)
    except PrivprocError as exc:
        raise click.BadParameter(str(exc), param_hint="CHAT_FILE") from None
    return doc, chat_id


@main.command()
@click.argument("text")
@click.option(
    "--style",
    type=click.Choice(["rephrase", "professional", "funny", "supportive", "proofread"]),
    default="rephrase",
    show_default=True,
)
@_CLIENT_STATE
@_VERBOSE
@_CHAT_ID
@fail_cleanly
def rewrite(
    text: str, style: str, state_dir: Path | None, verbose: bool, chat_id: str | None
) -> None:
    """Writing help: rewrite TEXT in a style, privately."""
    with _private_client(state_dir, verbose) as client:
        click.echo(client.rewrite(text, style, chat_id=chat_id).text)


@main.command()
@click.argument("prompt", required=False)
@_CLIENT_STATE
@_VERBOSE
@_CHAT_ID
@fail_cleanly
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Print the answer as the model produces it (chunked OHTTP); a stream cut on the way "
    "is reported as an error, never as a short answer. [default: --no-stream for PROMPT, "
    "--stream for the incognito chat]",
)
@click.option(
    "--max-tokens", type=click.IntRange(1, 512), default=None, help="Longest answer, in tokens."
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 2),
    default=None,
    help="Sampling temperature, 0 to 2 [default: the enclave's, 0.2]; 0 always picks the "
    "likeliest next token.",
)
def chat(
    prompt: str | None,
    state_dir: Path | None,
    verbose: bool,
    chat_id: str | None,
    stream: bool | None,
    max_tokens: int | None,
    temperature: float | None,
) -> None:
    """Ask the model PROMPT, privately; without PROMPT, an incognito chat.

    \b
    privproc chat "What is the capital of France?"   one question, one answer
    privproc chat                                    an incognito chat

    The incognito chat reads your messages line by line and streams each answer. Nothing is
    kept: the conversation lives only in this process's memory and is sent whole with each
    message (the enclave keeps nothing between messages), and it is forgotten when the chat
    ends. Each message is one private request, listed in `privproc report` (without content).
    Commands: /new forgets the conversation and starts over; /quit (or Ctrl-D) ends the chat;
    /help lists them. Ctrl-C stops an answer (that message and its answer are not kept); at
    the prompt it ends the chat. A line starting with // sends the line without its first /.
    A long conversation forgets its oldest exchanges to make room, and says so.
    """
    if prompt is None:
        _incognito_chat(state_dir, verbose, chat_id, stream is not False, max_tokens, temperature)
        return
    options: dict[str, Any] = {
        "chat_id": chat_id,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    with _private_client(state_dir, verbose) as client:
        if not stream:
            reply = client.chat(prompt, **options)
            click.echo(reply.text)
            finish, tokens = reply.finish_reason, reply.usage.completion_tokens
        else:
            pieces = client.chat_stream(prompt, **options)
            for piece in pieces:
                click.echo(piece, nl=False)
                sys.stdout.flush()
            click.echo()
            finish, tokens = pieces.finish_reason or "stop", max_tokens or 0
    if finish == "length":  # said on stderr: what stdout holds is the answer alone
        _say_cut(max_tokens or tokens)


def _say_cut(limit: int | None) -> None:
    where = f"at {limit} tokens" if limit else "at the enclave's length limit"
    console.print(f"(cut {where}; --max-tokens allows up to 512)", highlight=False)


# --- the incognito chat ------------------------------------------------------------------------

_INCOGNITO_BANNER = (
    "incognito chat: nothing is kept. The conversation lives only in this process and is sent "
    "whole with each message; the enclave keeps nothing between messages, and the chat is "
    "forgotten when it ends. /new starts over, /quit or Ctrl-D ends, /help for more."
)
_INCOGNITO_HELP = (
    "/new   forget this conversation and start over\n"
    "/quit  end the chat (Ctrl-D too); it is forgotten\n"
    "/help  this list\n"
    "Ctrl-C stops an answer (that message is not kept); at the prompt it ends the chat.\n"
    "A line starting with // sends the line without its first /."
)
MAX_LINE = 16_000  # characters read as one message (the enclave's prompt limit)


def _note(message: str) -> None:
    """A line for the person chatting, on stderr (stdout holds the answers alone)."""
    console.print(message, markup=False, highlight=False)


class _Lines:
    """The person's messages, a line at a time: from a terminal with line editing (its history
    in memory only, erased at /new and at the end), else from stdin, each line bounded."""

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty()
        self._readline: Any = None
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # editing and recall in memory; no history file is written

                self._readline = readline
                readline.clear_history()
        elif hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(errors="replace")  # a stray byte is not a crash

    def read(self) -> str | None:
        """The next line without its newline, None at the end of input; `UsageError` for a line
        too long to send (the whole line is read and dropped)."""
        if self.interactive:
            try:
                return input("you> ")
            except EOFError:
                click.echo()
                return None
        line = sys.stdin.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE and not line.endswith("\n"):
            while (rest := sys.stdin.readline(MAX_LINE)) and not rest.endswith("\n"):
                pass
            raise UsageError(f"that line is longer than {MAX_LINE} characters: not sent")
        return line.removesuffix("\n").removesuffix("\r")

    def forget(self) -> None:
        if self._readline is not None:
            self._readline.clear_history()


def _incognito_chat(
    state_dir: Path | None,
    verbose: bool,
    chat_id: str | None,
    stream: bool,
    max_tokens: int | None,
    temperature: float | None,
) -> None:
    """`privproc chat` without PROMPT: the interactive incognito chat (client/incognito.py)."""
    with _private_client(state_dir, verbose) as client:
        client.settings.require("chat", chat_id)  # a chat that would be refused does not start
        conversation = client.incognito_chat(
            max_tokens=max_tokens, temperature=temperature, chat_id=chat_id
        )
        lines = _Lines()
        _note(_INCOGNITO_BANNER)
        try:
            with conversation:
                _converse(conversation, lines, stream, max_tokens)
        except KeyboardInterrupt:  # Ctrl-C at the prompt, or between two steps
            click.echo()
        finally:
            lines.forget()
        _note("chat ended: it is forgotten")


def _converse(conversation: Any, lines: _Lines, stream: bool, max_tokens: int | None) -> None:
    while True:
        try:
            line = lines.read()
        except UsageError as exc:
            _note(str(exc))
            continue
        if line is None:
            return
        text = line.strip()
        if not text:
            continue  # an empty line sends nothing
        if text.startswith("/") and not text.startswith("//"):
            command = text.split()[0].lower()
            if command in ("/quit", "/exit"):
                return
            if command == "/new":
                conversation.new()
                lines.forget()
                _note("new chat: the previous conversation is forgotten")
            elif command == "/help":
                _note(_INCOGNITO_HELP)
            else:
                shown = command if len(command) <= 20 else command[:20] + "..."
                _note(
                    f"unknown command {shown}: /new starts over, /quit ends, /help lists them "
                    "(to send a message starting with /, begin it with //)"
                )
            continue
        _turn(conversation, line.strip().removeprefix("/"), stream, max_tokens)


def _turn(conversation: Any, text: str, stream: bool, max_tokens: int | None) -> None:
    """One message and its answer; what goes wrong is said and the chat goes on."""
    pieces, printed = None, False
    try:
        if stream:
            pieces = conversation.stream(text)
            for piece in pieces:
                click.echo(piece, nl=False)
                sys.stdout.flush()
                printed = True
            click.echo()
            finish = pieces.finish_reason
        else:
            reply = conversation.send(text)
            click.echo(reply.text)
            finish = reply.finish_reason
    except KeyboardInterrupt:
        if pieces is not None:
            pieces.close()
        click.echo()
        _note("(answer stopped: this message and its answer are not kept)")
        return
    except PrivprocError as exc:
        if printed:
            click.echo()
        exc = _hinted(exc)
        what = (
            "not sent" if isinstance(exc, UsageError) else "this message is not kept: send it again"
        )
        _note(f"error: {exc} ({type(exc).__name__}); {what}")
        return
    if conversation.dropped:
        _note(
            f"(the oldest {conversation.dropped} exchange(s) were forgotten to make room: a "
            f"message goes with at most {conversation.max_turns} exchanges and "
            f"{conversation.max_chars} characters of conversation)"
        )
    if finish == "length":
        _say_cut(max_tokens)


@main.command()
@listen(8420)
@_CLIENT_STATE
@click.option(
    "--allow-origin",
    "origins",
    multiple=True,
    help="A web page origin (https://app.example) that may call the proxy from a browser; "
    "every other page is refused.",
)
@click.option(
    "--require-key",
    is_flag=True,
    help="Require a key made at each launch, written to STATE/client/proxy.key (0600); give it "
    "to your tools as their OpenAI api_key.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Listen on a --host that is not loopback (other machines could then spend your tokens: "
    "implies --require-key).",
)
@fail_cleanly
def proxy(
    host: str,
    port: int,
    state_dir: Path | None,
    origins: tuple[str, ...],
    require_key: bool,
    allow_remote: bool,
) -> None:
    """A local OpenAI-compatible endpoint (`/v1/...`) that forwards every call privately: for
    tools that only take a base URL. Streamed completions (`stream: true`) arrive as the model
    produces them; one cut on the way is cut here too, never passed off as complete. Chat needs
    `privproc settings enable chat`.

    Only your own programs may use it, never a web page you visit: it listens on loopback, and
    refuses requests addressed to another name (DNS rebinding), requests from a browser page
    (an Origin not allowed with --allow-origin) and bodies that are not application/json."""
    import ipaddress
    import threading

    from privproc.client.guard import ProxyGuard, new_api_key
    from privproc.client.openai import create_proxy_app
    from privproc.services.http import bind, serve
    from privproc.storage import create_private_file

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise click.BadParameter(
            f"{host} is not a loopback address: any machine that reaches it could spend your "
            "tokens; add --allow-remote to mean it (a key is then required)",
            param_hint="--host",
        )
    api_key = new_api_key() if require_key or not loopback else None
    client = _client(state_dir, verbose=False)
    session = threading.Lock()
    sock = bind(host, port)
    if api_key is not None:
        key_file = client.state_dir / "proxy.key"
        key_file.unlink(missing_ok=True)
        create_private_file(key_file, api_key.encode() + b"\n")
        console.print(f"the proxy's key for this launch is in {key_file} (0600)", highlight=False)
    if loopback:
        guard = ProxyGuard.loopback(sock.getsockname()[1], origins=origins, api_key=api_key)
    else:
        console.print(
            f"[yellow]warning:[/yellow] listening on {escape(host)}, not loopback: any machine "
            "that reaches it and holds the key can spend your tokens"
        )
        guard = ProxyGuard(None, frozenset(o.rstrip("/").lower() for o in origins), api_key)
    app = create_proxy_app(client, guard, session)
    try:
        # A stop cuts the streams under way after a second: Ctrl-C is answered at once.
        run_until_stopped(serve(app, sock, ready_line("proxy", "/v1"), graceful_shutdown=1))
    finally:
        # End the attested session, unless a call cut by the stop still holds it (its thread
        # ends with the process; the gateway and the enclave let go of the session alone).
        if session.acquire(timeout=0.5):
            client.close()


# --- the user's controls and the Private Processing report -------------------------------------


def _client_dir(state_dir: Path | None) -> Path:
    return (state_dir or _default_state()) / "client"


@main.group()
def settings() -> None:
    """Which AI features are on. Every one is off until you turn it on."""


@settings.command("enable")
@click.argument("feature", type=click.Choice(["summaries", "writing-help", "chat"]))
@_CLIENT_STATE
@fail_cleanly
def settings_enable(feature: str, state_dir: Path | None) -> None:
    """Turn an AI feature on, and fill the token wallet ahead of its first request (so that the
    issuer's record of the fetch does not point at that request)."""
    from privproc.client.controls import Settings

    current = Settings.load(_client_dir(state_dir))
    current.set_feature(feature, True)
    current.save()
    click.echo(f"{feature}: on")
    click.echo(_fill_wallet_ahead(_client_dir(state_dir)))


def _fill_wallet_ahead(client_dir: Path) -> str:
    """Fill the device's token wallet now, if a system is configured for it; a line saying what
    happened. A failure is reported, never raised: the first request fetches tokens then."""
    from privproc.client.http import new_client
    from privproc.client.private import NotConfiguredError, PrivateProcessingClient

    http = new_client(15)
    try:
        client = PrivateProcessingClient.from_state(client_dir, http=http)
        try:
            fetched = client.fill_wallet()
        finally:
            client.close()
    except NotConfiguredError:
        return "token wallet: no system configured yet; it is filled when one is"
    except PrivprocError as exc:
        return (
            f"token wallet: not filled ahead ({type(exc).__name__}: {exc}); the first request "
            "will fetch its tokens"
        )
    finally:
        http.close()
    if fetched:
        return f"token wallet: {fetched} token(s) fetched ahead of use"
    return "token wallet: holds enough tokens"


@settings.command("disable")
@click.argument("feature", type=click.Choice(["summaries", "writing-help", "chat"]))
@_CLIENT_STATE
@fail_cleanly
def settings_disable(feature: str, state_dir: Path | None) -> None:
    """Turn an AI feature off."""
    from privproc.client.controls import Settings

    current = Settings.load(_client_dir(state_dir))
    current.set_feature(feature, False)
    current.save()
    click.echo(f"{feature}: off")


@settings.command("show")
@_CLIENT_STATE
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def settings_show(state_dir: Path | None, as_json: bool) -> None:
    """The AI features and the chats closed to AI."""
    from privproc.client.controls import Settings

    current = Settings.load(_client_dir(state_dir))
    if as_json:
        doc = {"features": current.features, "private_chats": sorted(current.private_chats)}
        click.echo(json.dumps(doc))
        return
    for feature, on in current.features.items():
        click.echo(f"{feature}: {'on' if on else 'off'}")
    click.echo(
        f"chats with Advanced Chat Privacy: {', '.join(sorted(current.private_chats)) or '-'}"
    )


@main.command("chat-privacy")
@click.argument("chat_id")
@click.argument("state", type=click.Choice(["on", "off"]))
@_CLIENT_STATE
@fail_cleanly
def chat_privacy(chat_id: str, state: str, state_dir: Path | None) -> None:
    """Advanced Chat Privacy for one chat: `on` refuses every AI feature for it."""
    from privproc.client.controls import Settings

    current = Settings.load(_client_dir(state_dir))
    current.set_chat_privacy(chat_id, state == "on")
    current.save()
    click.echo(f"chat {chat_id}: Advanced Chat Privacy {state}")


@main.command()
@_CLIENT_STATE
@click.option(
    "--json", "as_json", is_flag=True, help="Print every field as JSON (to hand to an auditor)."
)
@click.option("--last", type=click.IntRange(min=1), default=None, help="Only the last N uses.")
@fail_cleanly
def report(state_dir: Path | None, as_json: bool, last: int | None) -> None:
    """The Private Processing report: every use of an AI feature on this device, and what served
    it (the model, the enclave release in the transparency log, the relay, the gateway's key, the
    token key's epoch, whether the attested session was new). It never holds what you wrote or
    what the model answered."""
    from privproc.client.controls import UsageReport

    entries = UsageReport(_client_dir(state_dir)).entries()
    if last is not None:
        entries = entries[-last:]
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    click.echo(
        "Private Processing report: each use of an AI feature on this device, and what served "
        "it.\nIt holds no messages, answers, tokens or keys. Times are UTC, to the minute."
    )
    if not entries:
        click.echo("\nNo use yet: the report is empty.")
    for entry in entries:
        click.echo("")
        click.echo("\n".join(_report_lines(entry)))


def _utc_minute(seconds: int) -> str:
    import datetime

    try:
        when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return f"{seconds} (Unix seconds)"
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _report_lines(e: ReportEntry) -> list[str]:
    """One use of the report, for a person: a heading line, then what served it. What a line of
    an older version lacks is "not recorded"; what a use never reached (it failed) is "none"."""
    older = e.version < 2  # a line written before the report named these
    unknown = "not recorded" if older else "none"
    model = e.model or (unknown if older else "not named by the enclave")
    if e.model_digest:
        model += f", digest {e.model_digest[:23]}{'...' if len(e.model_digest) > 23 else ''}"
    if e.log_index is None:
        release = unknown
    else:
        release = f"log index {e.log_index}"
        if e.checkpoint_size is not None:
            release += f" (proven in a checkpoint of {e.checkpoint_size} entries)"
        if e.source_revision:
            release += f", source revision {e.source_revision}"
    measurement = f"{e.measurement[:16]}..." if e.measurement else unknown
    key = unknown if e.gateway_key_id is None else f"OHTTP key id {e.gateway_key_id}"
    if e.token_key_epoch is None:
        token = unknown
    else:
        token = f"issuer key of the epoch from {_utc_minute(e.token_key_epoch)}"
        if e.token_key_log_index is not None:
            token += f" (log index {e.token_key_log_index})"
    session = {
        True: "new: attested for this use (a token was spent)",
        False: "reused: attested by an earlier use",
        None: unknown if older else "none: the use failed before a session was opened",
    }[e.fresh_session]
    return [
        f"{_utc_minute(e.time)}  {e.feature}  {e.outcome}",
        f"  model        {model}",
        f"  release      {release}",
        f"  measurement  {measurement}",
        f"  relay        {e.relay or unknown}",
        f"  gateway      {key}",
        f"  token        {token}",
        f"  session      {session}",
    ]


if __name__ == "__main__":  # pragma: no cover
    main()
