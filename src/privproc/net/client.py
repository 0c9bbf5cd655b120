"""Bounded HTTP exchanges for privproc's clients: the whole answer, or a typed error.

Rules: an answer body may not exceed the caller's limit (`TooLargeError`, read no further);
a connection failure is a `TransportError` naming the URL and the failure's kind, never its
details (they can carry addresses); redirects are never followed (credentials stay put).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from privproc.errors import TooLargeError, TransportError
from privproc.net.cookies import no_cookies

__all__ = ["Answer", "bounded_exchange", "collect_answer", "new_async_client", "new_client"]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the system's CA bundle takes ~30 ms: do it once per process, not per client.
    return ssl.create_default_context()


def new_client(timeout: float) -> httpx.Client:
    """An httpx client as privproc's clients use them: no redirects, the shared TLS context."""
    return httpx.Client(
        timeout=timeout, follow_redirects=False, verify=_tls_context(), cookies=no_cookies()
    )


def new_async_client(timeout: float) -> httpx.AsyncClient:
    """`new_client`, for asyncio code."""
    return httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, verify=_tls_context(), cookies=no_cookies()
    )


@dataclass(frozen=True)
class Answer:
    status: int
    media_type: str
    body: bytes
    retry_after: str | None = None


def collect_answer(
    response: httpx.Response, chunks: Iterable[bytes], url: str, limit: int
) -> Answer:
    """The `Answer` of `response`, its body joined from `chunks`: at most `limit` bytes."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise TooLargeError(f"the answer from {url} exceeds {limit} bytes")
    content_type = response.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    return Answer(
        response.status_code, media_type, bytes(body), response.headers.get("retry-after")
    )


def bounded_exchange(
    http: httpx.Client,
    method: str,
    url: str,
    limit: int,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP exchange whose answer body may not exceed `limit` bytes."""
    try:
        with http.stream(method, url, content=content, headers=headers) as response:
            return collect_answer(response, response.iter_bytes(), url, limit)
    except httpx.HTTPError as exc:
        raise TransportError(f"could not reach {url}: {type(exc).__name__}") from None
