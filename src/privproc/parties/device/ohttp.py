"""An Oblivious HTTP client (RFC 9458) for any conforming gateway, over httpx.

    client = OhttpClient()
    configs = client.fetch_key_configs("http://127.0.0.1:8404/.well-known/ohttp-gateway")
    response = client.request(
        "http://127.0.0.1:8404/.well-known/ohttp-gateway",
        configs[0],
        bhttp.Request.build("GET", "https://example.com/"),
    )

Rules: the key configurations come from a URL the caller names (later: the third-party CDN, with
a transparency proof); sizes of everything read are bounded; a non-200 answer, a wrong media type
or an undecryptable body raises a typed error, never a partial result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import httpx

from privproc import hpke
from privproc.errors import (
    DecodeError,
    OpenError,
    PeerRejectedError,
    StreamTruncatedError,
    TransportError,
    UnsupportedError,
    parse_retry_after,
)
from privproc.limits import MAX_STREAMED
from privproc.net.client import bounded_exchange, new_client
from privproc.ohttp import bhttp
from privproc.ohttp.chunked import (
    MEDIA_TYPE_CHUNKED_REQUEST,
    MEDIA_TYPE_CHUNKED_RESPONSE,
    ChunkedRequestEncoder,
)
from privproc.ohttp.keys import (
    MAX_KEYS_DOCUMENT,
    MEDIA_TYPE_KEYS,
    KeyConfig,
    SymmetricSuite,
    decode_key_configs,
)
from privproc.ohttp.messages import (
    DEFAULT_MAX_MESSAGE,
    MEDIA_TYPE_REQUEST,
    MEDIA_TYPE_RESPONSE,
    encapsulate_request,
)

__all__ = ["KEM_NAMES", "OhttpClient", "choose_config"]

REQUEST_CHUNK = 1 << 14  # the chunk size every chunked OHTTP implementation accepts

KEM_NAMES: dict[str, hpke.Kem] = {
    "x25519": hpke.KEM_X25519_HKDF_SHA256,
    "p256": hpke.KEM_P256_HKDF_SHA256,
    "xwing": hpke.KEM_XWING,
    "mlkem768": hpke.KEM_MLKEM768,
}


def choose_config(configs: Sequence[KeyConfig], kem: hpke.Kem | None = None) -> KeyConfig:
    """The first configuration, or the first one for `kem`."""
    for config in configs:
        if kem is None or config.kem is kem:
            return config
    wanted = kem.name if kem else "any KEM"
    raise UnsupportedError(f"the gateway offers no key configuration for {wanted}")


def gateway_refused(status: int, retry_after: str | None = None) -> PeerRejectedError:
    """The relay's or the gateway's refusal of an encapsulated request, saying what to do (and,
    from its Retry-After, when)."""
    if status in (502, 504):
        why = "the relay could not reach the gateway; try again shortly"
    elif status == 503:
        why = "the gateway is unavailable; try again shortly"
    elif status in (400, 401, 422):
        why = "the gateway could not decapsulate it; if its keys rotated, fetch them again"
    else:
        why = "the gateway refused it"
    return PeerRejectedError(
        f"{why} ({status})", status, retry_after=parse_retry_after(retry_after)
    )


class OhttpClient:
    """A blocking OHTTP client. One instance may be reused for many requests."""

    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
        max_response: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self._http = http or new_client(timeout)
        self._owns_http = http is None
        self.max_response = max_response

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> OhttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch_key_configs(self, keys_url: str) -> list[KeyConfig]:
        """GET an `application/ohttp-keys` document and decode the configurations it offers."""
        return decode_key_configs(self.fetch_key_configs_document(keys_url))

    def fetch_key_configs_document(self, keys_url: str) -> bytes:
        """GET an `application/ohttp-keys` document, as bytes (to check it against the log)."""
        answer = bounded_exchange(self._http, "GET", keys_url, MAX_KEYS_DOCUMENT)
        if answer.status != 200:
            raise PeerRejectedError(
                f"{keys_url} answered {answer.status} instead of key configurations",
                answer.status,
            )
        if answer.media_type != MEDIA_TYPE_KEYS:
            raise TransportError(f"{keys_url} did not answer with {MEDIA_TYPE_KEYS}")
        return answer.body

    def send(
        self,
        gateway_url: str,
        config: KeyConfig,
        inner: bytes,
        *,
        suite: SymmetricSuite | None = None,
    ) -> bytes:
        """Encapsulate `inner`, POST it, and return the decapsulated response bytes."""
        body, context = encapsulate_request(config, inner, suite=suite)
        answer = bounded_exchange(
            self._http,
            "POST",
            gateway_url,
            self.max_response,
            content=body,
            headers={"content-type": MEDIA_TYPE_REQUEST, "accept": MEDIA_TYPE_RESPONSE},
        )
        if answer.status != 200:
            raise gateway_refused(answer.status, answer.retry_after)
        if answer.media_type != MEDIA_TYPE_RESPONSE:
            raise TransportError(f"the gateway did not answer with {MEDIA_TYPE_RESPONSE}")
        return context.decapsulate_response(answer.body, max_size=self.max_response)

    def send_chunked(self, gateway_url: str, config: KeyConfig, inner: bytes) -> Iterator[bytes]:
        """Encapsulate `inner` as a chunked OHTTP request (draft-ietf-ohai-chunked-ohttp), POST it,
        and yield the response's pieces as they arrive, each authenticated. The iteration ends
        only after the response's authenticated final chunk; a stream cut before it raises
        `StreamTruncatedError`, whatever arrived before."""
        encoder = ChunkedRequestEncoder(config)
        body = bytearray(encoder.header())
        for start in range(0, len(inner), REQUEST_CHUNK):
            body += encoder.chunk(inner[start : start + REQUEST_CHUNK])
        body += encoder.chunk(b"", final=True)
        decoder = encoder.response_decoder(max_message_size=MAX_STREAMED)
        headers = {
            "content-type": MEDIA_TYPE_CHUNKED_REQUEST,
            "accept": MEDIA_TYPE_CHUNKED_RESPONSE,
        }
        try:
            with self._http.stream("POST", gateway_url, content=bytes(body), headers=headers) as r:
                if r.status_code != 200:
                    raise gateway_refused(r.status_code, r.headers.get("retry-after"))
                kind = r.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if kind != MEDIA_TYPE_CHUNKED_RESPONSE:
                    raise TransportError(
                        f"the gateway did not answer with {MEDIA_TYPE_CHUNKED_RESPONSE}"
                    )
                for raw in r.iter_raw():
                    yield from decoder.receive(raw)
                yield from decoder.close()
        except httpx.HTTPError as exc:
            raise StreamTruncatedError(
                f"the answer stream broke off ({type(exc).__name__}); it is not the whole answer"
            ) from None
        except (DecodeError, OpenError):
            # Cut short, or cut and patched: either way nothing after the last good chunk counts.
            raise StreamTruncatedError(
                "the answer stream ended without its authenticated end; it is not the whole answer"
            ) from None

    def request(
        self,
        gateway_url: str,
        config: KeyConfig,
        request: bhttp.Request,
        *,
        suite: SymmetricSuite | None = None,
    ) -> bhttp.Response:
        """Send a Binary HTTP request obliviously and decode the Binary HTTP response."""
        inner = bhttp.encode_request(request, bhttp.Framing.shortest())
        return bhttp.decode_response(self.send(gateway_url, config, inner, suite=suite))
