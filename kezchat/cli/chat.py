"""
Chat commands: C{send}, C{send-file}, C{listen} (whose machinery is in
L{kezchat.cli.listening}), and C{unread} / C{read} (read state, in
L{kezchat.cli.readstate}).

Sending seals the plaintext for the recipient's pinned key (pinning it on
first use, once the key directory vouches for it and their sigchain
verifies), with the newest key-directory head this home verified in it,
and posts it over HTTP, or publishes it over native NATS with C{--nats}.
"""

from __future__ import annotations

import uuid
from argparse import Namespace
from typing import TYPE_CHECKING, Any

from kezchat.cli.contacts import lookup_and_pin
from kezchat.cli.errors import CliError
from kezchat.client.errors import ServerError, Unreachable

if TYPE_CHECKING:
    from kezchat.cli.context import Context
    from kezchat.identity.keys import KeyPair

# Twisted, the listening machinery, NATS and the attachment code are
# imported by the commands that use them: `send` runs without a reactor
# (kezchat.cli.commands) and starts without any of them.


async def listen(ctx: Context, args: Namespace) -> None:
    """
    L{kezchat.cli.listening.listen}, imported when C{listen} runs (it
    brings Twisted's stream client, which C{send} does without).
    """
    from kezchat.cli.listening import listen as listening

    await listening(ctx, args)


async def unread(ctx: Context, args: Namespace) -> None:
    """
    L{kezchat.cli.readstate.unread}, imported when it runs.
    """
    from kezchat.cli.readstate import unread as counting

    await counting(ctx, args)


async def read(ctx: Context, args: Namespace) -> None:
    """
    L{kezchat.cli.readstate.read}, imported when it runs.
    """
    from kezchat.cli.readstate import read as reading

    await reading(ctx, args)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "send",
        help="send a text message",
        description="Encrypt TEXT for HANDLE (pinning their key on first use) and send it.",
    )
    p.add_argument("handle", metavar="HANDLE", help="alice or alice@example.org")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--nats", metavar="URL", help="publish over native NATS instead of HTTP")
    p.set_defaults(handler=send)

    p = subparsers.add_parser(
        "listen",
        help="receive messages",
        description="Show messages as they arrive, oldest first, starting with those not yet"
        " saved here. Runs until interrupted, or --count / --timeout.",
    )
    p.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    p.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    p.add_argument(
        "--ack",
        action="store_true",
        help="delete messages from the server once saved here (hides them from your other devices)",
    )
    p.add_argument("--nats", metavar="URL", help="read through native NATS (JetStream)")
    p.add_argument(
        "--save-files",
        metavar="DIR",
        help="write received file attachments into DIR (chunked ones once complete)",
    )
    p.add_argument(
        "--no-receipts",
        action="store_true",
        help="do not tell senders that their messages were stored here (delivered receipts)",
    )
    p.set_defaults(handler=listen)

    p = subparsers.add_parser(
        "unread",
        help="count unread messages per contact",
        description="One line per contact with messages no device of yours has read"
        " (among those `listen` saved here).",
    )
    p.set_defaults(handler=unread)

    p = subparsers.add_parser(
        "read",
        help="show unread messages from a contact and mark them read",
        description="Show the unread messages from HANDLE, mark them read on all your devices"
        " and tell HANDLE with a read receipt (unless --no-receipts).",
    )
    p.add_argument("handle", metavar="HANDLE")
    p.add_argument(
        "--no-receipts",
        action="store_true",
        help="do not tell HANDLE (your other devices still learn it, from a note to yourself)",
    )
    p.set_defaults(handler=read)

    p = subparsers.add_parser(
        "send-file",
        help="send a file (up to 10 MiB) inside messages",
        description="Send the file at PATH to HANDLE inside end-to-end encrypted messages, as"
        " the web app does: one message up to 80 KiB, else an announcement and 80 KiB chunks"
        " (10 MiB at most; `share` sends larger files peer to peer).",
    )
    p.add_argument("handle", metavar="HANDLE")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(handler=send_file)


# -- send -------------------------------------------------------------------


async def recipient(ctx: Context, text: str) -> dict[str, Any]:
    """
    The pinned contact for C{text}, looked up and pinned on first use.
    """
    account = ctx.account()
    handle = text.strip().lower()
    fqhn = handle if "@" in handle else f"{handle}@{account['fqhn'].partition('@')[2]}"
    contact = ctx.contacts.get(fqhn)
    if contact is None:
        return await lookup_and_pin(ctx, text)
    # the server's current record must still agree with the pin: a changed
    # key is refused here, before anything is sealed to either key
    try:
        record = await ctx.chat().lookup(fqhn)
    except Unreachable as e:
        raise CliError(f"{e}: is the chat server running? check --server") from None
    if record is None:
        raise CliError(f"{fqhn} is not registered on the server any more")
    ctx.contacts.check(fqhn, record["primary"])
    return contact


