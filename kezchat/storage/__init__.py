"""
Storage: what the domain objects need from a database, as interfaces.

SQLite implements them now (L{kezchat.storage.sqlite}); a PostgreSQL backend
implements the same interfaces later. Every method returns a Deferred and
never blocks the reactor.
"""

from kezchat.storage.interfaces import (
    Accepted,
    HandleRecord,
    HandleTaken,
    ManifestStore,
    MessageStore,
    NewMessage,
    PrimaryTaken,
    RegistryStore,
    RetentionReport,
    StoredManifest,
    StoredMessage,
)

__all__ = [
    "Accepted",
    "HandleRecord",
    "HandleTaken",
    "ManifestStore",
    "MessageStore",
    "NewMessage",
    "PrimaryTaken",
    "RegistryStore",
    "RetentionReport",
    "StoredManifest",
    "StoredMessage",
]
