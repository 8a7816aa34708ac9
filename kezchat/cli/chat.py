"""
Chat commands: C{send} and C{listen}.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from kezchat.cli.context import Context
from kezchat.cli.errors import CliError


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "send", help="send a text message", description="Send TEXT to HANDLE."
    )
    p.add_argument("handle", metavar="HANDLE")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--nats", metavar="URL", help="publish over native NATS instead of HTTP")
    p.set_defaults(handler=send)

    p = subparsers.add_parser("listen", help="receive messages", description="Receive messages.")
    p.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    p.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    p.add_argument("--ack", action="store_true", help="delete saved messages from the server")
    p.add_argument("--nats", metavar="URL", help="read through native NATS (JetStream)")
    p.set_defaults(handler=listen)


async def send(ctx: Context, args: Namespace) -> None:
    raise CliError("send: not implemented yet")


async def listen(ctx: Context, args: Namespace) -> None:
    raise CliError("listen: not implemented yet")
