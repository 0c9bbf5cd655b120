"""Shared pieces of the fuzz tests: the chosen budget, byte mutations, and the property check.

The property every parser of untrusted bytes must have: given anything, it returns a value or
raises a `PrivprocError` subclass, within `HANG_LIMIT` seconds. `parses` checks exactly that and
hands back the value (or None) so a test can go on to check the round trip.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TypeVar

from hypothesis import settings
from hypothesis import strategies as st

from privproc.errors import PrivprocError

T = TypeVar("T")
R = TypeVar("R")

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
HANG_LIMIT = 5.0  # seconds one parse may take; everything here answers in milliseconds


def fuzz(scale: float = 1.0) -> settings:
    """The chosen profile's settings, with `scale` times its examples (for slow parsers)."""
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=max(10, int(base.max_examples * scale)))


class ParserHangError(AssertionError):
    """A parser ran longer than HANG_LIMIT seconds on one input."""


@contextlib.contextmanager
def time_limit(seconds: float = HANG_LIMIT) -> Iterator[None]:
    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        raise ParserHangError(f"the parser ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parses(parse: Callable[[T], R], data: T) -> R | None:
    """`parse(data)`, or None if it raised a PrivprocError; any other exception, or a hang, fails
    the test."""
    with time_limit():
        try:
            return parse(data)
        except PrivprocError:
            return None


# --- Mutations of valid encodings --------------------------------------------------------------

_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x20, 0x22, 0x2B, 0x2C, 0x3D, 0x5B, 0x7B)


@st.composite
def _apply(draw: st.DrawFn, base: bytes, max_ops: int) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.integers(0, 7))
        at = draw(st.integers(0, len(data)))  # an insertion point, or one past the end
        if op == 0 and data and at < len(data):  # flip bits of one byte
            data[at] ^= draw(st.integers(1, 255))
        elif op == 1 and at < len(data):  # an edge-case byte value (length fields, delimiters)
            data[at] = draw(st.sampled_from(_INTERESTING))
        elif op == 2:  # insert fresh bytes
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == 3:  # delete a run
            del data[at : at + draw(st.integers(1, 16))]
        elif op == 4:  # truncate
            del data[at:]
        elif op == 5 and data:  # duplicate a slice of the input somewhere else
            start = draw(st.integers(0, len(data) - 1))
            piece = data[start : start + draw(st.integers(1, 64))]
            data[at:at] = piece
        elif op == 6:  # a long run of one byte: deep nesting, huge numbers, long lines
            data[at:at] = bytes((draw(st.sampled_from((*_INTERESTING, 0x30, 0x39))),)) * draw(
                st.integers(1, 4096)
            )
        elif op == 7 and at < len(data):  # overwrite a big-endian length-like 16-bit field
            data[at : at + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return bytes(data)


def mutated(base: bytes | st.SearchStrategy[bytes], max_ops: int = 4) -> st.SearchStrategy[bytes]:
    """Byte strings one to `max_ops` edits (flip, set, insert, delete, truncate, duplicate,
    repeat, overwrite a length) away from `base`, or from a value drawn from it."""
    bases = st.just(base) if isinstance(base, bytes) else base
    return bases.flatmap(lambda b: _apply(b, max_ops))


def mutated_text(base: str | st.SearchStrategy[str], max_ops: int = 4) -> st.SearchStrategy[str]:
    """As `mutated`, for parsers of text: the mutated UTF-8, decoded with replacement."""
    bases = st.just(base) if isinstance(base, str) else base
    return bases.flatmap(
        lambda b: _apply(b.encode(), max_ops).map(lambda raw: raw.decode("utf-8", "replace"))
    )


def bytes_or_mutated(
    base: bytes | st.SearchStrategy[bytes], max_size: int = 512
) -> st.SearchStrategy[bytes]:
    """Mostly mutations of a valid encoding, sometimes pure random bytes."""
    return st.one_of(mutated(base), mutated(base), mutated(base), st.binary(max_size=max_size))
