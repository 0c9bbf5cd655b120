"""Incognito chat: a multi-turn conversation that lives only in the device's memory.

    with client.incognito_chat(temperature=0) as conversation:
        reply = conversation.send("My name is Ana.")        # a ChatReply
        for piece in conversation.stream("What is my name?"):
            print(piece, end="")
        conversation.new()                                   # forget it, start over
    # here the conversation is forgotten

The enclave keeps nothing between requests, so the conversation is sent whole each turn (as
OpenAI `messages`): each turn is one ordinary private request (a token, OHTTP, the attested
session), checked against the user's controls and noted in the Private Processing report like
any use of `chat`, without content. The async client has the same (`AsyncIncognitoChat`).

Rules:
- The history (the user's messages and the model's answers) is held by this object only: never
  written, logged or put in an exception message. `new()`, `close()` and leaving the `with` block
  drop every reference to it (Python cannot overwrite a string's memory; the object holds nothing
  once forgotten). A closed conversation refuses further turns.
- A turn joins the history only when its answer is whole: a reply, or a stream iterated to its
  authenticated end. A failed turn, a stream cut on the way (`StreamTruncatedError`) or one
  closed early leaves the history exactly as it was before the turn (neither the message nor a
  partial answer is kept): send the message again. An answer cut by `max_tokens` is whole (its
  `finish_reason` is "length") and is kept.
- The history is bounded: at most `max_turns` exchanges (a message and its answer) and
  `max_chars` characters sent in one turn (system prompt, history and the new message; at most
  the enclave's prompt limit). When the next message does not fit, the oldest exchanges are left
  out of that request and forgotten once it succeeds (`dropped` says how many), or, with
  `on_overflow="refuse"`, the turn is refused with `ChatTooLongError` before anything is sent. A
  message too long on its own, or empty, is refused before anything is sent (`UsageError`).
- Turns are one at a time: a new turn while a stream is still open closes that stream first (it
  is not kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict, Unpack

from privproc.api import MAX_PROMPT_CHARS, MAX_TOKENS
from privproc.errors import UsageError
from privproc.parties.device.results import ChatReply

if TYPE_CHECKING:
    from privproc.parties.device.aio import AsyncPrivateProcessingClient
    from privproc.parties.device.answers import ChatStream
    from privproc.parties.device.private import PrivateProcessingClient

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_TURNS",
    "AsyncIncognitoChat",
    "ChatOptions",
    "ChatTooLongError",
    "IncognitoChat",
    "IncognitoStream",
]

DEFAULT_MAX_TURNS = 20  # exchanges kept: a small model loses the thread long before this
# Characters sent in one turn. The enclave accepts MAX_PROMPT_CHARS, but its model's context
# (4096 tokens) must also hold the answer: about 3 to 4 characters a token in English.
DEFAULT_MAX_CHARS = 8_000
MAX_TURNS = 1_000
Overflow = Literal["drop-oldest", "refuse"]


class ChatTooLongError(UsageError):
    """The conversation and the next message exceed the conversation's limits, and it was made
    to refuse rather than forget its oldest exchanges (`on_overflow="refuse"`)."""


@dataclass(frozen=True)
class _Turn:
    """A request ready to send: the messages, and how many of the oldest exchanges it leaves out."""

    messages: list[dict[str, str]]
    dropped: int
    text: str
    generation: int  # the conversation it belongs to (`new()` starts the next one)


class _History:
    """The bounded history of one conversation (no I/O: the conversations below send it)."""

    def __init__(
        self, system: str | None, max_turns: int, max_chars: int, on_overflow: Overflow
    ) -> None:
        if not 1 <= max_turns <= MAX_TURNS:
            raise UsageError(f"max_turns is 1 to {MAX_TURNS}")
        if not 1 <= max_chars <= MAX_PROMPT_CHARS:
            raise UsageError(f"max_chars is 1 to {MAX_PROMPT_CHARS} (the enclave's prompt limit)")
        if on_overflow not in ("drop-oldest", "refuse"):
            raise UsageError('on_overflow is "drop-oldest" or "refuse"')
        if system is not None and (not isinstance(system, str) or len(system) >= max_chars):
            raise UsageError(f"the system prompt is a string shorter than {max_chars} characters")
        self.system = system
        self.max_turns, self.max_chars, self.on_overflow = max_turns, max_chars, on_overflow
        self.exchanges: list[tuple[str, str]] = []  # (the user's message, the model's answer)
        self.generation = 0  # counts `forget()`s: a turn in flight when it ran is not kept
        self.closed = False

    def chars(self, start: int = 0) -> int:
        fixed = len(self.system or "")
        return fixed + sum(len(user) + len(answer) for user, answer in self.exchanges[start:])

    def prepare(self, text: str) -> _Turn:
        """The request for the next message (nothing changes until `commit`)."""
        if self.closed:
            raise UsageError("this incognito chat has ended (it is forgotten); start a new one")
        if not isinstance(text, str) or not text.strip():
            raise UsageError("an empty message is not sent")
        if len(text) + len(self.system or "") > self.max_chars:
            raise UsageError(
                f"the message is {len(text)} characters; one turn sends at most {self.max_chars}"
            )
        dropped = max(0, len(self.exchanges) + 1 - self.max_turns)
        while self.chars(dropped) + len(text) > self.max_chars:
            dropped += 1
        if dropped and self.on_overflow == "refuse":
            raise ChatTooLongError(
                f"this chat is full ({len(self.exchanges)} exchange(s), {self.chars()} characters; "
                f"at most {self.max_turns} exchanges and {self.max_chars} characters a turn): "
                "start over with new()"
            )
        messages = [*self.messages(dropped), {"role": "user", "content": text}]
        return _Turn(messages, dropped, text, self.generation)

    def messages(self, start: int = 0) -> list[dict[str, str]]:
        """The system prompt and the exchanges from `start` on, as OpenAI messages."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for user, answer in self.exchanges[start:]:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return out

    def commit(self, turn: _Turn, answer: str) -> None:
        """The turn's answer arrived whole: it joins the history, the left-out exchanges go."""
        if self.closed or turn.generation != self.generation:
            return  # forgotten while the answer was on its way: it stays forgotten
        del self.exchanges[: turn.dropped]
        self.exchanges.append((turn.text, answer))

    def forget(self) -> None:
        self.exchanges.clear()
        self.generation += 1


