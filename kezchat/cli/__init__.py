"""
The C{kez-chat} command-line client: account, contacts, chat, files.

C{main.main} parses the command line, builds one L{context.Context} and
runs the command's coroutine on Twisted's asyncio reactor, so Twisted
(treq) and asyncio libraries (nats-py, iroh) share one event loop.

Adding a command group: a module C{kezchat/cli/<group>.py} listed in
C{commands.GROUPS}, with C{add_commands(subparsers)} that adds each
command's parser (with a C{description}: that is its C{--help}) and sets
C{handler=} to C{async def handler(ctx, args) -> None}; each command also
gets a line in C{commands.COMMANDS} (name, group, help line), from which
the parser is built without importing the other groups. Import what a
handler needs inside it when the group's other commands do not need it.
The handler:

  - reads the account with C{ctx.account()}, unlocks the key with
    C{await ctx.keypair()}, talks to the servers through C{ctx.chat()}
    and C{ctx.sig()} (L{kezchat.client.http}), and to asyncio code through
    L{kezchat.compat.aio.deferred_from_coroutine};
  - reports results with C{ctx.out.emit(obj, human_text)} (one JSON line
    under C{--json}), progress and warnings on stderr (C{ctx.out.info},
    C{ctx.out.warn});
  - raises L{errors.CliError} for anything a person can cause (exit 1 and
    one line on stderr; C{exit_code=2} for usage);
  - registers clean-ups with C{ctx.on_close} and, if it runs long, a
    wind-down with C{ctx.on_interrupt} (Ctrl-C, SIGTERM);
  - keeps its own files in C{ctx.home.path(name)}, written with
    L{home.write_atomic} / L{home.write_json}.

Received messages are in C{ctx.received} (still encrypted);
L{messages.find_file_share} finds and opens a C{file_share} offer there.
"""
