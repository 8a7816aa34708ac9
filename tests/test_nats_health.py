"""
Honest NATS health, against a real nats-server: while a required start-up
step has failed (here: the broker refuses the callout's subscription),
C{/v1/healthz} does not say C{"nats": "connected"}, and the step is
retried — on a timer, and after a reconnection — until it succeeds.
"""

from __future__ import annotations

import signal
from pathlib import Path

from twisted.trial import unittest

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.natsbridge.errors import NatsSetupError
from kezchat.testing.natsserver import DEPLOY_CONF, LOCAL_CONF, NatsServer
from tests.natssupport import start_nats_server
from tests.support import deferred_sleep, http_client, register, start_server
from tests.test_nats_bridge import BridgeTestCase, eventually

USER_LINE = "{ nkey: $KEZ_CALLOUT_USER }"
DENIED = (
    '{ nkey: $KEZ_CALLOUT_USER, permissions: { subscribe: { deny: ["$SYS.REQ.USER.AUTH"] } } }'
)


def deny_callout(directory: Path) -> Path:
    """
    Write C{deploy/nats.conf} into C{directory}, with the chat-server's user
    forbidden to subscribe to the callout subject, beside a copy of
    C{deploy/nats-local.conf} (which includes it); return the latter.
    """
    text = DEPLOY_CONF.read_text()
    if USER_LINE not in text:
        raise unittest.FailTest("deploy/nats.conf no longer declares the user as expected")
    directory.mkdir(parents=True)
    (directory / DEPLOY_CONF.name).write_text(text.replace(USER_LINE, DENIED))
    local = directory / LOCAL_CONF.name
    local.write_text(LOCAL_CONF.read_text())
    return local


class HealthTests(BridgeTestCase):
    async def setUp(self) -> None:
        (await start_nats_server(self)).stop()  # skips unless nats-server can run here
        self.restricted = deny_callout(Path(self.mktemp()))
        self.nats = NatsServer(self.mktemp(), config=self.restricted)
        self.addCleanup(self.nats.stop)
        await self.nats.start_async()
        # each failed attempt is logged as a failure, on purpose
        self.addCleanup(self.flushLoggedErrors, NatsSetupError)

    async def start_refused(self):  # type: ignore[no-untyped-def]
        server = await start_server(self, self.config())
        connection = server.parts.nats.connection
        connection.retry_interval = 0.3
        client = http_client(self)
        # connected to the broker, start-up steps run (and one failed)
        await eventually(lambda: connection._started and connection.nc.is_connected)
        for _ in range(5):
            self.assertEqual((await self.health(client, server.url))["nats"], "down")
            await deferred_sleep(0.2)
        await eventually(lambda: connection.retries >= 2, timeout=15)
        self.assertEqual((await self.health(client, server.url))["nats"], "down")
        return server, client

    async def logs_in(self, server, client) -> None:  # type: ignore[no-untyped-def]
        alice, _ = await register(client, server.url, "alice")
        nc = await deferred_from_coroutine(self.connect_user(alice))
        self.assertTrue(nc.is_connected)

    async def test_refused_callout_retried_on_a_timer(self) -> None:
        """
        The callout's subscription is refused: NATS stays "down". Once the
        operator fixes the broker's configuration (a reload, no restart of
        anything), the timer's retry succeeds and clients can log in.
        """
        server, client = await self.start_refused()
        (self.restricted.parent / DEPLOY_CONF.name).write_text(DEPLOY_CONF.read_text())
        assert self.nats.process is not None
        self.nats.process.send_signal(signal.SIGHUP)
        await eventually(lambda: server.parts.http.nats_status() == "connected", timeout=20)
        self.assertEqual((await self.health(client, server.url))["nats"], "connected")
        await self.logs_in(server, client)

    async def test_refused_callout_retried_on_reconnection(self) -> None:
        """
        The broker is restarted with a configuration that allows the
        callout: the chat-server reconnects, retries, and reports NATS up.
        """
        server, client = await self.start_refused()
        self.nats.stop()
        self.nats.config = LOCAL_CONF
        server.parts.nats.connection.retry_interval = 3600.0
        await self.nats.start_async()
        await eventually(lambda: server.parts.http.nats_status() == "connected", timeout=20)
        await self.logs_in(server, client)

    async def test_callout_refusal_is_logged(self) -> None:
        """
        The log says what failed and what to do.
        """
        from twisted.logger import globalLogPublisher

        seen: list[str] = []

        def observe(event: dict) -> None:  # type: ignore[type-arg]
            failure = event.get("log_failure")
            if failure is not None:
                seen.append(failure.getErrorMessage())

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        await self.start_refused()
        self.assertTrue(any("$SYS.REQ.USER.AUTH" in m and "auth_users" in m for m in seen), seen)
