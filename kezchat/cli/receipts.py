"""
Delivered receipts: telling senders which of their messages this home has
stored.

Once a batch of received messages is saved here, each sender whose
messages in it verified gets one C{delivered} receipt naming them all by
their envelope signatures (batched: one receipt for many messages, at most
L{MAX_RECEIPT_SIGS} each). Receipts go only to verified messages' senders,
sealed to the key pinned for them, and never answer a receipt or a sent
copy, so two clients never bounce receipts back and forth. A receipt that
cannot be sent is a warning, never a failure of C{listen}: the messages are
stored either way.
"""

from __future__ import annotations

import uuid
from typing import Any

from kezchat.cli.context import Context
from kezchat.cli.itemkinds import IN, direction_of, is_receipt
from kezchat.cli.messages import ReceivedMessage
from kezchat.client.errors import ServerError, Unreachable
from kezchat.e2e import receipt, seal_envelope
from kezchat.e2e.plaintext import MAX_RECEIPT_SIGS
from kezchat.identity.keys import KeyPair


def receipts_due(messages: list[ReceivedMessage]) -> dict[tuple[str, str], list[str]]:
    """
    The envelope signatures to confirm, per sender C{(fqhn, primary)}, in
    arrival order: verified messages received from others, not receipts.
    """
    due: dict[tuple[str, str], list[str]] = {}
    for message in messages:
        if not message.verified or is_receipt(message) or direction_of(message.item) != IN:
            continue
        envelope = message.item.get("envelope")
        sig = envelope.get("sig") if isinstance(envelope, dict) else None
        if not isinstance(sig, str) or message.sender is None or message.from_primary is None:
            continue
        due.setdefault((message.sender, message.from_primary), []).append(sig)
    return due


class ReceiptSender:
    """
    Sends the C{delivered} receipts of what C{listen} stored.
    """

    def __init__(self, ctx: Context, keypair: KeyPair, account: dict[str, Any]) -> None:
        self.ctx = ctx
        self.keypair = keypair
        self.account = account
        #: receipts sent (for tests and the summary)
        self.sent = 0

    async def delivered(self, messages: list[ReceivedMessage]) -> None:
        for (fqhn, primary), sigs in receipts_due(messages).items():
            if primary == self.keypair.primary:
                continue  # a note to oneself needs no receipt
            for start in range(0, len(sigs), MAX_RECEIPT_SIGS):
                await self._send(fqhn, primary, sigs[start : start + MAX_RECEIPT_SIGS])

    async def _send(self, fqhn: str, primary: str, sigs: list[str]) -> None:
        envelope = seal_envelope(self.keypair, primary, receipt("delivered", sigs))
        try:
            await self.ctx.chat().send(
                self.keypair, self.account["fqhn"], fqhn, envelope,
                idempotency_key=uuid.uuid4().hex,
            )
        except (Unreachable, ServerError) as e:
            self.ctx.out.warn(f"could not send a delivered receipt to {fqhn}: {e}")
            return
        self.sent += 1
