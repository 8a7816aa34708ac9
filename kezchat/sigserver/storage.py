"""
Choosing kezsig's storage from its C{--db} setting: a C{postgresql://}
URL selects PostgreSQL, anything else is a SQLite file. It lives with the
sig-server (beside its stores, C{store.py} and C{postgres/}) so that
C{kezchat.storage} serves both servers without importing either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kezchat.storage.database import Database
from kezchat.storage.dburl import is_postgres_url


def sigchain_storage(
    setting: str, reactor: Any, *, on_write_failure: Callable[[str], None] = lambda cause: None
) -> tuple[Database, Any]:
    """
    kezsig's database service and sigchain store for C{--db setting}.
    """
    if is_postgres_url(setting):
        from kezchat.sigserver.postgres import SCHEMA_PACKAGE, PostgresSigchainStore
        from kezchat.storage.postgres import PostgresDatabase

        pg = PostgresDatabase(
            setting, reactor, schema_package=SCHEMA_PACKAGE, on_write_failure=on_write_failure
        )
        return pg, PostgresSigchainStore(pg)
    from kezchat.sigserver.store import SCHEMA_PACKAGE as SQLITE_SCHEMA
    from kezchat.sigserver.store import SQLiteSigchainStore
    from kezchat.storage.sqlite import SQLiteDatabase

    db = SQLiteDatabase(
        setting, reactor, schema_package=SQLITE_SCHEMA, on_write_failure=on_write_failure
    )
    return db, SQLiteSigchainStore(db)
