"""An Oblivious HTTP client (RFC 9458) for any conforming gateway, over httpx.

    client = OhttpClient()      # blocking; the same steps (`send_step`, `chunked_step`) run
                                # under the asyncio driver in the device's async client
    configs = client.fetch_key_configs("http://127.0.0.1:8404/.well-known/ohttp-gateway")
    response = client.request(
        "http://127.0.0.1:8404/.well-known/ohttp-gateway",
        configs[0],
        bhttp.Request.build("GET", "https://example.com/"),
    )

Rules: the key configurations come from a URL the caller names (the device's client checks the
document against the transparency log before it uses it); sizes of everything read are
bounded; a non-200 answer, a wrong media type or an undecryptable body raises a typed error,
never a partial result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

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
from privproc.net.client import new_client
from privproc.net.drivers import Driver
from privproc.net.steps import (
    Emit,
    Exchange,
    OpenStream,
    ReadStream,
    Step,
    StreamHead,
)
from privproc.ohttp import bhttp
from privproc.ohttp.chunked import (
    MEDIA_TYPE_CHUNKED_REQUEST,
    MEDIA_TYPE_CHUNKED_RESPONSE,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
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

__all__ = [
    "KEM_NAMES",
    "ChunkedAnswer",
    "OhttpClient",
    "choose_config",
    "chunked_step",
    "key_configs_step",
    "send_step",
]

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


def key_configs_step(keys_url: str) -> Step[bytes]:
    """GET an `application/ohttp-keys` document, as bytes (to check it against the log)."""
    answer = yield Exchange("GET", keys_url, MAX_KEYS_DOCUMENT)
    if answer.status != 200:
        raise PeerRejectedError(
            f"{keys_url} answered {answer.status} instead of key configurations", answer.status
        )
    if answer.media_type != MEDIA_TYPE_KEYS:
        raise TransportError(f"{keys_url} did not answer with {MEDIA_TYPE_KEYS}")
    return cast(bytes, answer.body)


def send_step(
    gateway_url: str,
    config: KeyConfig,
    inner: bytes,
    max_response: int = DEFAULT_MAX_MESSAGE,
    suite: SymmetricSuite | None = None,
) -> Step[bytes]:
    """Encapsulate `inner`, POST it, and return the decapsulated response bytes."""
    body, context = encapsulate_request(config, inner, suite=suite)
    headers = {"content-type": MEDIA_TYPE_REQUEST, "accept": MEDIA_TYPE_RESPONSE}
    answer = yield Exchange("POST", gateway_url, max_response, body, headers)
    if answer.status != 200:
        raise gateway_refused(answer.status, answer.retry_after)
    if answer.media_type != MEDIA_TYPE_RESPONSE:
        raise TransportError(f"the gateway did not answer with {MEDIA_TYPE_RESPONSE}")
    return context.decapsulate_response(answer.body, max_size=max_response)


class ChunkedAnswer:
    """A chunked OHTTP response being read: `read_step` gives its next authenticated pieces."""

    def __init__(self, decoder: ChunkedResponseDecoder) -> None:
        self._decoder = decoder
        self.ended = False

    def read_step(self) -> Step[list[bytes]]:
        """The pieces the next read authenticates (maybe none); after the last, `ended` is set.
        A stream cut before its authenticated final chunk raises `StreamTruncatedError`."""
        raw = yield ReadStream()
        try:
            if raw:
                return self._decoder.receive(raw)
            self.ended = True
            return self._decoder.close()
        except (DecodeError, OpenError):
            # Cut short, or cut and patched: either way nothing after the last good chunk counts.
            raise StreamTruncatedError(
                "the answer stream ended without its authenticated end; it is not the whole answer"
            ) from None


def chunked_step(gateway_url: str, config: KeyConfig, inner: bytes) -> Step[ChunkedAnswer]:
    """Encapsulate `inner` as a chunked OHTTP request (draft-ietf-ohai-chunked-ohttp) and POST
    it; the response, once its head has come, to read piece by piece (`ChunkedAnswer`)."""
    encoder = ChunkedRequestEncoder(config)
    body = bytearray(encoder.header())
    for start in range(0, len(inner), REQUEST_CHUNK):
        body += encoder.chunk(inner[start : start + REQUEST_CHUNK])
    body += encoder.chunk(b"", final=True)
    headers = {"content-type": MEDIA_TYPE_CHUNKED_REQUEST, "accept": MEDIA_TYPE_CHUNKED_RESPONSE}
    head: StreamHead = yield OpenStream("POST", gateway_url, bytes(body), headers)
    if head.status != 200:
        raise gateway_refused(head.status, head.retry_after)
    if head.media_type != MEDIA_TYPE_CHUNKED_RESPONSE:
        raise TransportError(f"the gateway did not answer with {MEDIA_TYPE_CHUNKED_RESPONSE}")
    return ChunkedAnswer(encoder.response_decoder(max_message_size=MAX_STREAMED))


def _chunked_pieces(gateway_url: str, config: KeyConfig, inner: bytes) -> Step[None]:
    answer = yield from chunked_step(gateway_url, config, inner)
    while not answer.ended:
        for piece in (yield from answer.read_step()):
            yield Emit(piece)


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
        self._driver = Driver(self._http)
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
        return self._driver.run(key_configs_step(keys_url))

    def send(
        self,
        gateway_url: str,
        config: KeyConfig,
        inner: bytes,
        *,
        suite: SymmetricSuite | None = None,
    ) -> bytes:
        """Encapsulate `inner`, POST it, and return the decapsulated response bytes."""
        return self._driver.run(send_step(gateway_url, config, inner, self.max_response, suite))

    def send_chunked(self, gateway_url: str, config: KeyConfig, inner: bytes) -> Iterator[bytes]:
        """Encapsulate `inner` as a chunked OHTTP request (draft-ietf-ohai-chunked-ohttp), POST it,
        and yield the response's pieces as they arrive, each authenticated. The iteration ends
        only after the response's authenticated final chunk; a stream cut before it raises
        `StreamTruncatedError`, whatever arrived before."""
        for piece in self._driver.iterate(_chunked_pieces(gateway_url, config, inner)):
            yield cast(bytes, piece)

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
