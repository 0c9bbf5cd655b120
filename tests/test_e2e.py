"""The whole private request, end to end: every party a real process on loopback (issuer, witness,
gateway, enclave with the embedded model and a virtual SEV-SNP, relay, CDN), and the client."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from privproc.api import SessionPolicy
from privproc.attest.appraisal import AttestationRejectedError
from privproc.errors import PeerRejectedError, PrivprocError
from privproc.ohttp import bhttp
from privproc.parties.device.controls import AIDisabledError, Settings, UsageReport
from privproc.parties.device.ohttp import OhttpClient, choose_config
from privproc.parties.device.private import EnclaveLostError, PrivateProcessingClient
from privproc.ratls.session import client_session
from privproc.system import System
from tests.servers import app_in_thread, recording_tokens

CANARY = "canary-e2e-71c9: my passport number is X1234567"


class RecordingClient(PrivateProcessingClient):
    """The real client, noting the tokens it spends (to search for them afterwards)."""

    spent: list[str]


SPENT: list[str] = []  # every token this module's recording clients spent


def _client(system: System, **kw: object) -> RecordingClient:
    client = RecordingClient.from_state(system.client_dir, **kw)  # type: ignore[arg-type]
    assert isinstance(client, RecordingClient)
    client.spent = recording_tokens(client, SPENT)
    return client


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
        {"sender": "Ana", "time": "09:02", "text": "great, let's meet at the airport at 7pm"},
    ]
    summary = client.summarize(chat)
    assert summary.text
    rewritten = client.rewrite(f"pls send {CANARY} asap", "professional")
    assert rewritten.text
    assert rewritten.style == "professional"
    client.close()
    # Each result names the enclave build that computed it: the logged release.
    from privproc.parties.enclave.platform.provider import ReleaseProof
    from privproc.tlog.entries import EnclaveRelease, decode_entry

    proof = ReleaseProof.from_json((system.system_dir / "release-proof.json").read_text())
    release = decode_entry(proof.entry)
    assert isinstance(release, EnclaveRelease)
    assert summary.provenance == rewritten.provenance
    assert summary.provenance.measurement == release.measurement.hex()
    assert summary.provenance.log_index == proof.index
    # ...and the model that computed it: the embedded demonstration model, as `up` named it.
    assert summary.model_card == rewritten.model_card == system.card
    assert summary.model_card is not None
    assert summary.model_card.demonstration
    assert f"model: {system.card.label()}" in steps
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
            hello = client_session().send_pending()
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
    assert client.chat("Say hello.").text
    # The enclave dies mid-session: a clear, retryable error (the client retried once itself).
    system.stop_party("enclave")
    with pytest.raises(EnclaveLostError, match="retry") as lost:
        client.request("GET", "/v1/models")  # a raw request reports the loss as it is
    assert lost.value.retryable
    # With no enclave at all the gateway says so, and when to come back (Retry-After: 5). A task
    # retries only within its budget: past it, the error comes at once (tests/test_retries.py).
    client.retry_budget = 1.0
    began = time.monotonic()
    with pytest.raises(PrivprocError, match=r"no-enclave.*try again shortly") as none:
        client.chat("Say hello.")
    assert none.value.retryable  # 503
    assert isinstance(none.value, PeerRejectedError)
    assert none.value.retry_after == 5.0
    assert time.monotonic() - began < 1.0
    # The operator brings up another build (another configuration: another measurement).
    rogue = system.start_enclave(SessionPolicy(max_sessions=7))
    fresh = _client(system)
    with pytest.raises(AttestationRejectedError) as err:
        fresh.summarize([{"sender": "A", "time": "1", "text": CANARY}])
    assert [c.id for c in err.value.report.failures] == ["log.release"]
    assert '"request"' not in rogue.logs()  # nothing reached the rogue's API
    # The logged release comes back; the old client's next call retries on a new session by
    # itself, without the caller's help.
    system.stop_party("enclave")
    system.start_enclave()
    steps: list[str] = []
    client.path.step = steps.append
    assert client.chat("Say hello.").text
    client.close()
    fresh.close()


def test_keys_not_in_the_log_are_refused_before_anything_is_sent(system: System) -> None:
    from privproc.ohttp.keys import KeyRing
    from privproc.parties.device.private import NotLoggedError

    keys_file = system.system_dir / "cdn" / "ohttp-keys"
    genuine = keys_file.read_bytes()
    relay_log = next(p for p in system.parties if p.name == "relay")
    forwarded_before = relay_log.logs().count('"forward"')
    # The CDN (or an operator behind it) hands out a key config of its own.
    keys_file.write_bytes(KeyRing.generate().keys_document())
    try:
        client = _client(system)
        with pytest.raises(NotLoggedError, match="OHTTP key configurations are not in the log"):
            client.summarize([{"sender": "A", "time": "1", "text": CANARY}])
        client.close()
    finally:
        keys_file.write_bytes(genuine)
    assert relay_log.logs().count('"forward"') == forwarded_before  # nothing left


def test_evidence_for_another_session_is_refused(system: System) -> None:
    """The operator runs the genuine enclave code but replays evidence recorded for another
    session: the binding to this session's TLS exporter fails before any content is sent."""
    import os

    from privproc.parties.enclave.inference.backends import (
        MODEL_NAME,
        EmbeddedBackend,
        locate_smollm2,
    )
    from privproc.parties.enclave.platform.provider import EvidenceProvider, ReleaseProof
    from privproc.parties.enclave.platform.virtual import VirtualSnp
    from privproc.parties.enclave.service import create_enclave_app
    from privproc.parties.enclave.workload import enclave_config, enclave_manifest
    from privproc.ratls.tls import ServerIdentity

    sysdir = system.system_dir
    genuine = EvidenceProvider(
        VirtualSnp.load(sysdir / "platform"),
        enclave_manifest(locate_smollm2(), enclave_config(MODEL_NAME, system.sessions)),
        ReleaseProof.from_json((sysdir / "release-proof.json").read_text()),
    )
    recorded = genuine(os.urandom(64))  # evidence from some other session
    port = int(system.enclave_args[system.enclave_args.index("--port") + 1])
    system.stop_party("enclave")
    app = create_enclave_app(EmbeddedBackend(), ServerIdentity.generate(), lambda rd: recorded)
    try:
        with app_in_thread(app, system.host, port):
            client = _client(system)
            with pytest.raises(AttestationRejectedError) as err:
                client.summarize([{"sender": "A", "time": "1", "text": CANARY}])
            assert [c.id for c in err.value.report.failures] == ["policy.report-data"]
            client.close()
    finally:
        system.start_enclave()


