"""Chunked Oblivious HTTP at the gateway and through the relay, real servers on loopback: the
round trip, requests sealed in several chunks, and every malformed chunked request answered with
the same bare 400 as a malformed plain one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from privproc.ohttp import bhttp
from privproc.ohttp.chunked import (
    MEDIA_TYPE_CHUNKED_REQUEST,
    MEDIA_TYPE_CHUNKED_RESPONSE,
    ChunkedRequestEncoder,
)
from privproc.ohttp.keys import KeyConfig
from privproc.parties.device.ohttp import OhttpClient, choose_config
from tests.conftest import Running
from tests.servers import privproc_process

KEYS = "/.well-known/ohttp-gateway"
CANARY = "canary-chunked-5d2e: the safe code is 0451"


def _echo(gw: Running) -> str:
    return gw.url.removesuffix(KEYS) + "/gateway-echo"


def _config(gw: Running) -> KeyConfig:
    with OhttpClient() as client:
        return choose_config(client.fetch_key_configs(gw.url))


def _inner(size: int = 0) -> bytes:
    content = CANARY.encode() + bytes(size)
    request = bhttp.Request.build("POST", "https://enclave.invalid/v1/echo", content=content)
    return bhttp.encode_request(request)


def _sealed(config: KeyConfig, inner: bytes, pieces: int) -> tuple[bytes, ChunkedRequestEncoder]:
    encoder = ChunkedRequestEncoder(config)
    step = max(1, len(inner) // pieces)
    body = encoder.header()
    for start in range(0, len(inner), step):
        body += encoder.chunk(inner[start : start + step])
    return body + encoder.chunk(b"", final=True), encoder


def _post(url: str, body: bytes, kind: str = MEDIA_TYPE_CHUNKED_REQUEST) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": kind})


@pytest.mark.parametrize("pieces", [1, 3, 40])
def test_a_chunked_round_trip(conformance_gateway: Running, pieces: int) -> None:
    config = _config(conformance_gateway)
    inner = _inner(50_000)  # answered in several 16 KiB chunks
    body, encoder = _sealed(config, inner, pieces)
    answer = _post(_echo(conformance_gateway), body)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == MEDIA_TYPE_CHUNKED_RESPONSE
    assert answer.headers["cache-control"] == "no-store"
    decoder = encoder.response_decoder()
    chunks = decoder.receive(answer.content, end_of_stream=True)
    assert decoder.finished
    assert len(chunks) > 3
    assert b"".join(chunks) == inner
    # The client's own streaming call gives the same pieces, authenticated to the end.
    with OhttpClient() as client:
        assert b"".join(client.send_chunked(_echo(conformance_gateway), config, inner)) == inner


def test_every_bad_chunked_request_gets_the_same_bare_400(conformance_gateway: Running) -> None:
    config = _config(conformance_gateway)
    good, _ = _sealed(config, _inner(), 3)
    other, _ = _sealed(config, _inner(), 3)

    def flip(i: int) -> bytes:
        b = bytearray(good)
        b[i] ^= 0x01
        return bytes(b)

    header = 7 + config.kem.n_enc
    variants = {
        "empty": b"",
        "header only": good[:7],
        "no final chunk": good[: len(good) - 1 - 16 - 1],
        "truncated final chunk": good[:-1],
        "flipped header bit": flip(3),
        "flipped enc bit": flip(8),
        "flipped chunk bit": flip(header + 3),
        "flipped final tag bit": flip(len(good) - 1),
        "wrong key id": bytes([(good[0] + 1) % 256]) + good[1:],
        "chunks of another request": good[:header] + other[header:],
        "trailing bytes": good + b"\x00",
        "garbage": bytes(range(256)) * 2,
    }
    answers = set()
    for name, body in variants.items():
        answer = _post(_echo(conformance_gateway), body)
        assert answer.status_code == 400, name
        answers.add((answer.content, answer.headers.get("content-type")))
    plain = _post(_echo(conformance_gateway), b"garbage", "message/ohttp-req")
    assert answers == {(plain.content, plain.headers.get("content-type"))} == {(b"", None)}
    assert _post(_echo(conformance_gateway), good, "message/ohttp-chunked-res").status_code == 415


def test_the_relay_streams_chunked_answers_and_strips_the_client(
    conformance_gateway: Running, tmp_path: Path
) -> None:
    args = ["serve", "relay", "--port", "0", "--gateway", _echo(conformance_gateway)]
    with privproc_process(args, "ready relay ", tmp_path) as relay:
        config = _config(conformance_gateway)
        inner = _inner(40_000)
        with OhttpClient() as client:
            assert b"".join(client.send_chunked(relay.url, config, inner)) == inner
        # A chunked request the gateway refuses: its status comes back, with nothing else.
        refused = httpx.post(
            relay.url,
            content=b"garbage",
            headers={"content-type": MEDIA_TYPE_CHUNKED_REQUEST, "user-agent": "Alice/1"},
        )
        assert (refused.status_code, refused.content) == (400, b"")
        assert CANARY not in relay.logs()
