"""
Rate-limit counters kept in the database, so that every server process
sharing it counts against one budget (L{kezchat.relay.limits}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred


@dataclass(frozen=True)
class Hit:
    """
    One request counted against C{subject} in the fixed window starting at
    C{window_start} and ending at C{expires_at} (seconds since the epoch).
    """

    subject: str
    window_start: int
    expires_at: int


class HitCounter(Protocol):
    """
    Atomic per-window counters, correct with any number of processes.
    """

    def hit(self, hit: Hit) -> Deferred[int]:
        """
        Count C{hit}; fire with the hits of its subject in its window so
        far, this one included (every concurrent hit, from any process,
        gets a different number).
        """

    def hits(self, subject: str, window_start: int) -> Deferred[int]:
        """
        The hits of C{subject} in the window starting at C{window_start} so
        far, counting none (for "would a request be refused now?").
        """

    def prune(self, now: int) -> Deferred[int]:
        """
        Forget windows that ended before C{now}; how many went.
        """
