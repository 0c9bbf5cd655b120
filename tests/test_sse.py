"""The client's reader of server-sent events: events split anywhere, as a network splits them."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privproc.errors import TooLargeError
from privproc.parties.device.sse import MAX_LINE, data_events

STREAM = (
    b'data: {"a":1}\n\n'
    b": a comment\n"
    b"event: ignored\n"
    b"data: first line\r\n"
    b"data:second line\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = ['{"a":1}', "first line\nsecond line", "[DONE]"]


def test_events_whole_and_byte_by_byte() -> None:
    assert list(data_events([STREAM])) == EVENTS
    assert list(data_events(STREAM[i : i + 1] for i in range(len(STREAM)))) == EVENTS


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_events_split_anywhere(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(data_events(pieces)) == EVENTS


def test_an_event_left_unfinished_is_dropped() -> None:
    assert list(data_events([b"data: x\n\ndata: y\n"])) == ["x"]
    assert list(data_events([b"data: x"])) == []


def test_a_line_without_end_is_bounded() -> None:
    with pytest.raises(TooLargeError):
        list(data_events([b"data: " + b"x" * MAX_LINE, b"x"]))