class ChatOptions(TypedDict, total=False):
    """An incognito chat's options (the keywords of `incognito_chat()` and of the classes here):
    `system` prompt; at most `max_turns` exchanges and `max_chars` characters a turn, beyond
    which the oldest exchanges are forgotten (`on_overflow="drop-oldest"`) or the turn refused
    (`"refuse"`: `ChatTooLongError`); each turn's default `max_tokens` and `temperature`; the
    `chat_id` that Advanced Chat Privacy checks."""

    system: str | None
    max_turns: int
    max_chars: int
    on_overflow: Overflow
    max_tokens: int | None
    temperature: float | None
    chat_id: str | None


class _Conversation:
    """What the sync and async conversations share: the history, limits and per-turn options."""

    def __init__(self, **options: Unpack[ChatOptions]) -> None:
        unknown = sorted(set(options) - set(ChatOptions.__annotations__))
        if unknown:  # a typed signature refuses these; keywords passed through must too
            raise UsageError(f"an incognito chat has no option {', '.join(unknown)}")
        max_tokens, temperature = options.get("max_tokens"), options.get("temperature")
        if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS:
            raise UsageError(f"max_tokens is 1 to {MAX_TOKENS}")
        if temperature is not None and not 0 <= temperature <= 2:
            raise UsageError("temperature is 0 to 2")
        self._history = _History(
            options.get("system"),
            options.get("max_turns", DEFAULT_MAX_TURNS),
            options.get("max_chars", DEFAULT_MAX_CHARS),
            options.get("on_overflow", "drop-oldest"),
        )
        self.max_tokens, self.temperature = max_tokens, temperature
        self.chat_id = options.get("chat_id")
        self.dropped = 0  # the oldest exchanges the last whole turn forgot to make room

    @property
    def turns(self) -> int:
        """The exchanges (a message and its whole answer) the conversation holds."""
        return len(self._history.exchanges)

    @property
    def chars(self) -> int:
        """The characters the conversation holds (its system prompt included)."""
        return self._history.chars()

    @property
    def closed(self) -> bool:
        return self._history.closed

    @property
    def max_turns(self) -> int:
        return self._history.max_turns

    @property
    def max_chars(self) -> int:
        return self._history.max_chars

    def history(self) -> list[dict[str, str]]:
        """A copy of the conversation as OpenAI messages (what the next turn sends before its
        own message)."""
        return self._history.messages()

    def _options(
        self, max_tokens: int | None, temperature: float | None
    ) -> tuple[int | None, float | None]:
        """This turn's (max_tokens, temperature): the call's, else the conversation's."""
        return (
            self.max_tokens if max_tokens is None else max_tokens,
            self.temperature if temperature is None else temperature,
        )

    def _commit(self, turn: _Turn, answer: str) -> None:
        self._history.commit(turn, answer)
        self.dropped = turn.dropped


