"""Incognito chat (issue 16): a multi-turn conversation that lives only on the device, is sent
whole each turn, and is forgotten when it ends; the enclave keeps nothing between turns.

Every party a real process on loopback, the embedded model asked greedily (temperature 0), so its
answers are the same on every run: told a code word, it says it back when asked in the same
conversation, and not in a new one. The enclave's own count of prompt tokens shows what it was
sent. The last test scans every file the parties and the device wrote for the code words.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from privproc.api import MAX_PROMPT_CHARS
from privproc.errors import StreamTruncatedError, UsageError
from privproc.parties.device.controls import Settings, UsageReport
from privproc.parties.device.incognito import ChatTooLongError
from privproc.parties.device.private import ClientConfig, PrivateProcessingClient
from privproc.system import System
from tests.servers import app_in_thread
from tests.test_streaming import LONG, _client_via, _cutting_relay

QUESTION = "What is the code word?"
# Told one of these, the model (greedy) answers QUESTION with it; asked alone, with another.
WORDS = ["quokkaberry", "zephyrlime", "marmalade"]


def _teach(word: str) -> str:
    return f"Remember this code word: {word}."


def _uses(system: System) -> int:
    return len(UsageReport(system.client_dir).entries())


def _forwarded(system: System) -> int:
    """How many requests the relay has forwarded: what left the device."""
    return system.party("relay").logs().count('"forward"')


def test_a_conversation_is_sent_whole_each_turn_and_forgotten(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    lone = client.chat(QUESTION, temperature=0, max_tokens=40)  # no history: what it knows alone
    assert WORDS[0] not in lone.text.lower()
    before = _uses(system)
    with client.incognito_chat(temperature=0, max_tokens=40) as conversation:
        first = conversation.send(_teach(WORDS[0]))
        second = conversation.send(QUESTION)
        # The second turn carried the first, whole: the enclave counted its tokens.
        assert second.usage.prompt_tokens > (
            first.usage.prompt_tokens + first.usage.completion_tokens
        )
        assert WORDS[0] in second.text.lower()
        stream = conversation.stream("Say it once more.")
        again = "".join(stream)
        assert stream.complete
        assert stream.finish_reason in ("stop", "length")
        assert conversation.turns == 3
        history = conversation.history()
        assert [m["role"] for m in history] == ["user", "assistant"] * 3
        assert history[0]["content"] == _teach(WORDS[0])
        assert history[3]["content"] == second.text
        assert history[5]["content"] == again
        conversation.new()
        assert (conversation.turns, conversation.history(), conversation.chars) == (0, [], 0)
        fresh = conversation.send(QUESTION)
        # After new(), the turn is sent alone: exactly what a request without history is.
        assert fresh.usage.prompt_tokens == lone.usage.prompt_tokens
        assert fresh.text == lone.text
        assert WORDS[0] not in fresh.text.lower()
    assert conversation.closed
    assert conversation.turns == 0
    with pytest.raises(UsageError, match="has ended"):
        conversation.send(QUESTION)
    client.close()
    # Each turn was one private request, in the report like any chat, without content.
    entries = UsageReport(system.client_dir).entries()[before:]
    assert [(e.feature, e.outcome) for e in entries] == [("chat", "ok")] * 4
    assert all(len(bytes.fromhex(e.measurement)) == 48 for e in entries)
    assert WORDS[0] not in (system.client_dir / "report.jsonl").read_text()


def test_a_long_conversation_forgets_its_oldest_exchanges_or_refuses(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    by_turns = client.incognito_chat(max_turns=2, temperature=0, max_tokens=8)
    for n in ("one", "two", "three"):
        by_turns.send(f"Say {n}.")
    assert by_turns.dropped == 1
    assert by_turns.turns == 2
    assert [m["content"] for m in by_turns.history()[::2]] == ["Say two.", "Say three."]
    by_chars = client.incognito_chat(max_chars=400, temperature=0, max_tokens=8)
    by_chars.send("a " * 100)
    by_chars.send("b " * 50)
    assert by_chars.dropped == 0
    assert by_chars.turns == 2
    by_chars.send("c " * 100)  # the first exchange no longer fits beside it
    assert by_chars.dropped == 1
    assert [m["content"] for m in by_chars.history()[::2]] == ["b " * 50, "c " * 100]

    # Refused before anything leaves the device: the report and the relay see nothing.
    uses, forwarded = _uses(system), _forwarded(system)
    strict = client.incognito_chat(max_chars=400, on_overflow="refuse", max_tokens=8)
    strict.send("a " * 100)
    uses, forwarded = uses + 1, _forwarded(system)
    held = strict.history()
    with pytest.raises(ChatTooLongError, match=r"this chat is full .* start over with new"):
        strict.send("c " * 100)
    assert strict.history() == held  # refused, and nothing forgotten
    with pytest.raises(UsageError, match="one turn sends at most 400"):
        strict.send("x" * 401)
    for empty in ("", "  \n "):
        with pytest.raises(UsageError, match="empty message"):
            strict.send(empty)
    with pytest.raises(UsageError, match="empty message"):
        strict.stream(" ")
    assert (_uses(system), _forwarded(system)) == (uses, forwarded)
    strict.new()
    strict.send("c " * 100)  # started over, it fits again
    assert strict.turns == 1
    for bad in ({"max_chars": MAX_PROMPT_CHARS + 1}, {"max_turns": 0}, {"max_tokens": 513},
                {"on_overflow": "wrap"}, {"system": "s" * 8_000}):  # fmt: skip
        with pytest.raises(UsageError):
            client.incognito_chat(**bad)
    misspelt: Any = {"max_turn": 3}
    with pytest.raises(UsageError, match=r"no option max_turn$"):
        client.incognito_chat(**misspelt)
    client.close()


def test_a_stopped_or_cut_answer_is_not_kept(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    with client.incognito_chat(temperature=0, max_tokens=40) as conversation:
        conversation.send(_teach(WORDS[1]))
        held = conversation.history()
        stopped = conversation.stream(LONG, max_tokens=200)
        assert next(stopped)
        stopped.close()
        assert not stopped.complete
        assert conversation.history() == held  # neither the message nor half an answer
        assert UsageReport(system.client_dir).entries()[-1].outcome == "stopped"
        # A new turn while a stream is open stops that stream: it is not kept either.
        abandoned = conversation.stream(LONG, max_tokens=200)
        assert next(abandoned)
        recalled = "".join(conversation.stream(QUESTION))
        assert not abandoned.complete
        assert WORDS[1] in recalled.lower()
        assert [m["content"] for m in conversation.history()[::2]] == [_teach(WORDS[1]), QUESTION]

    # A relay cuts the streamed answer on the way: an error, and the conversation is unchanged.
    with app_in_thread(_cutting_relay(system.party("gateway").url, 1500, False)) as relay:
        cut_client = _client_via(system, relay)
        with cut_client.incognito_chat(temperature=0, max_tokens=40) as conversation:
            conversation.send(_teach(WORDS[1]))  # whole answers pass this relay
            held = conversation.history()
            received: list[str] = []
            cut = conversation.stream(LONG, max_tokens=300)
            with pytest.raises(StreamTruncatedError, match="not the whole answer"):
                received.extend(cut)
            assert received  # pieces came, and still no partial answer is kept
            assert conversation.history() == held
            cut_client.config = dataclasses.replace(  # back through the genuine relay
                cut_client.config,
                relay_url=ClientConfig.load(system.client_dir / "client.json").relay_url,
            )
            assert WORDS[1] in "".join(conversation.stream(QUESTION)).lower()
            assert conversation.turns == 2
        cut_client.close()
    client.close()


def test_the_async_conversation(system: System) -> None:
    from privproc.parties.device.aio import AsyncPrivateProcessingClient

    async def run() -> None:
        async with AsyncPrivateProcessingClient.from_state(system.client_dir) as client:
            async with client.incognito_chat(temperature=0, max_tokens=40) as conversation:
                await conversation.send(_teach(WORDS[2]))
                recalled = "".join([p async for p in conversation.stream(QUESTION)])
                assert WORDS[2] in recalled.lower()
                assert conversation.turns == 2
                stopped = conversation.stream(LONG, max_tokens=200)
                assert await anext(stopped)
                await stopped.aclose()
                assert conversation.turns == 2  # a stopped answer is not kept
                conversation.new()
                fresh = await conversation.send(QUESTION)
                assert WORDS[2] not in fresh.text.lower()
                assert conversation.turns == 1
            assert conversation.closed
            assert conversation.turns == 0
            with pytest.raises(UsageError, match="has ended"):
                await conversation.send(QUESTION)

    asyncio.run(run())


def _chat_cli(
    system: System, home: Path, lines: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`privproc chat ARGS` fed `lines` on its standard input, in a fresh home directory."""
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "privproc.cli", "chat", *args, "--state", str(system.state)],
        input=lines, capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip


