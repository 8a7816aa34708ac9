"""
Rate limits shared by every server process on one database.

A limit counted in each process's memory gives a client spread over N
instances N times the limit. Here the count lives in the database
(L{kezchat.storage.limits.HitCounter}): fixed windows of C{period} seconds
per key, each request one atomic increment, refused past C{limit}. A fixed
window lets a client spend at most twice the limit across a window
boundary; the count is exact whatever the number of instances.

L{Limiter} is what the relay and the registration route see;
L{InProcessLimiter} keeps the token bucket of L{kezchat.ratelimit} behind
the same call where one process owns the database (SQLite): there it is
exact, and it spares every request a durable commit of its own (measured
with C{bench/limits.py}: counting in the file made a lone send several
times slower).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from kezchat.errors import KezError
from kezchat.ratelimit import RateLimiter
from kezchat.storage.limits import Hit, HitCounter

log = Logger()


class Limiter(Protocol):
    limit: int

    async def check(self, key: str) -> None:
        """
        Spend one request of C{key}'s budget.

        @raise KezError: C{rate_limited}, with C{retry_after}.
        @raise kezchat.storage.errors.DatabaseUnavailable: the count could
            not be kept (the request is refused with 503, not let through).
        """

    async def wait(self, key: str) -> int:
        """
        The seconds until C{key} may spend a request, spending none (0: it
        may now): for questions like "would a registration from here be
        accepted?".
        """


class InProcessLimiter:
    """
    L{Limiter} over this process's own token buckets.
    """

    def __init__(self, limit: int, period: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._buckets = RateLimiter(limit, period, clock)

    async def check(self, key: str) -> None:
        self._buckets.check(key)

    async def wait(self, key: str) -> int:
        return self._buckets.wait(key)


class SharedLimiter:
    """
    L{Limiter} counted in the database, shared by every instance.

    @param name: prefixes every key (C{"send"}, C{"register"}), so limits
        of different kinds never share a count.
    @param limit: requests per C{period}; C{0} disables limiting.
    """

    def __init__(
        self,
        counter: HitCounter,
        name: str,
        limit: int,
        period: float,
        clock: Callable[[], float],
    ) -> None:
        self.limit = limit
        self._counter = counter
        self._name = name
        self._period = int(period)
        self._clock = clock
        self._pruned_until = 0

    async def check(self, key: str) -> None:
        if not self.limit:
            return
        now = self._clock()
        start = int(now // self._period) * self._period
        end = start + self._period
        self._prune(start)
        hits = await self._counter.hit(Hit(f"{self._name}:{key}", start, end))
        if hits > self.limit:
            wait = max(1, math.ceil(end - now))
            raise KezError(
                "rate_limited", f"too many requests; try again in {wait} s", retry_after=wait
            )

    async def wait(self, key: str) -> int:
        if not self.limit:
            return 0
        now = self._clock()
        start = int(now // self._period) * self._period
        hits = await self._counter.hits(f"{self._name}:{key}", start)
        return max(1, math.ceil(start + self._period - now)) if hits >= self.limit else 0

    def _prune(self, window_start: int) -> None:
        """
        Once per window, forget the windows that have ended (by any
        limiter: they are useless to all).
        """
        if window_start <= self._pruned_until:
            return
        self._pruned_until = window_start
        pruned: Deferred[int] = self._counter.prune(window_start)
        pruned.addErrback(
            lambda failure: log.warn(
                "could not prune rate-limit windows: {error}", error=failure.getErrorMessage()
            )
        )