def test_the_cdn_serves_the_public_documents(system: System) -> None:
    from privproc.tokens.directory import IssuerDirectory, KeySet

    cdn = next(p for p in system.parties if p.name == "cdn").url
    issuer = next(p for p in system.parties if p.name == "issuer").url
    keys = httpx.get(cdn + "ohttp-keys")
    assert keys.headers["content-type"] == "application/ohttp-keys"
    directory = httpx.get(cdn + ".well-known/private-token-issuer-directory")
    assert directory.headers["content-type"] == "application/private-token-issuer-directory"
    parsed = IssuerDirectory.decode(directory.content)
    assert parsed.request_uri == issuer + "/token-request"
    assert KeySet.decode(httpx.get(cdn + "v1/token-keys").content).keys
    assert httpx.get(cdn + "checkpoint").text.startswith("log.privproc.local\n")


def test_disabled_features_and_private_chats_send_nothing(system: System) -> None:
    relay_log = next(p for p in system.parties if p.name == "relay")
    forwarded = relay_log.logs().count('"forward"')
    controls = Settings.load(system.client_dir)
    controls.set_feature("writing-help", False)
    controls.set_chat_privacy("family-group", True)
    controls.save()
    try:
        client = _client(system)
        with pytest.raises(AIDisabledError, match="settings enable writing-help"):
            client.rewrite(CANARY, "funny")
        with pytest.raises(AIDisabledError, match="Advanced Chat Privacy"):
            client.summarize([{"sender": "A", "time": "1", "text": CANARY}], chat_id="family-group")
        client.close()
    finally:
        controls.set_feature("writing-help", True)
        controls.set_chat_privacy("family-group", False)
        controls.save()
    assert relay_log.logs().count('"forward"') == forwarded  # the relay received nothing


