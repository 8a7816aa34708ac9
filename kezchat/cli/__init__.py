"""
The C{kez-chat} command-line client: account, contacts, chat, files.

C{main.main} parses the command line, builds one L{Context} and runs the
command's coroutine on Twisted's asyncio reactor, so Twisted (treq) and
asyncio libraries (nats-py, iroh) share one event loop.
"""
