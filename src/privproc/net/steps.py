"""Steps: a client's I/O written once, run by a blocking driver or by a native asyncio one.

    def key_configs(url: str) -> Step[bytes]:
        answer = yield Exchange("GET", url, MAX_KEYS_DOCUMENT)   # the driver does the exchange
        return answer.body

    document = Driver(httpx.Client()).run(key_configs(url))                # net/drivers.py:
    document = await AsyncDriver(httpx.AsyncClient()).run(key_configs(url))  # asyncio, no thread

A step is a generator: it yields what it needs from outside (one bounded HTTP exchange, a
streamed answer opened and read piece by piece, a pause) and is sent back the result, or has the
failure thrown in at the `yield`, as a `PrivprocError`. `Emit(value)` hands a value to whoever
iterates the step (`Driver.iterate`, `AsyncDriver.iterate`): a streamed answer's pieces.

Rules: the needs are plain data and this module imports no I/O library; a step never opens a
socket, sleeps or starts a thread itself, so the same step runs under either driver
(net/drivers.py).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

__all__ = [
    "CloseStream",
    "Emit",
    "Exchange",
    "OpenStream",
    "ReadStream",
    "Sleep",
    "Step",
    "StreamHead",
    "immediate",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Exchange:
    """One HTTP exchange whose whole answer (at most `limit` bytes) comes back as an `Answer`."""

    method: str
    url: str
    limit: int
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenStream:
    """Send a request whose answer is read piece by piece (`ReadStream`); gives a `StreamHead`."""

    method: str
    url: str
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamHead:
    status: int
    media_type: str
    retry_after: str | None = None


@dataclass(frozen=True)
class ReadStream:
    """The open stream's next piece as it arrives; b"" at its end. A stream that cannot be
    opened or breaks off is a `StreamTruncatedError` thrown into the step."""


@dataclass(frozen=True)
class CloseStream:
    """Close the open stream (read or not); a no-op when none is open."""


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """A value for whoever iterates the step; the step goes on when they ask for the next."""

    value: object


Need = Union[Exchange, OpenStream, ReadStream, CloseStream, Sleep, Emit]  # noqa: UP007
Step = Generator[Need, Any, T]


def immediate(value: T) -> Step[T]:
    """A step that needs nothing: `value`, at once."""
    return value
    yield  # a generator, so that `yield from` takes it
