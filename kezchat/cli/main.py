"""
The C{kez-chat} entry point: parse, run one command, map its outcome to
an exit status.

Each command group is a module of this package with C{add_commands(
subparsers)}; each command's parser sets C{handler=} to an C{async def
handler(ctx, args)} coroutine. It runs on Twisted's asyncio reactor, so it
may await Deferreds (treq) directly and asyncio code (nats-py, iroh)
through L{kezchat.compat.aio.deferred_from_coroutine}.

Start-up is kept short: the parser is built from the table in
L{kezchat.cli.commands}, importing only the named command's group (none
for the top-level C{--help}), and a command that only reads the home
(C{whoami}, C{contacts}) or makes one-shot requests (C{send}, C{audit}) runs
without installing a reactor at all (L{run_direct}), so none imports
Twisted or treq.

Exit status: 0 success; 1 an expected failure (L{CliError}, one line on
stderr saying what to do); 2 a command line that does not parse.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from kezchat.cli.commands import COMMANDS, GROUPS, OPTIONAL_GROUPS, command_word, find
from kezchat.cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError
from kezchat.cli.output import visible
from kezchat.client.errors import ServerError, Unreachable

#: seconds an interrupted command gets to wind down
INTERRUPT_GRACE = 5.0
#: the packages that come with one of kezchat's extras (setup.cfg), not
#: with a plain install (the servers'): a command that needs a missing one
#: says which extra to install
EXTRA_OF = {"iroh": "p2p", "tqdm": "p2p", "keyring": "cli"}


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


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """
    The parser for C{argv}: every group's commands when C{argv} is
    C{None} (or names a command the table does not know), else only the
    named command's group, the other commands being listed from the table
    (L{kezchat.cli.commands}) by name and help line alone.
    """
    word = None if argv is None else command_word(argv)
    chosen = find(word) if word is not None else None
    everything = argv is None or (word is not None and chosen is None)
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
        "--resolve",
        metavar="DOMAIN=URL",
        action="append",
        help="the chat server of DOMAIN is at URL, not https://DOMAIN (repeatable; env"
        " KEZ_CHAT_RESOLVE, space-separated; for private networks and tests: plain http only"
        " when given here)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per line on stdout"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    listed = []
    for name in GROUPS:
        if everything or (chosen is not None and chosen.group == name):
            try:
                module = importlib.import_module(f"kezchat.cli.{name}")
            except ModuleNotFoundError as e:
                if name in OPTIONAL_GROUPS and e.name == f"kezchat.cli.{name}":
                    continue
                raise
            module.add_commands(subparsers)
        elif name not in OPTIONAL_GROUPS or importlib.util.find_spec(f"kezchat.cli.{name}"):
            listed.extend(_listed_only(subparsers, name))
    for sub in subparsers.choices.values():
        if sub not in listed and not any("--json" in a.option_strings for a in sub._actions):
            json_flag(sub)
    return parser


def _listed_only(subparsers: Any, group: str) -> list[argparse.ArgumentParser]:
    """
    Parsers for the commands of C{group} as the top-level help lists them,
    without their arguments (the group is not imported); L{main} builds
    the real ones if one of them is chosen after all.
    """
    parsers = []
    for command in COMMANDS:
        if command.group == group:
            p = subparsers.add_parser(
                command.name, aliases=list(command.aliases), help=command.help, add_help=False
            )
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(handler=None)
            parsers.append(p)
    return parsers


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """
    Parse C{argv} with the smallest parser that can (L{build_parser}).
    """
    args = build_parser(argv).parse_args(argv)
    if args.handler is None:
        # argparse chose another word as the command than command_word
        # did (an unusual spelling of the options): parse with everything
        args = build_parser().parse_args(argv)
    return args


def install_reactor() -> Any:
    """
    Install Twisted's asyncio reactor on a fresh loop (unless one is
    installed already) and return the reactor.
    """
    if "twisted.internet.reactor" not in sys.modules:
        import asyncio

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


def run_direct(args: argparse.Namespace) -> int:
    """
    Run a command that needs no event loop (L{commands.Command.direct}):
    its coroutine is driven to the end here, and never waits for anything
    but blocking calls (local files, L{kezchat.client.blocking}).
    """
    import signal

    from kezchat.cli.context import Context

    signal.signal(signal.SIGTERM, _interrupted)  # as on the reactor: exit 130
    ctx = Context.from_args(None, args)
    try:
        _complete(args.handler(ctx, args))
    finally:
        _complete(ctx.close())
    return 0


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _complete(coroutine: Coroutine[Any, Any, Any]) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a command run without the reactor waited for something")


def main(argv: Sequence[str] | None = None) -> int:
    """
    The console script C{kez-chat}.
    """
    try:
        # inside: building the chosen group's parser imports its module,
        # which may need a missing extra
        args = parse(sys.argv[1:] if argv is None else list(argv))
        command = find(args.command)
        if command is not None and command.runs_direct(args):
            return run_direct(args)
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
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in EXTRA_OF:
            raise
        sys.stderr.write(
            f"kez-chat: this command needs {top}, from kezchat's {EXTRA_OF[top]} extra:"
            f" pip install 'kezchat[{EXTRA_OF[top]}]'\n"
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
