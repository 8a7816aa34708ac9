"""
The network-namespace guard for tests that start Iroh endpoints.

Every Iroh endpoint sends a UPnP SSDP multicast when it starts, so such
tests run only in a network namespace whose one interface is loopback
(L{loopback_only}); C{tests.test_p2p_cli} re-runs them inside one.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.task import deferLater


def loopback_only() -> bool:
    """
    Whether this process's network namespace has no interface but C{lo}.
    """
    return [name for _, name in socket.if_nameindex()] == ["lo"]


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Poll C{condition} every 50 ms until it holds.

    @raise AssertionError: naming C{what}, after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)
