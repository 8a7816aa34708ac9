"""
Delivered receipts: telling senders which of their messages this home has
stored.

Once received messages are saved here, each sender whose messages
verified gets a C{delivered} receipt naming them by their envelope
signatures. Receipts are batched: what is saved within a second (and what
is left when C{listen} ends) goes in one receipt per sender, of at most
L{MAX_RECEIPT_SIGS} signatures. Receipts go only to verified messages' senders,
sealed to the key pinned for them, and never answer a receipt or a sent
copy, so two clients never bounce receipts back and forth. A receipt that
cannot be sent is a warning, never a failure of C{listen}: the messages are
stored either way.
"""

from __future__ import annotations

import uuid

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from kezchat.cli.audit import with_head
from kezchat.cli.context import Context
from kezchat.cli.home import Account
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
    Sends the C{delivered} receipts of what C{listen} stored, at most once
    a second (L{delivered} only notes them) and once more at the end
    (L{flush}).
    """

    def __init__(
        self, ctx: Context, keypair: KeyPair, account: Account, every: float = 1.0
    ) -> None:
        self.ctx = ctx
        self.keypair = keypair
        self.account = account
        #: receipts sent
        self.sent = 0
        self._due: dict[tuple[str, str], list[str]] = {}
        self._loop = LoopingCall(self._tick)
        self._loop.clock = ctx.reactor
        self._loop.start(every, now=False)
        self._sending: Deferred[None] | None = None

    def delivered(self, messages: list[ReceivedMessage]) -> None:
        """
        Note the messages just saved; their receipts go with the next tick.
        """
        for sender, sigs in receipts_due(messages).items():
            if sender[1] != self.keypair.primary:  # a note to oneself needs none
                self._due.setdefault(sender, []).extend(sigs)

    def _tick(self) -> Deferred[None] | None:
        if self._sending is not None or not self._due:
            return None
        self._sending = Deferred.fromCoroutine(self._send_due())
        return self._sending

    async def _send_due(self) -> None:
        try:
            while self._due:
                (fqhn, primary), sigs = self._due.popitem()
                for start in range(0, len(sigs), MAX_RECEIPT_SIGS):
                    await self._send(fqhn, primary, sigs[start : start + MAX_RECEIPT_SIGS])
        finally:
            self._sending = None

    async def flush(self) -> None:
        """
        Stop ticking and send what is still due.
        """
        if self._loop.running:
            self._loop.stop()
        if self._sending is not None:
            await self._sending
        await self._send_due()

    async def _send(self, fqhn: str, primary: str, sigs: list[str]) -> None:
        ctx, keypair, account = self.ctx, self.keypair, self.account
        if await send_receipt(ctx, keypair, account, fqhn, primary, "delivered", sigs):
            self.sent += 1


async def send_receipt(
    ctx: Context,
    keypair: KeyPair,
    account: Account,
    fqhn: str,
    primary: str,
    status: str,
    sigs: list[str],
) -> bool:
    """
    Send C{fqhn} (pinned as C{primary}) receipts of C{status} naming
    C{sigs}, in as few receipts as the limit allows; a failure is a
    warning (False), never an error: the messages are stored either way.
    """
    for start in range(0, len(sigs), MAX_RECEIPT_SIGS):
        plaintext = with_head(ctx, receipt(status, sigs[start : start + MAX_RECEIPT_SIGS]))
        envelope = seal_envelope(keypair, primary, plaintext)
        try:
            await ctx.chat().send(
                keypair, account["fqhn"], fqhn, envelope, idempotency_key=uuid.uuid4().hex
            )
        except (Unreachable, ServerError) as e:
            ctx.out.warn(f"could not send a {status} receipt to {fqhn}: {e}")
            return False
    return True
