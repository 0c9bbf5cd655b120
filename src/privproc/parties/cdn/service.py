"""The CDN: serves a published directory as plain files, with the right types and cache headers.

What it serves (all public): the log (`checkpoint`, `tile/...`), OHTTP key configurations
(`ohttp-keys`), the issuer directory (`.well-known/private-token-issuer-directory`) and key set
(`v1/token-keys`), and any other file the operator publishes there.

- `checkpoint`: `text/plain; charset=utf-8`, `no-cache, max-age=5` (mutable, C2SP tlog-tiles);
- `tile/...` (full or partial tiles and bundles): `application/octet-stream`,
  `public, max-age=31536000, immutable` (a partial tile of a given width never changes either);
- `ohttp-keys`: `application/ohttp-keys`, `max-age=300`;
- `.well-known/private-token-issuer-directory`: `application/private-token-issuer-directory`,
  `max-age=300`; `v1/token-keys` (the issuer's key set): `application/json`, `max-age=300`;
- anything else: by extension (`.json`, `.pem`, `.txt`), else `application/octet-stream`,
  `max-age=300`.

Rules: GET and HEAD only; a path is resolved under the root and must stay inside it (no `..`, no
symbolic links out, no hidden files, no control bytes: 404, never 500); no directory listings; no
access log.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from privproc.net.metrics import instrument
from privproc.ohttp.keys import MEDIA_TYPE_KEYS
from privproc.tokens.directory import KEY_SET_PATH
from privproc.tokens.issuance import MEDIA_TYPE_DIRECTORY, WELL_KNOWN_DIRECTORY

PARTY = "cdn"
MAX_FILE = 64 << 20
IMMUTABLE = "public, max-age=31536000, immutable"
_TYPES = {
    "checkpoint": ("text/plain; charset=utf-8", "no-cache, max-age=5"),
    "ohttp-keys": (MEDIA_TYPE_KEYS, "max-age=300"),
    WELL_KNOWN_DIRECTORY.lstrip("/"): (MEDIA_TYPE_DIRECTORY, "max-age=300"),
    KEY_SET_PATH.lstrip("/"): ("application/json", "max-age=300"),
}


def headers_for(relative: str) -> dict[str, str]:
    if relative in _TYPES:
        content_type, cache = _TYPES[relative]
    elif relative.startswith("tile/"):
        content_type, cache = "application/octet-stream", IMMUTABLE
    else:
        guessed, _ = mimetypes.guess_type(relative)
        content_type, cache = guessed or "application/octet-stream", "max-age=300"
    return {"content-type": content_type, "cache-control": cache}


def resolve(root: Path, relative: str) -> Path | None:
    """The file `relative` names under `root`, or None if it is not a plain file inside it."""
    parts = relative.split("/")
    if not relative or any(p in ("", ".", "..") for p in parts):
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in relative):
        return None  # a NUL or control byte names no published file (and breaks the OS call)
    if any(p.startswith(".") and p != ".well-known" for p in parts):
        return None
    target = root.joinpath(*parts)
    try:
        real = target.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not real.is_relative_to(root.resolve()) or not real.is_file():
        return None
    return real


def create_cdn_app(root: Path) -> Starlette:
    async def serve_file(request: Request) -> Response:
        relative = request.path_params["path"]
        target = resolve(root, relative)
        if target is None:
            return Response(status_code=404)
        if target.stat().st_size > MAX_FILE:
            return Response(status_code=404)
        headers = headers_for(relative)
        # FileResponse reads in a worker thread and answers HEAD without a body.
        return FileResponse(
            target, media_type=headers.pop("content-type"), headers=headers, stat_result=None
        )

    app = Starlette(routes=[Route("/{path:path}", serve_file, methods=["GET", "HEAD"])])
    return instrument(app, PARTY)
