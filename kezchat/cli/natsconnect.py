"""
The CLI's native NATS connection: logged in with the account's key as
this home's device (L{kezchat.cli.device}), closed when the command ends,
failures said in one line.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.threads import deferToThread

from kezchat.cli.context import Context
from kezchat.cli.device import device_name
from kezchat.cli.errors import CliError
from kezchat.client.errors import ServerError, Unreachable
from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.keys import KeyPair


async def nats_connect(
    ctx: Context, url: str, keypair: KeyPair, reconnect: bool, device: str | None = None
) -> Any:
    """
    A nats-py connection at C{url} as the account on C{device} (default:
    this home's device name), closed at exit.

    @param reconnect: keep reconnecting after the first connection (for
        C{listen}); a one-shot C{send} does not.
    @raise CliError: no broker there, or it refused the key.
    """
    from kezchat.client.natsclient import connect_user  # nats-py only when asked for

    def status(text: str) -> None:
        if text in ("disconnected", "reconnected"):
            ctx.out.info(f"NATS {text}")

    if device is None:
        device = await deferToThread(device_name, ctx.home)
    try:
        nc = await deferred_from_coroutine(
            connect_user(url, keypair, reconnect=reconnect, on_event=status, device=device)
        )
    except Unreachable as e:
        raise CliError(f"{e}: check --nats URL and that nats-server is running") from None
    except ServerError as e:
        raise CliError(f"{e.message}: is this handle registered on the chat server?") from None
    ctx.on_close(lambda: deferred_from_coroutine(nc.close()))
    return nc