def test_the_report_lists_every_use_without_content(system: System) -> None:
    client = _client(system)
    client.chat(f"Repeat after me: {CANARY}")
    client.close()
    entries = UsageReport(system.client_dir).entries()
    assert entries
    last = entries[-1]
    assert (last.feature, last.outcome) == ("chat", "ok")
    assert len(bytes.fromhex(last.measurement)) == 48
    assert last.log_index == 0
    assert any(e.outcome.startswith("attestation refused: log.release") for e in entries)
    for path in _files(system.client_dir):
        assert CANARY.encode() not in path.read_bytes(), path


def test_the_user_commands(system: System, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "privproc.cli", *args, "--state", str(system.state)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([
        {"sender": "Sam", "time": "9:00", "text": "the demo moved to Thursday"},
        {"sender": "Lee", "time": "9:02", "text": "ok, I will update the slides tonight"},
    ]))  # fmt: skip
    done = cli("summarize", str(chat), "--verbose")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "[pass] log.release" in done.stderr
    assert "[pass] policy.report-data" in done.stderr
    # --verbose names the model that answered, and says plainly that it is a demonstration.
    assert "model: SmolLM2-135M-Instruct, 135M parameters, Q4_1, sha256:" in done.stderr
    assert "a small demonstration model; expect simple, sometimes wrong answers" in done.stderr
    assert cli("chat-privacy", "team", "on").returncode == 0
    refused = cli("summarize", str(chat), "--chat-id", "team")
    assert refused.returncode == 1
    assert "Advanced Chat Privacy" in refused.stderr
    assert cli("chat-privacy", "team", "off").returncode == 0
    assert cli("settings", "disable", "chat").returncode == 0
    shown = json.loads(cli("settings", "show", "--json").stdout)
    assert shown["features"]["chat"] is False
    assert "settings enable chat" in cli("chat", "hello").stderr
    assert cli("settings", "enable", "chat").returncode == 0
    streamed = cli("chat", "What is the capital of France?", "--stream", "--temperature", "0")
    assert streamed.returncode == 0, streamed.stderr
    assert "paris" in streamed.stdout.lower()
    report = json.loads(cli("report", "--json").stdout)
    assert [e["feature"] for e in report[-2:]] == ["summaries", "chat"]
    assert "Thursday" not in json.dumps(report)
    assert "Private Processing report" in cli("report").stdout