async def send(ctx: Context, args: Namespace) -> None:
    from kezchat.cli.audit import with_head
    from kezchat.e2e import seal_envelope, text_message

    account = ctx.account()
    contact = await recipient(ctx, args.handle)
    keypair = await ctx.keypair()
    envelope = seal_envelope(keypair, contact["primary"], with_head(ctx, text_message(args.text)))
    seq: int | None
    if args.nats:
        seq = await _send_nats(ctx, keypair, args.nats, contact["primary"], envelope)
    else:
        seq = await _send_http(ctx, keypair, account["fqhn"], contact["fqhn"], envelope)
    if seq is None:
        ctx.out.emit(
            {"to": contact["fqhn"], "queued": True},
            f"Queued for {contact['fqhn']}: our server delivers it to"
            f" {contact['fqhn'].partition('@')[2]}.",
        )
        return
    ctx.out.emit({"to": contact["fqhn"], "seq": seq}, f"Sent to {contact['fqhn']} (#{seq}).")


async def send_file(ctx: Context, args: Namespace) -> None:
    from twisted.internet.threads import deferToThread

    from kezchat.cli.attachments import attachment_plaintexts, read_attachment
    from kezchat.cli.audit import with_head
    from kezchat.e2e import seal_envelope

    account = ctx.account()
    contact = await recipient(ctx, args.handle)
    name, mime, data = await deferToThread(read_attachment, args.path)
    keypair = await ctx.keypair()
    plaintexts = attachment_plaintexts(name, mime, data)
    seqs = []
    for plaintext in plaintexts:
        envelope = seal_envelope(keypair, contact["primary"], with_head(ctx, plaintext))
        seqs.append(await _send_http(ctx, keypair, account["fqhn"], contact["fqhn"], envelope))
    queued = seqs[0] is None
    ctx.out.emit(
        {
            "to": contact["fqhn"],
            **({"queued": True} if queued else {"seq": seqs[0]}),
            "name": name,
            "size": len(data),
            "mode": plaintexts[0]["mode"],
            "messages": len(seqs),
        },
        f"{'Queued' if queued else 'Sent'} {name} ({len(data)} bytes, {len(seqs)} message(s))"
        f" {'for' if queued else 'to'} {contact['fqhn']}.",
    )


async def _send_http(
    ctx: Context, keypair: KeyPair, sender: str, to: str, envelope: dict[str, Any]
) -> int | None:
    """
    Send one message; its seq in the recipient's inbox, or C{None} when
    the recipient is of another server and our server queued it for
    delivery there (202 C{queued}: not an error).
    """
    key = uuid.uuid4().hex
    for attempt in range(2):  # one retry, same idempotency key: never sent twice
        try:
            result = await ctx.chat().send(keypair, sender, to, envelope, idempotency_key=key)
            if "seq" not in result and "queued" in result:
                return None
            return int(result["seq"])
        except Unreachable as e:
            if attempt:
                raise CliError(f"{e}: the message was not sent; try again later") from None
            await ctx.sleep(1.0)
        except ServerError as e:
            raise CliError(_send_problem(e, to)) from None
    raise AssertionError("unreachable")


def _send_problem(e: ServerError, to: str) -> str:
    if e.code == "unknown_recipient":
        return f"{to} is not registered on the server any more"
    if e.code == "rate_limited":
        return f"sending too fast: wait {e.retry_after or 'a few'} s and try again"
    if e.code == "payload_too_large":
        return "the message is too large (256 KiB at most)"
    if e.code in ("stale_timestamp", "bad_signature", "unauthorized"):
        return f"the server refused our signature ({e.message}): check this machine's clock"
    return f"the server refused the message: {e.message} ({e.code})"


async def _send_nats(
    ctx: Context, keypair: KeyPair, url: str, recipient_primary: str, envelope: dict[str, Any]
) -> int:
    from kezchat.cli.natsconnect import nats_connect
    from kezchat.client.natsclient import publish_envelope
    from kezchat.compat.aio import deferred_from_coroutine

    nc = await nats_connect(ctx, url, keypair, reconnect=False)
    try:
        return await deferred_from_coroutine(
            publish_envelope(nc, keypair, recipient_primary.partition(":")[2], envelope)
        )
    except Exception as e:
        raise CliError(f"NATS did not take the message ({e or type(e).__name__})") from None
