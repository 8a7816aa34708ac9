"""
Peer-to-peer files: C{share}, C{serve} and C{fetch}.

C{share} encrypts a file under a fresh content key (computing the BLAKE3
of the ciphertext), starts a local Iroh node whose identity is the
account's key, sends the recipient a C{file_share} message carrying the
node's ticket and the content key sealed to them, and serves until they
have the whole file.  C{fetch} finds that offer among the received
messages, dials the sender's node (waiting while it is offline), and
streams the file to disk, verifying and decrypting as it goes; only a
complete, verified file is renamed into place.  See L{kezchat.p2p}.
"""

from __future__ import annotations

import asyncio
import os
import re
from argparse import Namespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from kezchat.cli.audit import with_head
from kezchat.cli.chat import _send_http, recipient
from kezchat.cli.context import Context
from kezchat.cli.errors import EXIT_USAGE, CliError
from kezchat.cli.messages import Reader, ReceivedMessage, find_file_share
from kezchat.cli.offers import OfferBook
from kezchat.cli.output import visible
from kezchat.client.errors import ClientError
from kezchat.compat.aio import deferred_from_coroutine
from kezchat.e2e import file_share, seal_envelope
from kezchat.identity.keys import KeyPair
from kezchat.manifests.sealing import (
    UnsealError,
    new_content_key,
    open_content_key,
    seal_content_key,
)
from kezchat.p2p.crypt import ciphertext_digest
from kezchat.p2p.transfer import Download, FetchError, FileServer, Offer, fetch
from kezchat.p2p.transport import Node, TransportError

#: where the node listens: C{host:port} (port 0 or absent: the saved one, else any)
BIND_ENV = "KEZ_CHAT_P2P_BIND"
#: comma-separated C{host:port} addresses to put in tickets instead of the bound ones
ADVERTISE_ENV = "KEZ_CHAT_P2P_ADVERTISE"
DEFAULT_BIND_HOST = "0.0.0.0"
#: seconds C{fetch} waits for an offline sender by default
DEFAULT_FETCH_TIMEOUT = 300.0
#: seconds allowed for the node to shut down
NODE_CLOSE_TIMEOUT = 3.0

_BLAKE3_RE = re.compile(r"[0-9a-fA-F]{64}")


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "share",
        help="offer a file to a contact, peer to peer",
        description="Encrypt FILE for HANDLE, send them the offer and serve it from this"
        " machine until they have fetched all of it (or --timeout). The offer stays valid:"
        " `kez-chat serve` serves it again later.",
    )
    p.add_argument("handle", metavar="HANDLE", help="alice or alice@example.org")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--timeout", type=float, metavar="S", help="stop serving after S seconds")
    p.set_defaults(handler=share)

    p = subparsers.add_parser(
        "serve",
        help="serve the files you offered, until they are fetched",
        description="Serve every offer not fetched yet (for 7 days after `share`), until all"
        " are fetched or --timeout.",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="stop serving after S seconds")
    p.set_defaults(handler=serve)

    p = subparsers.add_parser(
        "fetch",
        help="download a file offered to you",
        description="Find the offer of the file with this BLAKE3 among your messages, download"
        " it from the sender's machine, verify and decrypt it, and save it at PATH.",
    )
    p.add_argument("blake3", metavar="BLAKE3", help="the digest shown with the offer")
    p.add_argument("--out", metavar="PATH", required=True, help="where to save the file")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        default=DEFAULT_FETCH_TIMEOUT,
        help=f"how long to wait for the sender to come online (default {DEFAULT_FETCH_TIMEOUT:g})",
    )
    p.set_defaults(handler=fetch_command)


# -- the node -----------------------------------------------------------------


def _bind_spec(saved_port: int) -> tuple[str, int]:
    """
    The host and port to bind: C{KEZ_CHAT_P2P_BIND}, else any address on
    the port used last time.
    """
    spec = os.environ.get(BIND_ENV, "").strip()
    if not spec:
        return DEFAULT_BIND_HOST, saved_port
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise CliError(f"{BIND_ENV} must be HOST:PORT, not {spec!r}")
    return host.strip("[]"), int(port) or saved_port


def _advertised() -> list[str] | None:
    spec = os.environ.get(ADVERTISE_ENV, "").strip()
    return [a.strip() for a in spec.split(",") if a.strip()] or None


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_node(ctx: Context, keypair: KeyPair, book: OfferBook | None) -> Any:
    """
    Start this account's node; with C{book}, on the port saved there when
    it is free (and save the one used), so earlier tickets stay valid.
    """
    # imported here: loading the bindings costs every other command 0.1 s
    from kezchat.p2p.irohnode import IrohNode

    saved = await deferToThread(book.port) if book is not None else 0
    host, port = _bind_spec(saved)
    advertised = _advertised()
    try:
        node = await deferred_from_coroutine(
            IrohNode.bind(keypair.seed, _format(host, port), advertised)
        )
    except TransportError as e:
        if not port:
            raise CliError(f"cannot start the peer-to-peer node: {e}") from None
        # the saved port is taken (another share is running): any port, and
        # the saved one stays, as the tickets sent so far name it
        ctx.out.warn(
            f"port {port} is in use (is another share or serve running?); tickets sent"
            " earlier name that port, so they reach that one"
        )
        book = None
        try:
            node = await deferred_from_coroutine(
                IrohNode.bind(keypair.seed, _format(host, 0), advertised)
            )
        except TransportError as e:
            raise CliError(f"cannot start the peer-to-peer node: {e}") from None
    ctx.on_close(lambda: _close_node(node))
    if book is not None:
        # the IPv4 socket has the port asked for; IPv6 gets one of its own
        ports = [int(a.rpartition(":")[2]) for a in node.addresses() if not a.startswith("[")]
        if ports and ports[0] != saved:
            await deferToThread(book.set_port, ports[0])
    return node


