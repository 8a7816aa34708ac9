"""
Every C{kez-chat} command by name, without importing any of them.

The top-level C{--help}, and a command line that names a command, are
built from this table: only the named command's group module is imported
(with whatever that group needs: Twisted, nats-py, Iroh), so C{whoami}
does not pay for C{share}. L{tests.test_cli_startup} checks that the
table says what the group modules' own parsers say; a command a group adds
without a line here still works (the whole parser is built for it), it is
only slower and missing from the top-level list.

A command marked C{direct} runs without any event loop
(L{kezchat.cli.main.run_direct}): it touches only the home's files
(C{whoami}, C{contacts}), or makes one-shot requests over
L{kezchat.client.blocking} (C{send}, C{audit}) - unless one of its
C{reactor_for} options is given (C{send --nats} needs nats-py on the
reactor).
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Sequence
from dataclasses import dataclass

#: command-group modules of this package, in --help order
GROUPS = ("account", "contacts", "chat", "files", "manifests", "audit")
#: groups that need optional extras (Iroh); missing ones are skipped
OPTIONAL_GROUPS = frozenset({"files", "manifests"})
#: global options that take a value (the word after them is not a command)
VALUE_OPTIONS = ("--home", "--server")


@dataclass(frozen=True)
class Command:
    """
    One command as the top-level parser lists it.

    @ivar group: the module of this package that builds its parser.
    @ivar direct: it runs without a reactor (see above).
    @ivar reactor_for: options (argparse C{dest}s) that, when given, make
        a C{direct} command run on the reactor after all.
    """

    name: str
    group: str
    help: str
    aliases: tuple[str, ...] = ()
    direct: bool = False
    reactor_for: tuple[str, ...] = ()

    def runs_direct(self, args: Namespace) -> bool:
        return self.direct and not any(getattr(args, o, None) for o in self.reactor_for)


COMMANDS = (
    Command("register", "account", "create a key and register a handle", ("init",)),
    Command("recover", "account", "restore your key from its 24 words"),
    Command("whoami", "account", "show this home's handle and key", direct=True),
    Command("add", "contacts", "look up a handle, verify its sigchain and pin its key"),
    Command("contacts", "contacts", "list pinned contacts", direct=True),
    Command("send", "chat", "send a text message", direct=True, reactor_for=("nats",)),
    Command("listen", "chat", "receive messages"),
    Command("unread", "chat", "count unread messages per contact"),
    Command("read", "chat", "show unread messages from a contact and mark them read"),
    Command("send-file", "chat", "send a file (up to 10 MiB) inside messages"),
    Command("share", "files", "offer a file to a contact, peer to peer"),
    Command("serve", "files", "serve the files you offered, until they are fetched"),
    Command("fetch", "files", "download a file offered to you"),
    Command("publish-files", "manifests", "list files in your shared-files manifest"),
    Command("browse", "manifests", "show the files someone shares with you"),
    Command("audit", "audit", "replay the server's whole key directory", direct=True),
)

_BY_NAME = {n: c for c in COMMANDS for n in (c.name, *c.aliases)}


def find(name: str) -> Command | None:
    """
    The command called C{name} (or one of its aliases), if the table has it.
    """
    return _BY_NAME.get(name)


def command_word(argv: Sequence[str]) -> str | None:
    """
    The word of C{argv} argparse will take as the command: the first one
    that is neither an option nor the value of C{--home}/C{--server}
    (also abbreviated, as argparse allows). C{None} when there is none, or
    when help is asked for before it (the top-level C{--help}).
    """
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--":
            return None
        if word.startswith("-"):
            if word in ("-h", "--help"):
                return None
            if "=" not in word and len(word) > 2 and any(o.startswith(word) for o in VALUE_OPTIONS):
                skip = True
            continue
        return word
    return None
