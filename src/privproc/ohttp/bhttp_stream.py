"""Binary HTTP responses (RFC 9292) as a stream: an incremental encoder and decoder.

A streamed answer travels inside chunked Oblivious HTTP as one indeterminate-length binary HTTP
response, produced and consumed piece by piece:

    response = varint(3) || { informational }* || status || header-section
               || { varint(len(chunk)) || chunk }* || varint(0) || trailer-section || padding
    section  = { varint(len(name)) || name || varint(len(value)) || value }* || varint(0)

Rules of this module:
- Sans-IO: `encode_head`, `encode_content` and `encode_end` return the bytes of one piece of the
  response; `ResponseStreamDecoder.receive` takes whatever bytes have arrived and returns the
  events (`Head`, `Content`, `End`) they complete. Nothing here reads a socket or a clock.
- Events come out as early as the wire allows: `Head` once the header section is complete (any
  informational 1xx responses before it are checked and skipped), one `Content` per content
  chunk once that chunk is complete, `End` once the trailer section is complete.
- Truncation (RFC 9292 §3.8): the stream may end right after the final status code, right after
  the header section or right after the content terminator; `close()` then completes the message
  with empty parts. Ending anywhere else (inside a varint, a field, a chunk, an informational
  response) raises `TruncatedError`. Zero bytes may follow the message (padding); any other byte
  raises `TrailingDataError`.
- Known-length responses (framing indicator 1) cannot be streamed: they are buffered, up to
  `max_known_length` bytes, and decoded by `bhttp.decode_response` when the stream closes.
- Validity is that of `bhttp`: the same field rules, the same `Limits` on fields and
  informational responses, the same content-length check. Requests (indicators 0 and 2) and
  unknown indicators are refused. `Limits.max_chunks` does not apply: a stream may carry any
  number of chunks, since the decoder never holds more than one.
- Memory is bounded: between calls the decoder holds at most one field (or one informational or
  header section's fields, bounded by `Limits`) or one content chunk of at most `max_chunk`
  bytes; a chunk length above `max_chunk` is refused as soon as its length prefix arrives.
- Every failure is a typed `PrivprocError`; after one, the decoder refuses all further input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from privproc.errors import (
    DecodeError,
    PrivprocError,
    TooLargeError,
    TrailingDataError,
    TruncatedError,
    UsageError,
)
from privproc.ohttp.bhttp import (
    DEFAULT_LIMITS,
    INDETERMINATE_REQUEST,
    INDETERMINATE_RESPONSE,
    KNOWN_REQUEST,
    KNOWN_RESPONSE,
    Fields,
    Limits,
    _check_field,
    _encode_fields,
    _fields,
    _get,
    decode_response,
)
from privproc.wire import encode_varint

__all__ = [
    "Content",
    "End",
    "Event",
    "Head",
    "ResponseStreamDecoder",
    "encode_content",
    "encode_end",
    "encode_head",
]

DEFAULT_MAX_CHUNK = 1 << 20
DEFAULT_MAX_KNOWN_LENGTH = 1 << 20


@dataclass(frozen=True)
class Head:
    """The final status code and header fields of the response."""

    status: int
    headers: Fields = ()

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)


@dataclass(frozen=True)
class Content:
    """One piece of the response content, in order."""

    data: bytes


@dataclass(frozen=True)
class End:
    """The end of the response, with its trailer fields."""

    trailers: Fields = ()


Event: TypeAlias = Head | Content | End


# --- Encoding ----------------------------------------------------------------------------------


def encode_head(status: int, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """Framing indicator 3, the final status code and the header section."""
    if not 200 <= status <= 599:
        raise UsageError("final status codes are 200-599")
    out = bytearray(encode_varint(INDETERMINATE_RESPONSE))
    out += encode_varint(status)
    _encode_fields(out, _fields(headers), True)
    return bytes(out)


def encode_content(data: bytes) -> bytes:
    """One content chunk; nothing for empty data (an empty chunk would end the content)."""
    if not data:
        return b""
    return encode_varint(len(data)) + bytes(data)


def encode_end(trailers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The content terminator and the trailer section, which is left out when it is empty."""
    fields = _fields(trailers)
    out = bytearray(b"\x00")
    if fields:
        _encode_fields(out, fields, True)
    return bytes(out)


# --- Decoding ----------------------------------------------------------------------------------


