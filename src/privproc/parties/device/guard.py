"""Who may use the device's local OpenAI endpoint (`privproc proxy`): the user's own programs,
never a web page the user happens to visit.

A page can make the browser send requests to 127.0.0.1 (a cross-origin "simple" POST needs no
permission), and by DNS rebinding can make its own name resolve to 127.0.0.1 and read the
answers. Each call through the proxy spends the user's tokens and fills their report, so:
- the `Host` must name the proxy on loopback (`localhost`, `127.0.0.1` or `[::1]`, with its port):
  a rebound name is refused (421);
- a request that carries a browser `Origin` is refused (403) unless that origin is allowed;
- a body must be `application/json` (415): a page cannot send one without a CORS preflight,
  which the proxy never grants;
- with a key (`--require-key`, always with `--allow-remote`), `Authorization: Bearer KEY` is
  required (401), compared in constant time; the OpenAI SDK sends its `api_key` so.

Rules: a pure decision over the request's method and headers; a refusal never echoes what the
request said.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["LOOPBACK_NAMES", "ProxyGuard", "new_api_key"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_DENIED = "permission_error"


def new_api_key() -> str:
    """A per-launch key for the proxy: 256 random bits, in the shape OpenAI keys have."""
    return "sk-privproc-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ProxyGuard:
    hosts: frozenset[str] | None  # acceptable `Host` values; None: any (only with a key)
    origins: frozenset[str] = frozenset()  # browser origins the user allowed
    api_key: str | None = None

    @classmethod
    def loopback(
        cls, port: int, *, origins: Iterable[str] = (), api_key: str | None = None
    ) -> ProxyGuard:
        """The guard of a proxy listening on loopback at `port`."""
        hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
        if port == 80:
            hosts |= set(LOOPBACK_NAMES)  # a client may leave out the default port
        return cls(frozenset(hosts), frozenset(o.rstrip("/").lower() for o in origins), api_key)

    def refusal(self, method: str, headers: Mapping[str, str]) -> tuple[int, str, str] | None:
        """(status, reason, OpenAI error type) if the request must be refused, else None.
        `headers` are looked up by lower-case name."""
        if self.hosts is not None and headers.get("host", "").lower() not in self.hosts:
            return 421, "this proxy answers only requests addressed to it on loopback", _DENIED
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.origins:
            why = (
                "requests from web pages are refused (a browser Origin); allow a page you trust "
                "with `privproc proxy --allow-origin ORIGIN`"
            )
            return 403, why, _DENIED
        if self.api_key is not None:
            given = headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
                why = "this proxy needs its key (`api_key`): see where `privproc proxy` wrote it"
                return 401, why, "authentication_error"
        if method.upper() in _BODY_METHODS:
            media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                return 415, "the body must be application/json", "invalid_request_error"
        return None
