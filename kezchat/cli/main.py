"""
The C{kez-chat} entry point: parse, run one command, map its outcome to
an exit status.

Each command group is a module of this package with C{add_commands(
subparsers)}; each command's parser sets C{handler=} to an C{async def
handler(ctx, args)} coroutine. It runs on Twisted's asyncio reactor, so it
may await Deferreds (treq) directly and asyncio code (nats-py, iroh)
through L{kezchat.natsbridge.aio.deferred_from_coroutine}.

Exit status: 0 success; 1 an expected failure (L{CliError}, one line on
stderr saying what to do); 2 a command line that does not parse.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from kezchat.cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError
from kezchat.cli.output import visible
from kezchat.client.errors import ServerError, Unreachable

#: command-group modules, in --help order; missing optional ones are skipped
GROUPS = ("account", "contacts", "chat", "files", "manifests")
OPTIONAL_GROUPS = frozenset({"files", "manifests"})
#: seconds an interrupted command gets to wind down
INTERRUPT_GRACE = 5.0


class Parser(argparse.ArgumentParser):
    """
    argparse with one-line usage errors (exit 2), as for every failure.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"kez-chat: error: {visible(message)}\n")
        sys.exit(EXIT_USAGE)


def json_flag(parser: argparse.ArgumentParser) -> None:
    """
    Accept C{--json} after the command too (C{kez-chat send ... --json}).
    """
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object per line on stdout",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="kez-chat",
        description="KEZ chat: end-to-end encrypted chat and file sharing with KEZ keys.",
    )
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="where this client keeps its state (env KEZ_CHAT_HOME; default: the user data dir)",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="chat-server base URL (env KEZ_CHAT_SERVER_URL; default https://<handle's domain>)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per line on stdout"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    for name in GROUPS:
        try:
            module = importlib.import_module(f"kezchat.cli.{name}")
        except ModuleNotFoundError as e:
            if name in OPTIONAL_GROUPS and e.name == f"kezchat.cli.{name}":
                continue
            raise
        module.add_commands(subparsers)
    for sub in subparsers.choices.values():
        if not any("--json" in a.option_strings for a in sub._actions):
            json_flag(sub)
    return parser


def install_reactor() -> Any:
    """
    Install Twisted's asyncio reactor on a fresh loop (unless one is
    installed already) and return the reactor.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor


def run(reactor: Any, args: argparse.Namespace) -> int:
    """
    Run the command's handler to completion on C{reactor}; return the
    exit status, re-raising an unexpected exception after the reactor
    has stopped.
    """
    from twisted.internet.defer import Deferred

    from kezchat.cli.context import Context

    outcome: dict[str, Any] = {}
    ctx = Context.from_args(reactor, args)

    async def body() -> None:
        try:
            await args.handler(ctx, args)
        finally:
            await ctx.close()

    def start() -> None:
        d = Deferred.fromCoroutine(body())
        d.addCallbacks(
            lambda _: outcome.setdefault("ok", True), lambda f: outcome.setdefault("failure", f)
        )
        outcome["running"] = d
        d.addBoth(lambda _: None if outcome.get("stopping") else reactor.stop())

    def interrupted() -> Deferred[Any] | None:
        # Ctrl-C or SIGTERM: let the command wind down (save, acknowledge,
        # close connections) for a few seconds before the reactor stops.
        outcome["stopping"] = True
        running = outcome.get("running")
        if running is None or running.called:
            return None
        outcome["interrupted"] = True
        ctx.interrupt()
        waiting: Deferred[Any] = Deferred()
        def finished(result: object) -> object:
            if not waiting.called:
                waiting.callback(None)
            return result

        running.addBoth(finished)
        waiting.addTimeout(INTERRUPT_GRACE, reactor, onTimeoutCancel=lambda *_: None)
        return waiting

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    reactor.callWhenRunning(start)
    reactor.run()
    if "failure" in outcome:
        outcome["failure"].raiseException()
    if "ok" not in outcome or outcome.get("interrupted"):
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    The console script C{kez-chat}.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(install_reactor(), args)
    except CliError as e:
        sys.stderr.write(f"kez-chat: {visible(e.message)}\n")
        return e.exit_code
    except Unreachable as e:
        sys.stderr.write(
            f"kez-chat: {visible(e)}: is the server running? check --server / KEZ_CHAT_SERVER_URL\n"
        )
        return EXIT_FAILURE
    except ServerError as e:
        sys.stderr.write(
            f"kez-chat: the server refused: {visible(e.message)} ({visible(e.code)})\n"
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
