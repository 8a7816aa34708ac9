"""
What the rest of the server may ask of a database service, whichever
backend is underneath (L{kezchat.storage.sqlite.SQLiteDatabase},
L{kezchat.storage.postgres.PostgresDatabase}).

The stores do the reading and writing; this is the part the composition
(start, stop, readiness) and the health endpoint see.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred


class Database(Protocol):
    """
    A database service: started and stopped with its parent service; the
    stores built on it fail their calls with
    L{kezchat.storage.errors.DatabaseUnavailable} while it cannot answer.

    @ivar path: where the database is, safe to log (no password).
    """

    path: str

    def setServiceParent(self, parent: Any) -> Any:
        """
        Start and stop with C{parent} (a Twisted C{MultiService}).
        """

    def when_ready(self) -> Deferred[None]:
        """
        Fires once the schema is up to date and the start-up checks passed;
        fails with why the database cannot be used.
        """

    def health(self) -> str:
        """
        C{"ok"}, or C{"degraded"} while the last operation failed for the
        database's own reasons (asking may start a probe, so the answer
        heals by itself).
        """

    def degraded_cause(self) -> str | None:
        """
        Why the database is degraded (one of
        L{kezchat.storage.errors.CAUSES}), or C{None} when it is not.
        """
