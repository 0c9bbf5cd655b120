"""RFC 9292: the RFC's examples decode and re-encode byte for byte; every rule on validity; and
random or mutated bytes never escape the typed error hierarchy."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import (
    DecodeError,
    PrivprocError,
    TooLargeError,
    TruncatedError,
    UsageError,
)
from privproc.ohttp import bhttp
from privproc.wire import Reader, encode_varint
from tests.conftest import load_vectors

EXAMPLES: list[dict[str, Any]] = load_vectors("bhttp/rfc9292-examples.json")["examples"]


def _encode(message: bhttp.Request | bhttp.Response, framing: bhttp.Framing | None = None) -> bytes:
    if isinstance(message, bhttp.Request):
        return bhttp.encode_request(message, framing)
    return bhttp.encode_response(message, framing)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["name"].split(" ")[0])
def test_rfc_examples_round_trip(example: dict[str, Any]) -> None:
    raw = bytes.fromhex(example["bhttp"])
    message = bhttp.decode_message(raw)
    assert _encode(message) == raw
    # Every other framing carries the same message.
    for framing in (
        bhttp.Framing(),
        bhttp.Framing(indeterminate=True),
        bhttp.Framing.shortest(),
        bhttp.Framing.shortest(indeterminate=True),
        bhttp.Framing(padding=7),
    ):
        assert bhttp.decode_message(_encode(message, framing)) == message


def test_rfc_request_example_content() -> None:
    known = bhttp.decode_request(bytes.fromhex(EXAMPLES[0]["bhttp"]))
    indeterminate = bhttp.decode_request(bytes.fromhex(EXAMPLES[1]["bhttp"]))
    assert known == indeterminate
    assert (known.method, known.scheme, known.authority, known.path) == (
        "GET",
        "https",
        "",
        "/hello.txt",
    )
    assert known.header("host") == "www.example.com"
    assert known.header("Accept-Language") == "en, mi"
    assert indeterminate.framing == bhttp.Framing(indeterminate=True, omitted=0, padding=10)
    # "the last two bytes ... can each be removed" (RFC 9292 §5.1), and 12 from the other form.
    raw = bytes.fromhex(EXAMPLES[0]["bhttp"])
    assert bhttp.decode_request(raw[:-1]) == known
    assert bhttp.decode_request(raw[:-2]) == known
    raw_i = bytes.fromhex(EXAMPLES[1]["bhttp"])
    assert bhttp.decode_request(raw_i[:-12]) == known


def test_rfc_response_examples_content() -> None:
    interim = bhttp.decode_response(bytes.fromhex(EXAMPLES[2]["bhttp"]))
    assert [i.status for i in interim.informational] == [102, 103]
    assert interim.informational[1].headers == (
        (b"link", b"</style.css>; rel=preload; as=style"),
        (b"link", b"</script.js>; rel=preload; as=script"),
    )
    assert interim.status == 200
    assert interim.content == b"Hello World! My content includes a trailing CRLF.\r\n"
    chunked = bhttp.decode_response(bytes.fromhex(EXAMPLES[3]["bhttp"]))
    assert chunked.content == b"This content contains CRLF.\r\n"
    assert chunked.trailers == ((b"trailer", b"text"),)


def _request(**kw: Any) -> bytes:
    base: dict[str, Any] = {
        "method": "GET",
        "scheme": "https",
        "authority": "a.example",
        "path": "/",
    }
    base.update(kw)
    return bhttp.encode_request(bhttp.Request(**base))


def _raw_request(fields: bytes, tail: bytes = b"\x00\x00") -> bytes:
    ctrl = b"\x03GET\x05https\x09a.example\x01/"
    return b"\x00" + ctrl + encode_varint(len(fields)) + fields + tail


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", TruncatedError),
        (b"\x04", DecodeError),  # unknown framing indicator
        (b"\x00\x03GE", TruncatedError),
        (b"\x00\x03GET\x05https\x00", TruncatedError),  # path missing
        (b"\x00\x03G T\x05https\x00\x01/", DecodeError),  # bad method
        (b"\x00\x03GET\x05https\x00\x00", DecodeError),  # empty path for https
        (b"\x00\x03GET\x05h ttp\x00\x01/", DecodeError),
        (b"\x00\x03GET\x05https\x00\x01/\x00\x05ab", TruncatedError),  # content cut short
        (b"\x00\x03GET\x05https\x00\x01/\x00\x00\x00\x01", DecodeError),  # non-zero padding
        (
            b"\x00\x03GET\x05https\x00\x01/\x05\x01a",
            TruncatedError,
        ),  # field section longer than message
        (b"\x01\x40\x63", DecodeError),  # status 99
        (b"\x01\x42\x58", DecodeError),  # status 600
        (b"\x03\x40\x64\x01", TruncatedError),  # indeterminate informational without terminator
        (b"\x02\x03GET\x05https\x00\x01/\x01a\x01b", TruncatedError),  # no field terminator
        (b"\x02\x03GET\x05https\x00\x01/\x00\x03abc", TruncatedError),  # no content terminator
    ],
)
def test_invalid_messages(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        bhttp.decode_message(raw)


@pytest.mark.parametrize(
    "fields",
    [
        b"\x04Host\x01x",  # uppercase name
        b"\x00\x01x",  # empty name
        b"\x03a b\x01x",  # space in name
        b"\x05:path\x01/",  # pseudo-header
        b"\x01a\x03x\ny",  # LF in value
        b"\x01a\x02 x",  # leading space
        b"\x01a\x02x\t",  # trailing tab
        b"\x01a\x01\x00",  # NUL
        b"\x0aconnection\x05close",
        b"\x11transfer-encoding\x07chunked",
        b"\x02te\x04gzip",
        b"\x0econtent-length\x015",  # does not match the empty content
    ],
)
def test_invalid_fields(fields: bytes) -> None:
    with pytest.raises(DecodeError):
        bhttp.decode_message(_raw_request(fields))


def test_valid_fields_and_te_trailers() -> None:
    msg = bhttp.decode_request(_raw_request(b"\x02te\x08trailers\x01a\x00"))
    assert msg.headers == ((b"te", b"trailers"), (b"a", b""))


def test_encoder_refuses_what_the_decoder_refuses() -> None:
    with pytest.raises(DecodeError):
        bhttp.encode_request(bhttp.Request("GET", "https", "", "/", headers=((b"Bad", b"x"),)))
    with pytest.raises(DecodeError):
        bhttp.encode_request(bhttp.Request("G T", "https", "", "/"))
    with pytest.raises(UsageError):
        bhttp.encode_response(bhttp.Response(99))
    with pytest.raises(UsageError):
        bhttp.encode_request(
            bhttp.Request("GET", "https", "", "/", content=b"x"), bhttp.Framing(omitted=2)
        )


def test_build_and_header_helpers() -> None:
    req = bhttp.Request.build(
        "POST", "https://h.example/a/b?q=1", headers=[("X-Thing", "v")], content=b"c"
    )
    assert (req.authority, req.path, req.header("x-thing")) == ("h.example", "/a/b?q=1", "v")
    assert bhttp.Request.build("GET", "https://h.example").path == "/"
    with pytest.raises(UsageError):
        bhttp.Request.build("GET", "/relative")
    assert bhttp.decode_request(_encode(req)) == req


def test_limits() -> None:
    many = b"".join(b"\x01a\x01b" for _ in range(300))
    with pytest.raises(TooLargeError):
        bhttp.decode_message(_raw_request(many))
    limits = bhttp.Limits(max_field_bytes=4)
    with pytest.raises(DecodeError):
        bhttp.decode_message(_raw_request(b"\x01a\x05bbbbb"), limits)
    chunks = b"\x03\x40\xc8\x00" + b"\x01x" * 20 + b"\x00\x00"
    assert bhttp.decode_response(chunks).content == b"x" * 20
    with pytest.raises(TooLargeError):
        bhttp.decode_response(chunks, bhttp.Limits(max_chunks=10))
    interim = b"\x01" + b"\x40\x64\x00" * 20 + b"\x40\xc8"
    with pytest.raises(TooLargeError):
        bhttp.decode_response(interim)


def test_varints() -> None:
    for value in (0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, (1 << 62) - 1):
        assert Reader(encode_varint(value)).varint() == value
    assert len(encode_varint(63)) == 1
    assert len(encode_varint(64)) == 2
    with pytest.raises(UsageError):
        encode_varint(1 << 62)
    with pytest.raises(TruncatedError):
        Reader(b"\x80\x00").varint()


# Field names a message may carry: not the connection-specific ones, which binary HTTP refuses
# (test_invalid_fields checks that); hypothesis once drew "connection" as a trailer's name.
_REFUSED_NAMES = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
}
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(
    lambda name: name not in _REFUSED_NAMES
)
_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789 ;=/", max_size=20).map(str.strip)
_fields = st.lists(st.tuples(_token.map(str.encode), _value.map(str.encode)), max_size=5).map(tuple)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.text(alphabet="abc/?=&%0123", min_size=1, max_size=20).map(lambda p: "/" + p),
    headers=_fields,
    trailers=_fields,
    content=st.binary(max_size=200),
    indeterminate=st.booleans(),
    padding=st.integers(0, 5),
)
def test_property_request_round_trip(
    method: str,
    path: str,
    headers: Any,
    trailers: Any,
    content: bytes,
    indeterminate: bool,
    padding: int,
) -> None:
    req = bhttp.Request(method, "https", "h.example", path, headers, content, trailers)
    raw = bhttp.encode_request(req, bhttp.Framing(indeterminate, 0, padding))
    assert bhttp.decode_request(raw) == req
    short = bhttp.encode_request(req, bhttp.Framing.shortest(indeterminate))
    assert bhttp.decode_request(short) == req
    assert len(short) <= len(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_property_random_bytes(data: bytes) -> None:
    try:
        message = bhttp.decode_message(data)
    except PrivprocError:
        return
    # Whatever decodes must re-encode to something that decodes to the same message.
    assert bhttp.decode_message(_encode(message)) == message


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_property_mutated_examples(example: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(bytes.fromhex(example["bhttp"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(PrivprocError):
        bhttp.decode_message(bytes(raw[:cut]))


@pytest.mark.parametrize("indeterminate", [False, True], ids=["known-length", "indeterminate"])
def test_a_field_name_longer_than_the_bound_is_refused(indeterminate: bool) -> None:
    """The bound on a field *name*'s length, on its own: the name is one byte over it while the
    section stays within its own bound (this fails if the name check goes)."""
    limits = bhttp.Limits(max_fields=8, max_field_bytes=16)
    within = bhttp.Request.build("GET", "https://a.example/", headers=[("n" * 16, "v")])
    framing = bhttp.Framing.shortest(indeterminate)
    assert bhttp.decode_request(bhttp.encode_request(within, framing), limits).headers
    over = bhttp.Request.build("GET", "https://a.example/", headers=[("n" * 17, "v")])
    with pytest.raises(TooLargeError, match="field name exceeds the bound"):
        bhttp.decode_request(bhttp.encode_request(over, framing), limits)
