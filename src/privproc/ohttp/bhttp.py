"""Binary HTTP messages (RFC 9292): requests and responses, known and indeterminate length.

Rules of this module:
- Sans-IO: `encode_*` turn message objects into bytes, `decode_*` turn untrusted bytes into message
  objects or raise `DecodeError` (or a subclass). Nothing here knows about HPKE, sockets or servers.
- Decoding accepts every form the RFC allows: both framings, informational responses, trailers,
  zero padding, and truncation before any length prefix that precedes a field section or the
  content. It records how a message was framed (`Framing`), so that a decoded message re-encodes
  to exactly the same bytes.
- Field names and values follow the HTTP/2 rules that RFC 9292 §3.6 adopts (RFC 9113 §8.2.1):
  lowercase names of token characters, values without NUL/CR/LF or surrounding whitespace, no
  connection-specific fields. Anything else makes the message invalid.
- Every count is bounded (`Limits`), so a hostile message cannot make the decoder do unbounded work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from privproc.errors import DecodeError, TooLargeError, TruncatedError, UsageError
from privproc.wire import Reader, encode_varint

__all__ = [
    "Fields",
    "Framing",
    "InformationalResponse",
    "Limits",
    "Request",
    "Response",
    "decode_message",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

KNOWN_REQUEST, KNOWN_RESPONSE, INDETERMINATE_REQUEST, INDETERMINATE_RESPONSE = 0, 1, 2, 3

Fields = tuple[tuple[bytes, bytes], ...]

# HTTP field-name token characters, lowercase only (RFC 9110 §5.1, RFC 9113 §8.2.1).
_NAME_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE_RE = re.compile(rb"[\x00\r\n]")
_CONNECTION_FIELDS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
_METHOD_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# Request-target characters: visible ASCII without spaces (RFC 9112 §3.2, RFC 3986).
_TARGET_RE = re.compile(r"[\x21-\x7e]*")


@dataclass(frozen=True)
class Limits:
    """Bounds on what a decoder accepts. The defaults suit privproc's private requests."""

    max_fields: int = 256
    max_field_bytes: int = 64 * 1024
    max_control_bytes: int = 8 * 1024
    max_informational: int = 16
    max_chunks: int = 4096


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Framing:
    """How a message is laid out on the wire; it does not change the message's meaning.

    `omitted` counts the trailing parts left out by truncation (RFC 9292 §3.1, §3.2): 1 = trailer
    section, 2 = content and trailer, 3 = header section too. `padding` counts trailing zero bytes.
    """

    indeterminate: bool = False
    omitted: int = 0
    padding: int = 0

    @classmethod
    def shortest(cls, indeterminate: bool = False) -> Framing:
        """Truncate every empty trailing part: the encoder works out how many."""
        return cls(indeterminate=indeterminate, omitted=-1)


def _fields(items: Iterable[tuple[str | bytes, str | bytes]]) -> Fields:
    out = []
    for name, value in items:
        n = name.encode("ascii") if isinstance(name, str) else name
        v = value.encode("latin-1") if isinstance(value, str) else value
        out.append((n.lower(), v))
    return tuple(out)


def _get(fields: Fields, name: str) -> str | None:
    wanted = name.lower().encode("ascii")
    for n, v in fields:
        if n == wanted:
            return v.decode("latin-1")
    return None


