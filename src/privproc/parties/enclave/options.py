"""The enclave's own command-line options: the engine it may answer through (`--engine URL
--engine-model NAME` and the model's identity) and its session policy. `privproc serve enclave`
(`privproc.parties.enclave.main`) takes them, and `privproc up` the engine ones, to pass on.

Rules: click options and their checks only; light to import (the command line's help shows the
defaults); nothing here starts anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from privproc.api import SessionPolicy

if TYPE_CHECKING:
    from privproc.parties.enclave.inference.models import EngineModel

__all__ = ["declared_engine", "engine_options", "session_options"]

F = TypeVar("F", bound=Callable[..., Any])
_SESSIONS = SessionPolicy()  # the enclave's defaults, shown by its --help


def engine_options(fn: F) -> F:
    """--engine URL --engine-model NAME and the model's identity: what `serve enclave` and `up`
    take to run the enclave against an OpenAI-compatible engine instead of the embedded model."""
    options = [
        click.option("--engine", "engine_url", default=None, metavar="URL",
                     help="An OpenAI-compatible engine (llama.cpp's server, vLLM) that answers "
                     "instead of the embedded model; it is part of the enclave's measurement."),
        click.option("--engine-model", default=None, metavar="NAME",
                     help="The model the engine serves, as its /v1/models lists it (llama.cpp's "
                     "server: its --alias)."),
        click.option("--engine-model-file", default=None,
                     type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="The GGUF file the engine runs, when it is on this machine: its "
                     "SHA-256, size and quantisation are read from it."),
        click.option("--engine-model-digest", default=None, metavar="sha256:HEX",
                     help="The SHA-256 of the model's weights file, when the file is elsewhere "
                     "(the enclave cannot hash a file on another machine)."),
        click.option("--engine-model-size", default=None, metavar="SIZE",
                     help="The model's parameter count as users are told it (8B) [default: read "
                     "from --engine-model-file]."),
        click.option("--engine-model-quantisation", default=None, metavar="TYPE",
                     help="The model's quantisation (Q8_0, F16) [default: read from "
                     "--engine-model-file]."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def declared_engine(
    engine_url: str | None,
    engine_model: str | None,
    engine_model_file: Path | None,
    engine_model_digest: str | None,
    engine_model_size: str | None,
    engine_model_quantisation: str | None,
) -> EngineModel | None:
    """The engine the options declare, or None for the embedded model."""
    rest = (engine_model, engine_model_file, engine_model_digest, engine_model_size,
            engine_model_quantisation)  # fmt: skip
    if engine_url is None:
        if any(value is not None for value in rest):
            raise click.UsageError("the --engine-model options go with --engine URL")
        return None
    if engine_model is None:
        raise click.UsageError("--engine needs --engine-model NAME, the model the engine serves")
    if (engine_model_file is None) == (engine_model_digest is None):
        raise click.UsageError(
            "--engine needs the model's identity, --engine-model-file FILE or "
            "--engine-model-digest sha256:HEX (one of them): a name alone is not an identity"
        )
    from privproc.parties.enclave.inference.backends import declare_engine

    return declare_engine(
        engine_url,
        engine_model,
        digest=engine_model_digest,
        model_file=engine_model_file,
        size=engine_model_size,
        quantisation=engine_model_quantisation,
    )


def session_options(fn: F) -> F:
    """The session policy's options (`privproc.parties.enclave.sessions.SessionPolicy`)."""
    options = [
        click.option("--max-sessions", default=_SESSIONS.max_sessions, show_default=True,
                     type=click.IntRange(1, 100_000), help="Sessions held at once."),
        click.option("--session-idle-timeout", default=_SESSIONS.idle_timeout, show_default=True,
                     type=click.FloatRange(1, 86_400), help="Seconds without application data "
                     "before a session is forgotten."),
        click.option("--session-lifetime", default=_SESSIONS.lifetime, show_default=True,
                     type=click.FloatRange(1, 86_400), help="Seconds a session lives, however "
                     "busy."),
        click.option("--session-max-requests", default=_SESSIONS.max_requests, show_default=True,
                     type=click.IntRange(1, 100_000), help="Requests one session may carry."),
        click.option("--session-evictable-after", default=_SESSIONS.evictable_after,
                     show_default=True, type=click.FloatRange(0.1, 86_400), help="Seconds idle "
                     "after which a session gives way to a new one when every session is taken."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn
