"""
The three kinds of inbox item the CLI reads: messages received, the
sender's copies of messages this account sent (C{"direction": "out"}, from
any of its devices), and receipts.

Every kind is read under the one trust rule of L{kezchat.cli.messages}:
the envelope is verified first, the server's word is checked against it,
pins are checked both ways, and the handle shown comes from a pin, never
from the item.

A sent copy is opened as its sender: it must be sealed and signed by this
account's own key (a server cannot slip a message into the history as
sent) and addressed to the key the server names as C{to_primary}; its
recipient's handle and key must agree with the pins. It is shown in the
conversation with its recipient, labelled by the pin.

A receipt (C{{"type": "receipt", ...}}) is verified like a message — the
signature, the key the server vouched for, the sender's pins — but is
never a message of a conversation: it pins nobody (a receipt from someone
not pinned here is shown unverified and otherwise ignored) and is printed
as a line of its own.
"""

from __future__ import annotations

from typing import Any

from kezchat.cli.messages import (
    Reader,
    ReceivedMessage,
    claimed_handle,
    clamped_ts,
    human_line,
    opened_or_problem,
    output_json,
)
from kezchat.cli.output import visible
from kezchat.cli.received import is_undeliverable
from kezchat.e2e import EnvelopeError, open_own_envelope
from kezchat.e2e.envelope import open_envelope

OUT = "out"
IN = "in"


def direction_of(item: dict[str, Any]) -> str:
    return OUT if item.get("direction") == OUT else IN


def is_receipt(message: ReceivedMessage) -> bool:
    return message.type == "receipt"


def counts_toward_count(message: ReceivedMessage) -> bool:
    """
    Whether C{listen --count} counts it: a message received, not one's own
    sent copy nor a receipt.
    """
    return direction_of(message.item) == IN and not is_receipt(message)


async def read_item(reader: Reader, item: dict[str, Any]) -> ReceivedMessage:
    """
    Verify and decrypt any inbox item (see the module docstring).
    """
    if direction_of(item) == OUT:
        return await read_sent(reader, item)
    if _peek_type(reader, item) == "receipt":
        return await read_receipt(reader, item)
    return await reader.read(item)


def _peek_type(reader: Reader, item: dict[str, Any]) -> str | None:
    """
    The plaintext type of a received item, if it opens at all (nothing is
    trusted from this: the item is then verified in full).
    """
    try:
        opened = open_envelope(item.get("envelope"), reader.keypair)
    except EnvelopeError:
        return None
    kind = opened.plaintext.get("type")
    return kind if isinstance(kind, str) else None


async def read_sent(reader: Reader, item: dict[str, Any]) -> ReceivedMessage:
    """
    One of this account's own sent messages, read back under the same rule
    as a received one: the envelope first (sealed and signed by our own
    key, opened as its sender), then the server's word checked against it
    (C{from_primary} is us, C{to_primary} the key the envelope is
    addressed to, C{to} a handle), then the recipient's pins both ways.
    The conversation is labelled from the pin; a recipient not pinned here
    is pinned only when the registry names the very key the envelope is
    addressed to.
    """
    own = reader.keypair.primary
    envelope = item.get("envelope")
    claimed_to = item.get("to")
    to_primary = item.get("to_primary") if isinstance(item.get("to_primary"), str) else None
    problems: list[str] = []
    plaintext: dict[str, Any] | None = None
    # 1. the envelope, on its own: ours, and to whom
    opened = opened_or_problem(open_own_envelope, envelope, reader.keypair, problems)
    recipient: str | None = opened.recipient if opened is not None else None
    plaintext = opened.plaintext if opened is not None else None
    # 2. the server's word, checked against it
    if item.get("from_primary") != own:
        problems.append("a sent copy that names another sender")
    if recipient is not None and to_primary is not None and recipient != to_primary:
        problems.append("the server names another recipient than the envelope")
    handle = claimed_handle(claimed_to, "recipient", problems)
    # 3. the recipient's pins, both ways; 4. a recipient new here, and
    # everything else holds: confirmed, then pinned
    label = await reader.label(handle, recipient or to_primary, recipient, problems, sent=True)
    ts = envelope.get("ts") if isinstance(envelope, dict) else None
    created_at = item.get("created_at")
    return ReceivedMessage(
        seq=item.get("seq"),
        sender=reader.account.get("fqhn"),
        from_primary=own,
        ts=clamped_ts(ts, created_at),
        verified=not problems,
        plaintext=plaintext,
        warning="; ".join(dict.fromkeys(problems)) or None,
        item=item,
        created_at=created_at if isinstance(created_at, str) else None,
        to=label,
        claimed_to=claimed_to if isinstance(claimed_to, str) else None,
    )