async def _close_node(node: Node) -> None:
    try:
        await deferred_from_coroutine(asyncio.wait_for(node.close(), NODE_CLOSE_TIMEOUT))
    except (TimeoutError, TransportError):
        pass


TIMED_OUT = "timed out"
INTERRUPTED = "interrupted"


def _stopper(ctx: Context, seconds: float | None) -> Deferred[str]:
    """
    Fires with L{TIMED_OUT} after C{seconds} (if given), or with
    L{INTERRUPTED} on Ctrl-C or SIGTERM: when to stop serving.
    """
    stop: Deferred[str] = Deferred()

    def fire(reason: str) -> None:
        if not stop.called:
            stop.callback(reason)

    ctx.on_interrupt(lambda: fire(INTERRUPTED))
    if seconds is not None:
        if seconds <= 0:
            raise CliError("--timeout must be positive", EXIT_USAGE)
        call = ctx.reactor.callLater(seconds, fire, TIMED_OUT)
        ctx.on_close(lambda: call.active() and call.cancel())
    return stop


class _Serving:
    """
    A file server over the live offers, reporting deliveries.
    """

    def __init__(self, ctx: Context, node: Node, book: OfferBook, report: bool) -> None:
        self.ctx = ctx
        self.report = report
        self.book = book
        self.offers: dict[str, tuple[Offer, dict[str, Any]]] = {}
        self.delivered: set[str] = set()
        self.changed: Deferred[None] = Deferred()
        self.server = FileServer(node, self._lookup, self._delivered)

    def _lookup(self, blake3: str) -> Offer | None:
        found = self.offers.get(blake3)
        return found[0] if found else None

    def _delivered(self, offer: Offer) -> None:
        if offer.blake3 in self.delivered:
            return
        self.delivered.add(offer.blake3)
        record = self.offers[offer.blake3][1]
        if self.report:
            self.ctx.out.emit(
                {"delivered": offer.blake3, "name": record["name"], "to": record["to"]},
                f"{visible(record['to'])} has fetched {visible(record['name'])}.",
            )
        deferToThread(self.book.mark_delivered, offer.blake3).addErrback(
            lambda f: self.ctx.out.warn(f"could not note the delivery: {f.value}")
        )
        changed, self.changed = self.changed, Deferred()
        changed.callback(None)

    def start(self) -> None:
        self.server.start()
        self.ctx.on_close(lambda: deferred_from_coroutine(self.server.stop()))

    async def until(self, pending: set[str], done: Deferred[str]) -> bool:
        """
        Serve until every digest of C{pending} was delivered (C{True}) or
        C{done} fires (C{False}).
        """
        while not pending <= self.delivered:
            if done.called:
                return False
            await _either(self.changed, done)
        return True


async def _either(a: Deferred[Any], b: Deferred[Any]) -> None:
    """
    Wait until C{a} or C{b} fires, leaving their results alone.
    """
    waiter: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        if not waiter.called:
            waiter.callback(None)
        return result

    a.addBoth(fire)
    b.addBoth(fire)
    await waiter


# -- share --------------------------------------------------------------------


