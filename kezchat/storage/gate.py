"""
Admission control: one gate per database, in front of every job.

A database serves requests at its own pace; whatever arrives faster waits
in a queue (SQLite's writer queue, PostgreSQL's group commit and pool).
Unbounded, that queue turns a flood into memory growth and latency that
grows until clients time out, without ever saying "busy". The gate counts
what is admitted and not yet answered, in jobs and in bytes (what a job
carries: an envelope, a manifest); past either bound a new job is refused
at once with L{DatabaseUnavailable} C{busy}, which HTTP answers with 503
and C{Retry-After}, and NATS ingest leaves for redelivery. So memory and
waiting time stay bounded whatever the offered load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, fail

from kezchat.storage.errors import DatabaseUnavailable

T = TypeVar("T")

#: jobs admitted and not yet answered, at most (a send is one job)
MAX_JOBS = 2048
#: bytes those jobs carry, at most
MAX_BYTES = 64 * 1024 * 1024
#: what a job costs besides its payload (the job, its Deferred, its row)
JOB_OVERHEAD = 512
#: seconds a refused client waits before trying again
BUSY_RETRY_AFTER = 1


class AdmissionGate:
    """
    Counts pending jobs and bytes; admits or refuses a new job at once.

    Used from the reactor thread only.
    """

    def __init__(
        self,
        max_jobs: int = MAX_JOBS,
        max_bytes: int = MAX_BYTES,
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self._on_refused = on_refused
        self.jobs = 0
        self.bytes = 0
        #: the most jobs and bytes ever pending at once, and refusals
        self.peak_jobs = 0
        self.peak_bytes = 0
        self.refused = 0

    def admit(self, size: int = 0) -> int:
        """
        Take room for one job carrying C{size} bytes; the cost to hand back
        to L{release}.

        @raise DatabaseUnavailable: C{busy}, when either bound would be
            passed.
        """
        cost = size + JOB_OVERHEAD
        if self.jobs + 1 > self.max_jobs or self.bytes + cost > self.max_bytes:
            self.refused += 1
            self._on_refused()
            raise DatabaseUnavailable(
                "busy",
                f"the database has {self.jobs} jobs ({self.bytes} bytes) waiting; try again",
                retry_after=BUSY_RETRY_AFTER,
            )
        self.jobs += 1
        self.bytes += cost
        self.peak_jobs = max(self.peak_jobs, self.jobs)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        return cost

    def release(self, cost: int) -> None:
        self.jobs -= 1
        self.bytes -= cost

    def run(self, size: int, start: Callable[[], Deferred[T]]) -> Deferred[T]:
        """
        C{start()} if admitted, its room given back once it fires; else a
        Deferred failed with C{busy}, at once.
        """
        try:
            cost = self.admit(size)
        except DatabaseUnavailable as e:
            return fail(e)
        try:
            d = start()
        except BaseException:
            self.release(cost)
            raise

        def release(result: object) -> object:
            self.release(cost)
            return result

        return d.addBoth(release)
