"""The log operator's commands: `privproc log` (init, add-witness, append, publish, show).

Rules: a command shell over the `privproc.tlog` core and `publisher.py`; it imports no other
party. (`privproc log verify`, the client's check, is the device's: `parties/device/tools.py`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from privproc.net.commands import (
    console,
    fail_cleanly,
    hex_bytes,
    state_option,
)

__all__ = ["log_group"]


@click.group("log")
def log_group() -> None:
    """The transparency log (C2SP tlog-tiles, checkpoints cosigned by witnesses)."""


@log_group.command("init")
@state_option("log")
@click.option("--origin", required=True, help="The log's origin line, e.g. log.example/privproc.")
@fail_cleanly
def log_init(state_dir: Path, origin: str) -> None:
    """Create a log with a fresh Ed25519 key and print its verifier key."""
    from privproc.tlog.log import TransparencyLog

    log = TransparencyLog.init(state_dir, origin)
    click.echo(log.verifier.encode())
    log.close()


@log_group.command("add-witness")
@state_option("log")
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
@state_option("log")
@click.option("--measurement", required=True, type=hex_bytes(48), help="48-byte measurement.")
@click.option("--image-digest", required=True, type=hex_bytes(32), help="SHA-256 of the image.")
@click.option("--model-digest", required=True, type=hex_bytes(32), help="SHA-256 of the model.")
@click.option("--config-digest", required=True, type=hex_bytes(32), help="SHA-256 of the config.")
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
@state_option("log")
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
@state_option("log")
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
@state_option("log")
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
    from privproc.parties.log.publisher import QuorumError, publish
    from privproc.tlog.checkpoint import Checkpoint
    from privproc.tlog.log import TransparencyLog

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
@state_option("log")
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
