"""
Closing the chat-server's NATS connection while a subscription's callback
is stuck: the drain gives up within the close's bound, and nothing is left
for asyncio to report later (nats-py, cancelled from outside, left its
gathered drains with a CancelledError nobody retrieved, printed as a
traceback at the end of a passing run).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from kezchat.natsbridge.connection import NatsConnection
from tests.natssupport import NatsTestCase, asyncio_test


class CloseWhileDrainingTests(NatsTestCase):
    timeout = 30

    @asyncio_test
    async def test_stuck_drain_leaves_nothing_unretrieved(self) -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        self.addCleanup(loop.set_exception_handler, previous)

        connection = NatsConnection(self.nats.url, self.nats.callout, reconnect_wait=0.1)
        running = asyncio.ensure_future(connection.run())
        await asyncio.wait_for(running, 10)
        stuck = asyncio.Event()

        async def never_done(msg: Any) -> None:
            stuck.set()
            await asyncio.Event().wait()

        await connection.nc.subscribe("kez.test.stuck", cb=never_done)
        await connection.nc.flush()
        other = await self.connect_service()  # the connection has no echo
        await other.publish("kez.test.stuck", b"x")
        await other.publish("kez.test.stuck", b"y")  # queued behind it
        await other.flush()
        await asyncio.wait_for(stuck.wait(), 10)

        started = loop.time()
        await connection.close(timeout=1.0)
        self.assertLess(loop.time() - started, 3.0)
        gc.collect()
        await asyncio.sleep(0)
        self.assertEqual(
            [c.get("message") for c in reported if "never retrieved" in str(c.get("message"))],
            [],
        )
