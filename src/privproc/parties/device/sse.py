"""Server-sent events (the WHATWG `text/event-stream` format as OpenAI uses it), read from pieces
of bytes that may split lines anywhere.

Rules: only `data:` fields matter (OpenAI sends nothing else); an event is dispatched at its blank
line, and one left unfinished at the end is dropped; a line is bounded (`MAX_LINE`), so a stream
without newlines cannot grow without end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from privproc.errors import TooLargeError

__all__ = ["MAX_LINE", "EventReader", "data_events"]

MAX_LINE = 256 * 1024


class EventReader:
    """Events from pieces fed one at a time (sans-IO): `feed(piece)` gives the data of each
    event the piece completed."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []

    def feed(self, piece: bytes) -> list[str]:
        buffer, events = self._buffer, list[str]()
        buffer += piece
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > MAX_LINE:
                    raise TooLargeError(f"an event-stream line is longer than {MAX_LINE} bytes")
                return events
            line = bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
            del buffer[: end + 1]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)


def data_events(pieces: Iterable[bytes]) -> Iterator[str]:
    """The data of each event, in order (several `data:` lines of one event joined by '\\n').
    An event the stream ended in the middle of is never dispatched (as the standard says)."""
    reader = EventReader()
    for piece in pieces:
        yield from reader.feed(piece)
