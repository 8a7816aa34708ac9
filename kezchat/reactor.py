"""
The reactor kezchat runs on, as a type.

Twisted describes a reactor by many small interfaces (L{IReactorTime},
L{IReactorCore}, L{IReactorThreads}, L{IReactorFromThreads}); a part that
needs only one of them is typed with that interface. The server as a whole
needs several at once, which a zope interface cannot say as one type: this
protocol lists exactly those methods, with Twisted's signatures, and every
Twisted reactor provides it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.python.threadpool import ThreadPool


class Reactor(Protocol):
    """
    The parts of L{IReactorTime}, L{IReactorCore}, L{IReactorThreads} and
    L{IReactorFromThreads} a kezchat server calls.
    """

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> IDelayedCall: ...

    def callWhenRunning(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> Any: ...

    def callFromThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None: ...

    def getThreadPool(self) -> ThreadPool: ...

    def stop(self) -> None: ...
