"""
Storage: what the domain objects need from a database, as interfaces.

SQLite implements them now (L{kezchat.storage.sqlite}); a PostgreSQL backend
implements the same interfaces later. Every method returns a Deferred and
never blocks the reactor.
"""

from kezchat.storage.interfaces import (
    HandleRecord,
    HandleTaken,
    PrimaryTaken,
    RegistryStore,
)

__all__ = ["HandleRecord", "HandleTaken", "PrimaryTaken", "RegistryStore"]
