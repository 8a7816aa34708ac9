"""
The three kinds of inbox item the CLI reads: messages received, the
sender's copies of messages this account sent (C{"direction": "out"}, from
any of its devices), and receipts.

A sent copy is opened as its sender: it must be sealed and signed by this
account's own key (a server cannot slip a message into the history as
sent), addressed to the key the server names as C{to_primary}, and — when
the recipient is pinned — to the pinned key. It is shown in the
conversation with its recipient, labelled by the pin when there is one.

A receipt (C{{"type": "receipt", ...}}) is verified like a message — the
signature, the key the server vouched for, the sender's pinned key — but
is never a message of a conversation: it pins nobody (a receipt from a
handle not pinned here is shown unverified and otherwise ignored) and is
printed as a line of its own.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.threads import deferToThread

from kezchat.cli.messages import Reader, ReceivedMessage, human_line, output_json
from kezchat.e2e import EnvelopeError, PlaintextError, open_own_envelope, parse_plaintext
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
    One of this account's own sent messages, read back.
    """
    own = reader.keypair.primary
    to_fqhn = item.get("to") if isinstance(item.get("to"), str) else None
    to_primary = item.get("to_primary") if isinstance(item.get("to_primary"), str) else None
    problems: list[str] = []
    plaintext: dict[str, Any] | None = None
    if item.get("from_primary") != own:
        problems.append("a sent copy that names another sender")
    pinned = await deferToThread(reader.ctx.contacts.get, to_fqhn) if to_fqhn else None
    expected = pinned["primary"] if pinned else to_primary
    try:
        opened = open_own_envelope(
            item.get("envelope"), reader.keypair, expected_recipient=expected
        )
        plaintext = opened.plaintext
        parse_plaintext(plaintext)
        if to_primary is not None and opened.recipient != to_primary:
            problems.append("the server names another recipient than the envelope")
    except EnvelopeError as e:
        problems.append(f"{e} ({e.code})")
    except PlaintextError as e:
        problems.append(f"the plaintext is malformed: {e}")
    envelope = item.get("envelope")
    ts = envelope.get("ts") if isinstance(envelope, dict) else None
    return ReceivedMessage(
        seq=item.get("seq"),
        sender=reader.account.get("fqhn"),
        from_primary=own,
        ts=ts if isinstance(ts, str) else None,
        verified=not problems,
        plaintext=plaintext,
        warning="; ".join(dict.fromkeys(problems)) or None,
        item=item,
    )


async def read_receipt(reader: Reader, item: dict[str, Any]) -> ReceivedMessage:
    """
    A receipt from someone: verified as a message is, but only against a
    key already pinned here; never pinning one.
    """
    sender = item.get("from") if isinstance(item.get("from"), str) else None
    from_primary = item.get("from_primary")
    pinned = await deferToThread(reader.ctx.contacts.get, sender) if sender else None
    problems: list[str] = []
    plaintext: dict[str, Any] | None = None
    envelope = item.get("envelope")
    if pinned is None:
        problems.append("a receipt from a handle not pinned here")
    elif from_primary != pinned["primary"]:
        problems.append(f"key changed: {sender} is pinned to {pinned['primary']}")
    if isinstance(envelope, dict) and envelope.get("from") != from_primary:
        problems.append("the envelope's sender is not the key the server vouched for")
    try:
        opened = open_envelope(
            envelope,
            reader.keypair,
            expected_sender=pinned["primary"] if pinned else None,
        )
        plaintext = parse_plaintext(opened.plaintext)
    except EnvelopeError as e:
        problems.append(f"{e} ({e.code})")
    except PlaintextError as e:
        problems.append(f"the receipt is malformed: {e}")
    ts = envelope.get("ts") if isinstance(envelope, dict) else None
    return ReceivedMessage(
        seq=item.get("seq"),
        sender=sender,
        from_primary=from_primary if isinstance(from_primary, str) else None,
        ts=ts if isinstance(ts, str) else None,
        verified=not problems,
        plaintext=plaintext,
        warning="; ".join(dict.fromkeys(problems)) or None,
        item=item,
    )


def peer_of(message: ReceivedMessage) -> str | None:
    """
    Whom the conversation is with: the recipient of a sent copy, the
    sender of anything received.
    """
    if direction_of(message.item) == OUT:
        to = message.item.get("to")
        return to if isinstance(to, str) else None
    return message.sender


def render(message: ReceivedMessage, own_fqhn: str | None) -> tuple[dict[str, Any], str]:
    """
    The C{listen --json} line and the human line of an item of any kind:
    every line says C{direction} and C{to}.
    """
    line = output_json(message)
    direction = direction_of(message.item)
    line["direction"] = direction
    line["to"] = peer_of(message) if direction == OUT else own_fqhn
    if direction == OUT and message.item.get("to_primary"):
        line["to_primary"] = message.item["to_primary"]
    human = human_line(message)
    if is_receipt(message):
        p = message.plaintext or {}
        count = len(p.get("sigs") or [])
        who = message.sender or "?"
        if direction == OUT:
            human = f"[{message.seq}] you told {line['to']}: {p.get('status')} ({count} message(s))"
        else:
            mark = "" if message.verified else " [UNVERIFIED]"
            human = f"[{message.seq}] {who}{mark}: {p.get('status')} ({count} message(s))"
    elif direction == OUT:
        _, _, body = human.partition(": ")
        mark = "" if message.verified else " [UNVERIFIED]"
        human = f"[{message.seq}] you → {line['to'] or '?'}{mark}: {body}"
    return line, human
