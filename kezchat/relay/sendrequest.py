"""
A message to send, as a transport read it: L{SendRequest}, built by the
HTTP route (L{from_body}, a C{POST /v1/messages} body) and by the NATS
ingest (L{from_published}, an envelope a native client published), and
accepted by the relay along one path (L{kezchat.relay.relay.Relay.send}
and C{accept_bridged} take a L{SendRequest} and share their checks and
their store step). A transport refuses what it cannot parse itself, with
the same codes, before the relay sees anything.

Each builder parses its input once and checks its shape; what needs the
registry or the database (who the recipient is, the send limit) is the
relay's.
"""

from __future__ import annotations

from dataclasses import dataclass

from kezchat import strictjson
from kezchat.errors import KezError
from kezchat.protocol.auth import AuthValue
from kezchat.relay.replay import implicit_key

#: bytes of one message: the cap on a C{POST /v1/messages} body, and on an
#: envelope a native client publishes on NATS (it gets no more room)
MAX_MESSAGE_BYTES = 256 * 1024
MAX_IDEMPOTENCY_KEY = 64


@dataclass(frozen=True)
class SendRequest:
    """
    One message to store.

    @ivar to: the recipient: a handle as the client wrote it (HTTP), or
        its key C{"ed25519:<hex>"} when C{to_key} (NATS, from the subject).
    @ivar envelope: the envelope's JSON text exactly as the client wrote
        it, on one line: what is stored and relayed.
    @ivar idempotency_key: names the request for good (given, implied by
        the signature, or the NATS stream sequence); C{None}: none.
    @ivar envelope_to: the envelope's own C{"to"} when it is a key (the
        recipient's key, for a message to another server's handle).
    @ivar to_key: C{to} is a key, not a handle.
    @ivar sender_key: the sender's key C{"ed25519:<hex>"} when the
        transport vouches for it (NATS: the subject, under the broker's
        permissions); C{None} when the relay authenticates the sender
        itself (HTTP: the request's signature).
    """

    to: str
    envelope: str
    idempotency_key: str | None = None
    envelope_to: str | None = None
    to_key: bool = False
    sender_key: str | None = None


def from_body(raw: bytes, auth: AuthValue | None = None) -> SendRequest:
    """
    The request of a C{POST /v1/messages} body C{raw}: strict JSON, an
    object with a handle C{"to"}, an object C{"envelope"} and an optional
    C{"idempotency_key"} of 1-64 characters.

    @param auth: the request's verified C{X-KEZ-Auth}: without an
        C{idempotency_key}, the signature is the key (L{implicit_key}), so
        a second request with the same signature, to any instance, is a
        replay answered with the first one's seq and not stored again.
    @raise KezError: C{bad_request}.
    """
    body = strictjson.parse_json(raw)
    if not isinstance(body, dict):
        raise KezError("bad_request", "the body must be a JSON object")
    to, envelope = body.get("to"), body.get("envelope")
    key = body.get("idempotency_key")
    if not isinstance(to, str):
        raise KezError("bad_request", '"to" must be a handle')
    if not isinstance(envelope, dict):
        raise KezError("bad_request", '"envelope" must be a JSON object')
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY):
        raise KezError("bad_request", '"idempotency_key" must be 1-64 characters')
    if key is None and auth is not None:
        key = implicit_key(auth)
    # the envelope is relayed as the client wrote it (one line)
    text = strictjson.one_line(strictjson.member_texts(raw.decode("utf-8"))["envelope"])
    peer = envelope.get("to")
    return SendRequest(to, text, key, peer if isinstance(peer, str) else None)


def from_published(
    recipient_primary: str, sender_primary: str, payload: bytes, idempotency_key: str
) -> SendRequest:
    """
    The request of an envelope C{payload} that C{sender_primary} published
    to C{recipient_primary}'s inbox subject (both keys from the subject):
    at most L{MAX_MESSAGE_BYTES}, a strict JSON object.

    @raise KezError: C{payload_too_large} or C{bad_request}.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise KezError("payload_too_large", "envelope too large")
    try:
        envelope = strictjson.loads(payload)
    except strictjson.JSONError as e:
        raise KezError("bad_request", f"payload is not strict JSON: {e}") from None
    if not isinstance(envelope, dict):
        raise KezError("bad_request", "payload is not a JSON object")
    text = strictjson.one_line(payload.decode("utf-8").strip(" \t\r\n"))
    return SendRequest(
        recipient_primary, text, idempotency_key, to_key=True, sender_key=sender_primary
    )