def test_the_cli_says_what_it_did(system: System, tmp_path: Path) -> None:
    """Nothing silent: an answer cut by --max-tokens says so; --verbose says when the release was
    logged (a date, not a number) and why a step was skipped; a chat file that names its chat is
    refused when that chat has Advanced Chat Privacy, even without --chat-id."""
    import json
    import re
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "privproc.cli", *args, "--state", str(system.state)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    story = "Tell me a long story about a lighthouse keeper."
    for stream in ([], ["--stream"]):
        cut = cli("chat", story, "--max-tokens", "5", "--temperature", "0", *stream)
        assert cut.returncode == 0, cut.stderr
        assert "(cut at 5 tokens" in cut.stderr, stream
        assert "(cut" not in cut.stdout  # stdout holds the answer alone
    whole = cli("chat", "Say hello.", "--max-tokens", "100", "--temperature", "0")
    assert "(cut" not in whole.stderr

    chat = tmp_path / "family.json"
    messages = [{"sender": "Ana", "time": "10:00", "text": "dinner at 7 on Friday?"}]
    chat.write_text(json.dumps({"chat_id": "family", "messages": messages}))
    verbose = cli("summarize", str(chat), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    release = next(line for line in verbose.stderr.splitlines() if "] log.release:" in line)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", release), release
    assert not re.search(r"\b\d{10}\b", release), release  # no raw Unix time
    skipped = [line for line in verbose.stderr.splitlines() if "[skip]" in line]
    assert skipped
    for line in skipped:
        assert re.search(r"\[skip\] [\w.-]+: \w+", line), line  # each with its reason
    assert "[skip] policy.measurement: no fixed list of measurements" in verbose.stderr
    assert cli("chat-privacy", "family", "on").returncode == 0
    try:
        refused = cli("summarize", str(chat))
        assert refused.returncode == 1
        assert "chat 'family' has Advanced Chat Privacy on" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1  # one line, no traceback
        other = cli("summarize", str(chat), "--chat-id", "work")
        assert other.returncode == 2
        assert "the file is chat 'family', --chat-id says 'work'" in other.stderr
    finally:
        assert cli("chat-privacy", "family", "off").returncode == 0
    for command in ("summarize", "rewrite", "chat"):
        assert "Advanced Chat Privacy" in cli(command, "--help").stdout


def test_every_service_exposes_content_free_metrics(system: System) -> None:
    import re

    client = _client(system)
    client.chat(CANARY)
    client.close()
    texts = {}
    for party in system.parties:
        base = party.url.split("/.well-known")[0].rstrip("/")
        answer = httpx.get(base + "/metrics")
        assert answer.status_code == 200, party.name
        texts[party.name] = answer.text
        assert "privproc_requests_total{" in answer.text, party.name
    gateway = texts["gateway"]
    spent = re.search(r'privproc_tokens_spent_total\{party="gateway"\} (\d+)', gateway)
    assert spent is not None
    assert int(float(spent.group(1))) >= 1
    assert 'privproc_sessions{party="gateway"}' in gateway
    assert 'privproc_sessions{party="enclave"}' in texts["enclave"]
    assert 'endpoint="/v1/token-keys"' in texts["issuer"]
    for name, text in texts.items():
        assert CANARY not in text, name
        assert "127.0.0.2" not in text, name
        assert not re.search(r"[0-9a-f]{32}", text), name  # no session id became a label


def test_the_official_openai_sdk_through_the_transport_and_the_proxy(
    system: System, tmp_path: Path
) -> None:
    import asyncio

    import openai

    from privproc.parties.device.aio import AsyncPrivateProcessingClient
    from privproc.parties.device.openai import AsyncPrivateTransport, PrivateTransport
    from tests.servers import privproc_process

    relay_log = next(p for p in system.parties if p.name == "relay")
    from openai.types.chat import ChatCompletionMessageParam

    MODEL = "SmolLM2-135M-Instruct"
    # Greedy (temperature 0) wherever the answer's words are checked: not the sampler's luck.
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the capital of France?"}
    ]
    ai = openai.OpenAI(
        base_url="http://private.invalid/v1",  # never contacted: the transport goes privately
        api_key="unused",
        # openai 3.x is typed against httpx2; an httpx client works the same at run time.
        http_client=cast(Any, httpx.Client(transport=PrivateTransport(_client(system)))),
    )
    forwarded = relay_log.logs().count('"forward"')
    done = ai.chat.completions.create(model=MODEL, messages=question, temperature=0)
    assert "paris" in (done.choices[0].message.content or "").lower()
    assert relay_log.logs().count('"forward"') > forwarded  # it went through the relay
    assert [m.id for m in ai.models.list()] == ["SmolLM2-135M-Instruct"]
    streamed = ai.chat.completions.create(
        model=MODEL, messages=question, stream=True, temperature=0
    )
    pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert len([p for p in pieces if p]) > 2  # piece by piece, as the model produced them
    assert "paris" in "".join(pieces).lower()

    async def asynchronously() -> str:
        async_ai = openai.AsyncOpenAI(
            base_url="http://private.invalid/v1",
            api_key="unused",
            http_client=cast(
                Any,
                httpx.AsyncClient(
                    transport=AsyncPrivateTransport(
                        AsyncPrivateProcessingClient.from_state(system.client_dir)
                    )
                ),
            ),
        )
        answer = await async_ai.chat.completions.create(
            model=MODEL, messages=question, temperature=0
        )
        streamed = await async_ai.chat.completions.create(
            model=MODEL, messages=question, stream=True, temperature=0
        )
        pieces = [c.choices[0].delta.content or "" async for c in streamed if c.choices]
        assert len([p for p in pieces if p]) > 2
        return (answer.choices[0].message.content or "") + "".join(pieces)

    assert "paris" in asyncio.run(asynchronously()).lower()
    args = ["proxy", "--port", "0", "--state", str(system.state)]
    with privproc_process(args, "ready proxy ", tmp_path) as proxy:
        through_proxy = openai.OpenAI(base_url=proxy.url, api_key="unused")
        done = through_proxy.chat.completions.create(model=MODEL, messages=question, temperature=0)
        assert "paris" in (done.choices[0].message.content or "").lower()
        streamed = through_proxy.chat.completions.create(
            model=MODEL, messages=question, stream=True, temperature=0
        )
        pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
        assert len([p for p in pieces if p]) > 2
        assert "paris" in "".join(pieces).lower()


