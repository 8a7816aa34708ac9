"""
Shared-files manifests: C{publish-files} and C{browse}.

C{publish-files} adds files to the account's manifest (a signed blob
listing them, design option A): each file is encrypted under its own
content key (BLAKE3 over the ciphertext, as for P2P offers); a public
entry carries its key in the clear, a private one (C{--private-to}) has
it sealed to each reader and to the owner.  The blob goes to the home
server's mirror first, then a C{set_shared_files} event committing to its
BLAKE3 is appended to the sigchain, so the chain never points at a blob
the mirror does not have.

C{browse} resolves a handle, verifies its sigchain, fetches the mirrored
blob and checks it against the chain's digest and the owner's key before
showing anything: every public entry and the private ones sealed to this
reader, one line each.
"""

from __future__ import annotations

import mimetypes
import os
import time
from argparse import Namespace
from typing import Any

from twisted.internet.threads import deferToThread

from kezchat.cli.chains import fetch_chain
from kezchat.cli.chat import recipient
from kezchat.cli.contacts import lookup_and_pin
from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.cli.home import Account, sigchain_of
from kezchat.cli.output import visible as visible_text
from kezchat.client.errors import ServerError, Unreachable
from kezchat.identity.handles import InvalidHandle, parse_handle
from kezchat.identity.keys import KeyPair
from kezchat.manifests import (
    ManifestError,
    build_manifest,
    manifest_bytes,
    new_content_key,
    private_entry,
    public_entry,
    read_manifest,
    shared_files_body,
    verify_manifest,
)
from kezchat.p2p.crypt import ciphertext_digest
from kezchat.sigchain import bodies, next_event
from kezchat.timeutil import format_rfc3339


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "publish-files",
        help="list files in your shared-files manifest",
        description="Add FILEs to your signed shared-files manifest (replacing entries of the"
        " same name), mirror it on your home server and commit to it in your sigchain."
        " Entries are public unless --private-to names who may open them.",
    )
    p.add_argument("files", metavar="FILE", nargs="+")
    p.add_argument(
        "--private-to",
        metavar="HANDLE",
        action="append",
        default=[],
        help="only HANDLE (and you) can open these entries; repeat for several readers",
    )
    p.add_argument(
        "--replace", action="store_true", help="start a new manifest instead of adding to it"
    )
    p.set_defaults(handler=publish_files)

    p = subparsers.add_parser(
        "browse",
        help="show the files someone shares with you",
        description="Verify HANDLE's sigchain and manifest, and list the public entries and"
        " the private ones sealed to you.",
    )
    p.add_argument("handle", metavar="HANDLE", help="alice, alice@example.org, or yourself")
    p.set_defaults(handler=browse)


def _describe(path: str, key: bytes) -> dict[str, Any]:
    """
    Size and ciphertext digest of one file (blocking).
    """
    digest, size = ciphertext_digest(path, key)
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return {"blake3": digest, "size": size, "mime": mime}


async def _current_entries(
    ctx: Context, account: Account, events: list[Any], state: Any
) -> list[dict[str, Any]]:
    """
    The entries of the manifest our chain commits to now (none if none).
    """
    pointer = state.shared_files
    if pointer is None:
        return []
    try:
        blob = await ctx.chat().get_manifest(account["fqhn"])
    except (Unreachable, ServerError) as e:
        raise CliError(f"cannot read your current manifest from the server: {e}") from None
    if blob is None:
        raise CliError(
            "your sigchain points at a manifest the server does not have: run with --replace"
        )
    try:
        manifest = verify_manifest(
            blob, owner=account["primary"], expected_blake3=pointer.manifest_blake3
        )
    except ManifestError as e:
        raise CliError(
            f"the server's copy of your manifest does not verify ({e}): run with --replace"
        ) from None
    return list(manifest["entries"])


async def publish_files(ctx: Context, args: Namespace) -> None:
    account = ctx.account()
    paths = []
    for path in args.files:
        if not os.path.isfile(path):
            raise CliError(f"{path} is not a readable file")
        paths.append(os.path.abspath(path))
    keypair = await ctx.keypair()
    readers = [(await recipient(ctx, h))["primary"] for h in args.private_to]
    state, events = await fetch_chain(ctx, sigchain_of(account), account["primary"])
    entries = [] if args.replace else await _current_entries(ctx, account, events, state)

    added_at = format_rfc3339(time.time())
    new_entries = []
    for path in paths:
        key = new_content_key()
        try:
            facts = await deferToThread(_describe, path, key)
        except OSError as e:
            raise CliError(f"cannot read {path}: {e.strerror or e}") from None
        fields = {
            "id": facts["blake3"][:32],
            "name": os.path.basename(path),
            "added_at": added_at,
            **facts,
        }
        if readers:
            entry = private_entry(
                **fields,
                content_key=key,
                recipients=list(dict.fromkeys([*readers, keypair.primary])),
            )
        else:
            entry = public_entry(**fields, content_key=key)
        new_entries.append(entry)
    names = {e["name"] for e in new_entries}
    entries = [e for e in entries if e["name"] not in names] + new_entries

    try:
        blob = manifest_bytes(build_manifest(keypair, entries))
    except ManifestError as e:
        raise CliError(f"{e.message}: publish fewer files, or start over with --replace") from None
    await _publish(ctx, keypair, account, events, blob)
    url = ctx.chat().url(f"/v1/manifests/{account['fqhn'].partition('@')[0]}")
    ctx.out.emit(
        {
            "manifest_blake3": shared_files_body(blob, url)["manifest_blake3"],
            "size": len(blob),
            "url": url,
            "entries": [
                {"name": e["name"], "blake3": e["blake3"], "visibility": e["visibility"]}
                for e in new_entries
            ],
        },
        f"Published {len(new_entries)} file(s); your manifest lists {len(entries)}.",
    )


