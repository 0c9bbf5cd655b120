"""The models the enclave runs, as it describes them (the card itself, `ModelCard`, is the
contract's: `privproc.api`).

- `EngineModel`: an OpenAI-compatible engine (llama.cpp's server, vLLM) and the model the
  operator declares it serves: URL, name, digest, and size and quantisation when known. The
  enclave cannot hash a file on another machine, so the digest is declared, and measured: it is
  part of the enclave's configuration (`enclave_config`, version 4), so a release on another
  engine or model is another measurement, and a false declaration is one the operator logged.
- `gguf_facts`, `facts_of`, `file_digest`: a GGUF file's size label and quantisation (read by
  llama.cpp from the file's metadata, never guessed from its name) and its SHA-256.
- `parse_digest`: a digest the operator declares.

Rules: nothing here holds content or a secret: names, sizes and digests only. This module
imports llama.cpp only when it reads a GGUF file.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privproc.api import DIGEST_SHAPE, ENGINE_REMOTE, MAX_FIELD, ModelCard, printable
from privproc.errors import PrivprocError, UsageError

__all__ = [
    "EngineModel",
    "facts_of",
    "file_digest",
    "gguf_facts",
    "parse_digest",
]

_CHUNK = 1 << 20


def parse_digest(text: str) -> str:
    """A model digest as `sha256:` and 64 lower-case hex digits (upper case is accepted)."""
    digest = text.strip().lower()
    if not DIGEST_SHAPE.fullmatch(digest):
        raise UsageError("a model digest is sha256: followed by 64 hex digits")
    return digest


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file, read in chunks (a model file may be tens of gigabytes)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise UsageError(f"the model file {path.name} cannot be read: {exc.strerror}") from None
    return "sha256:" + digest.hexdigest()


def _size_label(parameters: int) -> str:
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if parameters >= scale:
            value = parameters / scale
            return f"{value:.0f}{unit}" if value >= 10 else f"{value:.1f}{unit}".replace(".0", "")
    return str(parameters)


def _quantisation(file_type: str) -> str:
    """The name of a GGUF `general.file_type` (llama.cpp's LLAMA_FTYPE_* constants)."""
    import llama_cpp

    try:
        number = int(file_type) & ~int(llama_cpp.LLAMA_FTYPE_GUESSED)
    except ValueError:
        return ""
    for name in dir(llama_cpp):
        if name.startswith("LLAMA_FTYPE_") and getattr(llama_cpp, name) == number:
            return name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_")
    return ""


def facts_of(model: Any) -> tuple[str, str]:
    """(size, quantisation) of a model llama.cpp has loaded (its `llama_model` pointer; a
    llama-cpp-python `Llama` holds it as `.model`), from the file's GGUF metadata: the size
    label the file gives (else its parameter count), the name of its file type."""
    import ctypes

    import llama_cpp

    def meta(key: str) -> str:
        buf = ctypes.create_string_buffer(MAX_FIELD + 1)
        length = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if 0 <= length <= MAX_FIELD else ""

    size = meta("general.size_label")
    if not size or not size.isprintable():
        parameters = int(llama_cpp.llama_model_n_params(model))
        size = _size_label(parameters) if parameters > 0 else ""
    return size, _quantisation(meta("general.file_type"))


def gguf_facts(path: Path) -> tuple[str, str]:
    """(size, quantisation) of a GGUF file, read by llama.cpp from its metadata (the vocabulary
    only: no weights, no context); ("", "") for a file llama.cpp cannot read."""
    try:
        import llama_cpp
    except ImportError:
        return "", ""
    # llama.cpp's own log goes through this logger: its errors only (as `Llama(verbose=False)`).
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        return "", ""
    try:
        return facts_of(model)
    finally:
        llama_cpp.llama_model_free(model)


def _check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        raise UsageError("the engine URL is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("the engine URL is http:// or https:// and names a host")
    if parts.username is not None or parts.password is not None:
        raise UsageError("the engine URL holds no credentials (it is part of the measurement)")
    if parts.query or parts.fragment:
        raise UsageError("the engine URL has no query or fragment")
    if len(url) > MAX_FIELD or not url.isprintable():
        raise UsageError(f"the engine URL is printable and at most {MAX_FIELD} characters")
    return url.rstrip("/")


@dataclass(frozen=True)
class EngineModel:
    """An OpenAI-compatible engine and the model the operator declares it serves (measured).

    `demonstration` is true when the declared digest is the embedded demonstration model's:
    the same small model, served elsewhere, is labelled as what it is."""

    url: str
    model: str
    digest: str
    size: str = ""
    quantisation: str = ""
    demonstration: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _check_url(self.url))
        object.__setattr__(self, "digest", parse_digest(self.digest))
        for what, value in (("model name", self.model), ("size", self.size),
                            ("quantisation", self.quantisation)):  # fmt: skip
            try:
                printable(value, what, empty=what != "model name")
            except PrivprocError:
                raise UsageError(
                    f"the engine's {what} is printable text of at most {MAX_FIELD} characters"
                ) from None

    def card(self) -> ModelCard:
        return ModelCard(
            self.model, self.size, self.quantisation, self.digest, ENGINE_REMOTE,
            self.demonstration,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        """What the measured configuration holds of it (all of it: what users are told is what
        was measured)."""
        return {
            "url": self.url,
            "model": self.model,
            "digest": self.digest,
            "size": self.size,
            "quantisation": self.quantisation,
            "demonstration": self.demonstration,
        }

    def args(self) -> list[str]:
        """The `privproc serve enclave` options that declare this engine."""
        args = ["--engine", self.url, "--engine-model", self.model]
        args += ["--engine-model-digest", self.digest]
        if self.size:
            args += ["--engine-model-size", self.size]
        if self.quantisation:
            args += ["--engine-model-quantisation", self.quantisation]
        return args
