"""
C{POST /v1/messages}: the handler both the Klein route and
the fast path (L{kezchat.http.fastpath}) run.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kezchat.errors import KezError
from kezchat.http.errors import json_response, read_body
from kezchat.protocol.auth import body_digest, parse_auth
from kezchat.relay.relay import Relay
from kezchat.relay.sendrequest import MAX_MESSAGE_BYTES, from_body
from kezchat.storage.outbox import Queued
from kezchat.timeutil import format_rfc3339

#: the body cap of C{POST /v1/messages}
MESSAGE_CAP = MAX_MESSAGE_BYTES


async def send_message(relay: Relay, request: IRequest) -> bytes:
    """
    C{POST /v1/messages}: authenticate the sender, store the envelope as
    the client wrote it, answer C{201} (or C{200} for a replay or a
    repeated idempotency key).
    """
    raw = read_body(request, MESSAGE_CAP)
    sender_handle = request.getHeader(b"x-kez-sender")
    if not sender_handle:
        raise KezError("unauthorized", "X-KEZ-Sender is required")
    auth = request.getHeader(b"x-kez-auth")
    sender = await relay.authenticate(
        sender_handle.decode("utf-8", "replace"),
        auth,
        "POST",
        "/v1/messages",
        [body_digest(raw)],
        unknown="unauthorized",
    )
    accepted = await relay.send(sender, from_body(raw, parse_auth(auth)))
    if isinstance(accepted, Queued):
        # for another server: queued durably, delivered server to server
        return json_response(
            request,
            {"queued": accepted.id, "created_at": format_rfc3339(accepted.created_at)},
            200 if accepted.duplicate else 202,
        )
    return json_response(
        request,
        {"seq": accepted.seq, "created_at": format_rfc3339(accepted.created_at)},
        200 if accepted.duplicate else 201,
    )
