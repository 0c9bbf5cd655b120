"""`privproc chat` without a prompt: the interactive incognito chat on a terminal (or stdin).

Rules: the conversation lives in `incognito.py`'s object, in memory only; this file reads lines
(line editing in memory, no history file), prints answers on stdout and notes on stderr, and
keeps nothing when the chat ends.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from privproc.errors import PrivprocError, UsageError
from privproc.net.commands import (
    console,
)

__all__ = ["hinted", "incognito_chat", "say_cut"]


_INCOGNITO_BANNER = (
    "incognito chat: nothing is kept. The conversation lives only in this process and is sent "
    "whole with each message; the enclave keeps nothing between messages, and the chat is "
    "forgotten when it ends. /new starts over, /quit or Ctrl-D ends, /help for more."
)
_INCOGNITO_HELP = (
    "/new   forget this conversation and start over\n"
    "/quit  end the chat (Ctrl-D too); it is forgotten\n"
    "/help  this list\n"
    "Ctrl-C stops an answer (that message is not kept); at the prompt it ends the chat.\n"
    "A line starting with // sends the line without its first /."
)
MAX_LINE = 16_000  # characters read as one message (the enclave's prompt limit)


def _note(message: str) -> None:
    """A line for the person chatting, on stderr (stdout holds the answers alone)."""
    console.print(message, markup=False, highlight=False)


class _Lines:
    """The person's messages, a line at a time: from a terminal with line editing (its history
    in memory only, erased at /new and at the end), else from stdin, each line bounded."""

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty()
        self._readline: Any = None
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # editing and recall in memory; no history file is written

                self._readline = readline
                readline.clear_history()
        elif hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(errors="replace")  # a stray byte is not a crash

    def read(self) -> str | None:
        """The next line without its newline, None at the end of input; `UsageError` for a line
        too long to send (the whole line is read and dropped)."""
        if self.interactive:
            try:
                return input("you> ")
            except EOFError:
                click.echo()
                return None
        line = sys.stdin.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE and not line.endswith("\n"):
            while (rest := sys.stdin.readline(MAX_LINE)) and not rest.endswith("\n"):
                pass
            raise UsageError(f"that line is longer than {MAX_LINE} characters: not sent")
        return line.removesuffix("\n").removesuffix("\r")

    def forget(self) -> None:
        if self._readline is not None:
            self._readline.clear_history()


def incognito_chat(
    client: Any,
    chat_id: str | None,
    stream: bool,
    max_tokens: int | None,
    temperature: float | None,
) -> None:
    """`privproc chat` without PROMPT: the interactive incognito chat over the device's open
    client (`incognito.py` holds the conversation)."""
    client.settings.require("chat", chat_id)  # a chat that would be refused does not start
    conversation = client.incognito_chat(
        max_tokens=max_tokens, temperature=temperature, chat_id=chat_id
    )
    lines = _Lines()
    _note(_INCOGNITO_BANNER)
    try:
        with conversation:
            _converse(conversation, lines, stream, max_tokens)
    except KeyboardInterrupt:  # Ctrl-C at the prompt, or between two steps
        click.echo()
    finally:
        lines.forget()
    _note("chat ended: it is forgotten")


def _converse(conversation: Any, lines: _Lines, stream: bool, max_tokens: int | None) -> None:
    while True:
        try:
            line = lines.read()
        except UsageError as exc:
            _note(str(exc))
            continue
        if line is None:
            return
        text = line.strip()
        if not text:
            continue  # an empty line sends nothing
        if text.startswith("/") and not text.startswith("//"):
            command = text.split()[0].lower()
            if command in ("/quit", "/exit"):
                return
            if command == "/new":
                conversation.new()
                lines.forget()
                _note("new chat: the previous conversation is forgotten")
            elif command == "/help":
                _note(_INCOGNITO_HELP)
            else:
                shown = command if len(command) <= 20 else command[:20] + "..."
                _note(
                    f"unknown command {shown}: /new starts over, /quit ends, /help lists them "
                    "(to send a message starting with /, begin it with //)"
                )
            continue
        _turn(conversation, line.strip().removeprefix("/"), stream, max_tokens)


def _turn(conversation: Any, text: str, stream: bool, max_tokens: int | None) -> None:
    """One message and its answer; what goes wrong is said and the chat goes on."""
    pieces, printed = None, False
    try:
        if stream:
            pieces = conversation.stream(text)
            for piece in pieces:
                click.echo(piece, nl=False)
                sys.stdout.flush()
                printed = True
            click.echo()
            finish = pieces.finish_reason
        else:
            reply = conversation.send(text)
            click.echo(reply.text)
            finish = reply.finish_reason
    except KeyboardInterrupt:
        if pieces is not None:
            pieces.close()
        click.echo()
        _note("(answer stopped: this message and its answer are not kept)")
        return
    except PrivprocError as exc:
        if printed:
            click.echo()
        exc = hinted(exc)
        what = (
            "not sent" if isinstance(exc, UsageError) else "this message is not kept: send it again"
        )
        _note(f"error: {exc} ({type(exc).__name__}); {what}")
        return
    if conversation.dropped:
        _note(
            f"(the oldest {conversation.dropped} exchange(s) were forgotten to make room: a "
            f"message goes with at most {conversation.max_turns} exchanges and "
            f"{conversation.max_chars} characters of conversation)"
        )
    if finish == "length":
        say_cut(max_tokens)


def hinted(exc: PrivprocError) -> PrivprocError:
    """`exc`, or for a system that cannot be reached at all (most often one that is not
    running), the same error with what to do."""
    from privproc.errors import PeerRejectedError, TransportError

    if not isinstance(exc, TransportError) or isinstance(exc, PeerRejectedError):
        return exc
    if not str(exc).startswith("could not reach"):
        return exc
    return TransportError(f"{exc}; is the system running (`make up`, `privproc up`)?")


def say_cut(limit: int | None) -> None:
    where = f"at {limit} tokens" if limit else "at the enclave's length limit"
    console.print(f"(cut {where}; --max-tokens allows up to 512)", highlight=False)
