"""
The wire form of a stored message (SPEC §3.3), rendered once per message.

The envelope is kept as the compact JSON text it was stored as and spliced
in as is: the server never parses it again.
"""

from __future__ import annotations

import json
from functools import lru_cache

from kezchat.storage.interfaces import StoredMessage
from kezchat.timeutil import format_rfc3339


def item_json(message: StoredMessage) -> str:
    """
    C{{"seq", "from", "from_primary", "envelope", "created_at"}} on one line.
    """
    return (
        f'{{"seq":{message.seq},"from":{json.dumps(message.sender)},'
        f'"from_primary":{json.dumps(message.sender_primary)},'
        f'"envelope":{message.envelope},'
        f'"created_at":"{format_rfc3339(message.created_at)}"}}'
    )


@lru_cache(maxsize=4096)
def sse_event(message: StoredMessage) -> bytes:
    """
    One SSE event. Cached, so a message fanned out to several streams is
    rendered once.
    """
    return f"id: {message.seq}\nevent: message\ndata: {item_json(message)}\n\n".encode()


def inbox_page(messages: list[StoredMessage], since: int) -> bytes:
    """
    The body of C{GET /v1/inbox/<h>}.
    """
    next_seq = messages[-1].seq if messages else since
    items = ",".join(item_json(m) for m in messages)
    return f'{{"messages":[{items}],"next":{next_seq}}}'.encode()
