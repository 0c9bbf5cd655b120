"""A real issuer and token-guarded gateways on loopback, for the token tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from privproc.ohttp import bhttp
from privproc.parties.device.ohttp import OhttpClient, choose_config
from tests.servers import Running, privproc_process

KEYS = "/.well-known/ohttp-gateway"


def add_account(state: Path, name: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privproc.cli",
            "issuer",
            "add-account",
            name,
            "--state",
            str(state),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@contextmanager
def issuer_process(tmp: Path, *extra: str) -> Iterator[tuple[Running, Path]]:
    state = tmp / "issuer-state"
    args = ["serve", "issuer", "--port", "0", "--state", str(state), *extra]
    with privproc_process(args, "ready issuer ", tmp) as running:
        yield running, state


@contextmanager
def gateway_process(tmp: Path, issuer_url: str, *extra: str) -> Iterator[Running]:
    args = ["serve", "gateway", "--port", "0", "--issuer", issuer_url, *extra]
    with privproc_process(args, "ready gateway ", tmp) as running:
        yield running


@dataclass
class Answer:
    status: int
    www_authenticate: str | None


def private_request(gateway: Running, authorization: str | None = None) -> Answer:
    """One inner request through the gateway with OHTTP, optionally carrying a token."""
    headers = [("authorization", authorization)] if authorization is not None else []
    request = bhttp.Request.build("GET", "https://enclave.invalid/v1/models", headers=headers)
    with OhttpClient() as client:
        config = choose_config(client.fetch_key_configs(gateway.url))
        response = client.request(gateway.url, config, request)
    return Answer(response.status, response.header("www-authenticate"))
