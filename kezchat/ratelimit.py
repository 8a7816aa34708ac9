"""
Fixed-budget rate limiting per key (client IP, sender handle).

A token bucket per key: C{limit} tokens refilled evenly over C{period}
seconds. Buckets that have refilled completely are forgotten, so memory is
bounded by the keys active within one period.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from kezchat.errors import KezError


class RateLimiter:
    """
    A token bucket per key; L{check} spends a token or refuses.
    """

    def __init__(self, limit: int, period: float, clock: Callable[[], float]) -> None:
        """
        @param limit: requests allowed per C{period}; C{0} disables limiting.
        @param clock: returns the time in seconds (C{reactor.seconds}).
        """
        self.limit = limit
        self.period = period
        self._clock = clock
        self._rate = limit / period if limit else 0.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._last_sweep = clock()

    def check(self, key: str) -> None:
        """
        Spend one token of C{key}'s budget.

        @raise KezError: C{rate_limited}, with C{retry_after} set to the
            seconds until a token is available again.
        """
        if not self.limit:
            return
        now = self._clock()
        self._sweep(now)
        tokens, stamp = self._buckets.get(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - stamp) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self._rate)
            raise KezError(
                "rate_limited", f"too many requests; try again in {wait} s", retry_after=wait
            )
        self._buckets[key] = (tokens - 1.0, now)

    def wait(self, key: str) -> int:
        """
        The seconds until C{key} may spend a token, without spending one
        (0: it may now). For questions like "would a registration from
        here be accepted?".
        """
        if not self.limit:
            return 0
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - stamp) * self._rate)
        return 0 if tokens >= 1.0 else math.ceil((1.0 - tokens) / self._rate)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < self.period:
            return
        self._last_sweep = now
        full = [
            key
            for key, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * self._rate >= self.limit
        ]
        for key in full:
            del self._buckets[key]
