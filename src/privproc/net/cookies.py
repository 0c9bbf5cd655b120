"""A cookie jar that keeps nothing, for every HTTP client privproc runs.

A cookie is an identifier a server hands out to be sent back: kept by the relay's client, a
gateway's cookie would be sent with the next client's request (linking two people); kept by a
device, a relay's or issuer's cookie would link that device's requests over time. So no privproc
client stores a cookie or sends one.

Rules: nothing here knows any party.
"""

from __future__ import annotations

import http.cookiejar

__all__ = ["no_cookies"]


def no_cookies() -> http.cookiejar.CookieJar:
    """A jar whose policy refuses to store any cookie (so none is ever sent back)."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
