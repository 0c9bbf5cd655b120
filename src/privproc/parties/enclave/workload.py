"""What the enclave measures: its code (the files of the privproc package it runs: the import
closure of its entry, `closure.py`), its model file and its config.

The model file is the embedded model's, when the enclave runs it; an enclave on an engine
(`privproc serve enclave --engine URL`) runs no model file of its own, and measures instead the
engine's URL and the model it serves (name, digest, size, quantisation) in its config.

The operator computes the same manifest before launch (to log the release) as the enclave at
start (to staple it): one function, the same inputs, the same measurement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import privproc
from privproc.api import SessionPolicy
from privproc.attest.measurement import Manifest, ManifestEntry, hash_file, measure_tree
from privproc.errors import UsageError
from privproc.parties.enclave.closure import closure
from privproc.parties.enclave.hardening import ENV_ALLOWLIST, check_allowlist
from privproc.parties.enclave.inference.models import EngineModel

__all__ = ["enclave_code", "enclave_config", "enclave_manifest"]


def enclave_config(
    model: str,
    sessions: SessionPolicy | None = None,
    env_allowlist: Iterable[str] = ENV_ALLOWLIST,
    engine: EngineModel | None = None,
) -> bytes:
    """The enclave's configuration as canonical JSON (part of the measurement).

    Version 2 adds `env_allowlist`: the environment variables the enclave accepts at start
    (`hardening.py`), so a build that accepts another environment is another build.
    Version 3 replaces `max_sessions` by `sessions`, the whole session policy (how many, how
    long, how many requests, when one gives way: `sessions.py`).
    Version 4 adds `engine`: null for the embedded model (its file is measured), else the
    OpenAI-compatible engine the enclave sends every prompt to and the model the operator
    declares it serves (`EngineModel.config()`: URL, model name, digest, size, quantisation,
    whether it is the demonstration model), so a release on another engine or model is another
    measurement and what users are told about the model is what was measured.
    """
    if engine is not None and engine.model != model:
        raise UsageError("the configured model is the engine's model")
    doc: dict[str, Any] = {
        "version": 4,
        "model": model,
        "engine": None if engine is None else engine.config(),
        "sessions": (sessions or SessionPolicy()).config(),
        "env_allowlist": list(check_allowlist(env_allowlist)),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def enclave_code(package: Path | None = None) -> list[Path]:
    """The files of the package the enclave runs (`closure.py`), each under the
    package directory: what its release measures as code."""
    package = package or Path(privproc.__file__).parent
    return [package.joinpath(*path.parts[1:]) for path in closure(package)]


def enclave_manifest(
    model_path: Path | None, config: bytes, package: Path | None = None
) -> Manifest:
    """The manifest of the enclave's code (of `package`, by default the one installed), its model
    file (None: it answers through an engine) and its canonical config."""
    package = package or Path(privproc.__file__).parent
    entries = [
        ManifestEntry("code", path.relative_to(package).as_posix(), *hash_file(path))
        for path in enclave_code(package)
    ]
    if model_path is not None:
        entries += measure_tree({"model": [model_path]}).entries

    entries.append(
        ManifestEntry("config", "enclave.json", hashlib.sha384(config).digest(), len(config))
    )
    return Manifest.of(entries)
