"""
A flush that covers everything issued before it.

A NATS flush is a PING: the server answers PONG only after handling every
command the connection sent before the PING, so once the PONG is back a
subscription made before the flush is in place. nats-py (2.16 and
earlier) keeps commands in a pending buffer that a flusher task writes out
later, but writes the flush's PING straight to the socket: the PING can
overtake a SUB still in the buffer, the PONG then proves nothing, and a
message another connection publishes right after is not routed to the
new subscription. Measured against nats-server alone, 3-5 % of such
messages were lost (see C{tests/repro/nats_flush_race.py} and
C{docs/nats-flush-race.md}).

L{flush} first has the flusher write the pending buffer out, then sends
the PING: the PONG then covers every command issued before the call.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def flush(nc: Any, timeout: float = 5.0) -> None:
    """
    Return once the server has handled every command C{nc} issued before
    this call (subscriptions in place, publications routed).

    @raise TimeoutError: (or nats-py's flush errors) when the server does
        not answer within C{timeout} seconds.
    """
    write_pending = getattr(nc, "_flush_pending", None)
    if write_pending is not None:
        # force_flush: returns once the flusher has written the buffer
        await asyncio.wait_for(write_pending(force_flush=True), timeout)
    await nc.flush(timeout)
