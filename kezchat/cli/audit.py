"""
The key directory in the CLI: C{kez-chat audit}, and the check every
lookup passes before a key is pinned or encrypted to (L{vouch}).
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.client.errors import ServerError, Unreachable
from kezchat.client.keydir import AttachedProof, DirectoryError, JsonHeadStore, KeyDirectory
from kezchat.keylog.wire import WireError, from_b64url

#: the home file keeping the newest verified head per server
HEADS_FILE = "keydir.json"
#: leaves fetched per request while auditing (the server's maximum)
PAGE = 1000


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "audit",
        help="replay the server's whole key directory",
        description="Fetch every entry of the server's key directory and check it: the"
        " signed head (and that it extends the last one this client kept), every"
        " registration's signature, every handle and key registered once, and the root of"
        " all the entries equal to the signed head's. Exit 1 on any problem.",
    )
    p.set_defaults(handler=audit)


def directory(ctx: Context, server: str, attached: Any = None) -> KeyDirectory:
    """
    The key directory of domain C{server}, its heads kept in the home
    (one per domain). Our own server's is asked directly; another
    domain's comes through our server (SPEC §11.5): the head and proof
    C{attached} to its record, consistency proofs asked with
    C{server=<domain>}, and that domain's log key kept from its first head
    like our own server's.
    """
    ctx.home.ensure()
    store = JsonHeadStore(ctx.home.path(HEADS_FILE))
    if server == own_server(ctx):
        return KeyDirectory(server, ctx.chat(), store)
    return KeyDirectory(server, AttachedProof(server, attached, ctx.chat()), store)


def own_server(ctx: Context) -> str:
    """
    The domain of this home's account.
    """
    return str(ctx.account()["fqhn"]).partition("@")[2]


def _loud(e: DirectoryError) -> CliError:
    return CliError(f"KEY DIRECTORY CHECK FAILED ({e.code}): {e.message}")


async def vouch(ctx: Context, record: dict[str, Any]) -> None:
    """
    Refuse C{record} unless the server's key directory vouches for it.

    @raise CliError: it does not (a loud, explained refusal).
    """
    server = str(record.get("fqhn", "")).partition("@")[2]
    try:
        await directory(ctx, server, record.get("directory")).vouch(record)
    except DirectoryError as e:
        raise _loud(e) from None
    except ServerError as e:
        raise CliError(
            f"the server's key directory does not vouch for {record.get('fqhn')}:"
            f" {e.message}"
        ) from None


def with_head(ctx: Context, plaintext: dict[str, Any]) -> dict[str, Any]:
    """
    C{plaintext} carrying our newest verified head (C{head}: C{{"size",
    "root"}}), so the recipient can compare the directory it sees with
    ours.
    """
    server = ctx.account()["fqhn"].partition("@")[2]
    kept = directory(ctx, server).kept()
    return plaintext if kept is None else {**plaintext, "head": kept.brief()}


async def gossip_warning(
    ctx: Context, plaintext: dict[str, Any] | None, sender: str | None = None
) -> str | None:
    """
    The loud warning for a received plaintext whose C{head} disagrees with
    the key directory we see, or C{None}. A sender of another domain
    gossips its own server's head: it is compared with the head we kept of
    that domain (if any), never with our server's.

    @param sender: the pinned handle of the sender, if known.
    """
    if not plaintext or "head" not in plaintext:
        return None
    own = own_server(ctx)
    server = sender.partition("@")[2] if sender and "@" in sender else own
    try:
        await directory(ctx, server).compare_gossip(plaintext["head"], catch_up=server == own)
    except DirectoryError as e:
        return f"THE SERVER IS SHOWING PEOPLE DIFFERENT KEY DIRECTORIES ({e.code}): {e.message}"
    except (ServerError, Unreachable):
        return None
    return None


async def audit(ctx: Context, args: Namespace) -> None:
    # imported here: `send` uses this module for vouch and with_head only
    from kezchat.keylog.audit import Replay

    account = ctx.account()
    server = account["fqhn"].partition("@")[2]
    keydir = directory(ctx, server)
    chat = ctx.chat()
    try:
        head = await keydir.current_head()
        result = Replay()
        while result.size < head.size:
            page = await chat.log_entries(result.size, min(PAGE, head.size - result.size))
            entries = page.get("entries") if isinstance(page, dict) else None
            if not isinstance(entries, list) or not entries:
                raise CliError(f"the server stopped listing entries at {result.size}")
            for entry in entries[: head.size - result.size]:
                try:
                    leaf = from_b64url(entry)
                except WireError:
                    result.problem(f"entry {result.size} is not base64url")
                    leaf = b""
                result.add(leaf, server)
        result.check_head(head)
    except DirectoryError as e:
        raise _loud(e) from None
    except (ServerError, Unreachable) as e:
        raise CliError(f"cannot audit the key directory: {e}") from None
    summary = result.summary(head)
    lines = [f"PROBLEM {p}" for p in summary["problems"]]
    state = "OK" if summary["ok"] else f"FAILED ({summary['problem_count']} problems)"
    lines.append(f"{state}: {summary['size']} entries, {summary['handles']} handles,"
                 f" root {summary['root']}, log key {head.key}")
    ctx.out.emit(summary, "\n".join(lines))
    if not summary["ok"]:
        raise CliError("the key directory does not hold together")
