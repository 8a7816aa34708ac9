"""
A server-sent events parser, following the WHATWG event-stream grammar.

Fed bytes as they arrive; returns complete events. Lines end with LF, CRLF
or CR; a line starting with C{:} is a comment; an empty line dispatches.

A stream comes from a server the client does not trust, so the parser is
bounded: a line longer than L{MAX_LINE} bytes (an inbox item is at most
a 256 KiB envelope plus a little) raises L{LineTooLong} instead of
growing without end, an event's data lines together are bounded the same
way, and each byte is scanned for a line end once, however it is split
into chunks (a 16 MiB line fed 64 KiB at a time costs 16 MiB of
scanning, not the sum of every prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

#: the longest line (and the most data in one event) accepted, in bytes
MAX_LINE = 320 * 1024
#: comments kept for inspection (the newest)
MAX_COMMENTS = 16


class LineTooLong(ValueError):
    """
    The stream sent a line or an event larger than the parser accepts.
    """


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


class SSEParser:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        #: bytes of the buffer already scanned for a line end
        self._scanned = 0
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._id: str | None = None
        #: the stream's current last event id (what a reconnect sends)
        self.last_event_id: str | None = None
        #: the last C{retry:} value in milliseconds
        self.retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """
        The events C{chunk} completes.

        @raise LineTooLong: the stream is not one this client will read.
        """
        self._buffer += chunk
        events = []
        start = 0
        buffer = self._buffer
        position = self._scanned
        lf = cr = -2  # the next line feed and carriage return (-1: none; -2: not looked)
        while True:
            # each search starts where the previous one left off, so many
            # short lines in one big chunk cost one pass, not one each
            if lf != -1 and lf < position:
                lf = buffer.find(b"\n", position)
            if cr != -1 and cr < position:
                cr = buffer.find(b"\r", position)
            if lf < 0 and cr < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            if end == cr and cr == len(buffer) - 1:
                break  # a lone CR at the end may be the first half of a CRLF
            after = end + 2 if end == cr and buffer[cr + 1 : cr + 2] == b"\n" else end + 1
            line = bytes(buffer[start:end])
            start = position = after
            if len(line) > self.max_line:
                raise LineTooLong(f"an event-stream line of {len(line)} bytes")
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        del self._buffer[:start]
        self._scanned = len(self._buffer) - (1 if self._buffer.endswith(b"\r") else 0)
        if self._scanned > self.max_line:
            raise LineTooLong(f"an event-stream line of more than {self.max_line} bytes")
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments = [*self.comments[-(MAX_COMMENTS - 1) :], line[1:].lstrip(" ")]
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data_size += len(value) + 1
            if self._data_size > self.max_line:
                raise LineTooLong(f"an event of more than {self.max_line} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, self._data = self._data, []
        self._data_size = 0
        event_type, self._event = self._event, ""
        if not data:
            return None
        return Event(self._id, event_type or "message", "\n".join(data))
