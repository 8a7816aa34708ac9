"""
Read state in the CLI: C{kez-chat unread} and C{kez-chat read}.

A received message is unread until a device of this account has shown it.
That state is not kept by the server: it travels as read receipts (SPEC
§11.3). When any device of the account reads messages it sends the
sender a C{read} receipt, and the server keeps the account's own copy of
that receipt (C{direction: "out"}), which every other device reads. So
the read state here is computed from what C{listen} (or C{recover})
saved: every verified message received, less those named by a verified
C{read} receipt this account sent (from any device, to the sender or to
itself), less those marked read here (C{read.jsonl}, for receipts not yet
come back).

C{read HANDLE} shows the unread messages from HANDLE, marks them read and
sends HANDLE one read receipt naming them. With C{--no-receipts} HANDLE is
told nothing: the read receipt goes to this account itself instead (the
server keeps a message to oneself once, in one's own inbox), so the
account's other devices still learn the read state, as the web app does
with read receipts off.
Only messages C{listen} has saved count: run it first for the newest.
"""

from __future__ import annotations

import json
import os
from argparse import Namespace
from dataclasses import dataclass, field

from twisted.internet.threads import deferToThread

from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.cli.home import Account, Home
from kezchat.cli.itemkinds import IN, direction_of, is_receipt, read_item, render
from kezchat.cli.messages import Reader, ReceivedMessage
from kezchat.identity.keys import KeyPair

READ_FILE = "read.jsonl"

#: plaintext types that are shown as messages (file pieces belong to their file)
SHOWN = frozenset({"text", "file", "file_share"})


@dataclass
class Conversation:
    """
    One contact's received messages, as pinned here.
    """

    fqhn: str
    primary: str
    #: (envelope sig, message), oldest first
    received: list[tuple[str, ReceivedMessage]] = field(default_factory=list)
    read: set[str] = field(default_factory=set)

    @property
    def unread(self) -> list[tuple[str, ReceivedMessage]]:
        return [(sig, m) for sig, m in self.received if sig not in self.read]


def marked_here(home: Home) -> set[str]:
    """
    The signatures this home marked read (blocking: a file read).
    """
    path = home.path(READ_FILE)
    if not path.exists():
        return set()
    marked: set[str] = set()
    for line in path.read_text("utf-8").splitlines():
        try:
            sig = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(sig, str):
            marked.add(sig)
    return marked


def mark_here(home: Home, sigs: list[str]) -> None:
    """
    Add C{sigs} to the home's read marks, durably (blocking: fsync).
    """
    home.ensure()
    data = "".join(json.dumps(s) + "\n" for s in sigs).encode()
    fd = os.open(home.path(READ_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sig(message: ReceivedMessage) -> str | None:
    envelope = message.item.get("envelope")
    sig = envelope.get("sig") if isinstance(envelope, dict) else None
    return sig if isinstance(sig, str) else None


async def conversations(
    ctx: Context, keypair: KeyPair, account: Account
) -> dict[str, Conversation]:
    """
    Every contact's received messages with this account's read state, by
    the contact's pinned handle.
    """
    reader = Reader(ctx, keypair, account)
    await reader.refresh()
    items = await deferToThread(lambda: list(ctx.received.items()))
    read = await deferToThread(marked_here, ctx.home)
    convs: dict[str, Conversation] = {}
    for item in items:
        message = await read_item(reader, item)
        if not message.verified:
            continue  # shown as a warning by listen; never counted
        if is_receipt(message):
            plaintext = message.plaintext or {}
            sigs = plaintext.get("sigs")
            # ours: the server's copy of one we sent, or a note to ourselves
            ours = direction_of(item) != IN or message.from_primary == keypair.primary
            if ours and plaintext.get("status") == "read" and isinstance(sigs, list):
                read.update(s for s in sigs if isinstance(s, str))
            continue
        sig = _sig(message)
        if direction_of(item) != IN or message.type not in SHOWN or sig is None:
            continue
        if message.sender is None or message.from_primary is None:
            continue
        if message.from_primary == keypair.primary:
            continue  # a note to oneself is never unread
        conv = convs.setdefault(message.sender, Conversation(message.sender, message.from_primary))
        conv.received.append((sig, message))
    for conv in convs.values():
        conv.read = read
    return convs


async def unread(ctx: Context, args: Namespace) -> None:
    account = ctx.account()
    keypair = await ctx.keypair()
    convs = await conversations(ctx, keypair, account)
    for fqhn in sorted(convs):
        count = len(convs[fqhn].unread)
        if count:
            ctx.out.emit({"fqhn": fqhn, "unread": count}, f"{fqhn}: {count} unread")
    if not any(c.unread for c in convs.values()) and not ctx.out.json:
        ctx.out.emit({}, "Nothing unread (among the messages `kez-chat listen` saved).")


async def read(ctx: Context, args: Namespace) -> None:
    from kezchat.cli.receipts import send_receipt

    account = ctx.account()
    keypair = await ctx.keypair()
    convs = await conversations(ctx, keypair, account)
    handle = args.handle.strip().lower()
    fqhn = handle if "@" in handle else f"{handle}@{account['fqhn'].partition('@')[2]}"
    if fqhn not in convs and ctx.contacts.get(fqhn) is None:
        raise CliError(f"no conversation with {fqhn} here (see `kez-chat contacts`)")
    conv = convs.get(fqhn)
    due = conv.unread if conv is not None else []
    for _, message in due:
        line, human = render(message, account.get("fqhn"))
        ctx.out.emit(line, human)
    if not due:
        if not ctx.out.json:
            ctx.out.emit({}, f"Nothing unread from {fqhn}.")
        return
    sigs = [sig for sig, _ in due]
    await deferToThread(mark_here, ctx.home, sigs)
    if conv is None:
        return
    if args.no_receipts:
        # the sender is not told; our other devices are, by a note to ourselves
        own = account["fqhn"]
        await send_receipt(ctx, keypair, account, own, keypair.primary, "read", sigs)
    else:
        await send_receipt(ctx, keypair, account, conv.fqhn, conv.primary, "read", sigs)

