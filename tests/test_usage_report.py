"""The device's usage report: private, append-only, whole lines, no entry lost when several
clients (threads or processes) of one device write at once, and a line torn by a crash skipped.
Each use names what served it (model, release, relay, gateway key, token key epoch, whether the
session was new), to the minute and never with content; lines of older versions still read; and
`privproc report` says it to a person, `--json` to an auditor."""

from __future__ import annotations

import base64
import datetime
import json
import multiprocessing
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from privproc.errors import DecodeError
from privproc.ohttp.keys import decode_key_configs
from privproc.parties.device.answers import UseFacts, model_of, relay_label
from privproc.parties.device.controls import MAX_REPORT_TEXT, ReportEntry, UsageReport
from privproc.parties.device.ohttp import OhttpClient, choose_config
from privproc.parties.device.private import ClientConfig, PrivateProcessingClient
from privproc.parties.enclave.platform.provider import ReleaseProof
from privproc.system import System
from privproc.tlog.entries import EnclaveRelease, IssuerTokenKey, decode_entry
from privproc.tlog.log import TransparencyLog
from privproc.tokens import issuance
from privproc.tokens.auth import Token, parse_authorization
from tests.servers import privproc_cli, recording_tokens


def _entry(n: int, feature: str = "chat") -> ReportEntry:
    return ReportEntry(1_700_000_000 + n, feature, "ok", "ab" * 48, n, n + 1)


def _write(state: str, writer: int, count: int) -> None:
    report = UsageReport(Path(state))
    for n in range(count):
        report.add(_entry(writer * 1000 + n, f"w{writer}"))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    threads = [threading.Thread(target=_write, args=(str(tmp_path), w, 40)) for w in range(6)]
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_write, args=(str(tmp_path), w, 40)) for w in range(6, 8)]
    for t in threads:
        t.start()
    for p in procs:
        p.start()
    for t in threads:
        t.join(60)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = UsageReport(tmp_path).entries()
    assert len(entries) == 8 * 40
    for w in range(8):  # every writer's entries, each once, in its own order
        mine = [e.log_index for e in entries if e.feature == f"w{w}"]
        assert mine == [w * 1000 + n for n in range(40)]
    assert stat.S_IMODE((tmp_path / "report.jsonl").stat().st_mode) == 0o600


def test_a_torn_last_line_is_skipped_and_cut_before_the_next(tmp_path: Path) -> None:
    report = UsageReport(tmp_path)
    report.add(_entry(1))
    report.add(_entry(2))
    whole = report.path.read_bytes()
    report.path.write_bytes(whole + whole.splitlines(keepends=True)[0][:25])  # a crash mid-write
    assert [e.log_index for e in report.entries()] == [1, 2]
    report.add(_entry(3))
    assert report.path.read_bytes().startswith(whole)
    assert report.path.read_bytes().count(b"\n") == 3  # the torn bytes are gone
    assert [e.log_index for e in report.entries()] == [1, 2, 3]


def test_a_corrupt_whole_line_is_still_an_error(tmp_path: Path) -> None:
    report = UsageReport(tmp_path)
    report.add(_entry(1))
    report.path.write_bytes(report.path.read_bytes() + b"not json\n")
    with pytest.raises(DecodeError, match="corrupt"):
        report.entries()


# --- What an entry holds, and what it never holds ------------------------------------------------

OLD_LINE = (  # a line as the report wrote it before it named the model, relay, key and session
    b'{"checkpoint_size": 9, "feature": "chat", "log_index": 3, "measurement": "' + b"cd" * 48
    + b'", "outcome": "ok", "time": 1700000123.456}\n'
)  # fmt: skip


def _full(n: int, fresh: bool) -> ReportEntry:
    return ReportEntry(
        1_700_000_000 + n,
        "summaries",
        "ok",
        "ab" * 48,
        4,
        9,
        source_revision="v1.2.3",
        model="tiny-model",
        model_digest="sha256:" + "12" * 32,
        relay="http://relay.example:8080/relay",
        gateway_key_id=7,
        token_key_epoch=1_699_920_000,
        token_key_log_index=5,
        fresh_session=fresh,
    )


