"""
The CLI's native NATS connection: logged in with the account's key,
closed when the command ends, failures said in one line.
"""

from __future__ import annotations

from typing import Any

from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.client.errors import ServerError, Unreachable
from kezchat.identity.keys import KeyPair
from kezchat.natsbridge.aio import deferred_from_coroutine


async def nats_connect(ctx: Context, url: str, keypair: KeyPair, reconnect: bool) -> Any:
    """
    A nats-py connection at C{url} as the account (closed at exit).

    @param reconnect: keep reconnecting after the first connection (for
        C{listen}); a one-shot C{send} does not.
    @raise CliError: no broker there, or it refused the key.
    """
    from kezchat.client.natsclient import connect_user  # nats-py only when asked for

    def status(text: str) -> None:
        if text in ("disconnected", "reconnected"):
            ctx.out.info(f"NATS {text}")

    try:
        nc = await deferred_from_coroutine(
            connect_user(url, keypair, reconnect=reconnect, on_event=status)
        )
    except Unreachable as e:
        raise CliError(f"{e}: check --nats URL and that nats-server is running") from None
    except ServerError as e:
        raise CliError(f"{e.message}: is this handle registered on the chat server?") from None
    ctx.on_close(lambda: deferred_from_coroutine(nc.close()))
    return nc
