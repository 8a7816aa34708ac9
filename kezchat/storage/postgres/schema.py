"""
Versioned schema for PostgreSQL: C{schema/NNN_name.sql} files applied in
order, each once, like the SQLite backend's (and read by the same
L{kezchat.storage.sqlite.schema.migrations}).

Every pending file is applied in one transaction, under a transaction-level
advisory lock: several instances starting at once against a fresh
database apply it once, and the others wait and then find it done. A
database newer than the code is refused before anything changes.
"""

from __future__ import annotations

from typing import Any

from kezchat.startup import StartupError
from kezchat.storage.sqlite.schema import migrations

#: the advisory lock key serialising schema upgrades ("kezschem")
UPGRADE_LOCK = 0x6B657A7363686D


class SchemaTooNew(StartupError):
    """
    The database was upgraded by a newer kezchat.
    """


#: where each schema package records its version: kezchat and kezsig may
#: share one database, and their versions are independent
VERSION_TABLES = {
    "kezchat.storage.postgres": "schema_version",
    "kezchat.sigserver.postgres": "kezsig_schema_version",
}


async def current_version(conn: Any, table: str = "schema_version") -> int:
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    # asyncpg is untyped (fetchval gives Any); COALESCE(MAX(...), 0) is an integer
    version: int = await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {table}")
    return version


async def upgrade(conn: Any, package: str = "kezchat.storage.postgres") -> int:
    """
    Apply every migration newer than the database; return the new version.
    """
    table = VERSION_TABLES[package]
    available = migrations(package)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", UPGRADE_LOCK)
        version = await current_version(conn, table)
        if available and version > available[-1].version:
            raise SchemaTooNew(
                f"the database is at schema version {version}, newer than this "
                f"kezchat ({available[-1].version}): upgrade kezchat"
            )
        for migration in available:
            if migration.version <= version:
                continue
            # a file may hold several statements: the simple query protocol
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {table} (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            version = migration.version
    return version
