"""The device's tools for talking to any party directly: `privproc ohttp` (keys, request),
`privproc tokens` (fetch, show), `privproc log verify` and `privproc attest verify`.

Rules: a command shell over the device's clients and the cores; it imports no other party. The
root command (`privproc.cli`) mounts these.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from privproc.errors import PrivprocError
from privproc.net.commands import (
    console,
    fail_cleanly,
    hex_bytes,
    state_option,
)

__all__ = ["attest_verify", "log_verify", "ohttp", "tokens"]


@click.group()
def ohttp() -> None:
    """Talk to any Oblivious HTTP gateway (RFC 9458)."""


def _kem_choice() -> click.Choice[str]:
    from privproc.parties.device.ohttp import KEM_NAMES

    return click.Choice(sorted(KEM_NAMES))


@ohttp.command("keys")
@click.option("--keys-url", required=True, help="URL of an application/ohttp-keys document.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@fail_cleanly
def ohttp_keys(keys_url: str, as_json: bool) -> None:
    """Fetch and show a gateway's key configurations."""
    from privproc.parties.device.ohttp import OhttpClient

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
    "use_wallet",
    is_flag=True,
    help="If the gateway asks for a Privacy Pass token (401), answer with one from the device's "
    "wallet (see `privproc tokens fetch`) and send the request again.",
)
@state_option("device")
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
    use_wallet: bool,
    state_dir: Path,
) -> None:
    """Send one request through an Oblivious HTTP gateway and print the response.

    Against a conformance gateway's /gateway-echo, the gateway returns the request itself; this
    command recognises that and reports the echo as verified.
    """
    from privproc.ohttp import bhttp
    from privproc.parties.device.ohttp import KEM_NAMES, OhttpClient, choose_config

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
        if use_wallet and answer != inner:
            authorization = _token_for(bhttp.decode_response(answer), state_dir)
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

    from privproc.parties.device.wallet import Wallet
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


@click.group()
def tokens() -> None:
    """The client's Privacy Pass token wallet (RFC 9578 type 0x0002 tokens)."""


@tokens.command("fetch")
@click.option("--issuer", "issuer_url", required=True, help="The issuer's base URL.")
@click.option(
    "--origin",
    required=True,
    help="The gateway's origin name (host:port) that the tokens are for, as in its challenge.",
)
@state_option("device")
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
    import time

    from privproc.parties.device.issuer import IssuerClient
    from privproc.parties.device.wallet import Wallet
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
@state_option("device")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@fail_cleanly
def tokens_show(state_dir: Path, as_json: bool) -> None:
    """How many usable tokens the wallet holds, per challenge (never the tokens themselves)."""
    import time

    from privproc.parties.device.wallet import Wallet
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


@click.command("verify")
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
@state_option("device")
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

    from privproc.parties.device.logfetch import (
        AcceptedCheckpoint,
        LogReader,
        directory_fetcher,
        http_fetcher,
    )
    from privproc.tlog.client import LogPolicy, RollbackError, SplitViewError, describe
    from privproc.tlog.entries import decode_entry, describe_entry

    if (url is None) == (directory is None):
        raise click.UsageError("give exactly one of --url and --dir")
    policy = LogPolicy.from_keys(origin, log_keys, witness_keys, quorum)
    with httpx.Client(timeout=15, follow_redirects=False) as http:
        fetch = directory_fetcher(directory) if directory else http_fetcher(str(url), http)
        client = LogReader(policy, fetch, AcceptedCheckpoint(state_dir / "log-checkpoint.json"))
        try:
            current = client.update()
        except (SplitViewError, RollbackError) as exc:
            console.print(f"[red]{type(exc).__name__}:[/red] {escape(describe(exc))}")
            sys.exit(3)
        click.echo(f"verified size {current.size}, cosigned by {', '.join(current.cosigners)}")
        if index is not None:
            click.echo(f"entry {index}: {describe_entry(decode_entry(client.entry(index)))}")


@click.command("verify")
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
    type=hex_bytes(48),
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
    """The log checks of `attest verify`: the log read once, with no remembered checkpoint (so
    a checkpoint is accepted only by this reading), what it could not read a failed check."""
    import httpx

    from privproc.attest.appraisal import logged_release_checks, unreadable_log_checks
    from privproc.parties.device.logfetch import LogReader, directory_fetcher, http_fetcher
    from privproc.tlog.client import LogPolicy

    policy = LogPolicy.from_keys(origin, log_keys, witness_keys, quorum)
    with httpx.Client(timeout=15, follow_redirects=False) as http:
        fetch = directory_fetcher(log_dir) if log_dir else http_fetcher(str(log_url), http)
        reader = LogReader(policy, fetch)
        try:
            return reader.run(lambda have: logged_release_checks(measurement, reader.client, have))
        except PrivprocError as exc:
            return unreadable_log_checks(exc, reader.current)
