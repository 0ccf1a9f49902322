"""Server-sent events: bytes as they arrive in, each event's data out, with bounded memory.

What chat completions servers send (OpenAI, OpenRouter, vLLM, Ollama...): ``data:`` lines,
comment lines (``: OPENROUTER PROCESSING``) that keep a connection alive, LF or CRLF line ends,
and a blank line ending each event. A read may end anywhere, even inside a line or a UTF-8
character: what is left of a line waits for the next read. Fields other than ``data`` (``event``,
``id``, ``retry``) are not used by these servers and are skipped; a lone CR as a line end is not
supported (no such server sends it).
"""

from __future__ import annotations

#: The longest line, and the largest event (its data lines together), that a stream may send.
#: A chunk of a chat answer is a few hundred bytes; a megabyte is a broken or hostile server.
MAX_EVENT = 1 << 20


class EventTooLarge(Exception):
    """A line or an event longer than :data:`MAX_EVENT`."""


class SseDecoder:
    """Feed it bytes; it returns the data of each event completed so far.

    Example::

        decoder = SseDecoder()
        decoder.feed(b'data: {"a"')     # []
        decoder.feed(b': 1}\\n\\n')       # ['{"a": 1}']
    """

    def __init__(self, limit: int = MAX_EVENT) -> None:
        self._limit = limit
        self._rest = b""  # the start of a line whose end has not arrived yet
        self._data: list[bytes] = []  # the data lines of the event being read
        self._size = 0

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that ``chunk`` completes, in order."""
        buffer = self._rest + chunk if self._rest else chunk
        events: list[str] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                self._line(line)
            elif self._data:  # a blank line ends the event; one with no data is no event
                events.append(b"\n".join(self._data).decode("utf-8", "replace"))
                self._data, self._size = [], 0
        self._rest = buffer[start:]
        if len(self._rest) > self._limit:
            raise EventTooLarge(f"a line longer than {self._limit:,} bytes")
        return events

    def close(self) -> list[str]:
        """At the end of the stream: the last event, if the server did not end it."""
        if self._rest:
            self.feed(b"\n")
        return self.feed(b"\n") if self._data else []

    def _line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            self._size += len(value) + 1
            if self._size > self._limit:
                raise EventTooLarge(f"an event larger than {self._limit:,} bytes")
            self._data.append(value)
        # A comment (":...") or another field: nothing the answer needs.
