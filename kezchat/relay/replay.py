"""
Replayed sends: the same signed C{POST /v1/messages} sent again.

An C{X-KEZ-Auth} signature stays valid for the clock window (±60 s), so
whoever captures a send could repeat it and have it stored again. Each
accepted send's signature is remembered until its window closes; a send
carrying a remembered signature is answered with the first one's outcome
(200 and its seq, like an idempotent retry) and not stored again.

L{ReplayGuard} is the seam: L{MemoryReplayGuard} remembers per process,
which is enough for one server process; several processes sharing one
database need a guard on that database (a table with a primary key on the
signature and the expiry indexed), behind the same three calls.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from kezchat.errors import KezError
from kezchat.storage.interfaces import Accepted


class ReplayGuard(Protocol):
    """
    Remembers which signed requests were already accepted.
    """

    def claim(self, key: bytes, expires_at: float) -> Deferred[Accepted | None]:
        """
        Fire with C{None} if C{key} is new (the caller now owns it and must
        L{settle} or L{release} it), or with the first request's outcome
        (marked C{duplicate}) once it is known.

        @raise KezError: C{unavailable} when the guard is full.
        """

    def settle(self, key: bytes, accepted: Accepted) -> None:
        """
        The request holding C{key} was stored as C{accepted}.
        """

    def release(self, key: bytes) -> None:
        """
        The request holding C{key} failed: forget it, so a retry is new.
        """


class _Pending:
    __slots__ = ("expires_at", "waiters")

    def __init__(self, expires_at: float) -> None:
        self.expires_at = expires_at
        self.waiters: list[Deferred[Accepted | None]] = []


class MemoryReplayGuard:
    """
    L{ReplayGuard} in this process's memory, bounded.

    Keys are forgotten once expired, oldest first; each is kept at most the
    length of the signature window past its insertion, so the memory is
    the accepted send rate times about two minutes, and at most
    C{max_entries} (about 120 bytes each). Past that, new sends are refused
    with 503 rather than letting replays through.
    """

    def __init__(self, clock: Callable[[], float], max_entries: int = 250_000) -> None:
        self._clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Accepted | _Pending] = OrderedDict()
        self._expiry: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: bytes, expires_at: float) -> Deferred[Accepted | None]:
        self._sweep()
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_entries:
                raise KezError(
                    "unavailable", "too many recent sends to check for replays", retry_after=5
                )
            self._entries[key] = _Pending(expires_at)
            self._expiry[key] = expires_at
            return succeed(None)
        if isinstance(entry, _Pending):
            d: Deferred[Accepted | None] = Deferred()
            entry.waiters.append(d)
            # a failed first attempt lets the next waiter try for real
            return d.addCallback(
                lambda first: first if first is not None else self.claim(key, expires_at)
            )
        return succeed(entry)

    def settle(self, key: bytes, accepted: Accepted) -> None:
        entry = self._entries.get(key)
        first = Accepted(accepted.seq, accepted.created_at, True, None)
        self._entries[key] = first
        if isinstance(entry, _Pending):
            for d in entry.waiters:
                d.callback(first)

    def release(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        self._expiry.pop(key, None)
        if isinstance(entry, _Pending):
            for d in entry.waiters:
                d.callback(None)

    def _sweep(self) -> None:
        now = self._clock()
        entries, expiry = self._entries, self._expiry
        while entries:
            key = next(iter(entries))
            if expiry[key] >= now or isinstance(entries[key], _Pending):
                return
            del entries[key]
            del expiry[key]
