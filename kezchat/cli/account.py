"""
Account commands: C{register}, C{recover}, C{whoami}.

The key is made here and never leaves the machine: the server sees a
signed registration, the sig-server signed events, and the person sees
the 24 words once (and proves they wrote them down, unless C{--yes}).
"""

from __future__ import annotations

import getpass
import secrets
import sys
from argparse import Namespace
from typing import TYPE_CHECKING, Any

from kezchat.cli.errors import EXIT_USAGE, CliError
from kezchat.cli.home import Account
from kezchat.cli.secrets import KIND_KEYRING
from kezchat.client.errors import ServerError

if TYPE_CHECKING:
    from kezchat.cli.context import Context
    from kezchat.identity.keys import KeyPair

# The key's libraries, Twisted, the sigchain and the history restore are
# imported by the commands that use them, so `whoami` starts without them.

QUIZ_WORDS = 3
QUIZ_TRIES = 3


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "register",
        aliases=["init"],
        help="create a key and register a handle",
        description="Create a new key, show its 24 recovery words, register HANDLE on the"
        " chat server and start the key's sigchain (NATS and Iroh endpoints).",
    )
    p.add_argument("handle", metavar="HANDLE", help="alice, or alice@example.org")
    p.add_argument("--yes", action="store_true", help="skip the recall check (for scripts)")
    p.add_argument(
        "--nats-url",
        metavar="URL",
        help="NATS URL to advertise (env KEZ_CHAT_NATS_URL; default nats://<server>:4222)",
    )
    p.set_defaults(handler=register)

    p = subparsers.add_parser(
        "recover",
        help="restore your key from its 24 words",
        description="Restore the key from its 24 words (asked on the terminal, or read from"
        " stdin when it is not one), find its handle on the server, verify its sigchain.",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--nats-url", metavar="URL", help="NATS URL to advertise if missing")
    p.add_argument(
        "--no-history",
        action="store_true",
        help="do not fetch the messages the server keeps (sent and received)",
    )
    p.set_defaults(handler=recover)

    p = subparsers.add_parser(
        "whoami", help="show this home's handle and key", description="Show handle and key."
    )
    p.set_defaults(handler=whoami)


def identity_json(account: Account) -> dict[str, Any]:
    return {"handle": account["handle"], "fqhn": account["fqhn"], "primary": account["primary"]}


def _refuse_existing(ctx: Context, primary: str | None = None) -> None:
    account = ctx.home.account()
    if account is not None and account.get("primary") != primary:
        raise CliError(
            f"{ctx.home.root} already holds the account {account['fqhn']}:"
            " use --home DIR (or KEZ_CHAT_HOME) for another one"
        )


async def _server_domain(ctx: Context, url: str) -> str:
    health = await ctx.chat(url).healthz()
    domain = health.get("server") if isinstance(health, dict) else None
    if not isinstance(domain, str) or not domain:
        raise CliError(f"{url} does not look like a KEZ chat server (no healthz): check --server")
    return domain


def quiz(ctx: Context, words: list[str]) -> None:
    """
    Ask back three random words; raise if the person cannot give them.
    """
    if not sys.stdin.isatty():
        raise CliError(
            "the recall check needs a terminal: run in one, or pass --yes in scripts", EXIT_USAGE
        )
    positions = sorted(secrets.SystemRandom().sample(range(len(words)), QUIZ_WORDS))
    ctx.out.info("To check you wrote them down, type three of the words.")
    for position in positions:
        for attempt in range(QUIZ_TRIES):
            try:
                answer = _ask(f"Word #{position + 1}: ")
            except EOFError:
                raise CliError("no answer: run register again when you have the words") from None
            if answer.strip().lower() == words[position]:
                break
            if attempt < QUIZ_TRIES - 1:
                ctx.out.info("That is not it.")
        else:
            raise CliError(
                f"word #{position + 1} was wrong {QUIZ_TRIES} times: nothing was registered;"
                " write the words down and run register again"
            )


def _ask(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


async def register(ctx: Context, args: Namespace) -> None:
    from kezchat.cli.chains import default_nats_url, ensure_endpoints
    from kezchat.identity.handles import RESERVED_HANDLES, InvalidHandle, validate_local
    from kezchat.identity.keys import KeyPair
    from kezchat.identity.mnemonic import seed_to_mnemonic

    text = args.handle.strip()
    local, at, domain = text.lower().partition("@")
    try:
        validate_local(local)
    except InvalidHandle as e:
        raise CliError(f"{text!r} is not a valid handle: {e}") from None
    if not text.isascii():
        raise CliError(f"{text!r} is not a valid handle: a handle is ASCII")
    if not args.yes and not sys.stdin.isatty():
        raise CliError(
            "the recall check needs a terminal: run in one, or pass --yes in scripts", EXIT_USAGE
        )
    _refuse_existing(ctx)
    url = ctx.server_url(text)
    server = await _server_domain(ctx, url)
    if at and domain != server.lower():
        raise CliError(f"the server at {url} is {server}, not {domain}: check --server")
    fqhn = f"{local}@{server}"
    if local in RESERVED_HANDLES:
        raise CliError(f"{fqhn} is reserved: choose another handle")
    if await ctx.chat(url).lookup(local) is not None:
        raise CliError(f"{fqhn} is taken: choose another handle")
    ctx.secrets.prepare()  # the passphrase, if one is needed, before anything happens

    keypair = KeyPair.generate()
    mnemonic = seed_to_mnemonic(keypair.seed)
    words = mnemonic.split()
    if not ctx.out.json or not args.yes:
        _show_words(ctx, words)
    if not args.yes:
        quiz(ctx, words)

    try:
        record = await ctx.chat(url).register(keypair, local, server)
    except ServerError as e:
        raise CliError(_registration_problem(e, fqhn)) from None
    account = await _keep_account(ctx, keypair, record, url)
    nats_url = args.nats_url or default_nats_url(server)
    if account["sigchain_url"]:
        await ensure_endpoints(ctx, keypair, account["sigchain_url"], nats_url)
    else:
        _no_sigchain(ctx, url)
    where = "the OS keyring" if account["secret"] == KIND_KEYRING else ctx.home.secret_path
    ctx.out.emit(
        {**identity_json(account), "mnemonic": mnemonic},
        f"Registered {account['fqhn']}\nYour KEZ: {account['primary']}\n"
        f"Key stored in {where}.",
    )


async def _keep_account(
    ctx: Context, keypair: KeyPair, record: dict[str, Any], url: str
) -> Account:
    """
    Save the secret, then the account of C{record} (the server's record of
    the handle) in the home, and make C{keypair} the session's key.
    """
    kind = await _save_secret(ctx, keypair)
    account: Account = {
        "handle": record["handle"],
        "fqhn": record["fqhn"],
        "primary": record["primary"],
        "server_url": url,
        "sigchain_url": record.get("sigchain_url"),
        "secret": kind,
    }
    ctx.home.save_account(account)
    ctx.set_keypair(keypair)
    return account


async def _save_secret(ctx: Context, keypair: KeyPair) -> str:
    from twisted.internet.threads import deferToThread

    kind = await deferToThread(ctx.secrets.save, keypair)
    if ctx.secrets.keyring_error:
        ctx.out.warn(
            f"the OS keyring refused the key ({ctx.secrets.keyring_error});"
            " it is in the passphrase-encrypted file instead"
        )
    return kind


def _show_words(ctx: Context, words: list[str]) -> None:
    lines = [f"{i + 1:2}. {w}" for i, w in enumerate(words)]
    columns = ["   ".join(f"{lines[r + 8 * c]:<16}" for c in range(3)) for r in range(8)]
    text = (
        "Your 24 recovery words. Write them down, in order, and keep them safe:\n"
        "they are the only way back into this account.\n\n" + "\n".join(columns) + "\n"
    )
    if ctx.out.json:
        ctx.out.info(text)
    else:
        ctx.out.say(text)


def _registration_problem(e: ServerError, fqhn: str) -> str:
    if e.code == "handle_taken":
        return f"{fqhn} is taken: choose another handle"
    if e.code == "reserved_handle":
        return f"{fqhn} is reserved: choose another handle"
    if e.code == "invalid_handle":
        return f"{fqhn} is not a valid handle: {e.message}"
    if e.code == "rate_limited":
        return (
            f"too many registrations from here: wait {e.retry_after or 'a while'} s and try again"
        )
    if e.code == "stale_timestamp":
        return "the server says this machine's clock is off by more than 5 minutes: fix the clock"
    return f"the server refused the registration: {e.message} ({e.code})"


def _read_words(ctx: Context) -> str:
    if sys.stdin.isatty():
        try:
            return getpass.getpass("Your 24 recovery words (not shown): ")
        except (EOFError, KeyboardInterrupt):
            raise CliError("no words given") from None
    return sys.stdin.read()


async def recover(ctx: Context, args: Namespace) -> None:
    from kezchat.cli.chains import default_nats_url, ensure_endpoints, fetch_chain
    from kezchat.cli.restore import restore_history
    from kezchat.identity.keys import KeyPair
    from kezchat.identity.mnemonic import mnemonic_to_seed

    url = ctx.server_url()
    words = _read_words(ctx)
    try:
        keypair = KeyPair(mnemonic_to_seed(words))
    except ValueError as e:
        raise CliError(
            f"these are not 24 valid recovery words ({e}): check spelling and order"
        ) from None
    _refuse_existing(ctx, keypair.primary)
    record = await ctx.chat(url).by_primary(keypair.primary)
    if record is None:
        raise CliError(
            f"no handle on {url} belongs to the key of these words: check the words"
            " (a different valid word list is a different key) and --server"
        )
    chain_url = record.get("sigchain_url")
    if chain_url:
        await fetch_chain(ctx, chain_url, keypair.primary)
    ctx.secrets.prepare()
    account = await _keep_account(ctx, keypair, record, url)
    server = record["fqhn"].partition("@")[2]
    if chain_url:
        await ensure_endpoints(ctx, keypair, chain_url, args.nats_url or default_nats_url(server))
    else:
        _no_sigchain(ctx, url)
    summary = identity_json(account)
    human = f"Recovered {account['fqhn']}\nYour KEZ: {account['primary']}"
    if not getattr(args, "no_history", False):
        restored = await restore_history(ctx, keypair, account)
        summary["history"] = restored.json()
        human += (
            f"\nRestored {restored.messages} messages"
            f" ({restored.received} received, {restored.sent} sent, {restored.receipts} receipts)"
        )
    ctx.out.emit(summary, human)


def _no_sigchain(ctx: Context, url: str) -> None:
    ctx.out.warn(
        f"the server at {url} names no sig-server, so no sigchain was started:"
        " others can pin your key but not see your endpoints"
    )


async def whoami(ctx: Context, args: Namespace) -> None:
    account = ctx.account()
    ctx.out.emit(
        identity_json(account),
        f"{account['fqhn']}\nYour KEZ: {account['primary']}\nServer: {account['server_url']}",
    )
