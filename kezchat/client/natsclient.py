"""
A native NATS client for a KEZ user (asyncio; nats-py).

The KEZ key is the NATS credential: the client logs in with the primary's
user nkey (the chat-server's auth callout maps it to the handle), uses the
reply prefix C{_INBOX_<hex>} its permissions allow, publishes envelopes on
C{kez.inbox.<recipient>.<own key>} and reads its own inbox through its
durable JetStream consumer, created with the
C{CONSUMER.CREATE.<stream>.<name>.<filter>} form the permissions grant.

Each device of a user has its own consumer, C{inbox_<hex>_<device>}, so
that every device gets every message: the client names its device in its
connection name (C{kez:<device>}), from which the callout grants it that
consumer. Without a device it reads the one legacy C{inbox_<hex>}.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig

from kezchat.client.errors import ServerError, Unreachable
from kezchat.identity.keys import KeyPair, format_primary
from kezchat.protocol.natskeys import USER, NKey
from kezchat.protocol.subjects import (
    STREAM,
    consumer_filter,
    consumer_name,
    device_connection_name,
    inbox_subject,
    parse_inbox_subject,
    parse_senders_copy_subject,
    reply_prefix,
)

#: connection attempts before the first connection counts as failed
INITIAL_ATTEMPTS = 2


async def connect_user(
    url: str,
    keypair: KeyPair,
    *,
    connect_timeout: float = 5.0,
    reconnect: bool = True,
    on_event: Callable[[str], Awaitable[None] | None] | None = None,
    device: str | None = None,
) -> Any:
    """
    Log in to NATS at C{url} as the owner of C{keypair}.

    @param device: this client's device name (C{[a-z0-9]{1,16}}), which
        gets it its own durable consumer (see L{open_inbox}).

    @param on_event: told C{"disconnected"}, C{"reconnected"} or an error
        text, for a status line.
    @raise Unreachable: no broker there.
    @raise ServerError: the broker refused the key (C{nats_auth}).
    """

    async def note(text: str) -> None:
        if on_event is not None:
            result = on_event(text)
            if result is not None:
                await result

    errors: list[Exception] = []

    async def error_cb(e: Exception) -> None:
        errors.append(e)
        await note(f"error: {e}")

    async def disconnected_cb() -> None:
        await note("disconnected")

    async def reconnected_cb() -> None:
        await note("reconnected")

    nc = NatsClient()
    extra: dict[str, Any] = {}
    if device is not None:
        extra["name"] = device_connection_name(device)
    try:
        await nc.connect(
            url,
            **extra,
            nkeys_seed_str=NKey(USER, keypair.seed).seed_text,
            inbox_prefix=reply_prefix(keypair.public_hex),
            # nats-py annotates these seconds as int; it takes floats
            connect_timeout=connect_timeout,  # type: ignore[arg-type]
            allow_reconnect=reconnect,
            # a few tries at first (nats-py would otherwise retry forever
            # before the first connection); unlimited once connected
            max_reconnect_attempts=INITIAL_ATTEMPTS,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
        )
    except (nats.errors.Error, OSError, TimeoutError) as e:
        seen = [x for x in (*errors, nc.last_error, e) if x is not None]
        if any(
            isinstance(x, nats.errors.AuthorizationError) or "authorization" in str(x).lower()
            for x in seen
        ):
            raise ServerError(401, "nats_auth", "NATS refused this key") from None
        cause = next((x for x in errors if isinstance(x, OSError)), e)
        raise Unreachable(url, str(cause) or type(cause).__name__) from None
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def publish_envelope(
    nc: Any, keypair: KeyPair, recipient_hex: str, envelope: dict[str, Any], timeout: float = 10.0
) -> int:
    """
    Publish C{envelope} to the recipient's inbox through JetStream;
    returns the stream sequence of the stored copy.
    """
    subject = inbox_subject(recipient_hex, keypair.public_hex)
    payload = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
    ack = await nc.jetstream(timeout=timeout).publish(subject, payload)
    return int(ack.seq)


@dataclass(frozen=True)
class InboxMessage:
    """
    One message read from the durable consumer.

    @ivar seq: its JetStream stream sequence.
    @ivar from_primary: the sender, vouched for by the broker (the subject's
        last token is the publisher's own key).
    @ivar direction: C{"in"}, or C{"out"} for the sender's copy of a message
        this user sent (from another device, or over HTTP): its subject is
        C{kez.inbox.<own key>.out.<recipient>}, which only the chat-server
        may publish on.
    @ivar to_primary: an C{out} message's recipient.
    """

    seq: int
    from_primary: str
    envelope: Any
    created_at: str | None
    msg: Any
    direction: str = "in"
    to_primary: str | None = None

    async def ack(self) -> None:
        await self.msg.ack()


async def open_inbox(nc: Any, keypair: KeyPair, device: str | None = None) -> Any:
    """
    The pull subscription on the user's own durable consumer (created if
    absent), starting with whatever the stream holds for them: the
    consumer of C{device} (which C{nc} must have connected as), or the
    legacy one.
    """
    owner = keypair.public_hex
    return await nc.jetstream().pull_subscribe(
        consumer_filter(owner),
        durable=consumer_name(owner, device),
        stream=STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )


async def fetch_inbox(sub: Any, batch: int = 64, timeout: float = 5.0) -> list[InboxMessage]:
    """
    Up to C{batch} messages; an empty list when none came within C{timeout}.
    Messages whose subject or payload is not a KEZ envelope are acked and
    skipped (the bridge refuses to store them too).
    """
    try:
        msgs = await sub.fetch(batch, timeout=timeout)
    except nats.errors.TimeoutError:
        return []
    out = []
    for msg in msgs:
        parsed = parse_inbox_subject(msg.subject)
        copy = parse_senders_copy_subject(msg.subject)
        sender_hex: str | None = None
        direction, to_primary = "in", None
        if copy is not None:  # kez.inbox.<me>.out.<recipient>: sent by this user
            sender_hex, direction = copy[0], "out"
            to_primary = format_primary(bytes.fromhex(copy[1]))
        elif parsed is not None:  # kez.inbox.<me>.<sender>
            sender_hex = parsed[1]
        try:
            envelope = json.loads(msg.data)
        except ValueError:
            envelope = None
        if sender_hex is None or not isinstance(envelope, dict):
            await msg.ack()
            continue
        meta = msg.metadata
        created = meta.timestamp.isoformat() if getattr(meta, "timestamp", None) else None
        out.append(
            InboxMessage(
                seq=int(meta.sequence.stream),
                from_primary=format_primary(bytes.fromhex(sender_hex)),
                envelope=envelope,
                created_at=created,
                msg=msg,
                direction=direction,
                to_primary=to_primary,
            )
        )
    return out
