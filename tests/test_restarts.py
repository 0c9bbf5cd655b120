"""Restarts: the gateway keeps its logged OHTTP keys across restarts (its key file), and a client
keeps working across a gateway restart and an enclave crash (real processes)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from privproc.errors import PeerRejectedError
from privproc.net.commands import party_state
from privproc.net.http import bind, make_server, url_of
from privproc.ohttp.keys import KeyFileError, KeyRing
from privproc.parties.device.issuer import IssuerClient
from privproc.parties.device.ohttp import gateway_refused
from privproc.parties.device.private import NotLoggedError, PrivateProcessingClient
from privproc.parties.gateway.service import KEY_FILE, gateway_key_ring
from privproc.system import System
from privproc.tokens.issuance import WELL_KNOWN_DIRECTORY
from tests.servers import privproc_process

GATEWAY = ["serve", "gateway", "--host", "127.0.0.1", "--port", "0"]


# --- The key file (units) ----------------------------------------------------------------------


def test_a_key_ring_survives_its_file() -> None:
    ring = KeyRing.generate()
    old = ring.rotate()  # the first set stays live, no longer advertised
    again = KeyRing.from_file_bytes(ring.to_file_bytes())
    assert again.keys_document() == ring.keys_document()
    assert again.live_ids == ring.live_ids
    for key_id in old:
        kept = again.get(key_id)
        original = ring.get(key_id)
        assert kept is not None
        assert original is not None
        assert kept.private_key.to_bytes() == original.private_key.to_bytes()


def _doc() -> dict[str, object]:
    return json.loads(KeyRing.generate().to_file_bytes())  # type: ignore[no-any-return]


def _keys(doc: dict[str, object]) -> list[dict[str, object]]:
    keys = doc["keys"]
    assert isinstance(keys, list)
    return keys


def _mutations() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = [("not json", b"\x00garbage"), ("a list", b"[]")]

    def case(name: str, change: object) -> None:
        doc = _doc()
        change(doc)  # type: ignore[operator]
        out.append((name, json.dumps(doc).encode()))

    case("another format", lambda d: d.update(format="something-else"))
    case("another version", lambda d: d.update(version=2))
    case("no keys", lambda d: d.update(keys=[]))
    case("not base64", lambda d: _keys(d)[0].update(private_key="!!"))
    case("no private key", lambda d: _keys(d)[0].pop("private_key"))
    case("short private key", lambda d: _keys(d)[0].update(private_key="AAAA"))
    case("truncated config", lambda d: _keys(d)[0].update(config="AQAg"))
    case("advertised not a flag", lambda d: _keys(d)[0].update(advertised="yes"))
    case("nothing advertised", lambda d: [k.update(advertised=False) for k in _keys(d)])

    def swapped(d: dict[str, object]) -> None:  # X25519 private key under another X25519 config
        other = _keys(_doc())[0]
        _keys(d)[0]["private_key"] = other["private_key"]

    case("a private key of another config", swapped)
    case("a repeated key id", lambda d: _keys(d).append(_keys(d)[0]))
    return out


@pytest.mark.parametrize(("name", "data"), _mutations(), ids=[n for n, _ in _mutations()])
def test_a_malformed_key_file_is_refused(name: str, data: bytes) -> None:
    with pytest.raises(KeyFileError):
        KeyRing.from_file_bytes(data)


def test_the_key_file_is_private_and_kept(tmp_path: Path) -> None:
    first = gateway_key_ring(tmp_path / "gw")
    path = tmp_path / "gw" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert gateway_key_ring(tmp_path / "gw").keys_document() == first.keys_document()
    assert gateway_key_ring(None).keys_document() != first.keys_document()  # memory only
    assert [p.name for p in (tmp_path / "gw").iterdir()] == [KEY_FILE]  # no temporary left
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        gateway_key_ring(tmp_path / "gw")


# --- What a client is told to retry -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable", "says"),
    [
        (502, True, "could not reach the gateway; try again shortly"),
        (504, True, "could not reach the gateway; try again shortly"),
        (503, True, "unavailable; try again shortly"),
        (400, False, "could not decapsulate it; if its keys rotated, fetch them again"),
        (403, False, "refused it"),
    ],
)
def test_a_refused_encapsulated_request_says_whether_to_retry(
    status: int, retryable: bool, says: str
) -> None:
    refused = gateway_refused(status)
    assert refused.status == status
    assert refused.retryable is retryable
    assert says in str(refused)
    assert PeerRejectedError("x", status, retryable=not retryable).retryable is not retryable


# --- `privproc serve gateway --state` (real processes) -----------------------------------------


def test_the_gateways_keys_survive_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "state"
    state = party_state(root, "gateway")  # where --state ROOT keeps the gateway's files
    documents = []
    for _ in range(2):
        with privproc_process([*GATEWAY, "--state", str(root)], "ready gateway ", tmp_path) as gw:
            answer = httpx.get(gw.url)
            assert answer.headers["content-type"] == "application/ohttp-keys"
            documents.append(answer.content)
    assert documents[0] == documents[1]
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600
    with privproc_process(GATEWAY, "ready gateway ", tmp_path) as gw:  # no state: fresh keys
        assert httpx.get(gw.url).content != documents[0]


def _serve_fails(state: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "privproc.cli", *GATEWAY, "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "ready gateway" not in done.stdout
    return " ".join(done.stderr.split())


def test_a_corrupt_key_file_stops_the_gateway_with_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "state"
    state = party_state(root, "gateway")
    state.mkdir(parents=True)
    doc = _doc()
    _keys(doc)[0]["private_key"] = base64.b64encode(b"\x01" * 7).decode()
    fd = os.open(state / KEY_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(doc).encode())
    os.close(fd)
    message = _serve_fails(root)
    assert "key file" in message
    assert "KeyFileError" in message
    assert "entry 0" in message
    (state / KEY_FILE).write_bytes(KeyRing.generate().to_file_bytes())
    (state / KEY_FILE).chmod(0o640)
    assert "readable by others" in _serve_fails(root)


# --- A client across restarts (the whole system) -----------------------------------------------


def _models(client: PrivateProcessingClient) -> None:
    status, doc = client.call("GET", "/v1/models", None, feature="chat")
    assert status == 200
    assert doc["data"][0]["id"] == "SmolLM2-135M-Instruct"


def test_a_client_keeps_working_across_a_gateway_restart(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    try:
        _models(client)
        before = system.party("gateway").url
        keys = httpx.get(before).content
        for kill in (False, True):
            system.restart_party("gateway", kill=kill)
            assert system.party("gateway").url == before  # the same port: the relay's target
            assert httpx.get(before).content == keys  # the logged keys, still
            _models(client)  # its session is gone (404): the SDK opens a new one
            _models(client)
        # While the gateway is down, the relay answers 502: a typed error that says to retry.
        system.stop_party("gateway")
        client.retry_budget = 1.0  # tried again within a second, then the error itself
        with pytest.raises(PeerRejectedError, match="try again shortly") as refused:
            client.call("GET", "/v1/models", None, feature="chat")
        assert refused.value.status == 502
        assert refused.value.retryable
        system.restart_party("gateway")
        _models(client)
    finally:
        client.close()


def test_a_client_keeps_working_across_an_enclave_crash(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    try:
        _models(client)
        system.kill_party("enclave")  # SIGKILL: no clean shutdown
        system.start_enclave()
        _models(client)  # the lost session is retried once on a new one
        _models(client)
        enclave = system.restart_party("enclave", kill=True)  # the same, through restart_party
        assert enclave.name == "enclave"
        _models(client)
    finally:
        client.close()


# --- A party stopping mid-request --------------------------------------------------------------


async def _slow(request: Request) -> Response:
    request.app.state.entered.set()
    await asyncio.sleep(60)
    return Response(b"too late")


async def _stream(request: Request) -> Response:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"first piece"
        request.app.state.entered.set()
        await asyncio.sleep(60)
        yield b"never"

    return StreamingResponse(pieces())


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/slow", (503, "1")),
        ("/stream", "RemoteProtocolError"),  # begun: cut, never passed off as whole
    ],
)
def test_a_request_cut_by_a_stopping_server_gets_503_not_500(path: str, outcome: object) -> None:
    """uvicorn cancels what still runs when the graceful shutdown's time is up, and would answer
    500; our servers answer 503 with retry-after (the party is restarting, not broken)."""
    app = Starlette(routes=[Route("/slow", _slow), Route("/stream", _stream)])
    app.state.entered = threading.Event()
    sock = bind("127.0.0.1", 0)
    server = make_server(app, graceful_shutdown=1)
    loop = asyncio.new_event_loop()

    def run() -> None:
        loop.run_until_complete(server.serve(sockets=[sock]))
        loop.run_until_complete(asyncio.sleep(0.2))  # the closes it scheduled (a process exits)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    got: list[object] = []

    def call() -> None:
        try:
            with httpx.Client(timeout=30) as http:
                answer = http.get(url_of(sock) + path)
            got.append((answer.status_code, answer.headers.get("retry-after")))
        except httpx.HTTPError as exc:
            got.append(type(exc).__name__)

    caller = threading.Thread(target=call)
    caller.start()
    assert app.state.entered.wait(10)
    server.should_exit = True  # what SIGTERM does
    caller.join(20)
    thread.join(20)
    sock.close()
    loop.close()
    assert got == [outcome]


# --- A long-running system: the issuer's keys rotate --------------------------------------------


def test_the_issuers_new_keys_are_logged_so_clients_keep_fetching_tokens(tmp_path: Path) -> None:
    """The issuer makes a key an epoch, announced an epoch ahead; clients take only logged keys.
    Two epochs after the start, the issuer signs with a key the start did not log: a client
    refuses it (NotLoggedError) until the system logs the new keys, witnessed, as `up` does
    every minute. (2 s epochs here; a day by default.)"""
    system = System(tmp_path, epoch_seconds=2)
    config = system.start()
    try:
        client = PrivateProcessingClient.from_state(system.client_dir)
        try:
            # As `up` does while it serves (every epoch/4 here): a start slower than the first
            # keys' window (two 2 s epochs) finds the issuer's next key logged too.
            system.log_new_issuer_keys()
            assert client._token()  # a token under a logged key
            with IssuerClient(config.issuer_url) as issuer:
                logged = {k.token_key for k in issuer.key_set().keys}
                deadline = time.monotonic() + 30
                while issuer.directory().preferred(time.time()).token_key in logged:
                    assert time.monotonic() < deadline, "the issuer did not rotate its key"
                    time.sleep(0.2)
            client.wallet.path.unlink()  # the refill asks the issuer's current key
            # The CDN serves the issuer's new directory ahead of the log (as a CDN could): its
            # preferred key is not logged, so no token is asked for under it.
            cdn = system.system_dir / "cdn"
            directory = json.loads(httpx.get(config.issuer_url + WELL_KNOWN_DIRECTORY).content)
            directory["issuer-request-uri"] = config.issuer_url + directory["issuer-request-uri"]
            (cdn / WELL_KNOWN_DIRECTORY.lstrip("/")).write_text(json.dumps(directory))
            key_set = httpx.get(config.issuer_url + "/v1/token-keys").content
            (cdn / "v1" / "token-keys").write_bytes(key_set)
            with pytest.raises(NotLoggedError, match="not in the log"):
                client._token()
            assert system.log_new_issuer_keys() >= 1
            assert client._token()  # the same client, now with the key logged
            system.log_new_issuer_keys()
            logged_keys = [
                k.token_key for k in client._driver.run(client.path.logged.read()).token_keys
            ]
            assert len(logged_keys) == len(set(logged_keys))  # each key logged once
        finally:
            client.close()
    finally:
        system.stop()


def test_a_client_asking_as_the_issuers_key_changes_never_fails(tmp_path: Path) -> None:
    """Back-to-back token batches over several key changes (2 s epochs): whichever batch is under
    way when the issuer's epoch turns must still succeed (the key's grace, the client asking
    again with the new key). The system logs the new keys ahead of their use, as `up` does."""
    system = System(tmp_path, epoch_seconds=2, quota=100_000)
    system.start()
    try:
        client = PrivateProcessingClient.from_state(system.client_dir)
        epochs = set()
        try:
            deadline = time.monotonic() + 7  # three turns of the epoch, at least
            while time.monotonic() < deadline:
                system.log_new_issuer_keys()
                client.wallet.path.unlink(missing_ok=True)  # every call fetches a new batch
                epochs.add(int(time.time()) // 2)
                assert client._token()
        finally:
            client.close()
        assert len(epochs) >= 3
    finally:
        system.stop()


def test_a_directory_mirror_one_epoch_behind_still_serves(tmp_path: Path) -> None:
    """The CDN mirrors the issuer's directory when the system logs keys, so it can lag the issuer
    by up to a relog interval. One epoch after the start its copy still lists the start's current
    key first; that key no longer signs. The client takes the newest begun key the log holds
    live (the start's "next"), which the issuer signs with now."""
    system = System(tmp_path, epoch_seconds=4)
    system.start()
    try:
        # Mirror the issuer's directory just after an epoch turns (the start's own mirror may be
        # of the epoch before, if starting took a while), then wait for the next epoch's grace
        # to pass: the mirror is then exactly one epoch behind.
        while time.time() % 4 > 0.5:
            time.sleep(0.05)
        mirrored = int(time.time()) // 4
        system.log_new_issuer_keys()
        assert int(time.time()) // 4 == mirrored, "the machine was too slow to test"
        while time.time() < (mirrored + 1) * 4 + 1.5:  # the next epoch, its grace over
            time.sleep(0.05)
        client = PrivateProcessingClient.from_state(system.client_dir)
        try:
            assert client._token()  # no relog in between: the mirror is the start's
        finally:
            client.close()
    finally:
        system.stop()
