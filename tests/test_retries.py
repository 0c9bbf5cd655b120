"""The SDK tries again what is worth trying again, as a careful client should: after the party's
Retry-After when it gives one, else after a jittered backoff that doubles; within a bounded total
time; never what is not retryable; and it says so in --verbose. A stand-in for a relay having a
bad moment sits in front of the real relay (every other party is real)."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc.errors import PeerRejectedError, parse_retry_after
from privproc.parties.device.path import RETRY_FIRST
from privproc.parties.device.private import PrivateProcessingClient
from privproc.system import System
from tests.servers import app_in_thread


class Flaky:
    """A relay in front of the real one that answers `status` (with `retry_after`, if given) to
    the first `failures` requests, then passes requests on."""

    def __init__(self, relay: str, failures: int, status: int, retry_after: str | None) -> None:
        self.relay, self.failures, self.status = relay, failures, status
        self.retry_after = retry_after
        self.times: list[float] = []

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            self.times.append(time.monotonic())
            if len(self.times) <= self.failures:
                headers = {"retry-after": self.retry_after} if self.retry_after else {}
                return Response(status_code=self.status, headers=headers)
            async with httpx.AsyncClient(timeout=60) as http:
                answer = await http.post(
                    self.relay, content=await request.body(),
                    headers={"content-type": request.headers["content-type"],
                             "accept": request.headers.get("accept", "")},
                )  # fmt: skip
            kind = answer.headers.get("content-type", "")
            return Response(answer.content, answer.status_code, media_type=kind)

        return Starlette(routes=[Route("/", forward, methods=["POST"])])


@contextmanager
def _device_behind(system: System, flaky: Flaky, tmp_path: Path) -> Iterator[Path]:
    device = tmp_path / "device"
    shutil.copytree(system.client_dir, device)
    with app_in_thread(flaky.app()) as url:
        doc = json.loads((device / "client.json").read_text())
        doc["relay_url"] = url + "/"
        (device / "client.json").write_text(json.dumps(doc))
        yield device


def _chat_behind(system: System, flaky: Flaky, tmp_path: Path) -> tuple[list[str], list[float]]:
    """A chat that succeeds behind `flaky`; (its --verbose steps, the waits between its tries)."""
    steps: list[str] = []
    with _device_behind(system, flaky, tmp_path) as device:
        client = PrivateProcessingClient.from_state(device, on_step=steps.append)
        try:
            assert client.chat("Say hello.", max_tokens=8).text
        finally:
            client.close()
    tries = flaky.times[: flaky.failures + 1]
    return steps, [b - a for a, b in itertools.pairwise(tries)]


def test_a_retry_after_is_honoured(system: System, tmp_path: Path) -> None:
    steps, waits = _chat_behind(system, Flaky(system.party("relay").url, 2, 503, "1"), tmp_path)
    assert len(waits) == 2
    assert all(wait >= 0.95 for wait in waits), waits  # as long as the relay asked
    assert sum("trying again in 1.0 s" in step for step in steps) == 2


def test_without_a_retry_after_the_backoff_doubles_with_jitter(
    system: System, tmp_path: Path
) -> None:
    _, waits = _chat_behind(system, Flaky(system.party("relay").url, 3, 502, None), tmp_path)
    assert len(waits) == 3
    for n, wait in enumerate(waits):  # each the backoff x0.5 to x1.5 (and the request)
        assert 0.5 * RETRY_FIRST * 2**n <= wait <= 1.5 * RETRY_FIRST * 2**n + 0.5, (n, waits)


def test_retrying_stops_at_its_budget_and_never_retries_a_refusal(
    system: System, tmp_path: Path
) -> None:
    flaky = Flaky(system.party("relay").url, 1000, 503, None)
    with _device_behind(system, flaky, tmp_path) as device:
        client = PrivateProcessingClient.from_state(device)
        client.retry_budget = 2.0
        began = time.monotonic()
        with pytest.raises(PeerRejectedError) as unavailable:
            client.chat("Say hello.")
        assert time.monotonic() - began <= 2.0 + 1.0  # the budget, and the last request
        assert unavailable.value.retryable
        assert 3 <= len(flaky.times) <= 10
        client.close()
    refusing = Flaky(system.party("relay").url, 1000, 403, "1")
    with _device_behind(system, refusing, tmp_path / "2") as device:
        client = PrivateProcessingClient.from_state(device)
        with pytest.raises(PeerRejectedError) as refused:
            client.chat("Say hello.")
        assert not refused.value.retryable
        assert len(refusing.times) == 1  # asked once: a refusal is not tried again
        client.close()


def test_retry_after_values() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("86400") == 60.0  # bounded
    # Not delta-seconds: ignored (the backoff applies), never an untyped error. "\xb2" is what a
    # header byte 0xB2 decodes to; str.isdigit() takes it, int() does not.
    for odd in (None, "", "-1", "1.5", "+3", "Wed, 21 Oct 2015 07:28:00 GMT", "9" * 30,
                "\xb2", "\u0663", "1\x00"):  # fmt: skip
        assert parse_retry_after(odd) is None, repr(odd)
