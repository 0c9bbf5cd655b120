"""The enclave's answers as the device reads them: tasks' JSON, streamed chat completions, the
model an answer names. Shared by the blocking and the asyncio client.

    doc = task_answer(status, answer, "summarise")     # the answer, or the typed error it is
    reader = ChatEvents(on_step)                        # sans-IO: pieces in, texts out
    texts = reader.feed(piece); reader.finish()

Rules: nothing here sends or keeps anything; what an answer names (a model, an error) is
bounded and printable before it reaches a report or a message; a streamed chat completion is
whole only after `[DONE]` (and, underneath, its authenticated end).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from privproc.errors import DecodeError, PeerRejectedError, TransportError, UnusableAnswerError
from privproc.parties.device.controls import report_text
from privproc.parties.device.results import ModelCard
from privproc.parties.device.sse import EventReader, data_events
from privproc.wire import load_json

__all__ = [
    "AsyncStreamedAnswer",
    "ChatEvents",
    "ChatStream",
    "StreamedAnswer",
    "chat_body",
    "model_card_of",
    "model_of",
    "relay_label",
    "task_answer",
]

# How far into a streamed answer its first event (which names the model) is looked for.
MODEL_SNIFF_LIMIT = 64 * 1024


@dataclass
class StreamedAnswer:
    """An answer arriving piece by piece: `status` and `content_type` are known; iterate for the
    body. Iteration ends at the answer's authenticated end, or raises `StreamTruncatedError`."""

    status: int
    content_type: str
    pieces: Iterator[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return self.pieces

    def close(self) -> None:
        """Stop reading (the rest of the answer is dropped, with its session)."""
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()


@dataclass
class AsyncStreamedAnswer:
    """`StreamedAnswer`, for asyncio code (`async for piece in answer`, `await aclose()`)."""

    status: int
    content_type: str
    pieces: AsyncIterator[bytes]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.pieces

    async def aclose(self) -> None:
        close = getattr(self.pieces, "aclose", None)
        if close is not None:
            await close()


@dataclass
class UseFacts:
    """What one use learns for its report entry, as it goes (never content)."""

    # True: it opened a new attested session (a token was spent); False: it reused one; None:
    # it reached no session (it failed before one was opened).
    fresh: bool | None = None
    model: str = ""
    model_digest: str = ""
    _head: bytearray | None = None  # a streamed answer's start, until its first event is whole

    def saw(self, answer: object) -> None:
        """Keep the model an answer names, if it names one."""
        name, digest = model_of(answer)
        if name or digest:
            self.model, self.model_digest = name, digest

    def watch_stream(self, content_type: str) -> None:
        """A streamed answer begins: look for the model in its first event (server-sent)."""
        self._head = bytearray() if content_type.startswith("text/event-stream") else None

    def saw_piece(self, piece: bytes) -> None:
        if self._head is None:
            return
        self._head += piece
        if b"\n\n" in self._head or len(self._head) > MODEL_SNIFF_LIMIT:
            head, self._head = bytes(self._head), None
            with contextlib.suppress(DecodeError):  # a stream that starts otherwise: no name
                first = next(data_events([head]), None)
                if first is not None:
                    self.saw(load_json(first, "an event"))


def model_of(answer: object) -> tuple[str, str]:
    """(name, digest) of the model an enclave's answer names: its checked `model_card`
    (`model_card_of`) when it has one, else OpenAI's `model` field; empty where it names none.
    What it names is bounded and printable (`report_text`); nothing else of the answer is read."""
    if not isinstance(answer, dict):
        return "", ""
    card = model_card_of(answer)
    if card is not None:
        return report_text(card.name), report_text(card.digest)
    plain = answer.get("model")
    return report_text(plain if isinstance(plain, str) else ""), ""


def model_card_of(answer: object) -> ModelCard | None:
    """The `"model_card"` of an enclave's answer (or a stream's first chunk); None when it has
    none or one that is not a card (a label that cannot be read is not shown)."""
    if not isinstance(answer, dict) or "model_card" not in answer:
        return None
    try:
        return ModelCard.from_dict(answer["model_card"])
    except DecodeError:
        return None


def relay_label(url: str) -> str:
    """The relay as the report names it: its URL without credentials, query or fragment."""
    try:
        kept = httpx.URL(url).copy_with(userinfo=b"", query=None, fragment=None)
    except (httpx.InvalidURL, TypeError, ValueError):
        return ""
    return report_text(str(kept))


def chat_body(
    prompt: str | list[dict[str, str]], max_tokens: int | None, temperature: float | None
) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    doc: dict[str, Any] = {"messages": messages}
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    if temperature is not None:
        doc["temperature"] = temperature
    return doc


def task_answer(status: int, answer: object, what: str) -> dict[str, Any]:
    """The enclave's answer to a task, or the typed error it stands for: `UnusableAnswerError`
    when the model could not do the task (empty or echoing answers), `PeerRejectedError` else."""
    if status == 422 and _error_type(answer) == UnusableAnswerError.API_TYPE:
        raise UnusableAnswerError(_reason(answer))
    if status != 200 or not isinstance(answer, dict):
        raise PeerRejectedError(f"the enclave could not {what}: {_reason(answer)}", status)
    return answer


def _error_type(answer: object) -> str | None:
    """The type of the enclave's error (OpenAI's error shape), if the answer is one."""
    with contextlib.suppress(AttributeError, TypeError, KeyError):
        return str(answer["error"]["type"])  # type: ignore[index]
    return None


def _reason(answer: object) -> str:
    """The enclave's error message (OpenAI's error shape), never more than a line."""
    with contextlib.suppress(AttributeError, TypeError, KeyError):
        return str(answer["error"]["message"])[:300]  # type: ignore[index]
    return str(answer)[:300]


def stream_refused(status: int, body: bytes) -> PeerRejectedError:
    """A streamed chat completion the enclave refused (its error is a small JSON document)."""
    detail = body[:4096].decode("utf-8", "replace")
    return PeerRejectedError(f"the enclave could not answer: {detail}", status)


class ChatEvents:
    """A streamed chat completion's texts from its pieces (sans-IO): an `error` event raises;
    `finish()` raises unless `[DONE]` came. `finish_reason` and `model_card` as they are known."""

    def __init__(self, on_step: Callable[[str], None] | None = None) -> None:
        self._events = EventReader()
        self._step = on_step or (lambda _message: None)
        self.done = False
        self.finish_reason: str | None = None
        self.model_card: ModelCard | None = None

    def feed(self, piece: bytes) -> list[str]:
        texts: list[str] = []
        for data in self._events.feed(piece):
            if self.done:
                raise TransportError("the enclave's stream goes on after [DONE]")
            if data == "[DONE]":
                self.done = True
                continue
            try:
                doc = load_json(data, "an event")
            except DecodeError:
                raise TransportError("the enclave's stream is not JSON events") from None
            if not isinstance(doc, dict):
                raise TransportError("the enclave's stream is not JSON events")
            if "error" in doc:
                raise PeerRejectedError(f"the model failed mid-answer: {doc['error']}", 503)
            if self.model_card is None and (card := model_card_of(doc)) is not None:
                self.model_card = card
                self._step(f"model: {card.label()}")
            for choice in doc.get("choices", ()):
                text = (choice.get("delta") or {}).get("content")
                if choice.get("finish_reason"):
                    self.finish_reason = str(choice["finish_reason"])
                if text:
                    texts.append(str(text))
        return texts

    def finish(self) -> None:
        if not self.done:
            raise TransportError("the enclave's stream ended without [DONE]")


class ChatStream(Iterator[str]):
    """The text of a streamed chat completion, piece by piece; an `error` event raises. It ends
    only at the answer's authenticated end (after `[DONE]`), so an iteration that ends is whole.
    `finish_reason` is known once it has ended: "stop", or "length" when max_tokens cut it;
    `model_card`, once the first piece has come, which model answers."""

    def __init__(
        self, answer: StreamedAnswer, on_step: Callable[[str], None] | None = None
    ) -> None:
        self._answer = answer
        self._events = ChatEvents(on_step)
        self._pieces = self._texts()

    @property
    def finish_reason(self) -> str | None:
        return self._events.finish_reason

    @property
    def model_card(self) -> ModelCard | None:
        return self._events.model_card

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()

    def _texts(self) -> Generator[str, None, None]:
        try:
            for piece in self._answer:
                yield from self._events.feed(piece)
            self._events.finish()
        finally:
            self._answer.close()
