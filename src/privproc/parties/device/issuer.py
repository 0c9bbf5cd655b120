"""A Privacy Pass client for any RFC 9578 type 0x0002 issuer, over httpx.

    with IssuerClient("http://127.0.0.1:8401", secret) as issuer:
        directory = issuer.directory()
        token = issuer.fetch_token(challenge.encode(), directory.preferred(time.time()).token_key)

Each call is a step (`directory_step`, `key_set_step`, `token_step`: net/steps.py) that the
blocking methods run on their own httpx client; the device's async client runs the same steps
under its asyncio driver.

Rules: the issuer sees a Bearer secret (who asks) and a blinded message (nothing about the token);
the secret never appears in an error. Answers are bounded; any refusal is a typed error:
`QuotaExhaustedError` (429, with `retry_after`) or `PeerRejectedError` with the status.
"""

from __future__ import annotations

from typing import cast
from urllib.parse import urljoin

import httpx

from privproc.errors import PeerRejectedError, TransportError
from privproc.net.client import Answer, new_client
from privproc.net.drivers import Driver
from privproc.net.steps import Exchange, Step
from privproc.tokens import issuance
from privproc.tokens.auth import Token
from privproc.tokens.directory import KEY_SET_PATH, MAX_DOCUMENT, IssuerDirectory, KeySet

__all__ = ["IssuerClient", "QuotaExhaustedError"]


_MAX_ANSWER = 4096  # a TokenResponse is 256 bytes; room for a proxy's short error page


class QuotaExhaustedError(PeerRejectedError):
    """The issuer refused more tokens this epoch; `retry_after` says in how many seconds to ask."""

    def __init__(self, message: str, retry_after: int | None) -> None:
        super().__init__(message, 429)
        self.retry_after = retry_after


_STATUS_HINTS = {
    401: "the account secret was refused; check it, or ask for a new account",
    415: "the issuer did not accept the request's media type",
    422: "the issuer refused the token request (unknown key or malformed); refresh its directory",
}


class IssuerClient:
    def __init__(
        self,
        issuer_url: str,
        secret: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = 15.0,
        published_at: str | None = None,
    ) -> None:
        """`published_at`: where the issuer's public documents (directory, key set) are mirrored
        (the CDN): read there, they do not tell the issuer who is about to ask for tokens.
        `http`: the client the blocking methods use (one of their own, made when first needed,
        if None); the steps need none."""
        self.issuer_url = issuer_url.rstrip("/")
        self.documents_url = (published_at or issuer_url).rstrip("/")
        self._secret = secret
        self._http = http
        self._owns_http = http is None
        self._timeout = timeout
        self._request_url: str | None = None

    def close(self) -> None:
        if self._owns_http and self._http is not None:
            self._http.close()

    def __enter__(self) -> IssuerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _driver(self) -> Driver:
        if self._http is None:
            self._http = new_client(self._timeout)
        return Driver(self._http)

    def _get(self, path: str, media_type: str) -> Step[bytes]:
        url = self.documents_url + path
        answer = yield Exchange("GET", url, MAX_DOCUMENT)
        if answer.status != 200:
            raise PeerRejectedError(f"{url} answered {answer.status}", answer.status)
        if answer.media_type != media_type:
            raise TransportError(f"{url} did not answer with {media_type}")
        return cast(bytes, answer.body)

    def directory_step(self) -> Step[IssuerDirectory]:
        """The RFC 9578 §4 issuer directory."""
        directory = IssuerDirectory.decode(
            (yield from self._get(issuance.WELL_KNOWN_DIRECTORY, issuance.MEDIA_TYPE_DIRECTORY))
        )
        # RFC 9578 §4: the request URI may be relative to the directory's own URL.
        self._request_url = urljoin(
            self.documents_url + issuance.WELL_KNOWN_DIRECTORY, directory.request_uri
        )
        return directory

    def key_set_step(self) -> Step[KeySet]:
        """The keys verifiers accept, with their expiry (privproc's key set)."""
        return KeySet.decode((yield from self._get(KEY_SET_PATH, "application/json")))

    def token_step(self, challenge: bytes, token_key: bytes) -> Step[Token]:
        """Run one issuance (RFC 9578 §6) for `challenge` with the issuer key `token_key`."""
        if self._secret is None:
            raise PeerRejectedError("this issuer client has no account secret", 401)
        if self._request_url is None:
            yield from self.directory_step()
        assert self._request_url is not None
        request, state = issuance.begin(challenge, token_key)
        headers = {
            "content-type": issuance.MEDIA_TYPE_REQUEST,
            "accept": issuance.MEDIA_TYPE_RESPONSE,
            "authorization": f"Bearer {self._secret}",
        }
        answer = yield Exchange("POST", self._request_url, _MAX_ANSWER, request.encode(), headers)
        self._raise_for(answer)
        return state.finish(answer.body)

    def directory(self) -> IssuerDirectory:
        return self._driver.run(self.directory_step())

    def key_set(self) -> KeySet:
        return self._driver.run(self.key_set_step())

    def fetch_token(self, challenge: bytes, token_key: bytes) -> Token:
        return self._driver.run(self.token_step(challenge, token_key))

    def _raise_for(self, answer: Answer) -> None:
        if answer.status == 429:
            retry = answer.retry_after
            seconds = int(retry) if retry is not None and retry.isdigit() else None
            when = f"; try again in {seconds} s" if seconds is not None else ""
            raise QuotaExhaustedError(f"the token quota for this epoch is spent{when}", seconds)
        if answer.status != 200:
            hint = _STATUS_HINTS.get(answer.status, "")
            raise PeerRejectedError(
                f"the issuer answered {answer.status}" + (f": {hint}" if hint else ""),
                answer.status,
            )
        if answer.media_type != issuance.MEDIA_TYPE_RESPONSE:
            raise TransportError(f"the issuer did not answer with {issuance.MEDIA_TYPE_RESPONSE}")
