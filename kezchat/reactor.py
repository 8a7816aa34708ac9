"""
The reactor kezchat runs on, as a type.

Twisted describes a reactor by many small interfaces; a part that needs
one of them is typed with that interface (L{IReactorTime} for a clock,
L{IReactorCore} to stop). A server needs several at once, which is what
L{IServerReactor} says, the way Twisted's own C{_IReactorCommon} does for
C{twisted.internet.reactor}: every Twisted reactor provides it.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
)


class IServerReactor(
    IReactorCore, IReactorTime, IReactorThreads, IReactorTCP, IReactorPluggableNameResolver
):
    """
    A make-believe interface: the parts of a reactor a kezchat server uses
    (time, threads, start and stop, TCP listeners).
    """


def global_reactor() -> IServerReactor:
    """
    The installed reactor (installing the default one if none is yet).
    """
    from twisted.internet import reactor

    return cast(IServerReactor, reactor)
