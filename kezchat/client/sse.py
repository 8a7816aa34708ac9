"""
A server-sent events parser, following the WHATWG event-stream grammar.

Fed bytes as they arrive; returns complete events. Lines end with LF, CRLF
or CR; a line starting with C{:} is a comment; an empty line dispatches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        #: the stream's current last event id (what a reconnect sends)
        self.last_event_id: str | None = None
        #: the last C{retry:} value in milliseconds
        self.retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events = []
        while True:
            match = _LINE_END.search(self._buffer)
            # a lone CR at the end may be the first half of a CRLF
            if match is None or (match.group() == b"\r" and match.end() == len(self._buffer)):
                break
            line, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].lstrip(" "))
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
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
        event_type, self._event = self._event, ""
        if not data:
            return None
        return Event(self._id, event_type or "message", "\n".join(data))
