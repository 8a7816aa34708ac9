"""
The wire form of a stored message (SPEC §3.3), rendered once per message.

The envelope is kept as the compact JSON text it was stored as and spliced
in as is: the server never parses it again.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from kezchat.storage.interfaces import StoredMessage
from kezchat.timeutil import format_rfc3339


def item_json(message: StoredMessage) -> str:
    """
    C{{"seq", "from", "from_primary", "direction", "envelope",
    "created_at"}} on one line; an C{out} item (the sender's copy) also
    carries C{"to"} and C{"to_primary"}, and C{"undeliverable": true}
    when another server never took it.
    """
    if message.direction == "out":
        direction = (
            f'"direction":"out","to":{json.dumps(message.to)},'
            f'"to_primary":{json.dumps(message.to_primary)},'
            + ('"undeliverable":true,' if message.undeliverable else "")
        )
    else:
        direction = '"direction":"in",'
    return (
        f'{{"seq":{message.seq},"from":{json.dumps(message.sender)},'
        f'"from_primary":{json.dumps(message.sender_primary)},{direction}'
        f'"envelope":{message.envelope},'
        f'"created_at":"{format_rfc3339(message.created_at)}"}}'
    )


class RenderCache:
    """
    Recently rendered events, bounded by their total size: a message fanned
    out to many streams is rendered once and every stream's transport
    holds the same bytes object, while a burst of large messages cannot
    make the cache itself large.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._events: OrderedDict[StoredMessage, bytes] = OrderedDict()
        #: the message asked for last and its event: a fan-out asks for
        #: the same message object once per stream, and hashing a
        #: StoredMessage (every field) per stream was most of the lookup
        self._last: tuple[StoredMessage | None, bytes] = (None, b"")

    def __call__(self, message: StoredMessage) -> bytes:
        last, event = self._last
        if message is last:
            return event
        event = self._render(message)
        self._last = (message, event)
        return event

    def _render(self, message: StoredMessage) -> bytes:
        # keyed by the whole message, as the old lru_cache was: servers
        # sharing this process (tests, embedders) may reuse (recipient, seq)
        key = message
        event = self._events.get(key)
        if event is not None:
            self._events.move_to_end(key)
            return event
        event = f"id: {message.seq}\nevent: message\ndata: {item_json(message)}\n\n".encode()
        if len(event) <= self.max_bytes:
            self._events[key] = event
            self.size += len(event)
            while self.size > self.max_bytes:
                _, dropped = self._events.popitem(last=False)
                self.size -= len(dropped)
        return event


#: one SSE event, from a cache of at most 4 MiB
sse_event = RenderCache(4 * 1024 * 1024)


def event_size(message: StoredMessage) -> int:
    """
    About the bytes C{message} takes as an event (for budgets, not framing).
    """
    return len(message.envelope) + 256


def inbox_page(messages: list[StoredMessage], since: int, last: int | None = None) -> bytes:
    """
    The body of C{GET /v1/inbox/<h>}, joined once from encoded items (a
    page may be megabytes: no intermediate copy of the whole). C{last}, the
    latest seq given out in the inbox, is added when known.
    """
    next_seq = messages[-1].seq if messages else since
    parts = [b'{"messages":[']
    for i, message in enumerate(messages):
        if i:
            parts.append(b",")
        parts.append(item_json(message).encode())
    parts.append(b'],"next":%d' % next_seq)
    if last is not None:
        parts.append(b',"last":%d' % max(last, next_seq))
    parts.append(b"}")
    return b"".join(parts)
