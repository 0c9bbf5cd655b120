"""Shared test helpers: vector loading."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors"


def load_vectors(relpath: str) -> Any:
    path = VECTORS / relpath
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as fh:
            return json.load(fh)
    return json.loads(path.read_text())


import pytest  # noqa: E402

from tests.servers import Running, privproc_process, running_system  # noqa: E402


@pytest.fixture(scope="module")
def conformance_gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`privproc serve gateway --port 0 --conformance`, a real uvicorn server on loopback."""
    tmp = tmp_path_factory.mktemp("gateway")
    with privproc_process(
        ["serve", "gateway", "--host", "127.0.0.1", "--port", "0", "--conformance"],
        "ready gateway ",
        tmp,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every party a real process on loopback (`privproc up`'s System), with every AI feature
    enabled for the local user; one per test module."""
    yield from running_system(tmp_path_factory.mktemp("privproc"))


__all__ = ["Running", "load_vectors"]
