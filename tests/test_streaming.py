"""Streamed answers end to end (chunked OHTTP through the real relay and gateway, the enclave's
TLS records forwarded as the model produces them), and streams cut on the way: by a relay, on
the gateway's side, between the gateway and the enclave. A cut stream must be an error at the
client, whatever arrived before it; never a short answer that passes for a whole one."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc.errors import StreamTruncatedError
from privproc.net.http import StreamAborted, StreamedBody
from privproc.ohttp.chunked import MEDIA_TYPE_CHUNKED_REQUEST, MEDIA_TYPE_CHUNKED_RESPONSE
from privproc.parties.device.controls import AIDisabledError, Settings, UsageReport
from privproc.parties.device.private import ClientConfig, PrivateProcessingClient
from privproc.system import System
from tests.operator_link import Link, enclave_behind
from tests.servers import app_in_thread

LONG = "Write a long story about a red kite and a windy beach."
FRANCE = "What is the capital of France?"  # asked greedily (temperature 0): not the sampler's luck


def _party_url(system: System, name: str) -> str:
    return next(p.url for p in system.parties if p.name == name)


def _client_via(system: System, relay_url: str) -> PrivateProcessingClient:
    """The real client, its requests sent to `relay_url` instead of the genuine relay."""
    config = dataclasses.replace(
        ClientConfig.load(system.client_dir / "client.json"), relay_url=relay_url
    )
    return PrivateProcessingClient(config, system.client_dir)


def _read(stream: Iterator[str], into: list[str]) -> None:
    for delta in stream:
        into.append(delta)


def test_a_streamed_answer_arrives_piece_by_piece_and_whole(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    pieces = list(client.chat_stream(FRANCE, temperature=0))
    assert len(pieces) > 3
    assert "paris" in "".join(pieces).lower()
    assert UsageReport(system.client_dir).entries()[-1].outcome == "ok"
    # The session carries on after a stream: a plain request and another stream on it.
    assert "paris" in client.chat(FRANCE, temperature=0).text.lower()
    assert list(client.chat_stream("Say hello.", max_tokens=8))
    # Reading part of a stream and stopping is allowed; the next request gets a new session.
    partial = client.chat_stream(LONG, max_tokens=200)
    assert next(partial)
    assert next(partial)
    partial.close()
    assert "paris" in client.chat(FRANCE, temperature=0).text.lower()
    client.close()


def test_a_disabled_feature_streams_nothing(system: System) -> None:
    relay_log = next(p for p in system.parties if p.name == "relay")
    forwarded = relay_log.logs().count('"forward"')
    controls = Settings.load(system.client_dir)
    controls.set_chat_privacy("private-chat", True)
    controls.save()
    try:
        client = PrivateProcessingClient.from_state(system.client_dir)
        with pytest.raises(AIDisabledError, match="Advanced Chat Privacy"):
            client.chat_stream("hello", chat_id="private-chat")
        client.close()
    finally:
        controls.set_chat_privacy("private-chat", False)
        controls.save()
    assert relay_log.logs().count('"forward"') == forwarded


def _cutting_relay(gateway_url: str, keep: int, abrupt: bool) -> Starlette:
    """A relay that forwards faithfully, except that it passes on only the first `keep` bytes of
    a streamed answer, then ends its answer cleanly or (`abrupt`) drops the connection."""

    async def relay(request: Request) -> Response:
        body = await request.body()
        kind = request.headers["content-type"]
        http = httpx.AsyncClient(timeout=60)
        if kind != MEDIA_TYPE_CHUNKED_REQUEST:
            answer = await http.post(gateway_url, content=body, headers={"content-type": kind})
            await http.aclose()
            return Response(
                answer.content, answer.status_code, media_type=answer.headers["content-type"]
            )

        async def pieces() -> AsyncIterator[bytes]:
            sent = 0
            try:
                headers = {"content-type": kind}
                async with http.stream(
                    "POST", gateway_url, content=body, headers=headers
                ) as answer:
                    async for piece in answer.aiter_raw():
                        if sent + len(piece) >= keep:
                            yield piece[: keep - sent]
                            if abrupt:
                                raise StreamAborted
                            return
                        sent += len(piece)
                        yield piece
            finally:
                await http.aclose()

        return StreamedBody(pieces(), MEDIA_TYPE_CHUNKED_RESPONSE, {})

    return Starlette(routes=[Route("/", relay, methods=["POST"])])


@pytest.mark.parametrize("abrupt", [False, True], ids=["ended", "dropped"])
@pytest.mark.parametrize("keep", [0, 40, 1500])
def test_a_stream_cut_by_the_relay_is_an_error(system: System, keep: int, abrupt: bool) -> None:
    app = _cutting_relay(_party_url(system, "gateway"), keep, abrupt)
    with app_in_thread(app) as relay:
        client = _client_via(system, relay)
        received: list[str] = []
        with pytest.raises(StreamTruncatedError, match="not the whole answer"):
            _read(client.chat_stream(LONG, max_tokens=300), received)
        assert UsageReport(system.client_dir).entries()[-1].outcome == (
            "failed: StreamTruncatedError"
        )
        # The client drops the cut session; its next request works (through the real relay).
        client.config = dataclasses.replace(
            client.config, relay_url=ClientConfig.load(system.client_dir / "client.json").relay_url
        )
        assert "paris" in client.chat(FRANCE, temperature=0).text.lower()
        client.close()
    if keep == 1500:
        assert received  # pieces arrived before the cut, and still it is no answer


def test_the_openai_sdk_sees_a_cut_stream_as_an_error(system: System) -> None:
    import openai

    from privproc.parties.device.openai import PrivateTransport

    app = _cutting_relay(_party_url(system, "gateway"), 1500, abrupt=False)
    with app_in_thread(app) as relay:
        ai = openai.OpenAI(
            base_url="http://private.invalid/v1",
            api_key="unused",
            http_client=cast(
                Any, httpx.Client(transport=PrivateTransport(_client_via(system, relay)))
            ),
        )
        stream = ai.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "user", "content": LONG}],
            max_tokens=300,
            stream=True,
        )
        # What the SDK reports for a connection cut mid-answer; the cause says what happened.
        with pytest.raises(openai.APIConnectionError) as err:
            for _ in stream:
                pass
        cause = err.value.__cause__
        assert isinstance(cause, httpx.RemoteProtocolError)
        assert isinstance(cause.__cause__, StreamTruncatedError)


@pytest.mark.parametrize(
    ("then", "reported"),
    [
        ("end", "ended before its authenticated end"),  # the gateway's OHTTP end was genuine
        ("drop", "broke off"),  # the gateway cut its own answer rather than complete it
    ],
)
def test_a_stream_cut_behind_the_gateway_is_an_error(
    system: System, then: str, reported: str
) -> None:
    with enclave_behind(system, Link(after=6, then=then)):
        client = PrivateProcessingClient.from_state(system.client_dir)
        assert "paris" in client.chat(FRANCE, temperature=0).text.lower()  # genuine
        received: list[str] = []
        with pytest.raises(StreamTruncatedError, match=reported):
            _read(client.chat_stream(LONG, max_tokens=300), received)
        assert received  # the first pieces were real, and still they are no answer
        client.close()


def test_pieces_reach_the_client_while_the_rest_is_still_on_its_way(system: System) -> None:
    """Nobody on the path buffers the answer: the first pieces reach the client while the link
    behind the gateway still holds the rest back."""
    link = Link(after=6, then="wait")
    gate = link.gate
    with enclave_behind(system, link):
        client = PrivateProcessingClient.from_state(system.client_dir)
        stream = client.chat_stream(LONG, max_tokens=120)
        first = next(stream)
        assert first
        assert not gate.passed.is_set()  # it came before the rest was even sent on
        gate.open.set()
        rest = list(stream)
        assert rest  # and then the whole answer, complete
        assert UsageReport(system.client_dir).entries()[-1].outcome == "ok"
        client.close()


def test_the_enclaves_stream_endpoint_refuses_what_it_does_not_know(system: System) -> None:
    enclave = _party_url(system, "enclave").rstrip("/")
    unknown = f"{enclave}/sessions/{'ab' * 16}/stream"
    assert httpx.post(unknown, content=b"\x17\x03\x03").status_code == 404
    assert httpx.put(unknown, content=b"").status_code == 405  # sessions start unstreamed
    assert httpx.post(f"{enclave}/sessions/xyz/stream", content=b"").status_code == 404