@dataclass(frozen=True)
class Request:
    """An HTTP request: control data, header fields, content and trailer fields."""

    method: str
    scheme: str
    authority: str
    path: str
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()
    framing: Framing = field(default=Framing(), compare=False)

    @classmethod
    def build(
        cls,
        method: str,
        url: str,
        *,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        content: bytes = b"",
    ) -> Request:
        """A request for an absolute URL such as ``https://example.com/path?q=1``."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise UsageError("the URL must be absolute, such as https://host/path")
        authority, slash, path = rest.partition("/")
        return cls(method, scheme, authority, slash + path or "/", _fields(headers), content)

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)


@dataclass(frozen=True)
class InformationalResponse:
    status: int
    headers: Fields = ()


@dataclass(frozen=True)
class Response:
    """An HTTP response, with any informational (1xx) responses that preceded it."""

    status: int
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()
    informational: tuple[InformationalResponse, ...] = ()
    framing: Framing = field(default=Framing(), compare=False)

    @classmethod
    def build(
        cls,
        status: int,
        *,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        content: bytes = b"",
    ) -> Response:
        return cls(status, _fields(headers), content)

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)


# --- Validation --------------------------------------------------------------------------------


def _check_field(name: bytes, value: bytes) -> None:
    if not _NAME_RE.fullmatch(name):
        raise DecodeError("invalid field name (HTTP/2 rules: lowercase token characters)")
    if _BAD_VALUE_RE.search(value) or value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        raise DecodeError("invalid field value (NUL, CR, LF or surrounding whitespace)")
    if name in _CONNECTION_FIELDS or (name == b"te" and value != b"trailers"):
        raise DecodeError("connection-specific fields are not allowed in binary HTTP")


def _check_control(method: str, scheme: str, authority: str, path: str) -> None:
    if not _METHOD_RE.fullmatch(method):
        raise DecodeError("invalid request method")
    if not _SCHEME_RE.fullmatch(scheme):
        raise DecodeError("invalid request scheme")
    if not _TARGET_RE.fullmatch(authority) or "@" in authority:
        raise DecodeError("invalid request authority")
    if not _TARGET_RE.fullmatch(path):
        raise DecodeError("invalid request path")
    if method != "CONNECT" and scheme.lower() in ("http", "https") and not path:
        raise DecodeError("an http(s) request needs a non-empty path")


def _check_content_length(headers: Fields, content: bytes) -> None:
    for name, value in headers:
        if name == b"content-length" and (not value.isdigit() or int(value) != len(content)):
            raise DecodeError("content-length does not match the content")


# --- Encoding ----------------------------------------------------------------------------------


def _encode_fields(out: bytearray, fields: Fields, indeterminate: bool) -> None:
    body = bytearray()
    for name, value in fields:
        _check_field(name, value)
        body += encode_varint(len(name)) + name + encode_varint(len(value)) + value
    if indeterminate:
        out += body
        out += b"\x00"
    else:
        out += encode_varint(len(body))
        out += body


def _encode_content(out: bytearray, content: bytes, indeterminate: bool) -> None:
    if indeterminate:
        if content:
            out += encode_varint(len(content)) + content
        out += b"\x00"
    else:
        out += encode_varint(len(content)) + content


def _encode_tail(
    out: bytearray, headers: Fields, content: bytes, trailers: Fields, framing: Framing
) -> bytes:
    ind = framing.indeterminate
    omitted = framing.omitted
    if omitted < 0:  # shortest form: drop every empty trailing part
        omitted = 0
        if not trailers:
            omitted = 1
            if not content:
                omitted = 2
                if not headers:
                    omitted = 3
    if (omitted >= 1 and trailers) or (omitted >= 2 and content) or (omitted >= 3 and headers):
        raise UsageError("only empty parts can be truncated")
    if omitted < 3:
        _encode_fields(out, headers, ind)
    if omitted < 2:
        _encode_content(out, content, ind)
    if omitted < 1:
        _encode_fields(out, trailers, ind)
    out += bytes(framing.padding)
    return bytes(out)


def encode_request(request: Request, framing: Framing | None = None) -> bytes:
    """Encode a request; `framing` defaults to the one it was decoded with (known length)."""
    framing = framing or request.framing
    _check_control(request.method, request.scheme, request.authority, request.path)
    out = bytearray(
        encode_varint(INDETERMINATE_REQUEST if framing.indeterminate else KNOWN_REQUEST)
    )
    for part in (request.method, request.scheme, request.authority, request.path):
        raw = part.encode("ascii")
        out += encode_varint(len(raw)) + raw
    return _encode_tail(out, request.headers, request.content, request.trailers, framing)


def encode_response(response: Response, framing: Framing | None = None) -> bytes:
    framing = framing or response.framing
    out = bytearray(
        encode_varint(INDETERMINATE_RESPONSE if framing.indeterminate else KNOWN_RESPONSE)
    )
    for info in response.informational:
        if not 100 <= info.status <= 199:
            raise UsageError("informational status codes are 100-199")
        out += encode_varint(info.status)
        _encode_fields(out, info.headers, framing.indeterminate)
    if not 200 <= response.status <= 599:
        raise UsageError("final status codes are 200-599")
    out += encode_varint(response.status)
    return _encode_tail(out, response.headers, response.content, response.trailers, framing)


# --- Decoding ----------------------------------------------------------------------------------


class _Decoder:
    def __init__(self, data: bytes | memoryview, limits: Limits) -> None:
        self.r = Reader(data)
        self.limits = limits
        self.indeterminate = False

    def fields(self) -> Fields:
        limits = self.limits
        if self.indeterminate:
            r = self.r
            section_start = r.pos
        else:
            length = self.r.varint("field section length")
            if length > self.r.remaining:
                raise TruncatedError("field section is longer than the message")
            if length > limits.max_fields * limits.max_field_bytes:
                raise TooLargeError("field section exceeds the bound")
            r = Reader(self.r.read(length, "field section"))
            section_start = 0
        out: list[tuple[bytes, bytes]] = []
        while True:
            if self.indeterminate:
                name_len = r.varint("field name length")
                if name_len == 0:
                    break
            else:
                if r.at_end():
                    break
                name_len = r.varint("field name length")
                if name_len == 0:
                    raise DecodeError("field names cannot be empty")
            if len(out) >= limits.max_fields:
                raise TooLargeError(f"more than {limits.max_fields} fields")
            if name_len > limits.max_field_bytes:
                raise TooLargeError("field name exceeds the bound")
            name = r.read(name_len, "field name")
            value = r.varbytes("field value", limits.max_field_bytes)
            _check_field(name, value)
            out.append((name, value))
            if (
                self.indeterminate
                and r.pos - section_start > limits.max_fields * limits.max_field_bytes
            ):
                raise TooLargeError("field section exceeds the bound")
        return tuple(out)

    def content(self) -> bytes:
        r = self.r
        if not self.indeterminate:
            n = r.varint("content length")
            return r.read(n, "content")
        chunks: list[bytes] = []
        while True:
            n = r.varint("chunk length")
            if n == 0:
                return b"".join(chunks)
            if len(chunks) >= self.limits.max_chunks:
                raise TooLargeError(f"more than {self.limits.max_chunks} content chunks")
            chunks.append(r.read(n, "content chunk"))

    def tail(self) -> tuple[Fields, bytes, Fields, Framing]:
        """Header section, content, trailer section, each of which may be truncated; padding."""
        parts: list[object] = []
        readers = (self.fields, self.content, self.fields)
        for reader in readers:
            if self.r.at_end():
                break
            parts.append(reader())
        omitted = len(readers) - len(parts)
        padding = self.r.rest()
        if any(padding):
            raise DecodeError("padding must be zero bytes")
        headers = parts[0] if len(parts) > 0 else ()
        content = parts[1] if len(parts) > 1 else b""
        trailers = parts[2] if len(parts) > 2 else ()
        framing = Framing(self.indeterminate, omitted, len(padding))
        return headers, content, trailers, framing  # type: ignore[return-value]

    def framing_indicator(self) -> int:
        indicator = self.r.varint("framing indicator")
        if indicator > INDETERMINATE_RESPONSE:
            raise DecodeError(f"unknown framing indicator {indicator}")
        self.indeterminate = indicator >= INDETERMINATE_REQUEST
        return indicator

    def control_string(self, what: str) -> str:
        raw = self.r.varbytes(what, self.limits.max_control_bytes)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError(f"request {what} must be ASCII") from None

    def request(self) -> Request:
        method = self.control_string("method")
        scheme = self.control_string("scheme")
        authority = self.control_string("authority")
        path = self.control_string("path")
        _check_control(method, scheme, authority, path)
        headers, content, trailers, framing = self.tail()
        _check_content_length(headers, content)
        return Request(method, scheme, authority, path, headers, content, trailers, framing)

    def response(self) -> Response:
        informational: list[InformationalResponse] = []
        while True:
            status = self.r.varint("status code")
            if 200 <= status <= 599:
                break
            if not 100 <= status <= 199:
                raise DecodeError(f"invalid status code {status}")
            if len(informational) >= self.limits.max_informational:
                raise TooLargeError("too many informational responses")
            informational.append(InformationalResponse(status, self.fields()))
        headers, content, trailers, framing = self.tail()
        _check_content_length(headers, content)
        return Response(status, headers, content, trailers, tuple(informational), framing)


def decode_message(data: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Decode either kind of message, as its framing indicator says."""
    d = _Decoder(data, limits)
    indicator = d.framing_indicator()
    if indicator in (KNOWN_REQUEST, INDETERMINATE_REQUEST):
        return d.request()
    return d.response()


def decode_request(data: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> Request:
    message = decode_message(data, limits)
    if not isinstance(message, Request):
        raise DecodeError("expected a request, found a response")
    return message


def decode_response(data: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> Response:
    message = decode_message(data, limits)
    if not isinstance(message, Response):
        raise DecodeError("expected a response, found a request")
    return message
