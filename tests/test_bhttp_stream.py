"""Streamed binary HTTP responses: events come out as early as the wire allows, every form that
`bhttp` produces or accepts decodes to the same message, truncation is legal exactly where RFC 9292
§3.8 allows it, and random bytes never escape the typed error hierarchy."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import (
    DecodeError,
    PrivprocError,
    TooLargeError,
    TrailingDataError,
    TruncatedError,
    UsageError,
)
from privproc.ohttp import bhttp
from privproc.ohttp.bhttp_stream import (
    Content,
    End,
    Event,
    Head,
    ResponseStreamDecoder,
    encode_content,
    encode_end,
    encode_head,
)
from privproc.wire import encode_varint
from tests.conftest import load_vectors

EXAMPLES: dict[str, Any] = {
    e["name"].split(" ")[0]: bytes.fromhex(e["bhttp"])
    for e in load_vectors("bhttp/rfc9292-examples.json")["examples"]
}

Summary = tuple[int, bhttp.Fields, bytes, bhttp.Fields]


def _feed(raw: bytes, sizes: Iterable[int] = (), **kw: Any) -> list[Event]:
    """Feed `raw` in pieces of the given sizes (the rest in one piece), then close."""
    dec = ResponseStreamDecoder(**kw)
    events: list[Event] = []
    pos = 0
    for size in sizes:
        events += dec.receive(raw[pos : pos + size])
        pos += size
    events += dec.receive(raw[pos:])
    events += dec.close()
    assert dec.finished
    return events


def _bytewise(raw: bytes, **kw: Any) -> list[Event]:
    return _feed(raw, [1] * len(raw), **kw)


def _summary(events: Sequence[Event]) -> Summary:
    """Check the event grammar (Head, Content*, End) and flatten it."""
    assert isinstance(events[0], Head)
    assert isinstance(events[-1], End)
    middle = events[1:-1]
    assert all(isinstance(e, Content) and e.data for e in middle)
    content = b"".join(e.data for e in middle if isinstance(e, Content))
    return events[0].status, events[0].headers, content, events[-1].trailers


def _of(response: bhttp.Response) -> Summary:
    return response.status, response.headers, response.content, response.trailers


def _message(
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (("content-type", "text/plain"),),
    chunks: Sequence[bytes] = (b"Hello, ", b"world"),
    trailers: Sequence[tuple[str, str]] = (),
) -> bytes:
    return (
        encode_head(status, headers)
        + b"".join(encode_content(c) for c in chunks)
        + encode_end(trailers)
    )


# --- Encoding ----------------------------------------------------------------------------------


def test_encoders() -> None:
    assert encode_head(200) == b"\x03\x40\xc8\x00"
    assert encode_head(204, [("X-A", "b")]) == b"\x03\x40\xcc\x03x-a\x01b\x00"
    assert encode_content(b"") == b""
    assert encode_content(b"abc") == b"\x03abc"
    assert encode_content(b"x" * 100) == b"\x40\x64" + b"x" * 100
    assert encode_end() == b"\x00"  # the empty trailer section is truncated
    assert encode_end([("t", "v")]) == b"\x00\x01t\x01v\x00"


def test_encoders_refuse_what_the_decoder_refuses() -> None:
    for status in (99, 103, 600):
        with pytest.raises(UsageError):
            encode_head(status)
    with pytest.raises(DecodeError):
        encode_head(200, [("connection", "close")])
    with pytest.raises(DecodeError):
        encode_end([("a", "x\ny")])


@pytest.mark.parametrize(
    ("chunks", "trailers"),
    [
        ((), ()),
        ((b"",), ()),
        ((b"one",), ()),
        ((b"a", b"", b"bc", b"x" * 70_000), ()),
        ((), (("t", "v"),)),
        ((b"data",), (("server-timing", "total;dur=12"), ("x-b", ""))),
    ],
)
def test_stream_encoding_interop_with_bhttp(
    chunks: tuple[bytes, ...], trailers: tuple[tuple[str, str], ...]
) -> None:
    headers = (("content-type", "text/event-stream"), ("X-Request-Id", "abc"))
    raw = _message(201, headers, chunks, trailers)
    resp = bhttp.decode_response(raw)
    expected = (
        201,
        ((b"content-type", b"text/event-stream"), (b"x-request-id", b"abc")),
        b"".join(chunks),
        tuple((n.encode(), v.encode()) for n, v in trailers),
    )
    assert _of(resp) == expected
    assert resp.framing.indeterminate
    assert _summary(_feed(raw)) == expected
    assert _summary(_bytewise(raw)) == expected


# --- Incremental delivery ----------------------------------------------------------------------


def test_events_come_out_incrementally() -> None:
    dec = ResponseStreamDecoder()
    head = encode_head(200, [("content-type", "text/plain")])
    assert dec.receive(head) == [Head(200, ((b"content-type", b"text/plain"),))]
    assert dec.receive(encode_content(b"first")) == [Content(b"first")]
    two = encode_content(b"second")
    assert dec.receive(two[:3]) == []
    assert dec.receive(two[3:]) == [Content(b"second")]
    assert not dec.finished
    assert dec.receive(encode_end([("t", "v")])) == [End(((b"t", b"v"),))]
    assert dec.finished
    assert dec.receive(b"\x00\x00") == []  # padding
    assert dec.close() == []


def test_bytewise_events_appear_exactly_when_complete() -> None:
    head = encode_head(200, [("a", "b")])
    c1, c2 = encode_content(b"xyz"), encode_content(b"w" * 80)
    end = encode_end([("t", "v")])
    raw = head + c1 + c2 + end
    dec = ResponseStreamDecoder()
    seen: dict[int, list[Event]] = {}
    for i in range(len(raw)):
        events = dec.receive(raw[i : i + 1])
        if events:
            seen[i + 1] = events
    assert dec.close() == []
    b1, b2, b3 = len(head), len(head + c1), len(head + c1 + c2)
    assert seen == {
        b1: [Head(200, ((b"a", b"b"),))],
        b2: [Content(b"xyz")],
        b3: [Content(b"w" * 80)],
        len(raw): [End(((b"t", b"v"),))],
    }


def test_one_receive_can_complete_many_events() -> None:
    raw = _message(chunks=(b"a", b"b", b"c"), trailers=[("t", "v")])
    dec = ResponseStreamDecoder()
    events = dec.receive(raw)
    assert [type(e) for e in events] == [Head, Content, Content, Content, End]
    assert dec.finished


def test_end_without_trailers_needs_close() -> None:
    # encode_end() leaves out the empty trailer section, so only the end of the stream says
    # that no trailers follow.
    dec = ResponseStreamDecoder()
    assert [type(e) for e in dec.receive(_message())] == [Head, Content, Content]
    assert not dec.finished
    assert dec.close() == [End(())]
    assert dec.finished


def test_head_helper() -> None:
    (head, *_) = _feed(_message(headers=[("Content-Type", "text/plain")]))
    assert isinstance(head, Head)
    assert head.header("content-type") == "text/plain"
    assert head.header("CONTENT-TYPE") == "text/plain"
    assert head.header("missing") is None


def test_decoder_holds_at_most_one_unit() -> None:
    dec = ResponseStreamDecoder()
    dec.receive(encode_head(200))
    for _ in range(50):
        assert dec.receive(encode_content(b"x" * 1000)) == [Content(b"x" * 1000)]
        assert len(dec._buf) == 0
    dec.receive(encode_content(b"y" * 1000)[:500])
    assert len(dec._buf) == 500


# --- Everything bhttp produces ----------------------------------------------------------------

_NAMES = st.sampled_from([b"a", b"x-thing", b"content-type", b"te", b"set-cookie", b"x-" * 40])
_VALUES = st.sampled_from([b"", b"v", b"trailers", b"a b", b"\xff\x80", b"x" * 70])
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=4).map(
    lambda fs: tuple((n, v) for n, v in fs if n != b"te" or v == b"trailers")
)
_INFO = st.builds(bhttp.InformationalResponse, st.integers(100, 199), _FIELDS)
_RESPONSES = st.builds(
    bhttp.Response,
    st.integers(200, 599),
    _FIELDS,
    st.binary(max_size=300),
    _FIELDS,
    st.lists(_INFO, max_size=3).map(tuple),
)
_SPLITS = st.lists(st.integers(0, 40), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    _RESPONSES,
    st.one_of(
        st.builds(bhttp.Framing, st.just(True), st.integers(0, 3), st.integers(0, 5)),
        st.builds(lambda p: bhttp.Framing(True, -1, p), st.integers(0, 5)),
    ),
    _SPLITS,
)
def test_property_every_bhttp_indeterminate_response(
    response: bhttp.Response, framing: bhttp.Framing, sizes: list[int]
) -> None:
    try:
        raw = bhttp.encode_response(response, framing)
    except UsageError:  # the framing truncates a part that is not empty
        return
    assert _of(bhttp.decode_response(raw)) == _of(response)
    assert _summary(_feed(raw, sizes)) == _of(response)


@settings(max_examples=100, deadline=None)
@given(_RESPONSES, st.integers(0, 5))
def test_property_bytewise(response: bhttp.Response, padding: int) -> None:
    raw = bhttp.encode_response(response, bhttp.Framing(indeterminate=True, padding=padding))
    assert _summary(_bytewise(raw)) == _of(response)


@settings(max_examples=200, deadline=None)
@given(_RESPONSES, st.integers(0, 5), st.booleans(), _SPLITS)
def test_property_known_length(
    response: bhttp.Response, padding: int, shortest: bool, sizes: list[int]
) -> None:
    framing = bhttp.Framing(omitted=-1 if shortest else 0, padding=padding)
    raw = bhttp.encode_response(response, framing)
    events = _feed(raw, sizes)
    assert _summary(events) == _of(response)
    assert len(events) == (3 if response.content else 2)


# --- RFC 9292 §5 examples ---------------------------------------------------------------------


def test_rfc_example_interim_indeterminate() -> None:
    raw = EXAMPLES["response_with_interim_indeterminate"]
    expected = _of(bhttp.decode_response(raw))
    assert _summary(_feed(raw)) == expected
    assert _summary(_bytewise(raw)) == expected
    events = _bytewise(raw)
    assert len(events) == 3  # the 102 and 103 responses are skipped
    head = events[0]
    assert isinstance(head, Head)
    assert head.status == 200
    assert head.header("content-length") == "51"
    assert events[1] == Content(b"Hello World! My content includes a trailing CRLF.\r\n")
    assert events[2] == End(())


@pytest.mark.parametrize("name", ["response_chunked_to_known_length", "tiny_response_known"])
def test_rfc_example_known_length(name: str) -> None:
    raw = EXAMPLES[name]
    assert raw[0] == 0x01
    expected = _of(bhttp.decode_response(raw))
    assert _summary(_feed(raw)) == expected
    assert _summary(_bytewise(raw)) == expected


def test_known_length_events() -> None:
    raw = EXAMPLES["response_chunked_to_known_length"]
    dec = ResponseStreamDecoder()
    assert dec.receive(raw) == []  # nothing until the stream ends
    assert not dec.finished
    assert dec.close() == [
        Head(200, ()),
        Content(b"This content contains CRLF.\r\n"),
        End(((b"trailer", b"text"),)),
    ]
    assert dec.finished
    assert _feed(EXAMPLES["tiny_response_known"]) == [Head(200, ()), End(())]


@pytest.mark.parametrize("name", ["request_known_length", "request_indeterminate_length"])
def test_rfc_request_examples_refused(name: str) -> None:
    dec = ResponseStreamDecoder()
    with pytest.raises(DecodeError):
        dec.receive(EXAMPLES[name])


# --- Truncation --------------------------------------------------------------------------------


def _accepts_prefix(raw: bytes, n: int) -> bool:
    dec = ResponseStreamDecoder()
    dec.receive(raw[:n])  # never raises TruncatedError: it does not know the stream ended
    try:
        dec.close()
    except TruncatedError:
        return False
    return True


def test_truncation_only_at_legal_points() -> None:
    info = encode_varint(103) + b"\x04link\x03</>\x00"
    head = encode_head(200, [("a", "b")])
    raw = (
        head[:1]
        + info
        + head[1:]
        + encode_content(b"xy")
        + encode_content(b"z")
        + encode_end([("t", "v")])
    )
    after_status = 1 + len(info) + 2  # indicator, informational response, status 200
    after_headers = 1 + len(info) + len(head) - 1
    after_content = after_headers + 3 + 2 + 1
    legal = {n for n in range(len(raw) + 1) if _accepts_prefix(raw, n)}
    assert legal == {after_status, after_headers, after_content, len(raw)}
    # bhttp agrees about every prefix, and about what the legal ones mean.
    for n in range(len(raw) + 1):
        if n in legal:
            events = _bytewise(raw[:n])
            assert _summary(events) == _of(bhttp.decode_response(raw[:n]))
        else:
            with pytest.raises(TruncatedError):
                bhttp.decode_response(raw[:n])
    assert _feed(raw[:after_status]) == [Head(200, ()), End(())]
    assert _feed(raw[:after_headers]) == [Head(200, ((b"a", b"b"),)), End(())]
    assert _summary(_feed(raw[:after_content])) == (200, ((b"a", b"b"),), b"xyz", ())


def test_truncated_forms_from_bhttp_shortest() -> None:
    for response, length in [
        (bhttp.Response(204), 3),
        (bhttp.Response(200, ((b"a", b"b"),)), 8),
        (bhttp.Response(200, content=b"xy"), 8),
    ]:
        raw = bhttp.encode_response(response, bhttp.Framing.shortest(True))
        assert len(raw) == length
        assert _summary(_bytewise(raw)) == _of(response)


def test_truncation_with_zero_padding_after_a_legal_point() -> None:
    # Zero bytes after the status code read as empty sections, then as padding.
    for extra in range(6):
        raw = b"\x03\x40\xc8" + bytes(extra)
        assert _feed(raw) == [Head(200, ()), End(())]


def test_empty_stream_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        ResponseStreamDecoder().close()


def test_known_length_truncated() -> None:
    raw = EXAMPLES["response_chunked_to_known_length"]
    dec = ResponseStreamDecoder()
    dec.receive(raw[:10])
    with pytest.raises(TruncatedError):
        dec.close()


# --- Bounds ------------------------------------------------------------------------------------


def test_oversize_chunk_refused_before_its_bytes() -> None:
    dec = ResponseStreamDecoder(max_chunk=10)
    dec.receive(encode_head(200))
    assert dec.receive(encode_content(b"x" * 10)) == [Content(b"x" * 10)]
    with pytest.raises(TooLargeError):
        dec.receive(encode_varint(11))
    huge = ResponseStreamDecoder()
    huge.receive(encode_head(200))
    with pytest.raises(TooLargeError):
        huge.receive(encode_varint((1 << 62) - 1))


def test_known_length_bound() -> None:
    raw = bhttp.encode_response(bhttp.Response(200, content=b"x" * 100))
    assert _summary(_feed(raw, max_known_length=len(raw)))[2] == b"x" * 100
    dec = ResponseStreamDecoder(max_known_length=len(raw) - 1)
    with pytest.raises(TooLargeError):
        dec.receive(raw)
    dec = ResponseStreamDecoder(max_known_length=50)
    dec.receive(raw[:50])
    with pytest.raises(TooLargeError):
        dec.receive(raw[50:51])


def test_field_limits() -> None:
    many = [("a", "b")] * 300
    with pytest.raises(TooLargeError):
        _feed(encode_head(200, many))
    with pytest.raises(TooLargeError):
        _feed(_message(trailers=many))
    small = bhttp.Limits(max_field_bytes=4)
    with pytest.raises(TooLargeError):
        _feed(encode_head(200, [("a", "bbbbb")]), limits=small)
    with pytest.raises(TooLargeError):
        _feed(encode_head(200, [("aaaaa", "b")]), limits=small)
    # The name length alone is enough to refuse.
    dec = ResponseStreamDecoder(small)
    with pytest.raises(TooLargeError):
        dec.receive(b"\x03\x40\xc8\x05")
    interim = b"\x03" + b"\x40\x64\x00" * 20 + encode_head(200)[1:] + b"\x00"
    with pytest.raises(TooLargeError):
        _feed(interim)
    assert _feed(interim, limits=bhttp.Limits(max_informational=20))[0] == Head(200, ())


def test_max_chunks_does_not_bound_a_stream() -> None:
    raw = _message(chunks=[b"x"] * 50)
    with pytest.raises(TooLargeError):
        bhttp.decode_response(raw, bhttp.Limits(max_chunks=10))
    assert _summary(_feed(raw, limits=bhttp.Limits(max_chunks=10)))[2] == b"x" * 50


def test_bad_limits() -> None:
    with pytest.raises(UsageError):
        ResponseStreamDecoder(max_chunk=0)
    with pytest.raises(UsageError):
        ResponseStreamDecoder(max_known_length=0)


# --- Invalid input -----------------------------------------------------------------------------


def _receive_bytewise(dec: ResponseStreamDecoder, raw: bytes) -> None:
    for i in range(len(raw)):
        dec.receive(raw[i : i + 1])


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\x00", DecodeError),  # known-length request
        (b"\x02", DecodeError),  # indeterminate-length request
        (b"\x04", DecodeError),  # unknown framing indicator
        (b"\x40\x05", DecodeError),
        (b"\x03\x40\x63", DecodeError),  # status 99
        (b"\x03\x42\x58", DecodeError),  # status 600
        (b"\x03\x00", DecodeError),  # status 0
        (b"\x03\x40\x64\x00\x40\x63", DecodeError),  # 99 after an informational response
        (b"\x03\x40\xc8\x04Host\x01x\x00", DecodeError),  # uppercase name
        (b"\x03\x40\xc8\x05:path\x01/\x00", DecodeError),  # pseudo-header
        (b"\x03\x40\xc8\x01a\x03x\ny\x00", DecodeError),
        (b"\x03\x40\xc8\x01a\x02 x\x00", DecodeError),
        (b"\x03\x40\xc8\x0aconnection\x05close\x00", DecodeError),
        (b"\x03\x40\xc8\x02te\x04gzip\x00", DecodeError),
        (b"\x03\x40\x64\x01A\x01x\x00", DecodeError),  # bad field in an informational response
        (b"\x03\x40\xc8\x00\x00\x01T\x01x\x00", DecodeError),  # bad trailer
        (b"\x03\x40\xc8\x0econtent-length\x01x\x00", DecodeError),
        (b"\x03\x40\xc8\x0econtent-length\x012\x00\x03abc", DecodeError),  # too much content
        (b"\x03\x40\xc8\x00\x00\x00\x01", TrailingDataError),  # non-zero padding
        (b"\x03\x40\xc8\x00\x00\x00\x00\x00\xff", TrailingDataError),
    ],
)
def test_invalid_on_receive(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        ResponseStreamDecoder().receive(raw)
    with pytest.raises(error):
        _receive_bytewise(ResponseStreamDecoder(), raw)
    # bhttp refuses the same bytes.
    with pytest.raises(DecodeError):
        bhttp.decode_response(raw)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\x03\x40\xc8\x0econtent-length\x015\x00", DecodeError),  # no content at all
        (b"\x03\x40\xc8\x0econtent-length\x013\x00\x02ab\x00", DecodeError),  # too little
        (b"\x01\x40\xc8\x00\x01x\x00\x01", DecodeError),  # known-length non-zero padding
        (b"\x01\x40\xc8\x02\x01a", TruncatedError),
        (b"\x03\x40", TruncatedError),  # inside the status varint
        (b"\x03\x40\x64", TruncatedError),  # informational status, no fields
        (b"\x03\x40\x64\x00", TruncatedError),  # no final status
        (b"\x03\x40\xc8\x01a\x01b", TruncatedError),  # header section not terminated
        (b"\x03\x40\xc8\x00\x03ab", TruncatedError),  # inside a chunk
        (b"\x03\x40\xc8\x00\x01a", TruncatedError),  # no content terminator
        (b"\x03\x40\xc8\x00\x00\x01t\x01v", TruncatedError),  # trailers not terminated
    ],
)
def test_invalid_on_close(raw: bytes, error: type[Exception]) -> None:
    dec = ResponseStreamDecoder()
    dec.receive(raw)
    with pytest.raises(error):
        dec.close()
    with pytest.raises(error):
        bhttp.decode_response(raw)


def test_content_length_checked() -> None:
    raw = _message(headers=[("content-length", "3")], chunks=[b"ab", b"c"])
    assert _summary(_bytewise(raw))[2] == b"abc"
    assert _of(bhttp.decode_response(raw))[2] == b"abc"


# --- Misuse and failure ------------------------------------------------------------------------


def test_refuses_everything_after_an_error() -> None:
    dec = ResponseStreamDecoder()
    with pytest.raises(DecodeError):
        dec.receive(b"\x02")
    with pytest.raises(DecodeError):
        dec.receive(b"")
    with pytest.raises(DecodeError):
        dec.receive(encode_head(200))
    with pytest.raises(DecodeError):
        dec.close()
    dec = ResponseStreamDecoder(max_chunk=4)
    dec.receive(encode_head(200))
    with pytest.raises(TooLargeError):
        dec.receive(b"\x05")
    with pytest.raises(TooLargeError):
        dec.receive(b"\x00")
    assert not dec.finished


def test_use_after_close() -> None:
    dec = ResponseStreamDecoder()
    dec.receive(_message())
    dec.close()
    with pytest.raises(UsageError):
        dec.receive(b"")
    with pytest.raises(UsageError):
        dec.close()
    dec = ResponseStreamDecoder()
    with pytest.raises(TruncatedError):
        dec.close()
    with pytest.raises(TruncatedError):
        dec.receive(b"\x00")


def test_trailing_data_after_finish() -> None:
    dec = ResponseStreamDecoder()
    assert dec.receive(_message() + b"\x00\x00")[-1] == End(())  # truncated trailers, padding
    assert dec.receive(bytes(10)) == []
    with pytest.raises(TrailingDataError):
        dec.receive(b"\x00\x01")
    with pytest.raises(TrailingDataError):
        dec.receive(b"\x00")


# --- Fuzz --------------------------------------------------------------------------------------


def _fuzz(raw: bytes, sizes: list[int], limits: bhttp.Limits, max_chunk: int) -> None:
    dec = ResponseStreamDecoder(limits, max_chunk=max_chunk, max_known_length=200)
    try:
        pos = 0
        for size in [*sizes, len(raw)]:
            dec.receive(raw[pos : pos + size])
            pos += size
        dec.close()
    except PrivprocError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), _SPLITS)
def test_property_random_bytes(data: bytes, sizes: list[int]) -> None:
    for first in (b"", b"\x01", b"\x03", b"\x03\x40\xc8"):
        _fuzz(first + data, sizes, bhttp.Limits(max_fields=4, max_field_bytes=16), 32)


@settings(max_examples=200, deadline=None)
@given(_RESPONSES, st.data())
def test_property_mutated_responses(response: bhttp.Response, data: st.DataObject) -> None:
    raw = bytearray(bhttp.encode_response(response, bhttp.Framing(indeterminate=True)))
    rng = random.Random(data.draw(st.integers(0, 1 << 32)))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    sizes = data.draw(_SPLITS)
    _fuzz(bytes(raw), sizes, bhttp.DEFAULT_LIMITS, 1 << 20)
    # Whatever the stream decoder accepts, bhttp accepts as the same message.
    try:
        streamed = _summary(_feed(bytes(raw), sizes))
    except PrivprocError:
        return
    assert streamed == _of(bhttp.decode_response(bytes(raw)))
