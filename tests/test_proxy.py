"""`privproc proxy` with the official OpenAI SDK, as apps use it: streams read to the end, streams
left half-way (a user pressing stop), every call after them answered, and Ctrl-C or SIGTERM
stopping the proxy within 2 s whatever it is doing (real processes on loopback)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from privproc.system import System
from tests.servers import Running, privproc_process

MODEL = "SmolLM2-135M-Instruct"
STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a long story about a lighthouse keeper."}
]
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]
STOP_WITHIN = 2.0


@contextmanager
def _proxy(system: System, tmp_path: Path) -> Iterator[Running]:
    args = ["proxy", "--port", "0", "--state", str(system.state)]
    with privproc_process(args, "ready proxy ", tmp_path) as proxy:
        yield proxy


def _sdk(proxy: Running, timeout: float = 60.0) -> openai.OpenAI:
    # No retries: a call that hangs or fails must show here, not be hidden by the SDK's retry.
    return openai.OpenAI(base_url=proxy.url, api_key="unused", timeout=timeout, max_retries=0)


def _cut_half_way(ai: openai.OpenAI) -> int:
    """A streamed completion left after a few pieces, as an app does when its user presses stop:
    out of the loop, the stream closed. Returns how many pieces were read."""
    stream = ai.chat.completions.create(
        model=MODEL, messages=STORY, stream=True, max_tokens=200, temperature=0
    )
    read = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            read += 1
        if read == 5:
            break
    stream.close()
    return read


def _stop(proxy: Running, sig: signal.Signals) -> float:
    """Send `sig` once; how long the proxy took to exit (fails past twice the allowance)."""
    started = time.monotonic()
    proxy.process.send_signal(sig)
    try:
        proxy.process.wait(2 * STOP_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the proxy did not stop within {2 * STOP_WITHIN} s of one {sig.name}")
    return time.monotonic() - started


def test_every_call_is_answered_after_a_stream_the_client_left(
    system: System, tmp_path: Path
) -> None:
    with _proxy(system, tmp_path) as proxy:
        ai = _sdk(proxy)
        stream = ai.chat.completions.create(
            model=MODEL, messages=QUESTION, stream=True, temperature=0
        )
        whole = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "paris" in whole.lower()
        assert [m.id for m in ai.models.list()] == [MODEL]
        done = ai.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
        assert "paris" in (done.choices[0].message.content or "").lower()
        assert _cut_half_way(ai) == 5
        # The calls after the cut: answered at once, not after a timeout.
        quick = _sdk(proxy, timeout=20.0)
        assert [m.id for m in quick.models.list()] == [MODEL]
        done = quick.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
        assert "paris" in (done.choices[0].message.content or "").lower()
        assert _cut_half_way(quick) == 5
        stream = quick.chat.completions.create(
            model=MODEL, messages=QUESTION, stream=True, temperature=0
        )
        whole = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "paris" in whole.lower()
        assert _stop(proxy, signal.SIGINT) < STOP_WITHIN
        assert proxy.process.returncode == 0


def _streaming_slowly(proxy: Running, done: threading.Event) -> threading.Thread:
    """A client reading a long stream slowly in the background, until `done`; returns once the
    stream's first piece has arrived."""
    started = threading.Event()

    def read() -> None:
        try:
            stream = _sdk(proxy).chat.completions.create(
                model=MODEL, messages=STORY, stream=True, max_tokens=300
            )
            for _ in stream:
                started.set()
                if done.wait(0.2):
                    return
        except Exception:
            pass  # the proxy is stopped under it: any error is expected
        finally:
            started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(30), "the stream did not begin"
    return reader


@pytest.mark.parametrize(
    ("state", "sig"),
    [
        ("idle", signal.SIGINT),
        ("streaming", signal.SIGINT),
        ("after a cut stream", signal.SIGINT),
        ("calls queued", signal.SIGINT),
        ("calls queued", signal.SIGTERM),
    ],
    ids=["idle", "streaming", "after-a-cut-stream", "calls-queued", "calls-queued-sigterm"],
)
def test_one_signal_stops_the_proxy_in_every_state(
    system: System, tmp_path: Path, state: str, sig: signal.Signals
) -> None:
    done = threading.Event()
    with _proxy(system, tmp_path) as proxy:
        waiting: list[threading.Thread] = []
        if state == "streaming":
            waiting.append(_streaming_slowly(proxy, done))
        elif state == "after a cut stream":
            assert _cut_half_way(_sdk(proxy)) == 5
        elif state == "calls queued":
            waiting.append(_streaming_slowly(proxy, done))
            for _ in range(3):  # each waits for the stream's session

                def call() -> None:
                    with contextlib.suppress(Exception):  # stopped under it
                        _sdk(proxy).models.list()

                waiting.append(threading.Thread(target=call, daemon=True))
                waiting[-1].start()
            time.sleep(0.5)
        assert _stop(proxy, sig) < STOP_WITHIN
        assert proxy.process.returncode == 0
        done.set()
        for thread in waiting:
            thread.join(5)