def test_times_are_kept_to_the_minute_and_nothing_finer(tmp_path: Path) -> None:
    report = UsageReport(tmp_path)
    report.add(_full(59, True))  # 1_700_000_059: 2023-11-14 22:14:19 UTC
    entry = report.entries()[0]
    assert entry.time == 1_700_000_040  # 22:14:00, rounded down
    assert b"1700000059" not in report.path.read_bytes()
    assert UsageReport.now() % 60 == 0


def test_every_field_round_trips(tmp_path: Path) -> None:
    report = UsageReport(tmp_path)
    report.add(_full(1, True))
    report.add(_full(2, False))
    entries = report.entries()
    assert entries == [_full(1, True), _full(2, False)]
    doc = entries[0].to_dict()
    assert ReportEntry.from_dict(doc) == entries[0]
    assert all(value is not None and value != "" for value in doc.values())


def test_a_line_of_an_older_version_still_reads(tmp_path: Path) -> None:
    report = UsageReport(tmp_path)
    report.path.write_bytes(OLD_LINE)
    report.add(_full(1, False))
    old, new = report.entries()
    assert (old.feature, old.outcome, old.log_index, old.checkpoint_size) == ("chat", "ok", 3, 9)
    assert old.measurement == "cd" * 48
    assert old.time == 1_700_000_100  # its seconds are cut on reading, too
    assert (old.model, old.relay, old.source_revision) == ("", "", "")
    assert (old.gateway_key_id, old.token_key_epoch, old.fresh_session) == (None, None, None)
    assert (old.version, new.version) == (1, 2)
    assert new == _full(1, False)


@pytest.mark.parametrize(
    "line",
    [
        b'{"time": 1, "feature": "chat", "outcome": "ok", "fresh_session": "yes"}',
        b'{"time": 1, "feature": "chat", "outcome": "ok", "gateway_key_id": -1}',
        b'{"time": 1, "feature": "chat", "outcome": "ok", "token_key_epoch": true}',
        b'{"time": 1, "feature": "chat", "outcome": "ok", "model": 5}',
        b'{"time": 1e400, "feature": "chat", "outcome": "ok"}',
        b'{"time": NaN, "feature": "chat", "outcome": "ok"}',
        b'{"feature": "chat", "outcome": "ok"}',
        b'{"time": 1, "outcome": "ok"}',
        b"[1, 2]",
        b'{"time": 1, "feature": "chat", "outcome": "' + b"x" * 9000 + b'"}',
    ],
)
def test_a_field_of_the_wrong_kind_is_corrupt(tmp_path: Path, line: bytes) -> None:
    report = UsageReport(tmp_path)
    report.path.write_bytes(line + b"\n")
    with pytest.raises(DecodeError, match="corrupt"):
        report.entries()


def test_text_fields_are_bounded_and_printable(tmp_path: Path) -> None:
    entry = ReportEntry(0, "chat", "ok", model="m\x1b[31m\u00e9" + "x" * 1000, relay="r\nr")
    assert entry.model.startswith("m?[31m?x")
    assert len(entry.model) == MAX_REPORT_TEXT
    assert entry.relay == "r?r"
    report = UsageReport(tmp_path)
    report.add(entry)
    assert report.entries() == [entry]


def test_the_model_is_read_from_its_card_or_the_openai_field() -> None:
    digest = "sha256:" + "ab" * 32
    card = {"name": "qwen", "size": "0.5B", "quantisation": "Q4_K_M", "digest": digest,
            "engine": "http://engine", "demonstration": False}  # fmt: skip
    assert model_of({"text": "...", "model_card": card}) == ("qwen", digest)
    assert model_of({"model": "qwen-chat", "model_card": card}) == ("qwen", digest)
    # A card that is not one (a digest that is not a SHA-256) is not believed: the plain name.
    assert model_of({"model": "qwen-chat", "model_card": {**card, "digest": "sha256:ab"}}) == (
        "qwen-chat", "")  # fmt: skip
    assert model_of({"model": "qwen-chat"}) == ("qwen-chat", "")
    assert model_of({"model": "plain", "model_card": {"name": 3, "digest": ["x"]}}) == ("plain", "")
    assert model_of({"model_card": "not an object", "summary": "qwen"}) == ("", "")
    assert model_of({"summary": "the model is gpt-5"}) == ("", "")  # never read from content
    assert model_of(["model"]) == ("", "")
    assert model_of({"model": "m\n" + "y" * 500})[0] == "m?" + "y" * (MAX_REPORT_TEXT - 2)