def test_the_async_sdk(system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    """The asyncio client is native: the whole private path (log, CDN keys, tokens fetched
    because the wallet is empty, the attested session, a stream) starts no thread."""
    import asyncio
    import threading

    from privproc.parties.device.aio import AsyncPrivateProcessingClient

    started: list[str] = []
    start = threading.Thread.start

    def noting(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    async def run() -> tuple[str, str, str]:
        monkeypatch.setattr(threading.Thread, "start", noting)
        async with AsyncPrivateProcessingClient.from_state(system.client_dir) as client:
            client.wallet.path.unlink(missing_ok=True)  # tokens are fetched on the way
            first, second = await asyncio.gather(
                # a message the demonstration model rewrites within the checks (greedy decoding)
                client.rewrite("thanks for the help", "professional"),
                client.chat("What is the capital of France?", temperature=0),
            )
            question = "What is the capital of France?"
            streamed = [p async for p in client.chat_stream(question, temperature=0)]
            assert len(streamed) > 2
            assert (second.finish_reason, second.model) == ("stop", "SmolLM2-135M-Instruct")
            assert second.usage.completion_tokens > 0
        monkeypatch.setattr(threading.Thread, "start", start)
        return first.text, second.text, "".join(streamed)

    rewritten, answer, streamed = asyncio.run(run())
    assert started == []  # not one thread under the asyncio client
    assert rewritten
    assert "paris" in answer.lower()
    assert "paris" in streamed.lower()


def test_after_everything_no_file_or_log_line_holds_content_tokens_or_addresses(
    system: System,
) -> None:
    """The leak scan, after every test above: each file the parties wrote (their logs are
    files too) and the device's state. No canary content, no client address, no spent token
    (as sent, or its nonce)."""
    for party in system.parties:
        party.logs()  # copy what waits in the pipes
    assert SPENT
    secrets_ = [CANARY.encode(), b"X1234567", b"127.0.0.2"]
    for token in SPENT:
        value = token.split('"')[1]
        secrets_ += [value.encode(), base64.urlsafe_b64decode(value)[2:34]]
    scanned = 0
    for root in (system.system_dir, system.client_dir):
        for path in _files(root):
            data = path.read_bytes()
            scanned += 1
            for secret in secrets_:
                assert secret not in data, (path, secret[:12])
    assert scanned > 20


def test_a_newcomer_is_told_what_to_do(system: System, tmp_path: Path) -> None:
    """No system started yet, or one that is not running: one line that says what to do."""
    import json
    import subprocess
    import sys

    from privproc.net.http import bind, url_of

    def summarize(state: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "privproc.cli", "summarize", "examples/chat.json",
             "--state", str(state)],
            capture_output=True, text=True, timeout=120, check=False,
            cwd=Path(__file__).parent.parent,
        )  # fmt: skip

    never = summarize(tmp_path / "never-started")
    assert never.returncode == 1
    assert "no client configuration at" in never.stderr
    assert "start the system first (`make up`, or `privproc up`)" in never.stderr
    assert len(never.stderr.strip().splitlines()) == 1

    stopped = tmp_path / "stopped"
    (stopped / "client").mkdir(parents=True)
    closed = bind("127.0.0.1", 0)
    dead = url_of(closed) + "/"
    closed.close()  # nothing listens there now
    config = json.loads((system.client_dir / "client.json").read_text())
    config.update(relay_url=dead, keys_url=dead + "ohttp-keys", log_url=dead, issuer_url=dead)
    (stopped / "client" / "client.json").write_text(json.dumps(config))
    (stopped / "client" / "settings.json").write_text(
        (system.client_dir / "settings.json").read_text()
    )
    down = summarize(stopped)
    assert down.returncode == 1
    assert "is the system running (`make up`, `privproc up`)?" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
