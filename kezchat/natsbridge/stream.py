"""
The JetStream stream that keeps messages for recipients who are offline.

Stream C{KEZ_INBOX} captures every C{kez.inbox.>} message. A client that
was away reads what it missed through its own durable consumer
(C{inbox_<hex>}, filtered on C{kez.inbox.<hex>.>}; see
L{kezchat.protocol.subjects.user_permissions} for why it can touch no
other). The chat-server creates the stream when it is absent and leaves an
existing one alone: an operator may have tuned it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from twisted.logger import Logger

from kezchat.protocol.subjects import ALL_INBOXES, STREAM

log = Logger()


@dataclass(frozen=True)
class StreamLimits:
    """
    Retention of the offline buffer.

    @ivar max_age: seconds a message is kept (the relay's retention).
    @ivar max_bytes: total size of the stream; C{-1} is unlimited.
    @ivar max_msgs_per_subject: messages kept per sender→recipient subject;
        C{-1} is unlimited.
    @ivar max_msg_size: largest message accepted; the relay caps a POST at
        256 KiB, so an envelope never needs more.
    """

    max_age: float = 30 * 86400
    max_bytes: int = -1
    max_msgs_per_subject: int = -1
    max_msg_size: int = 256 * 1024


def stream_config(limits: StreamLimits) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=[ALL_INBOXES],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=limits.max_age,
        max_bytes=limits.max_bytes,
        max_msgs_per_subject=limits.max_msgs_per_subject,
        max_msg_size=limits.max_msg_size,
        num_replicas=1,
    )


async def ensure_inbox_stream(js: Any, limits: StreamLimits | None = None) -> bool:
    """
    Create the C{KEZ_INBOX} stream unless it exists; return whether it was
    created.

    @param js: a nats-py JetStream context.
    """
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(stream_config(limits or StreamLimits()))
        log.info(
            "Created JetStream stream {stream} on {subjects}", stream=STREAM, subjects=ALL_INBOXES
        )
        return True
    return False