def test_a_streams_first_event_names_its_model() -> None:
    facts = UseFacts()
    facts.watch_stream("text/event-stream; charset=utf-8")
    event = b":" + b" " * 40 + b'\ndata: {"model": "tiny", "choices": []}\n\n'
    for piece in (event[:10], event[10:]):  # split anywhere: found once the event is whole
        facts.saw_piece(piece)
    assert (facts.model, facts.model_digest) == ("tiny", "")
    facts.saw_piece(b'data: {"model": "later", "choices": []}\n\n')
    assert facts.model == "tiny"  # the first event only
    for junk in (b"data: not json\n\n", b"\xff\xfe\n\n", b"data: [DONE]\n\n"):
        quiet = UseFacts()
        quiet.watch_stream("text/event-stream")
        quiet.saw_piece(junk)
        assert quiet.model == ""
    other = UseFacts()
    other.watch_stream("application/json")  # not events: nothing looked for
    other.saw_piece(b'data: {"model": "tiny"}\n\n')
    assert other.model == ""


def test_the_relay_is_named_without_credentials_or_query() -> None:
    assert relay_label("https://user:pw@relay.example:8443/ohttp?device=42#x") == (
        "https://relay.example:8443/ohttp"
    )
    assert relay_label("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert relay_label("http://[::1") == ""


# --- `privproc report` -----------------------------------------------------------------------


def _report_cli(state: Path, *args: str) -> str:
    done = privproc_cli("report", "--state", str(state), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_reads_old_and_new_lines_and_says_when_it_is_empty(tmp_path: Path) -> None:
    client = tmp_path / "client"
    client.mkdir()
    assert "No use yet" in _report_cli(tmp_path)
    assert json.loads(_report_cli(tmp_path, "--json")) == []
    report = UsageReport(client)
    report.path.write_bytes(OLD_LINE)
    report.add(_full(1, True))
    report.add(_full(2, False))
    report.add(ReportEntry(1_700_000_130, "chat", "failed: TransportError", relay="http://r"))
    shown = _report_cli(tmp_path)
    assert shown.startswith("Private Processing report")
    assert "2023-11-14 22:15 UTC  chat  ok" in shown  # the old line
    assert "not recorded" in shown
    assert "2023-11-14 22:13 UTC  summaries  ok" in shown
    for part in (
        "tiny-model, digest sha256:1212121212121212...",
        "log index 4 (proven in a checkpoint of 9 entries), source revision v1.2.3",
        "abababababababab...",
        "http://relay.example:8080/relay",
        "OHTTP key id 7",
        "issuer key of the epoch from 2023-11-14 00:00 UTC (log index 5)",
        "new: attested for this use",
        "reused: attested by an earlier use",
        "2023-11-14 22:15 UTC  chat  failed: TransportError",
        "none: the use failed before a session was opened",
    ):
        assert part in shown, part
    assert shown.count("not recorded") == 5  # the old line's model, relay, key, token, session
    assert shown.count("  none\n") == 4  # the failed use's release, measurement, key, token
    assert json.loads(_report_cli(tmp_path, "--json")) == [e.to_dict() for e in report.entries()]
    last = json.loads(_report_cli(tmp_path, "--json", "--last", "2"))
    assert last == [_full(2, False).to_dict(), report.entries()[-1].to_dict()]
    assert "22:15 UTC  chat  ok" not in _report_cli(tmp_path, "--last", "3")


# --- On a real system --------------------------------------------------------------------------

CANARY = "canary-report-5e2a: my passport number is X7654321"


class _Spending(PrivateProcessingClient):
    """The real client, keeping the tokens it spends (to find their key, and to search for them
    in the report)."""

    spent: list[str]


def test_each_use_names_what_served_it_and_nothing_it_carried(system: System) -> None:
    steps: list[str] = []
    # The device reaches the relay from 127.0.0.2: an address the report must not hold.
    http = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=300)
    config = ClientConfig.load(system.client_dir / "client.json")
    client = _Spending(config, system.client_dir, on_step=steps.append, http=http)
    client.spent = recording_tokens(client)
    report = UsageReport(system.client_dir)
    before, start = len(report.entries()), time.time()
    chat = [
        {"sender": "Ana", "time": "09:00", "text": f"here it is: {CANARY}"},
        {"sender": "Ben", "time": "09:01", "text": "thanks, I will book the flights today"},
        {"sender": "Ana", "time": "09:02", "text": "great, let's meet at the airport at 7pm"},
    ]
    client.summarize(chat)
    client.rewrite(f"please remember {CANARY}", "supportive")  # one the model passes the checks
    reply = client.chat("Say hello.", max_tokens=4, temperature=0)
    streamed = "".join(client.chat_stream("Say hello.", max_tokens=4, temperature=0))
    client.close()
    assert streamed
    entries = report.entries()[before:]
    assert [e.feature for e in entries] == ["summaries", "writing-help", "chat", "chat"]
    # What served them, each checked against its source rather than the client's own state.
    proof = ReleaseProof.from_json((system.system_dir / "release-proof.json").read_text())
    release = decode_entry(proof.entry)
    assert isinstance(release, EnclaveRelease)
    with OhttpClient() as ohttp:
        keys_document = ohttp.fetch_key_configs_document(client.config.keys_url)
    gateway_key = choose_config(decode_key_configs(keys_document))
    [token] = client.spent  # one session served all four uses: one token paid for it
    token_key_id = Token.decode(parse_authorization(token)).token_key_id
    log = TransparencyLog(system.system_dir / "log")
    try:
        logged = {i: decode_entry(log.entry(i)) for i in range(log.size)}
    finally:
        log.close()
    [(key_index, key_entry)] = [
        (i, e)
        for i, e in logged.items()
        if isinstance(e, IssuerTokenKey) and issuance.token_key_id(e.token_key) == token_key_id
    ]
    assert isinstance(key_entry, IssuerTokenKey)
    for entry in entries:
        assert entry.outcome == "ok"
        assert entry.measurement == release.measurement.hex()
        assert entry.log_index == proof.index
        assert entry.checkpoint_size is not None
        assert entry.checkpoint_size > proof.index
        assert entry.source_revision == release.source_revision
        assert entry.relay == client.config.relay_url
        assert entry.gateway_key_id == gateway_key.key_id
        assert entry.token_key_epoch == key_entry.not_before
        assert entry.token_key_log_index == key_index
        assert entry.time % 60 == 0
        assert start // 60 * 60 <= entry.time <= time.time()
    # The first use opened the attested session; the others reused it.
    assert [e.fresh_session for e in entries] == [True, False, False, False]
    assert sum("attested TLS session verified" in s for s in steps) == 1
    # The model: as the enclave named it (a chat answer and a stream always do; a task answer
    # does when it carries a model card).
    assert reply.model
    assert [e.model for e in entries[2:]] == [reply.model, reply.model]
    assert all(e.model in ("", reply.model) for e in entries[:2])
    # For an auditor every field; for a person every use, readably.
    dumped = json.loads(_report_cli(system.state, "--json", "--last", "4"))
    assert dumped == [e.to_dict() for e in entries]
    assert [ReportEntry.from_dict(d) for d in dumped] == entries
    shown = _report_cli(system.state, "--last", "4")
    assert shown.count("\n  measurement  ") == 4
    for part in (
        f"{datetime.datetime.fromtimestamp(entries[0].time, datetime.UTC):%Y-%m-%d %H:%M} UTC"
        "  summaries  ok",
        "  writing-help  ok",
        f"log index {proof.index} (proven in a checkpoint of ",
        f"source revision {release.source_revision}",
        release.measurement.hex()[:16] + "...",
        client.config.relay_url,
        f"OHTTP key id {gateway_key.key_id}",
        f"(log index {key_index})",
        "new: attested for this use",
        "reused: attested by an earlier use",
        f"model        {reply.model}",
    ):
        assert part in shown, part
    # Never content, a token, a key or the device's address.
    data = report.path.read_bytes()
    secrets_ = [CANARY.encode(), b"X7654321", b"passport", b"127.0.0.2"]
    secrets_ += [reply.text.encode()] if len(reply.text) >= 8 else []
    value = token.split('"')[1]
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    secrets_ += [value.encode(), raw[2:34].hex().encode(), token_key_id.hex().encode()]
    public = gateway_key.public_key.to_bytes()
    for key in (public, key_entry.token_key):
        secrets_ += [
            key.hex().encode(),
            base64.b64encode(key)[:24],
            base64.urlsafe_b64encode(key)[:24],
        ]
    secrets_.append((system.client_dir / "account.secret").read_text().strip().encode())
    for secret in secrets_:
        assert secret not in data, secret[:16]
