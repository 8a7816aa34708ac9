"""
Contact commands: C{add} (look up, verify the sigchain, pin the key) and
C{contacts}.
"""

from __future__ import annotations

import time
from argparse import Namespace
from typing import TYPE_CHECKING, Any

from kezchat.cli.errors import CliError
from kezchat.cli.output import visible
from kezchat.client.errors import ServerError

if TYPE_CHECKING:
    from kezchat.cli.context import Context


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "add",
        help="look up a handle, verify its sigchain and pin its key",
        description="Look up HANDLE, fetch and verify its sigchain, and pin its key. A known"
        " handle that now presents a different key is refused (exit 1, 'key changed').",
    )
    p.add_argument("handle", metavar="HANDLE", help="alice or alice@example.org")
    p.add_argument(
        "--replace-key",
        action="store_true",
        help="accept a changed key (only after checking it with the person)",
    )
    p.set_defaults(handler=add)

    p = subparsers.add_parser(
        "contacts", help="list pinned contacts", description="List pinned contacts."
    )
    p.set_defaults(handler=contacts)


def contact_json(contact: dict[str, Any]) -> dict[str, Any]:
    return {
        "handle": contact["handle"],
        "fqhn": contact["fqhn"],
        "primary": contact["primary"],
        "pinned": True,
    }


async def resolve_contact(
    ctx: Context, text: str, replace: bool = False, quiet: bool = False
) -> dict[str, Any]:
    """
    Resolve C{text} on our server and verify the key's sigchain: the
    contact to pin (not pinned yet). The one place a handle becomes a key,
    for C{add} and for a message from someone new alike.

    @param quiet: say nothing about a missing sigchain (a message's
        sender: the caller reports what it decides).
    @raise CliError: unknown handle, yourself, unverifiable chain, or a
        changed key (L{kezchat.cli.pins.KeyChanged}) unless C{replace}.
    """
    # imported here: `contacts` lists the pins without the sigchain's and
    # the key directory's code
    from kezchat.cli.audit import vouch
    from kezchat.cli.chains import chain_summary, fetch_chain
    from kezchat.identity.handles import InvalidHandle, parse_handle
    from kezchat.timeutil import format_rfc3339

    account = ctx.account()
    home_server = account["fqhn"].partition("@")[2]
    try:
        handle = parse_handle(text, home_server)
    except InvalidHandle as e:
        raise CliError(f"{text!r} is not a handle: {e}") from None
    try:
        record = await ctx.chat().lookup(handle.fqhn)
    except ServerError as e:
        raise CliError(f"cannot look up {handle.fqhn}: {e.message}") from None
    if record is None:
        raise CliError(f"{handle.fqhn} is not registered: check the spelling")
    if not isinstance(record, dict) or record.get("fqhn") != handle.fqhn:
        raise CliError(f"the server answered for another handle than {handle.fqhn}")
    if record["primary"] == account["primary"]:
        raise CliError(f"{record['fqhn']} is you: add someone else")
    if not replace:
        ctx.contacts.check(record["fqhn"], record["primary"])
    # the key directory must vouch for the key before it is pinned
    await vouch(ctx, record)
    contact = {
        "handle": record["handle"],
        "fqhn": record["fqhn"],
        "primary": record["primary"],
        "sigchain_url": record.get("sigchain_url"),
        "pinned_at": format_rfc3339(time.time()),
        "source": "add",
    }
    if record.get("sigchain_url"):
        state, _ = await fetch_chain(ctx, record["sigchain_url"], record["primary"])
        contact.update(chain_summary(state))
    elif not quiet:
        ctx.out.warn(
            f"{record['fqhn']} has no sigchain (the server names no sig-server):"
            " pinned on the server's word alone"
        )
    return contact


async def lookup_and_pin(ctx: Context, text: str, replace: bool = False) -> dict[str, Any]:
    """
    Resolve C{text} (L{resolve_contact}) and pin it.

    @raise CliError: as L{resolve_contact}.
    """
    contact = await resolve_contact(ctx, text, replace)
    return ctx.contacts.pin(contact, replace=replace)


async def add(ctx: Context, args: Namespace) -> None:
    contact = await lookup_and_pin(ctx, args.handle, replace=args.replace_key)
    iroh = [e["node_id"] for e in contact.get("endpoints", []) if e.get("protocol") == "iroh"]
    ctx.out.emit(
        contact_json(contact),
        f"Pinned {visible(contact['fqhn'])}\n  key  {visible(contact['primary'])}"
        + (f"\n  iroh {visible(iroh[0])}" if iroh else "")
        + "".join(f"\n  claim {visible(c)}" for c in contact.get("claims", [])),
    )


async def contacts(ctx: Context, args: Namespace) -> None:
    ctx.account()
    everyone = ctx.contacts.all()
    if not everyone:
        ctx.out.say("No contacts yet: add one with `kez-chat add HANDLE`.")
    for contact in everyone:
        ctx.out.emit(
            contact_json(contact), f"{visible(contact['fqhn'])}  {visible(contact['primary'])}"
        )