def _peek_varint(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """The varint at `pos` and its width, or None if it has not all arrived."""
    if pos >= len(buf):
        return None
    width = 1 << (buf[pos] >> 6)
    if len(buf) - pos < width:
        return None
    raw = int.from_bytes(buf[pos : pos + width], "big")
    return raw & ((1 << (8 * width - 2)) - 1), width


# Decoder stages.
_INDICATOR, _KNOWN, _STATUS, _INFO, _HEADERS, _CHUNKS, _TRAILERS, _DONE = range(8)


class ResponseStreamDecoder:
    """Decodes one binary HTTP response incrementally; see the module docstring for the rules."""

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        *,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        max_known_length: int = DEFAULT_MAX_KNOWN_LENGTH,
    ) -> None:
        if max_chunk < 1 or max_known_length < 1:
            raise UsageError("size limits must be positive")
        self._limits = limits
        self._max_chunk = max_chunk
        self._max_known_length = max_known_length
        self._buf = bytearray()
        self._stage = _INDICATOR
        self._closed = False
        self._error: PrivprocError | None = None
        # The section being read: its fields and the bytes it has taken so far.
        self._fields: list[tuple[bytes, bytes]] = []
        self._section_bytes = 0
        self._informational = 0
        self._status = 0
        self._content_length: int | None = None
        self._content_seen = 0

    @property
    def finished(self) -> bool:
        """True once `End` has been produced."""
        return self._stage == _DONE

    def receive(self, data: bytes) -> list[Event]:
        """Feed the next bytes of the stream; returns the events they complete."""
        self._check_usable()
        try:
            return self._process(bytes(data))
        except PrivprocError as exc:
            self._fail(exc)
            raise

    def close(self) -> list[Event]:
        """Mark the end of the stream; returns the events that completes.

        Raises `TruncatedError` unless the stream ended where RFC 9292 allows it to.
        """
        self._check_usable()
        self._closed = True
        try:
            return self._finish()
        except PrivprocError as exc:
            self._fail(exc)
            raise

    def _check_usable(self) -> None:
        if self._error is not None:
            raise type(self._error)("the response stream already failed; discard it")
        if self._closed:
            raise UsageError("the response stream is already closed")

    def _fail(self, exc: PrivprocError) -> None:
        self._error = exc
        self._buf.clear()
        self._fields.clear()

    # The state machine

    def _process(self, data: bytes) -> list[Event]:
        if self._stage == _DONE:
            if any(data):
                raise TrailingDataError("only zero padding may follow a binary HTTP response")
            return []
        buf = self._buf
        if self._stage == _KNOWN:
            if len(buf) + len(data) > self._max_known_length:
                raise TooLargeError(f"known-length response exceeds {self._max_known_length} bytes")
            buf += data
            return []
        buf += data
        out: list[Event] = []
        pos = self._run(out)
        if self._stage == _KNOWN:
            if len(buf) > self._max_known_length:
                raise TooLargeError(f"known-length response exceeds {self._max_known_length} bytes")
        else:
            del buf[:pos]
        return out

    def _run(self, out: list[Event]) -> int:
        """Consume every complete unit in the buffer; returns how many bytes were consumed."""
        buf = self._buf
        pos = 0
        while True:
            stage = self._stage
            if stage == _INDICATOR:
                got = _peek_varint(buf, pos)
                if got is None:
                    return pos
                indicator, width = got
                if indicator == KNOWN_RESPONSE:
                    self._stage = _KNOWN  # keep the whole message, indicator included
                    return 0
                if indicator in (KNOWN_REQUEST, INDETERMINATE_REQUEST):
                    raise DecodeError("expected a response, found a request")
                if indicator != INDETERMINATE_RESPONSE:
                    raise DecodeError(f"unknown framing indicator {indicator}")
                pos += width
                self._stage = _STATUS
            elif stage == _STATUS:
                got = _peek_varint(buf, pos)
                if got is None:
                    return pos
                status, width = got
                if 200 <= status <= 599:
                    self._status = status
                    self._stage = _HEADERS
                elif 100 <= status <= 199:
                    if self._informational >= self._limits.max_informational:
                        raise TooLargeError("too many informational responses")
                    self._informational += 1
                    self._stage = _INFO
                else:
                    raise DecodeError(f"invalid status code {status}")
                pos += width
            elif stage in (_INFO, _HEADERS, _TRAILERS):
                step = self._field(pos)
                if step is None:
                    return pos
                consumed, terminated = step
                pos += consumed
                if terminated:
                    fields = tuple(self._fields)
                    self._fields.clear()
                    if stage == _INFO:
                        self._stage = _STATUS
                    elif stage == _HEADERS:
                        self._head(fields, out)
                    else:
                        self._end(fields, out)
                        return self._padding(pos)
            elif stage == _CHUNKS:
                got = _peek_varint(buf, pos)
                if got is None:
                    return pos
                length, width = got
                if length == 0:
                    pos += width
                    self._stage = _TRAILERS
                    continue
                if length > self._max_chunk:
                    raise TooLargeError(f"a content chunk exceeds {self._max_chunk} bytes")
                if len(buf) - pos - width < length:
                    return pos
                self._count_content(length)
                out.append(Content(bytes(buf[pos + width : pos + width + length])))
                pos += width + length
            else:  # pragma: no cover - _KNOWN and _DONE return before looping
                return pos

    def _field(self, pos: int) -> tuple[int, bool] | None:
        """Read one field line, or the section terminator.

        Returns the bytes consumed and whether the section ended, or None if the whole unit has
        not arrived yet.
        """
        buf = self._buf
        limits = self._limits
        got = _peek_varint(buf, pos)
        if got is None:
            return None
        name_len, w1 = got
        if name_len == 0:
            self._section_bytes = 0
            return w1, True
        if len(self._fields) >= limits.max_fields:
            raise TooLargeError(f"more than {limits.max_fields} fields")
        if name_len > limits.max_field_bytes:
            raise TooLargeError("field name exceeds the bound")
        at = pos + w1 + name_len
        got = _peek_varint(buf, at)
        if got is None:
            return None
        value_len, w2 = got
        if value_len > limits.max_field_bytes:
            raise TooLargeError("field value exceeds the bound")
        end = at + w2 + value_len
        if len(buf) < end:
            return None
        name = bytes(buf[pos + w1 : at])
        value = bytes(buf[at + w2 : end])
        _check_field(name, value)
        self._fields.append((name, value))
        self._section_bytes += end - pos
        if self._section_bytes > limits.max_fields * limits.max_field_bytes:
            raise TooLargeError("field section exceeds the bound")
        return end - pos, False

    def _head(self, headers: Fields, out: list[Event]) -> None:
        declared = set()
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    raise DecodeError("content-length does not match the content")
                declared.add(int(value))
        if len(declared) > 1:
            raise DecodeError("content-length does not match the content")
        self._content_length = declared.pop() if declared else None
        out.append(Head(self._status, headers))
        self._stage = _CHUNKS

    def _count_content(self, length: int) -> None:
        self._content_seen += length
        if self._content_length is not None and self._content_seen > self._content_length:
            raise DecodeError("content-length does not match the content")

    def _end(self, trailers: Fields, out: list[Event]) -> None:
        if self._content_length is not None and self._content_seen != self._content_length:
            raise DecodeError("content-length does not match the content")
        out.append(End(trailers))
        self._stage = _DONE

    def _padding(self, pos: int) -> int:
        rest = self._buf[pos:]
        if any(rest):
            raise TrailingDataError("only zero padding may follow a binary HTTP response")
        return len(self._buf)

    def _finish(self) -> list[Event]:
        stage = self._stage
        out: list[Event] = []
        if stage == _DONE:
            return out
        if stage == _KNOWN:
            response = decode_response(bytes(self._buf), self._limits)
            self._buf.clear()
            out.append(Head(response.status, response.headers))
            if response.content:
                out.append(Content(response.content))
            out.append(End(response.trailers))
            self._stage = _DONE
            return out
        if self._buf:
            raise TruncatedError("the response stream ended inside a varint, field or chunk")
        if stage == _HEADERS and not self._fields:
            # Right after the final status code: header section, content and trailers omitted.
            self._head((), out)
            self._end((), out)
        elif (stage == _CHUNKS and self._content_seen == 0) or (
            stage == _TRAILERS and not self._fields
        ):
            # Right after the header section (content and trailers omitted), or right after the
            # content terminator (trailers omitted).
            self._end((), out)
        else:
            raise TruncatedError("the response stream ended before the response was complete")
        return out
