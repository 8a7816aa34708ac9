"""
The SQLite backend: one database file in WAL mode, written by one thread.
"""

from kezchat.storage.sqlite.database import SQLiteDatabase
from kezchat.storage.sqlite.manifests import SQLiteManifestStore
from kezchat.storage.sqlite.messages import SQLiteMessageStore
from kezchat.storage.sqlite.registry import SQLiteRegistryStore

__all__ = ["SQLiteDatabase", "SQLiteManifestStore", "SQLiteMessageStore", "SQLiteRegistryStore"]
