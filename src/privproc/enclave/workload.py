"""What the enclave measures: its code (the privproc package), its model file and its config.

The operator computes the same manifest before launch (to log the release) as the enclave at
start (to staple it): one function, the same inputs, the same measurement.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import privproc
from privproc.attest.measurement import Manifest, ManifestEntry, measure_tree

__all__ = ["enclave_config", "enclave_manifest"]


def enclave_config(model: str, max_sessions: int) -> bytes:
    """The enclave's configuration as canonical JSON (part of the measurement)."""
    doc: dict[str, Any] = {"version": 1, "model": model, "max_sessions": max_sessions}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def enclave_manifest(model_path: Path | None, config: bytes) -> Manifest:
    package = Path(privproc.__file__).parent
    code = measure_tree({"code": [package]})
    code_entries = [
        e
        for e in code.entries
        if "__pycache__" not in e.path.split("/")
        and e.path.endswith((".py", ".pem", ".md", ".typed"))
    ]
    entries = list(code_entries)
    if model_path is not None:
        entries += measure_tree({"model": [model_path]}).entries

    entries.append(
        ManifestEntry("config", "enclave.json", hashlib.sha384(config).digest(), len(config))
    )
    return Manifest.of(entries)
