"""
One sigchain event: its shape, its signature and its hash (SPEC §7).

    {"seq": 1, "prev": null, "type": "add_endpoint", "body": {...},
     "created_at": "...", "signer": "ed25519:<hex>", "sig": "<128 hex>"}

C{sig} is over JCS(event without C{sig}); the next event's C{prev} is the
SHA-256 hex of JCS(this event I{with} its C{sig}), so the chain commits to
signatures as well as contents.
"""

from __future__ import annotations

import copy
import hashlib
import time
from typing import Any

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import (
    InvalidKey,
    KeyPair,
    is_signature_hex,
    parse_primary,
    verify_jcs,
)
from kezchat.sigchain.bodies import check_body
from kezchat.sigchain.errors import BAD_SIGNATURE, MALFORMED, ChainError
from kezchat.sigchain.fields import (
    FieldError,
    hex64,
    integer,
    require_keys,
    require_object,
    timestamp,
)
from kezchat.timeutil import format_rfc3339

EVENT_KEYS = ("seq", "prev", "type", "body", "created_at", "signer", "sig")

Event = dict[str, Any]



def utc_now() -> str:
    """
    The current time as the RFC 3339 UTC string events carry.
    """
    return format_rfc3339(time.time())


def check_event_shape(event: object, position: int | None = None) -> Event:
    """
    Check everything about C{event} that needs neither its chain nor a
    signature check: keys, types, C{prev} matching C{seq}, the body.

    @param position: reported as L{ChainError.seq}; defaults to the
        event's own seq when that much is readable.
    @raise ChainError: with code C{malformed}.
    """
    try:
        event = require_object(event, "an event")
        seq = event.get("seq")
        if position is None and isinstance(seq, int) and not isinstance(seq, bool):
            position = seq
        require_keys(event, "an event", EVENT_KEYS)
        integer(event["seq"], "seq", minimum=1)
        if event["seq"] == 1:
            if event["prev"] is not None:
                raise FieldError("the first event's prev must be null")
        else:
            hex64(event["prev"], "prev")
        timestamp(event["created_at"], "created_at")
        try:
            parse_primary(event["signer"])
        except InvalidKey as e:
            raise FieldError(f"signer: {e}") from e
        if not is_signature_hex(event["sig"]):
            raise FieldError("sig must be 128 lowercase hex characters")
        check_body(event["type"], event["body"])
        if event["type"] == "revoke" and event["body"]["seq"] >= event["seq"]:
            raise FieldError("revoke can only name an earlier event")
    except FieldError as e:
        raise ChainError(MALFORMED, str(e), position) from e
    return event


def unsigned(event: Event) -> Event:
    """
    The event without its C{sig}: what the signature covers.
    """
    return {key: value for key, value in event.items() if key != "sig"}


def event_hash(event: Event) -> str:
    """
    SHA-256 hex of JCS(event including its signature): the next C{prev}.
    """
    return hashlib.sha256(canonical_json(event)).hexdigest()


def check_signature(event: Event, position: int | None = None) -> None:
    """
    Check that C{sig} is C{signer}'s signature over the rest of the event.

    @raise ChainError: with code C{bad_signature}.
    """
    if not verify_jcs(event["signer"], unsigned(event), event["sig"]):
        raise ChainError(
            BAD_SIGNATURE,
            "the signature does not verify against the signer",
            event["seq"] if position is None else position,
        )


def sign_event(
    keypair: KeyPair,
    *,
    seq: int,
    prev: str | None,
    type: str,
    body: dict[str, Any],
    created_at: str | None = None,
) -> Event:
    """
    Build and sign one event.  The result passes L{check_event_shape}
    (or this raises L{ChainError}, so a writer never publishes what a
    reader would refuse) and owns a copy of C{body}, so later changes to
    the caller's dict cannot silently invalidate the signature.
    """
    event: Event = {
        "seq": seq,
        "prev": prev,
        "type": type,
        "body": copy.deepcopy(body),
        "created_at": created_at or utc_now(),
        "signer": keypair.primary,
    }
    event["sig"] = keypair.sign_jcs(event)
    return check_event_shape(event)


def next_event(
    keypair: KeyPair,
    chain: list[Event],
    type: str,
    body: dict[str, Any],
    created_at: str | None = None,
) -> Event:
    """
    Sign the event that extends C{chain}: numbered after its last event
    and linked to it.
    """
    if chain:
        seq, prev = chain[-1]["seq"] + 1, event_hash(chain[-1])
    else:
        seq, prev = 1, None
    return sign_event(keypair, seq=seq, prev=prev, type=type, body=body, created_at=created_at)