def test_the_interactive_chat(system: System, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    lone = PrivateProcessingClient.from_state(system.client_dir)
    alone = lone.chat(QUESTION, temperature=0).text  # what a conversation without history gets
    lone.close()
    uses = _uses(system)
    lines = (
        f"{_teach(WORDS[1])}\n"
        "\n"  # an empty line sends nothing
        "   \n"
        "/bogus\n"
        f"{QUESTION}\n"
        "/new\n"
        f"{QUESTION}\n"
        "/quit\n"
        "never sent\n"
    )
    done = _chat_cli(system, home, lines, "--temperature", "0")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    err = done.stderr
    assert err.startswith("incognito chat: nothing is kept.")
    assert "/new starts over, /quit or Ctrl-D ends" in err
    assert "unknown command /bogus: /new starts over, /quit ends" in err
    assert "new chat: the previous conversation is forgotten" in err
    assert err.rstrip().endswith("chat ended: it is forgotten")
    # The second message was sent with the first: its answer names the word; after /new, the
    # same question is sent alone and gets what a request without history gets.
    out = done.stdout.rstrip()
    assert out.endswith(alone.rstrip())
    assert WORDS[1] not in alone.lower()
    assert f'the code word is "{WORDS[1]}"' in out[: len(out) - len(alone)].lower()
    # Three messages, three private requests: the empty lines, /bogus and what followed /quit
    # sent nothing.
    entries = UsageReport(system.client_dir).entries()[uses:]
    assert [(e.feature, e.outcome) for e in entries] == [("chat", "ok")] * 3
    # The device kept nothing: no file in its home (no line-editing history) or its state.
    for root in (home, system.client_dir):
        for path in (p for p in root.rglob("*") if p.is_file()):
            assert WORDS[1].encode() not in path.read_bytes(), path


def test_the_interactive_chat_refuses_what_it_cannot_send(system: System, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    filler = "word " * 700  # 3,500 characters: two fit in the 8,000 a turn sends, three do not
    lines = (
        "x" * 20_000 + "\n"  # longer than a line may be
        + "y" * 9_000 + "\n"  # a line, but more than one turn may send
        + "/help\n"
        + "//help is not a command\n"  # sent, as "/help is not a command"
        + f"{filler}1\n{filler}2\n{filler}3\n"
    )  # fmt: skip
    uses = _uses(system)
    done = _chat_cli(system, home, lines, "--max-tokens", "4", "--no-stream")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "that line is longer than 16000 characters: not sent" in done.stderr
    assert (
        "error: the message is 9000 characters; one turn sends at most 8000 (UsageError); "
        "not sent" in done.stderr
    )
    assert "/new   forget this conversation and start over" in done.stderr
    # The third filler leaves out the two exchanges before it (the first, and one filler).
    assert "(the oldest 2 exchange(s) were forgotten to make room" in done.stderr
    assert "(cut at 4 tokens" in done.stderr
    assert len(UsageReport(system.client_dir).entries()) == uses + 4
    assert "x" * 100 not in done.stderr + done.stdout  # a refused line is not echoed

    # With chat turned off, the chat does not start: one line says why and how to turn it on.
    controls = Settings.load(system.client_dir)
    controls.set_feature("chat", False)
    controls.save()
    try:
        off = _chat_cli(system, home, "hello\n")
    finally:
        controls.set_feature("chat", True)
        controls.save()
    assert off.returncode == 1
    assert "settings enable chat" in off.stderr
    assert "incognito chat" not in off.stderr
    assert len(off.stderr.strip().splitlines()) == 1


def test_ctrl_c_and_end_of_input_end_the_chat_cleanly(system: System, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    eof = _chat_cli(system, home, "/help\n")  # the input ends without /quit
    assert eof.returncode == 0, eof.stderr
    assert eof.stderr.rstrip().endswith("chat ended: it is forgotten")
    chat = subprocess.Popen(
        [sys.executable, "-m", "privproc.cli", "chat", "--state", str(system.state)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    assert chat.stdin is not None
    assert chat.stderr is not None
    try:
        chat.stdin.write("/help\n")
        chat.stdin.flush()
        seen: list[str] = []
        while not any("sends the line without its first /" in line for line in seen):
            line = chat.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
        chat.send_signal(signal.SIGINT)  # Ctrl-C at the prompt; its input is still open
        _out, rest = chat.communicate(timeout=60)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    assert chat.returncode == 0, rest
    assert "Traceback" not in rest
    assert rest.rstrip().endswith("chat ended: it is forgotten")


def test_nothing_of_a_finished_chat_remains(system: System) -> None:
    """After every chat above has ended: no file any party wrote (the gateway's and the
    enclave's logs and state, the relay's, the issuer's...) and no file of the device (its
    wallet, report, settings, checkpoint) holds a word of them; and the enclave, asked without
    the history, knows none of them."""
    for party in system.parties:
        party.logs()  # copy what waits in the pipes
    scanned = 0
    for root in (system.system_dir, system.client_dir):
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes().lower()
            scanned += 1
            for word in [*WORDS, "code word"]:
                assert word.encode() not in data, (path, word)
    assert scanned > 20
    assert {"enclave.log", "gateway.log", "relay.log"} <= {
        p.name for p in system.system_dir.iterdir()
    }
    client = PrivateProcessingClient.from_state(system.client_dir)
    answer = client.chat(QUESTION, temperature=0).text.lower()
    client.close()
    assert not any(word in answer for word in WORDS)
