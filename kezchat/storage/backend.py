"""
Choosing the storage backend from the C{--db} setting: a
C{postgresql://} URL selects PostgreSQL, anything else is a SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kezchat.storage.database import Database
from kezchat.storage.dburl import is_postgres_url
from kezchat.storage.interfaces import KeyLogStore, ManifestStore, MessageStore, RegistryStore
from kezchat.storage.limits import HitCounter
from kezchat.storage.outbox import OutboxStore


@dataclass(frozen=True)
class ChatStorage:
    """
    The chat-server's stores and the database service they share (start
    it before use).
    """

    db: Database
    registry: RegistryStore
    messages: MessageStore
    manifests: ManifestStore
    #: the key directory (appended to by C{registry.add_handle})
    keylog: KeyLogStore
    #: rate-limit counts shared by every process on the database; C{None}
    #: where one process owns the database (SQLite), which then counts in
    #: memory: exact there, and it costs no commit per request
    limits: HitCounter | None
    #: messages queued for other servers (federation)
    outbox: OutboxStore


def chat_storage(
    setting: str,
    reactor: Any,
    *,
    server: str = "kez.lat",
    allow_server_change: bool = False,
    on_write_failure: Callable[[str], None] = lambda cause: None,
) -> ChatStorage:
    """
    The stores for C{--db setting}, unstarted.

    @param server: the server domain the database must belong to (recorded
        on first use; another one refused unless C{allow_server_change}).
    @param on_write_failure: told the cause of each failure of the
        database itself.
    """
    if is_postgres_url(setting):
        from kezchat.storage.postgres import (
            PostgresDatabase,
            PostgresManifestStore,
            PostgresMessageStore,
            PostgresRegistryStore,
        )
        from kezchat.storage.postgres.keylog import PostgresKeyLogStore
        from kezchat.storage.postgres.keylog import ensure_log_key as pg_log_key
        from kezchat.storage.postgres.limits import PostgresHitCounter
        from kezchat.storage.postgres.outbox import PostgresOutboxStore
        from kezchat.storage.postgres.settings import PostgresServerDomain

        pg_domain = PostgresServerDomain(server, allow_change=allow_server_change)

        async def on_open(conn: Any) -> None:
            await pg_domain.check_async(conn)
            await pg_log_key(conn)

        pg = PostgresDatabase(
            setting, reactor, on_open=on_open, on_write_failure=on_write_failure
        )
        return ChatStorage(
            pg, PostgresRegistryStore(pg), PostgresMessageStore(pg), PostgresManifestStore(pg),
            PostgresKeyLogStore(pg),
            PostgresHitCounter(pg),
            PostgresOutboxStore(pg),
        )
    from kezchat.storage.sqlite import (
        SQLiteDatabase,
        SQLiteManifestStore,
        SQLiteMessageStore,
        SQLiteRegistryStore,
    )
    from kezchat.storage.sqlite.keylog import SQLiteKeyLogStore, ensure_log_key
    from kezchat.storage.sqlite.outbox import SQLiteOutboxStore
    from kezchat.storage.sqlite.settings import ServerDomain

    domain = ServerDomain(server, allow_change=allow_server_change)

    def on_open_sqlite(conn: Any) -> None:
        domain.check(conn)
        ensure_log_key(conn)

    db = SQLiteDatabase(
        setting, reactor, on_open=on_open_sqlite, on_write_failure=on_write_failure
    )
    return ChatStorage(
        db, SQLiteRegistryStore(db), SQLiteMessageStore(db), SQLiteManifestStore(db),
        SQLiteKeyLogStore(db), None, SQLiteOutboxStore(db),
    )

