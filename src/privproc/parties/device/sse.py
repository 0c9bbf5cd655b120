"""Server-sent events (the WHATWG `text/event-stream` format as OpenAI uses it), read from pieces
of bytes that may split lines anywhere.

Rules: only `data:` fields matter (OpenAI sends nothing else); an event is dispatched at its blank
line, and one left unfinished at the end is dropped; a line is bounded (`MAX_LINE`), so a stream
without newlines cannot grow without end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from privproc.errors import TooLargeError

__all__ = ["MAX_LINE", "data_events"]

MAX_LINE = 256 * 1024


def data_events(pieces: Iterable[bytes]) -> Iterator[str]:
    """The data of each event, in order (several `data:` lines of one event joined by '\\n')."""
    buffer = bytearray()
    data: list[str] = []
    for piece in pieces:
        buffer += piece
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > MAX_LINE:
                    raise TooLargeError(f"an event-stream line is longer than {MAX_LINE} bytes")
                break
            line = bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
            del buffer[: end + 1]
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
    # An event the stream ended in the middle of is never dispatched (as the standard says).
