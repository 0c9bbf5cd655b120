"""The log client's two shells (`privproc.tlog.client.Fetch`): log resources over HTTP from the
CDN, each read with the bound its kind allows, or from a published directory on disk.

Rules: fetching only; every answer is verified by the core (`privproc.tlog.client`), never here.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from privproc.errors import PeerRejectedError, PrivprocError
from privproc.net.client import bounded_exchange
from privproc.tlog.client import MAX_BUNDLE, MAX_TILE, Fetch
from privproc.tlog.note import MAX_NOTE_SIZE

__all__ = ["directory_fetcher", "http_fetcher"]


def http_fetcher(base_url: str, http: httpx.Client) -> Fetch:
    """Fetch log resources from `base_url` (the CDN), each with the bound its kind allows."""
    base = base_url.rstrip("/")

    def fetch(path: str) -> bytes:
        if path == "checkpoint":
            limit = MAX_NOTE_SIZE
        elif path.startswith("tile/entries/"):
            limit = MAX_BUNDLE
        else:
            limit = MAX_TILE
        answer = bounded_exchange(http, "GET", f"{base}/{path}", limit)
        if answer.status != 200:
            raise PeerRejectedError(f"{base}/{path} answered {answer.status}", answer.status)
        return answer.body

    return fetch


def directory_fetcher(root: Path) -> Fetch:
    """Read log resources from a published directory on disk."""

    def fetch(path: str) -> bytes:
        target = root / path
        try:
            return target.read_bytes()
        except OSError as exc:
            raise PrivprocError(f"cannot read {path} under {root}: {exc.strerror}") from None

    return fetch
