"""
Failures of the database itself, as opposed to a refused request.

A write that fails because the disk is full, another process holds the
write lock, or the file cannot be written is not the client's fault and is
not permanent: it was not stored, and the same request can succeed later.
The HTTP layer answers these with 503 C{unavailable} and C{Retry-After}.
"""

from __future__ import annotations

#: the causes a failure is counted under (a metric label: keep it bounded)
CAUSES = (
    "disk_full", "busy", "io", "readonly", "corrupt", "no_memory", "cannot_open", "stopped",
    "other",
)


class DatabaseUnavailable(Exception):
    """
    The database cannot do this now; nothing was stored.

    @ivar cause: one of L{CAUSES}.
    @ivar retry_after: seconds a client should wait before trying again.
    """

    retry_after = 5

    def __init__(self, cause: str, message: str) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}")
        super().__init__(message)
        self.cause = cause
        self.message = message


class DatabaseClosed(DatabaseUnavailable):
    """
    The database was used while its service was not running.
    """

    def __init__(self, message: str = "the database is not running") -> None:
        super().__init__("stopped", message)


__all__ = ["CAUSES", "DatabaseClosed", "DatabaseUnavailable"]
