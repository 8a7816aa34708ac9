"""
The callout's bound on registry look-ups waiting at once, against a real
nats-server: past it a login is refused at once ("busy") and counted,
instead of piling up tasks while the database is slow.
"""

from __future__ import annotations

import asyncio

import nats.errors

from kezchat.identity.keys import KeyPair
from kezchat.natsbridge.callout import FunctionLookup
from tests.natssupport import asyncio_test
from tests.test_nats_callout import CalloutTestCase


class CalloutBoundTests(CalloutTestCase):
    @asyncio_test
    async def test_waiting_lookups_bounded(self) -> None:
        keys = [KeyPair.generate() for _ in range(5)]
        registry = await self.start_callout(*keys)
        self.callout.max_lookups = 2
        counted: list[int] = []
        self.callout.on_busy = lambda: counted.append(1)
        release = asyncio.Event()

        async def slow(primary: str) -> dict[str, str] | None:
            await release.wait()
            return registry.records.get(primary)

        self.responder.lookup = FunctionLookup(registry.cached, slow)
        waiting = [asyncio.ensure_future(self.user(k)) for k in keys[:2]]
        self.addCleanup(release.set)
        for _ in range(200):
            if len(self.callout._tasks) == 2:
                break
            await asyncio.sleep(0.005)
        self.assertEqual(len(self.callout._tasks), 2)

        loop = asyncio.get_running_loop()
        for key in keys[2:]:
            started = loop.time()
            with self.assertRaises(nats.errors.Error):
                await self.user(key)
            # refused, not left to nats-server's 2 s auth timeout
            self.assertLess(loop.time() - started, 1.5)
        self.assertEqual((self.callout.busy, len(counted)), (3, 3))
        self.assertEqual(len(self.callout._tasks), 2)

        release.set()
        for login in waiting:
            self.assertTrue((await login).is_connected)
