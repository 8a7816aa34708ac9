"""
Choosing the storage backend from the C{--db} setting: a
C{postgresql://} URL selects PostgreSQL, anything else is a SQLite file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kezchat.storage.dburl import is_postgres_url
from kezchat.storage.interfaces import ManifestStore, MessageStore, RegistryStore


@dataclass(frozen=True)
class ChatStorage:
    """
    The chat-server's stores and the database service they share (start
    it before use; it has C{when_ready()} and a loggable C{path}).
    """

    db: Any
    registry: RegistryStore
    messages: MessageStore
    manifests: ManifestStore


def chat_storage(setting: str, reactor: Any) -> ChatStorage:
    """
    The stores for C{--db setting}, unstarted.
    """
    if is_postgres_url(setting):
        from kezchat.storage.postgres import (
            PostgresDatabase,
            PostgresManifestStore,
            PostgresMessageStore,
            PostgresRegistryStore,
        )

        pg = PostgresDatabase(setting, reactor)
        return ChatStorage(
            pg, PostgresRegistryStore(pg), PostgresMessageStore(pg), PostgresManifestStore(pg)
        )
    from kezchat.storage.sqlite import (
        SQLiteDatabase,
        SQLiteManifestStore,
        SQLiteMessageStore,
        SQLiteRegistryStore,
    )

    db = SQLiteDatabase(setting, reactor)
    return ChatStorage(db, SQLiteRegistryStore(db), SQLiteMessageStore(db), SQLiteManifestStore(db))


def sigchain_storage(setting: str, reactor: Any) -> tuple[Any, Any]:
    """
    kezsig's database service and sigchain store for C{--db setting}.
    """
    if is_postgres_url(setting):
        from kezchat.sigserver.postgres import SCHEMA_PACKAGE, PostgresSigchainStore
        from kezchat.storage.postgres import PostgresDatabase

        pg = PostgresDatabase(setting, reactor, schema_package=SCHEMA_PACKAGE)
        return pg, PostgresSigchainStore(pg)
    from kezchat.sigserver.store import SCHEMA_PACKAGE as SQLITE_SCHEMA
    from kezchat.sigserver.store import SQLiteSigchainStore
    from kezchat.storage.sqlite import SQLiteDatabase

    db = SQLiteDatabase(setting, reactor, schema_package=SQLITE_SCHEMA)
    return db, SQLiteSigchainStore(db)