class IncognitoStream(Iterator[str]):
    """One turn's answer as the model produces it. The turn joins the conversation only when the
    iteration reaches the answer's authenticated end; `close()` before that, or an error on the
    way, leaves the conversation as it was. `dropped` says how many of the oldest exchanges this
    turn leaves out (forgotten if it completes); `finish_reason` is known once it has ended."""

    def __init__(self, conversation: IncognitoChat, turn: _Turn, answer: ChatStream) -> None:
        self._conversation = conversation
        self._answer = answer
        self.dropped = turn.dropped
        self.complete = False
        self._pieces = self._run(turn)

    @property
    def finish_reason(self) -> str | None:
        return self._answer.finish_reason

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop the answer here: the turn is not kept (a closed whole answer stays kept)."""
        self._pieces.close()
        self._answer.close()
        self._conversation._finished(self)

    def _run(self, turn: _Turn) -> Generator[str, None, None]:
        parts: list[str] = []
        try:
            for piece in self._answer:
                parts.append(piece)
                yield piece
            self.complete = True
            self._conversation._commit(turn, "".join(parts))
        finally:
            parts.clear()
            self._answer.close()
            self._conversation._finished(self)


class IncognitoChat(_Conversation):
    """A multi-turn chat held in memory only (module docstring); made by
    `PrivateProcessingClient.incognito_chat()`. Use it in a `with` block, or call `close()`."""

    def __init__(self, client: PrivateProcessingClient, **options: Unpack[ChatOptions]) -> None:
        super().__init__(**options)
        self._client = client
        self._open: IncognitoStream | None = None

    def __enter__(self) -> IncognitoChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self, text: str, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> ChatReply:
        """Send `text` with the conversation so far; the whole answer, kept in the conversation."""
        self._stop_open()
        turn = self._history.prepare(text)
        tokens, heat = self._options(max_tokens, temperature)
        reply = self._client.chat(
            turn.messages, chat_id=self.chat_id, max_tokens=tokens, temperature=heat
        )
        self._commit(turn, reply.text)
        return reply

    def stream(
        self, text: str, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> IncognitoStream:
        """Send `text` with the conversation so far; the answer as it is produced (kept once the
        iteration has reached its end)."""
        self._stop_open()
        turn = self._history.prepare(text)
        tokens, heat = self._options(max_tokens, temperature)
        answer = self._client.chat_stream(
            turn.messages, chat_id=self.chat_id, max_tokens=tokens, temperature=heat
        )
        self._open = IncognitoStream(self, turn, answer)
        return self._open

    def new(self) -> None:
        """Forget the conversation and start over (an open stream is closed, not kept)."""
        self._stop_open()
        self._history.forget()
        self.dropped = 0

    def close(self) -> None:
        """Forget the conversation and end it: further turns are refused."""
        self.new()
        self._history.closed = True

    def _stop_open(self) -> None:
        if self._open is not None:
            self._open.close()

    def _finished(self, stream: IncognitoStream) -> None:
        if self._open is stream:
            self._open = None


class AsyncIncognitoChat(_Conversation):
    """`IncognitoChat` for asyncio code, made by `AsyncPrivateProcessingClient.incognito_chat()`:

        async with client.incognito_chat() as conversation:
            reply = await conversation.send("hi")
            async for piece in conversation.stream("and?"):
                ...
    Turns run one at a time; a turn joins the conversation only when its answer is whole."""

    def __init__(
        self, client: AsyncPrivateProcessingClient, **options: Unpack[ChatOptions]
    ) -> None:
        super().__init__(**options)
        self._client = client
        self._lock = asyncio.Lock()  # one turn at a time

    async def __aenter__(self) -> AsyncIncognitoChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(
        self, text: str, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> ChatReply:
        """Send `text` with the conversation so far; the whole answer, kept in the conversation."""
        async with self._lock:
            turn = self._history.prepare(text)
            tokens, heat = self._options(max_tokens, temperature)
            reply = await self._client.chat(
                turn.messages, chat_id=self.chat_id, max_tokens=tokens, temperature=heat
            )
            self._commit(turn, reply.text)
            return reply

    async def stream(
        self, text: str, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> AsyncGenerator[str, None]:
        """Send `text` with the conversation so far; the answer as it is produced, kept once the
        iteration has reached its end (not if it stops before or fails)."""
        async with self._lock:
            turn = self._history.prepare(text)
            tokens, heat = self._options(max_tokens, temperature)
            parts: list[str] = []
            pieces = self._client.chat_stream(
                turn.messages, chat_id=self.chat_id, max_tokens=tokens, temperature=heat
            )
            try:
                async for piece in pieces:
                    parts.append(piece)
                    yield piece
                self._commit(turn, "".join(parts))
            finally:
                parts.clear()
                await pieces.aclose()

    def new(self) -> None:
        """Forget the conversation and start over."""
        self._history.forget()
        self.dropped = 0

    async def aclose(self) -> None:
        """Forget the conversation and end it: further turns are refused."""
        self.new()
        self._history.closed = True
