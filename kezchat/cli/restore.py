"""
Restoring the retained history: what C{kez-chat recover} brings back.

Every message the server still holds for the account — received ones and,
since the server keeps the sender's copy of each message sent, the
account's own sent ones, from whichever device sent them — is fetched page
by page from the inbox, oldest first, and saved in the home as C{listen}
saves what it receives (so a later C{listen} resumes after it). Each item
is verified and decrypted as it is saved, which pins the senders of
verified messages on first use, as C{listen} would. Progress goes to
stderr (tqdm) unless C{--json}; no receipts are sent for history.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm
from twisted.internet.threads import deferToThread

from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.cli.home import Account
from kezchat.cli.itemkinds import OUT, direction_of, is_receipt, read_item
from kezchat.cli.messages import Reader
from kezchat.cli.received import SSE, message_id
from kezchat.client.errors import ServerError, Unreachable
from kezchat.identity.keys import KeyPair

#: the largest page the server gives
PAGE = 500


@dataclass
class Restored:
    """
    What a restore saved, by kind.
    """

    received: int = 0
    sent: int = 0
    receipts: int = 0
    unverified: int = 0

    @property
    def messages(self) -> int:
        return self.received + self.sent + self.receipts

    def json(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "received": self.received,
            "sent": self.sent,
            "receipts": self.receipts,
            "unverified": self.unverified,
        }


async def restore_history(ctx: Context, keypair: KeyPair, account: Account) -> Restored:
    """
    Fetch and save the whole retained history of C{account}, in order.

    @raise CliError: the server could not be reached or refused.
    """
    chat = ctx.chat()
    reader = Reader(ctx, keypair, account)
    await reader.refresh()
    seen = set(await deferToThread(ctx.received.seen))
    since = await deferToThread(ctx.received.cursor, SSE)
    restored = Restored()
    progress = tqdm(
        desc="Restoring", unit=" msg", file=sys.stderr, disable=ctx.out.json, leave=True
    )
    try:
        while True:
            try:
                page = await chat.inbox(keypair, account["fqhn"], since=since, limit=PAGE)
            except (Unreachable, ServerError) as e:
                raise CliError(
                    f"could not fetch your history ({e}); `kez-chat listen` fetches it later"
                ) from None
            items = [i for i in page.get("messages", []) if isinstance(i, dict)]
            if not items:
                return restored
            fresh = []
            for item in items:
                key = message_id(item)
                if key in seen:
                    continue
                seen.add(key)
                fresh.append(item)
                _count(restored, await read_item(reader, item))
            since = max(since, int(page.get("next", since)))
            await deferToThread(ctx.received.save_many, fresh, SSE, since)
            progress.update(len(items))
    finally:
        progress.close()


def _count(restored: Restored, message: Any) -> None:
    if not message.verified:
        restored.unverified += 1
    if is_receipt(message):
        restored.receipts += 1
    elif direction_of(message.item) == OUT:
        restored.sent += 1
    else:
        restored.received += 1