async def _publish(
    ctx: Context, keypair: KeyPair, account: Account, events: list[Any], blob: bytes
) -> None:
    """
    Mirror the blob, then commit to it in the chain.
    """
    chat = ctx.chat()
    url = chat.url(f"/v1/manifests/{account['fqhn'].partition('@')[0]}")
    try:
        await chat.put_manifest(keypair, account["fqhn"], blob)
    except Unreachable as e:
        raise CliError(f"{e}: the manifest was not published; try again later") from None
    except ServerError as e:
        raise CliError(f"the server refused the manifest: {e.message} ({e.code})") from None
    event = next_event(keypair, events, bodies.SET_SHARED_FILES, shared_files_body(blob, url))
    try:
        await ctx.sig().append(sigchain_of(account), event)
    except Unreachable as e:
        raise CliError(
            f"{e}: the manifest is on the server but your sigchain does not point at it yet;"
            " run publish-files again"
        ) from None
    except ServerError as e:
        raise CliError(f"the sig-server refused the event: {e.message} ({e.code})") from None


async def _owner(ctx: Context, text: str) -> dict[str, Any]:
    """
    The owner to browse: ourselves, or a contact (pinned on first use).
    """
    account = ctx.account()
    try:
        handle = parse_handle(text, account["fqhn"].partition("@")[2])
    except InvalidHandle as e:
        raise CliError(f"{text!r} is not a handle: {e}") from None
    if handle.fqhn == account["fqhn"]:
        return dict(account)
    return await lookup_and_pin(ctx, text)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


async def browse(ctx: Context, args: Namespace) -> None:
    owner = await _owner(ctx, args.handle)
    keypair = await ctx.keypair()
    state, _ = await fetch_chain(ctx, owner["sigchain_url"], owner["primary"])
    pointer = state.shared_files
    if pointer is None:
        ctx.out.say(f"{owner['fqhn']} shares no files.")
        return
    try:
        blob = await ctx.chat(_server_of(ctx, owner)).get_manifest(owner["fqhn"])
    except (Unreachable, ServerError) as e:
        raise CliError(f"cannot fetch {owner['fqhn']}'s manifest: {e}") from None
    if blob is None:
        raise CliError(
            f"{owner['fqhn']}'s sigchain names a manifest their server does not have; try later"
        )
    try:
        view = read_manifest(
            blob, keypair, owner=owner["primary"], expected_blake3=pointer.manifest_blake3
        )
    except ManifestError as e:
        raise CliError(f"{owner['fqhn']}'s manifest does not verify ({e}): not shown") from None
    for entry in view.unreadable:
        ctx.out.warn(f"{entry['name']} is sealed to you but its key does not open")
    visible = [v.entry for v in (*view.public, *view.private)]
    if not visible:
        ctx.out.say(f"{owner['fqhn']} shares nothing you can see.")
    for entry in visible:
        ctx.out.emit(
            {
                "owner": owner["fqhn"],
                "id": entry["id"],
                "name": entry["name"],
                "size": entry["size"],
                "mime": entry["mime"],
                "blake3": entry["blake3"],
                "added_at": entry["added_at"],
                "visibility": entry["visibility"],
            },
            f"{visible_text(entry['visibility']):8} {visible_text(entry['name'])}"
            f"  {_size(entry['size'])}  {visible_text(entry['mime'])}"
            f"  added {visible_text(entry['added_at'])}",
        )


def _server_of(ctx: Context, owner: dict[str, Any]) -> str:
    """
    The owner's chat server: ours when they are on it (or when --server is
    given), else C{https://<their domain>}.
    """
    account = ctx.account()
    if owner["fqhn"].partition("@")[2] == account["fqhn"].partition("@")[2]:
        return ctx.server_url()
    return ctx.domain_url(owner["fqhn"].partition("@")[2])