async def read_receipt(reader: Reader, item: dict[str, Any]) -> ReceivedMessage:
    """
    A receipt from someone: verified as a message is (the envelope first,
    then the server's word, then the pins both ways), but only against a
    key already pinned here; never pinning one.
    """
    envelope = item.get("envelope")
    from_primary = item.get("from_primary")
    from_primary = from_primary if isinstance(from_primary, str) else None
    claimed = item.get("from")
    problems: list[str] = []
    plaintext: dict[str, Any] | None = None
    opened = opened_or_problem(open_envelope, envelope, reader.keypair, problems, "receipt")
    signer: str | None = opened.sender if opened is not None else None
    plaintext = opened.plaintext if opened is not None else None
    if isinstance(envelope, dict) and envelope.get("from") != from_primary:
        problems.append("the envelope's sender is not the key the server vouched for")
    handle = claimed_handle(claimed, "sender", problems)
    key = signer or (envelope.get("from") if isinstance(envelope, dict) else None)
    key = key if isinstance(key, str) else None
    own = reader.keypair.primary
    label: str | None
    if signer is not None and signer == own and from_primary == own:
        # a note to ourselves (read receipts off on one of our devices):
        # signed by our own key, labelled by our own account, pins nobody
        label = reader.account.get("fqhn")
    else:
        # the same pin check as a message's, but a receipt never pins anyone
        label = await reader.label(handle, key, None, problems)
        if label is None and (handle is None or reader.pinned(handle) is None):
            problems.append("a receipt from a handle not pinned here")
    ts = envelope.get("ts") if isinstance(envelope, dict) else None
    created_at = item.get("created_at")
    return ReceivedMessage(
        seq=item.get("seq"),
        sender=label,
        from_primary=key or from_primary,
        ts=clamped_ts(ts, created_at),
        verified=not problems,
        plaintext=plaintext,
        warning="; ".join(dict.fromkeys(problems)) or None,
        item=item,
        claimed_from=claimed if isinstance(claimed, str) else None,
        created_at=created_at if isinstance(created_at, str) else None,
    )


def peer_of(message: ReceivedMessage) -> str | None:
    """
    Whom the conversation is with, as pinned here: the recipient of a sent
    copy, the sender of anything received.
    """
    if direction_of(message.item) == OUT:
        return message.to
    return message.sender


def render(message: ReceivedMessage, own_fqhn: str | None) -> tuple[dict[str, Any], str]:
    """
    The C{listen --json} line and the human line of an item of any kind:
    every line says C{direction} and C{to}. Network text in the human line
    is made visible (L{visible}), as in every other line.
    """
    line = output_json(message)
    direction = direction_of(message.item)
    line["direction"] = direction
    line["to"] = peer_of(message) if direction == OUT else own_fqhn
    if direction == OUT and message.item.get("to_primary"):
        line["to_primary"] = message.item["to_primary"]
    if direction == OUT and message.claimed_to is not None and message.claimed_to != message.to:
        line["claimed_to"] = message.claimed_to
    human = human_line(message)
    mark = "" if message.verified else " [UNVERIFIED]"
    if direction == OUT and message.claimed_to is not None and message.claimed_to != message.to:
        mark += f" (the server says {visible(message.claimed_to)})"
    to = visible(line["to"] or "?")
    if is_receipt(message):
        p = message.plaintext or {}
        sigs = p.get("sigs")
        count = len(sigs) if isinstance(sigs, list) else 0
        status = visible(p.get("status"))
        if direction == OUT:
            human = f"[{visible(message.seq)}] you told {to}{mark}: {status} ({count} message(s))"
        else:
            who = visible(message.sender or message.from_primary or "?")
            if message.claimed_from is not None and message.claimed_from != message.sender:
                mark += f" (the server says {visible(message.claimed_from)})"
            human = f"[{visible(message.seq)}] {who}{mark}: {status} ({count} message(s))"
    elif direction == OUT:
        _, _, body = human.partition(": ")
        human = f"[{visible(message.seq)}] you → {to}{mark}: {body}"
    if direction == OUT and is_undeliverable(message.item):
        line["undeliverable"] = True
        domain = visible(str(line["to"] or "?").rpartition("@")[2])
        human += f" — NOT DELIVERED: {domain} never took this message"
    return line, human
