"""The whole private request, end to end: every party a real process on loopback (issuer, witness,
gateway, enclave with the embedded model and a virtual SEV-SNP, relay, CDN), and the client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from privproc.attest.appraisal import AttestationRejectedError
from privproc.client.ohttp import OhttpClient, choose_config
from privproc.client.private import EnclaveLostError, PrivateProcessingClient
from privproc.ohttp import bhttp
from privproc.ratls.session import client_session
from privproc.system import System

CANARY = "canary-e2e-71c9: my passport number is X1234567"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(tmp_path_factory.mktemp("privproc"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


class RecordingClient(PrivateProcessingClient):
    """The real client, noting the tokens it spends (to search for them afterwards)."""

    spent: list[str]

    def _token(self) -> str:
        token = super()._token()
        self.spent = [*getattr(self, "spent", []), token]
        return token


def _client(system: System, **kw: object) -> RecordingClient:
    return RecordingClient.from_state(system.client_dir, **kw)  # type: ignore[arg-type, return-value]


def _files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def test_private_summary_and_rewrite_leave_no_trace(system: System) -> None:
    steps: list[str] = []
    # The device connects to the relay from 127.0.0.2; the relay is what the gateway sees.
    http = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=300)
    client = _client(system, on_step=steps.append, http=http)
    chat = [
        {"sender": "Ana", "time": "09:00", "text": f"here it is: {CANARY}"},
        {"sender": "Ben", "time": "09:01", "text": "thanks, I will book the flights today"},
        {"sender": "Ana", "time": "09:02", "text": "great, let's meet at the airport at 7"},
    ]
    summary = client.summarize(chat)
    assert summary
    rewritten = client.rewrite(f"pls send {CANARY} asap", "professional")
    assert rewritten
    client.close()
    assert any("log.release" in s and "[pass]" in s for s in steps)
    assert any("policy.report-data" in s and "[pass]" in s for s in steps)
    secrets_ = [CANARY.encode(), b"X1234567", b"127.0.0.2"]
    for token in client.spent:
        value = token.split('"')[1]
        secrets_ += [value.encode(), base64.urlsafe_b64decode(value)[2:34]]  # and its nonce
    for path in _files(system.system_dir):
        data = path.read_bytes()
        for secret in secrets_:
            assert secret not in data, (path, secret[:12])


def test_a_spent_token_is_refused(system: System) -> None:
    client = _client(system)
    token = client._token()
    config = client.config
    with OhttpClient() as ohttp:
        key = choose_config(ohttp.fetch_key_configs(config.keys_url))

        def open_session() -> bhttp.Response:
            hello = client_session(lambda evidence, rd: None).send_pending()
            request = bhttp.Request.build(
                "POST",
                "https://gateway.invalid/v1/sessions",
                headers=[("authorization", token)],
                content=hello,
            )
            return ohttp.request(config.relay_url, key, request)

        assert open_session().status == 201
        replay = open_session()
    client.close()
    assert replay.status == 401
    assert (replay.header("www-authenticate") or "").startswith("PrivateToken ")


def test_an_unlogged_enclave_is_refused_and_a_lost_one_retried(system: System) -> None:
    client = _client(system)
    assert client.chat("Say hello.")
    # The operator swaps in another build (another configuration: another measurement).
    system.stop_party("enclave")
    rogue = system.start_enclave(max_sessions=7)
    with pytest.raises(EnclaveLostError):
        client.chat("Say hello.")  # the old session died with the old enclave
    fresh = _client(system)
    with pytest.raises(AttestationRejectedError) as err:
        fresh.summarize([{"sender": "A", "time": "1", "text": CANARY}])
    assert [c.id for c in err.value.report.failures] == ["log.release"]
    assert '"request"' not in rogue.log_path.read_text()  # nothing reached the rogue's API
    # The logged release comes back; a new session works again.
    system.stop_party("enclave")
    system.start_enclave()
    assert client.chat("Say hello.")
    client.close()
    fresh.close()