def _check_file(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    if not os.path.isfile(path):
        raise CliError(f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise CliError(f"cannot read {path}: permission denied")
    del st
    return os.path.abspath(path)


async def share(ctx: Context, args: Namespace) -> None:
    done = _stopper(ctx, args.timeout)
    path = _check_file(args.file)
    name = os.path.basename(path)
    account = ctx.account()
    contact = await recipient(ctx, args.handle)
    keypair = await ctx.keypair()
    key = new_content_key()
    try:
        digest, size = await deferToThread(ciphertext_digest, path, key)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from None
    recipient_id = bytes.fromhex(contact["primary"].partition(":")[2])
    offer = Offer(digest, path, key, size, recipient_id)
    book = OfferBook(ctx.home)
    await deferToThread(book.add, keypair, offer, name, contact["fqhn"], contact["primary"])

    node = await start_node(ctx, keypair, book)
    serving = _Serving(ctx, node, book, report=False)
    serving.offers = await deferToThread(book.live, keypair)
    serving.start()

    plaintext = file_share(
        name, size, digest, node.ticket(), seal_content_key(key, contact["primary"])
    )
    envelope = seal_envelope(keypair, contact["primary"], with_head(ctx, plaintext))
    await _send_http(ctx, keypair, account["fqhn"], contact["fqhn"], envelope)
    ctx.out.emit(
        {"blake3": digest, "size": size, "name": name},
        f"Offered {name} ({size} bytes) to {contact['fqhn']}; serving it until they fetch it"
        f" (they run: kez-chat fetch {digest} --out PATH).",
    )
    if not await serving.until({digest}, done):
        if done.result == INTERRUPTED:
            ctx.out.say("Stopped serving; the offer stands: `kez-chat serve` serves it again.")
            return
        raise CliError(
            f"{contact['fqhn']} has not fetched {name} within {args.timeout:g} s; the offer"
            " stands: run `kez-chat serve` to serve it again"
        )


async def serve(ctx: Context, args: Namespace) -> None:
    done = _stopper(ctx, args.timeout)
    ctx.account()
    keypair = await ctx.keypair()
    book = OfferBook(ctx.home)
    live = await deferToThread(book.live, keypair)
    pending = {b for b, (_, record) in live.items() if not record.get("delivered")}
    if not pending:
        ctx.out.say("Nothing to serve: every offer was fetched or has expired.")
        return
    node = await start_node(ctx, keypair, book)
    serving = _Serving(ctx, node, book, report=True)
    serving.offers = live
    serving.start()
    ctx.out.say(f"Serving {len(pending)} offered file(s); Ctrl-C stops.")
    if not await serving.until(pending, done):
        if done.result == INTERRUPTED:
            return
        left = len(pending - serving.delivered)
        raise CliError(f"{left} offered file(s) not fetched within {args.timeout:g} s")


# -- fetch --------------------------------------------------------------------


async def _offer_from_inbox(ctx: Context, keypair: KeyPair, blake3: str) -> ReceivedMessage | None:
    """
    Look for the offer in the server's inbox, read-only: nothing is saved
    and no cursor moves, so C{listen} still shows everything.
    """
    account = ctx.account()
    reader = Reader(ctx, keypair, account)
    found: ReceivedMessage | None = None
    since = 0
    while True:
        try:
            page = await ctx.chat().inbox(keypair, account["fqhn"], since=since)
        except ClientError as e:
            ctx.out.warn(f"could not read the inbox on the server: {e}")
            return found
        messages = page.get("messages") or []
        for item in messages:
            envelope = item.get("envelope")
            if not isinstance(envelope, dict) or item.get("direction") == "out":
                continue  # one's own sent copies offer nothing to fetch
            message = await reader.read(item)
            p = message.plaintext or {}
            if p.get("type") == "file_share" and p.get("blake3") == blake3:
                found = message
        if not messages or page.get("next", since) <= since:
            return found
        since = page["next"]


def _progress(ctx: Context, size: int, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=ctx.out.json,
        file=ctx.out.stderr,
        leave=True,
    )


async def fetch_command(ctx: Context, args: Namespace) -> None:
    if not _BLAKE3_RE.fullmatch(args.blake3):
        raise CliError("BLAKE3 must be the 64 hex digits shown with the offer", EXIT_USAGE)
    if args.timeout <= 0:
        raise CliError("--timeout must be positive", EXIT_USAGE)
    blake3 = args.blake3.lower()
    out = os.path.abspath(args.out)
    if os.path.lexists(out):
        raise CliError(f"{args.out} already exists: choose another --out")
    if not os.path.isdir(os.path.dirname(out)):
        raise CliError(f"the directory of {args.out} does not exist")
    keypair = await ctx.keypair()
    message = await find_file_share(ctx, blake3)
    if message is None:
        message = await _offer_from_inbox(ctx, keypair, blake3)
    if message is None:
        raise CliError(
            f"no offer of {blake3} among your messages: check the digest (`kez-chat listen`"
            " shows offers)"
        )
    if not message.verified:
        raise CliError(f"the offer of {blake3} is not verified ({message.warning}): not fetching")
    p = message.plaintext or {}
    sender = message.sender or message.from_primary or "the sender"
    try:
        key = open_content_key(p["key"], keypair)
    except (UnsealError, KeyError, TypeError):
        raise CliError(
            f"the offer of {blake3} carries no key for you: ask {sender} to share again"
        ) from None
    download = Download(blake3, p["size"], key, p["ticket"])

    node = await start_node(ctx, keypair, None)
    bar = _progress(ctx, download.size, os.path.basename(out))
    ctx.on_close(bar.close)

    def waiting() -> None:
        ctx.out.info(f"waiting for {sender} to come online (retrying for up to {args.timeout:g} s)")

    try:
        await deferred_from_coroutine(
            fetch(node, download, out, timeout=args.timeout, waiting=waiting, progress=bar.update)
        )
    except FetchError as e:
        raise CliError(f"{p.get('name', blake3)} from {sender}: {e}") from None
    bar.close()
    ctx.out.emit(
        {"path": out, "size": download.size, "blake3": blake3},
        f"Saved {visible(p.get('name'))} from {visible(sender)} at {visible(out)}"
        f" ({download.size} bytes, verified).",
    )
