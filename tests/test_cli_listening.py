"""
L{kezchat.cli.listening.Listener.until}: waiting for an event or the
finish, as a reconnecting stream does once per connection, leaves nothing
behind.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kezchat.cli.listening import Listener


def listener() -> Listener:
    # until/finish use none of the collaborators
    return Listener(None, None, "sse", None)  # type: ignore[arg-type]


class UntilTests(SynchronousTestCase):
    def test_event_first(self) -> None:
        it = listener()
        for _ in range(100):
            event: Deferred[Any] = Deferred()
            waiting = Deferred.fromCoroutine(it.until(event))
            self.assertNoResult(waiting)
            event.callback("kept")
            self.successResultOf(waiting)
            self.assertEqual(self.successResultOf(event), "kept")
        self.assertEqual(it._waiting, set())
        self.assertEqual(it.finished.callbacks, [])

    def test_finish_first(self) -> None:
        it = listener()
        event: Deferred[Any] = Deferred()
        waiting = Deferred.fromCoroutine(it.until(event))
        it.finish()
        self.successResultOf(waiting)
        self.assertEqual(it._waiting, set())
        self.successResultOf(Deferred.fromCoroutine(it.until(Deferred())))
