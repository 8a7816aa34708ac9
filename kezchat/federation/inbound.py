"""
Receiving messages from other servers (C{POST /v1/federation/messages}).

A message is stored for a local recipient only when: the request is
signed by the sending server's key for this server (L{s2s}); the
sender's handle belongs to that sending domain (a server speaks only for
its own users); and the envelope's C{from} is the key that domain serves
for that handle, with its key directory vouching for it
(L{RemoteServers.lookup}). It is then stored and streamed like a local
message, with C{from: alice@a.example}, under the idempotency key the
sending server's queue id gives, so a repeated delivery is stored once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from kezchat import strictjson
from kezchat.errors import KezError
from kezchat.federation.metrics import FederationMetrics
from kezchat.federation.outbound import DELIVERY_PATH
from kezchat.federation.remote import RemoteServers
from kezchat.federation.s2s import ServerVerifier
from kezchat.identity.handles import InvalidHandle, parse_handle
from kezchat.registry import Registry
from kezchat.relay.limits import Limiter
from kezchat.relay.relay import MAX_CURSOR, Relay
from kezchat.storage.interfaces import Accepted, NewMessage
from kezchat.strictjson import parse_json


class Inbound:
    def __init__(
        self,
        registry: Registry,
        relay: Relay,
        remote: RemoteServers,
        verifier: ServerVerifier,
        clock: Callable[[], float],
        metrics: FederationMetrics,
        limiter: Limiter,
    ) -> None:
        """
        @param limiter: counts deliveries per sending server.
        """
        self._metrics = metrics
        self._limiter = limiter
        self._registry = registry
        self._relay = relay
        self._remote = remote
        self._verifier = verifier
        self._clock = clock

    async def receive(self, header: bytes | None, raw: bytes) -> Accepted:
        """
        Check and store one delivery.

        @raise KezError: C{federation_disabled}, C{federation_refused},
            C{unauthorized}/C{stale_timestamp}/C{bad_signature} (the
            server signature), C{bad_request}, C{wrong_server} (a sender
            of another domain than the signing one), C{unknown_recipient},
            C{bad_signature} (the envelope's C{from} is not the sender's
            key), C{remote_failed} (the sender's key cannot be checked).
        """
        if not self._remote.resolver.enabled:
            raise KezError("federation_disabled", "this server does not talk to other servers")
        origin = await self._verifier.verify(header, "POST", DELIVERY_PATH, raw)
        await self._limiter.check(origin)
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise KezError("bad_request", "the body must be a JSON object")
        queue_id, sender, to, envelope = (
            body.get("id"), body.get("from"), body.get("to"), body.get("envelope")
        )
        if not isinstance(queue_id, int) or isinstance(queue_id, bool) or not (
            0 <= queue_id <= MAX_CURSOR
        ):
            raise KezError("bad_request", '"id" must be a non-negative integer')
        if not isinstance(sender, str) or not isinstance(to, str):
            raise KezError("bad_request", '"from" and "to" must be handles')
        if not isinstance(envelope, dict):
            raise KezError("bad_request", '"envelope" must be a JSON object')
        try:
            from_handle = parse_handle(sender, origin)
        except InvalidHandle as e:
            raise KezError("invalid_handle", str(e)) from None
        if "@" not in sender or from_handle.server != origin:
            raise KezError("wrong_server", f"{origin} cannot send for {sender!r}")
        try:
            recipient = await self._registry.lookup(to)
        except KezError:
            raise KezError("unknown_recipient", f"{to!r} is not registered here") from None
        record = await self._remote.lookup(from_handle)
        primary = record.get("primary")
        if envelope.get("from") != primary:
            raise KezError(
                "bad_signature",
                f"the envelope is not from the key {origin} serves for {from_handle.fqhn}",
            )
        envelope_text = strictjson.one_line(
            strictjson.member_texts(raw.decode("utf-8"))["envelope"]
        )
        digest = hashlib.sha256(recipient.fqhn.encode() + b"\n" + envelope_text.encode())
        accepted = await self._relay.accept_remote(
            NewMessage(
                recipient=recipient.fqhn,
                sender=from_handle.fqhn,
                sender_primary=str(primary),
                envelope=envelope_text,
                created_at=self._clock(),
                idempotency_key=f"s2s:{queue_id}",
                request_hash=digest.hexdigest(),
            )
        )
        if not accepted.duplicate:
            self._metrics.received.labels(origin).inc()
        return accepted


def accepted_json(accepted: Accepted) -> dict[str, Any]:
    from kezchat.timeutil import format_rfc3339

    return {"seq": accepted.seq, "created_at": format_rfc3339(accepted.created_at)}
