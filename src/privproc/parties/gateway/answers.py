"""The gateway's own inner answers: Binary HTTP responses it encapsulates back to the client when
it answers a request itself (a refused token, no such session, a busy or lost enclave).

Rules: one shape for every error the gateway says itself, `{"error": KIND, "retry": bool}` in
JSON, so a client reads them all alike; the kind is a short fixed identifier and never holds
anything of the request.
"""

from __future__ import annotations

import json

from privproc.ohttp import bhttp

__all__ = ["answer", "error_answer"]

Headers = tuple[tuple[str, str], ...]


def answer(status: int, body: bytes = b"", headers: Headers = ()) -> bytes:
    """A Binary HTTP response with `status`, `headers` and `body`, in the shortest framing."""
    response = bhttp.Response.build(status, headers=headers, content=body)
    return bhttp.encode_response(response, bhttp.Framing.shortest())


def error_answer(status: int, error: str, retry: bool, extra: Headers = ()) -> bytes:
    """The gateway's error `error` (a fixed kind), saying whether the client may try again."""
    body = json.dumps({"error": error, "retry": retry}).encode()
    return answer(status, body, (("content-type", "application/json"), *extra))
