"""The enclave's application API, spoken as HTTP/1.1 inside the attested TLS session.

- `GET /v1/models`: the OpenAI model list; the model object also holds its card's fields;
- `POST /v1/chat/completions`: an OpenAI chat request (`messages`, `max_tokens`, `temperature`)
  -> an OpenAI chat completion; with `"stream": true`, server-sent events as the model produces
  them (`chat.completion.chunk` objects, then `data: [DONE]`), exactly as OpenAI streams;
- `POST /v1/tasks/summarize`: `{"chat": [{"sender", "time", "text"}, ...]}` -> `{"summary"}`;
- `POST /v1/tasks/rewrite`: `{"text", "style"}` -> `{"text", "style"}`.
Every answer names the model that gave it: `"model_card"` (`inference/models.py`: name,
size, quantisation, digest, engine, whether it is a demonstration model, and a one-line label)
beside the task's fields, on a chat completion, and on a stream's first chunk; OpenAI's
`"model"` string stays as OpenAI has it.
A task whose model answer failed its checks twice is a 422 whose error type is
`unusable_answer` (the client raises `UnusableAnswerError`). Messages that do not fit the
model's context beside `max_tokens` are a 400 (in a stream, an `invalid_request_error` event).

Rules: a pure function from one request (method, path, body) to one response (status, JSON) or
one stream (status, events produced lazily), run in a worker thread because inference takes
time; bad input is a 4xx with a JSON error that names the problem, never the content; nothing
about a request is kept or logged.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from privproc.api import MAX_TOKENS, parse_chat
from privproc.errors import DecodeError, PrivprocError, UnusableAnswerError, UsageError
from privproc.limits import MAX_BODY
from privproc.parties.enclave.inference.backends import (
    Backend,
    InferenceError,
    Message,
    check_prompt,
)
from privproc.parties.enclave.inference.tasks import STYLES, rewrite, summarize
from privproc.wire import load_json

__all__ = ["EVENT_PADDING", "ApiResponse", "ApiStream", "handle"]


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes

    @classmethod
    def json(cls, status: int, doc: object) -> ApiResponse:
        return cls(status, json.dumps(doc, separators=(",", ":")).encode())


@dataclass(frozen=True)
class ApiStream:
    """An answer delivered as it is produced: the chunks are generated lazily (closing the
    iterator stops the generation)."""

    status: int
    content_type: str
    chunks: Iterator[bytes]


def _error_doc(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


def _error(status: int, message: str, kind: str = "invalid_request_error") -> ApiResponse:
    return ApiResponse.json(status, _error_doc(message, kind))


# Each streamed event is padded to a multiple of this many bytes (with an SSE comment line, which
# every reader ignores), so the relay and the gateway, who see the sizes of the records, cannot
# tell the tokens' lengths apart; they still see how many pieces there are, and when.
EVENT_PADDING = 256


def _event(doc: object) -> bytes:
    return _event_raw(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")


def _event_raw(event: bytes) -> bytes:
    pad = -(len(event) + 2) % EVENT_PADDING
    return b":" + b" " * pad + b"\n" + event


def _chunks(
    backend: Backend, messages: list[Message], max_tokens: int, temperature: float
) -> Iterator[bytes]:
    """OpenAI's streamed chat completion: a role chunk (with the model's card), content chunks, a
    finish chunk, [DONE].
    A failure half-way is an `error` event (the OpenAI SDK raises it), never a silent end."""
    base = {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": backend.model,
    }

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _event({**base, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""}, model_card=backend.card.to_dict())
    finish = "stop"
    stream = backend.stream(messages, max_tokens=max_tokens, temperature=temperature)
    try:
        for delta in stream:
            if delta.text:
                yield chunk({"content": delta.text})
            finish = delta.finish_reason or finish
    except UsageError as exc:  # the request's fault (a prompt too long for the context)
        yield _event(_error_doc(str(exc), "invalid_request_error"))
        return
    except InferenceError as exc:
        yield _event(_error_doc(str(exc), "server_error"))
        return
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # a stream stopped early frees the model now, not at garbage collection
    yield chunk({}, finish)
    yield _event_raw(b"data: [DONE]\n\n")


def _load(body: bytes) -> dict[str, Any]:
    doc = load_json(body, "the request body", MAX_BODY)
    if not isinstance(doc, dict):
        raise DecodeError("the request body is a JSON object")
    return doc


def _chat_completion(backend: Backend, doc: dict[str, Any]) -> ApiResponse | ApiStream:
    raw = doc.get("messages")
    if not isinstance(raw, list) or not raw:
        raise DecodeError("messages is a non-empty list")
    messages = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise DecodeError("each message has a role and string content")
        messages.append(Message(str(m.get("role")), m["content"]))
    max_tokens = doc.get("max_tokens") or doc.get("max_completion_tokens") or 256
    temperature = doc.get("temperature", 0.2)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise DecodeError("max_tokens is a positive integer")
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise DecodeError("temperature is a number")
    if not 0 <= temperature <= 2:  # OpenAI's range; also keeps huge integers out of float()
        raise DecodeError("temperature is between 0 and 2")
    max_tokens = min(max_tokens, MAX_TOKENS)
    check_prompt(messages, max_tokens)  # bad input is a 400, before any generation starts
    if doc.get("stream"):
        chunks = _chunks(backend, messages, max_tokens, float(temperature))
        return ApiStream(200, "text/event-stream", chunks)
    completion = backend.complete(messages, max_tokens=max_tokens, temperature=float(temperature))
    return ApiResponse.json(
        200,
        {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": completion.model,
            "model_card": backend.card.to_dict(),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": completion.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            },
        },
    )


def handle(backend: Backend, method: str, path: str, body: bytes) -> ApiResponse | ApiStream:
    """Answer one API request (blocking: run it, and iterate a stream, off the event loop)."""
    route = (method, path.split("?", 1)[0])
    try:
        if route == ("GET", "/v1/models"):
            model = {"id": backend.model, "object": "model", "created": 0, "owned_by": "privproc"}
            model.update(backend.card.to_dict())
            return ApiResponse.json(200, {"object": "list", "data": [model]})
        if route == ("POST", "/v1/chat/completions"):
            return _chat_completion(backend, _load(body))
        if route == ("POST", "/v1/tasks/summarize"):
            chat = parse_chat(_load(body).get("chat"))
            card = backend.card.to_dict()
            return ApiResponse.json(200, {"summary": summarize(backend, chat), "model_card": card})
        if route == ("POST", "/v1/tasks/rewrite"):
            doc = _load(body)
            text, style = doc.get("text"), doc.get("style")
            if not isinstance(text, str) or not isinstance(style, str):
                raise DecodeError("text and style are strings")
            if style not in STYLES:
                raise UsageError(f"the styles are {', '.join(STYLES)}")
            answer = {"text": rewrite(backend, text, style), "style": style}
            return ApiResponse.json(200, {**answer, "model_card": backend.card.to_dict()})
    except (DecodeError, UsageError) as exc:
        return _error(400, str(exc))
    except UnusableAnswerError as exc:  # the model's answer, not the request, is at fault
        return _error(422, str(exc), UnusableAnswerError.API_TYPE)
    except InferenceError as exc:
        return _error(503, str(exc), "server_error")
    except PrivprocError as exc:
        return _error(500, f"{type(exc).__name__}", "server_error")
    if path.split("?", 1)[0] in ("/v1/models", "/v1/chat/completions", "/v1/tasks/summarize",
                                 "/v1/tasks/rewrite"):  # fmt: skip
        return _error(405, "method not allowed")
    return _error(404, "no such endpoint")
