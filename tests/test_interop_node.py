"""Cross-tests with independent peers on Node 20 (see tests/interop/node/README.md): an OHTTP
client and gateway on npm `hpke-js` and `bhttp-js`, both directions; and a Privacy Pass client on
npm `@cloudflare/privacypass-ts` that obtains tokens from our issuer for our gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from privproc.ohttp import bhttp
from privproc.parties.device.ohttp import OhttpClient
from tests.conftest import Running
from tests.servers import NODE_DIR, node_client, node_gateway, node_or_fail
from tests.tokens_stack import add_account, gateway_process, issuer_process, private_request

pytestmark = pytest.mark.interop
KEYS = "/.well-known/ohttp-gateway"


def _base(gw: Running) -> str:
    return gw.url.removesuffix(KEYS)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--method", "POST", "--url", "https://example.com/v1/chat", "--body-hex", b"hello".hex()],
        ["--method", "DELETE", "--url", "https://example.com/x/y"],
    ],
)
def test_node_client_round_trips_through_our_gateway(
    conformance_gateway: Running, extra: list[str]
) -> None:
    base = _base(conformance_gateway)
    done = node_client("--keys-url", base + KEYS, "--gateway", base + "/gateway-echo", *extra)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == 200
    assert result["inner_hex"] == result["request_bhttp_hex"]
    # Our decoder reads what bhttp-js encoded (the echo handler already validated it).
    request = bhttp.decode_request(bytes.fromhex(result["request_bhttp_hex"]))
    assert request.authority == "example.com"


def test_node_client_is_refused_uniformly_by_our_gateway_on_a_bad_keys_url(
    conformance_gateway: Running,
) -> None:
    base = _base(conformance_gateway)
    done = node_client("--keys-url", base + "/nowhere", "--gateway", base + "/gateway-echo")
    assert done.returncode != 0


def test_our_client_round_trips_through_the_node_gateway() -> None:
    with node_gateway() as base, OhttpClient() as client:
        configs = client.fetch_key_configs(base + KEYS)
        # The Node gateway lists an unknown KEM (0x9999) first: it must have been skipped.
        assert [c.kem.id for c in configs] == [0x0020]
        inner = bhttp.encode_request(
            bhttp.Request.build("PUT", "https://example.com/doc", content=b"x" * 50_000)
        )
        assert client.send(base + "/gateway-echo", configs[0], inner) == inner


def test_our_cli_round_trips_through_the_node_gateway() -> None:
    with node_gateway() as base:
        done = subprocess.run(
            [
                sys.executable, "-m", "privproc.cli", "ohttp", "request",
                "--keys-url", base + KEYS, "--gateway", base + "/gateway-echo",
                "--url", "https://example.com/hello", "--data", "hi there", "--json",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["echo"] is True
    assert result["suite"] == ["DHKEM(X25519, HKDF-SHA256)", "HKDF-SHA256", "AES-128-GCM"]


def test_node_reproduces_rfc9458_appendix_a() -> None:
    node = node_or_fail()
    done = subprocess.run(
        [node, "appendix-a-check.mjs"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("OK")


# --- Privacy Pass: an independent client (@cloudflare/privacypass-ts) against our issuer ------


def _node(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node_or_fail(), script, *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_independent_privacy_pass_implementation_agrees_with_the_rfc_vectors() -> None:
    # The peer is only a good referee if it reproduces RFC 9578 Appendix A itself.
    result = _node("privacypass-vectors-check.mjs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "vectors ok"


def test_independent_client_gets_a_token_that_our_gateway_redeems_once(tmp_path: Path) -> None:
    """privacypass-ts, given only our gateway's 401 challenge, the issuer's base URL and a Bearer
    secret, uses the RFC 9578 directory and /token-request; its token redeems at our gateway."""
    with issuer_process(tmp_path) as (issuer, state):
        secret = add_account(state, "node-client")
        args = ("--state", str(tmp_path / "gw"), "--name", "gateway.example")
        with gateway_process(tmp_path, issuer.url, *args) as gateway:
            challenge = private_request(gateway).www_authenticate
            assert challenge is not None
            fetched = _node(
                "privacypass-client.mjs",
                "--issuer",
                issuer.url,
                "--secret",
                secret,
                "--challenge",
                challenge,
            )
            assert fetched.returncode == 0, fetched.stderr
            authorization = json.loads(fetched.stdout)["authorization"]
            assert private_request(gateway, authorization).status == 404  # accepted, no target
            assert private_request(gateway, authorization).status == 401  # spent
            refused = _node(
                "privacypass-client.mjs",
                "--issuer",
                issuer.url,
                "--secret",
                "ppa_not-an-account",
                "--challenge",
                challenge,
            )
    assert refused.returncode == 2
    assert "issuer answered 401" in refused.stderr
