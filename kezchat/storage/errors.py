"""
What storage tells its callers when a call fails, whatever the backend.

Three kinds, each with one meaning for the caller:

- L{DatabaseUnavailable} (also called L{Unavailable}): the database cannot
  do this now (disk full, locked, unreachable, too busy, stopped). It is
  not the caller's fault and not permanent; nothing was stored (or, when
  the connection broke during a commit, the outcome is unknown and an
  idempotency key makes the retry safe). Retry later: HTTP answers 503
  C{unavailable} with C{Retry-After}; NATS ingest leaves the message for
  redelivery.
- L{Rejected}: the database refused this write for what it carries (a
  value it cannot store, a constraint it breaks). The same write would be
  refused again: HTTP answers 400; NATS ingest terminates the message.
- L{IdempotencyConflict}: the sender's idempotency key was already used for
  a different request.

Each backend translates its driver's exceptions into these, so nothing
above C{kezchat.storage} needs to know which driver is underneath.
"""

from __future__ import annotations

#: the causes a failure is counted under (a metric label: keep it bounded)
CAUSES = (
    "disk_full", "busy", "io", "readonly", "corrupt", "no_memory", "cannot_open", "stopped",
    "other",
)


class StorageError(Exception):
    """
    A storage call failed; see the subclasses for what the caller does.
    """


class DatabaseUnavailable(StorageError):
    """
    The database cannot do this now; nothing was stored.

    @ivar cause: one of L{CAUSES}.
    @ivar retry_after: seconds a client should wait before trying again.
    """

    retry_after = 5

    def __init__(self, cause: str, message: str, retry_after: int | None = None) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}")
        super().__init__(message)
        self.cause = cause
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after


#: the short name of L{DatabaseUnavailable}: retry later
Unavailable = DatabaseUnavailable


class DatabaseClosed(DatabaseUnavailable):
    """
    The database was used while its service was not running.
    """

    def __init__(self, message: str = "the database is not running") -> None:
        super().__init__("stopped", message)


class Rejected(StorageError):
    """
    The database refused this write for what it carries: sending it again
    would be refused again. Nothing of it was stored.
    """


class IdempotencyConflict(StorageError):
    """
    The sender already used this idempotency key for a different request.
    """


__all__ = [
    "CAUSES",
    "DatabaseClosed",
    "DatabaseUnavailable",
    "IdempotencyConflict",
    "Rejected",
    "StorageError",
    "Unavailable",
]
