"""
Shutdown steps bounded by a timeout stay bounded when the step swallows
its cancellation, as nats-py's C{close}, C{drain} and C{flush} do
(L{kezchat.compat.aio.within}, L{kezchat.compat.aio.cancel_until_done}).
"""

from __future__ import annotations

import asyncio

from twisted.internet import reactor
from twisted.trial import unittest

from kezchat.compat.aio import (
    cancel_until_done,
    deferred_from_coroutine,
    is_asyncio_reactor,
    within,
)


async def stubborn(cancellations: list[int], rounds: int) -> str:
    """
    Swallow the first C{rounds} cancellations (count them), then honour
    the next one.
    """
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancellations.append(1)
            if len(cancellations) > rounds:
                raise


class BoundsTests(unittest.TestCase):
    def setUp(self) -> None:
        if not is_asyncio_reactor(reactor):
            raise unittest.SkipTest("asyncio helpers: run with --reactor=asyncio")

    async def test_within_returns_when_the_step_swallows_cancellation(self) -> None:
        """
        C{asyncio.wait_for} would wait for this step forever; C{within}
        gives up after its timeout and says so.
        """
        cancellations: list[int] = []
        finished = await deferred_from_coroutine(within(stubborn(cancellations, 10**9), 0.05))
        self.assertFalse(finished)
        self.assertEqual(cancellations, [1])

    async def test_within_passes_results_and_errors_on(self) -> None:
        async def ok() -> None:
            await asyncio.sleep(0)

        async def broken() -> None:
            raise ValueError("no")

        self.assertTrue(await deferred_from_coroutine(within(ok(), 1)))
        with self.assertRaises(ValueError):
            await deferred_from_coroutine(within(broken(), 1))

    async def test_cancel_until_done_cancels_again(self) -> None:
        """
        A task that swallowed two cancellations ends at the third.
        """
        cancellations: list[int] = []
        task = asyncio.ensure_future(stubborn(cancellations, 2))
        await deferred_from_coroutine(cancel_until_done(task, every=0.01))
        self.assertTrue(task.cancelled())
        self.assertEqual(len(cancellations), 3)
