"""
Copying a SQLite deployment into PostgreSQL (C{kezchat-admin migrate}).

Everything is copied as stored: handles, each inbox with its seqs and its
counter (so seqs continue where they were, never reused), idempotency
keys with their request hashes, manifests, settings (the server domain
and the key directory's signing key), the key directory's leaves and
subtree hashes (so the log, its indexes and its signed heads continue);
for a kezsig database, the sigchain events. The target
gets the current PostgreSQL schema first, must hold no data yet, and
receives everything in one transaction: a failed copy leaves it empty, and
marked incomplete (L{kezchat.storage.postgres.incomplete}) so that no
server starts on it until a migration finishes.

Run it with the servers stopped (or at least not writing): the SQLite
file is read in one read transaction, a consistent snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kezchat.storage.dburl import pool_settings
from kezchat.storage.postgres import incomplete
from kezchat.storage.postgres.schema import upgrade
from kezchat.storage.sqlite.schema import migrations

#: per kind of database: its SQLite schema package, its PostgreSQL schema
#: package, and the tables copied (with their columns, in order)
KINDS: dict[str, tuple[str, str, dict[str, list[str]]]] = {
    "kezchat": (
        "kezchat.storage.sqlite",
        "kezchat.storage.postgres",
        {
            "handles": ["fqhn", "local", "server", "primary_key", "registered_at"],
            "inbox_counters": ["recipient", "last_seq"],
            "messages": [
                "recipient", "seq", "sender", "sender_primary", "envelope", "size", "created_at",
            ],
            "idempotency": ["sender", "key", "recipient", "seq", "created_at", "request_hash"],
            "manifests": ["primary_key", "blob", "blake3", "stored_at"],
            "settings": ["name", "value"],
            "log_leaves": ["idx", "fqhn", "leaf"],
            "log_nodes": ["level", "idx", "hash"],
            "federation_outbox": [
                "id", "destination", "sender", "recipient", "envelope", "created_at",
                "idempotency_key", "request_hash",
            ],
        },
    ),
    "kezsig": (
        "kezchat.sigserver",
        "kezchat.sigserver.postgres",
        {
            "events": [
                "primary_key", "seq", "type", "revokes", "hash", "event", "received_at",
            ],
        },
    ),
}

BATCH = 5000


class MigrationError(Exception):
    """
    The source or the target is not fit for a migration.
    """


@dataclass(frozen=True)
class Copied:
    kind: str
    rows: dict[str, int]


def source_kind(conn: sqlite3.Connection) -> str:
    """
    Which server wrote this SQLite file, from its tables.
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "handles" in tables:
        kind = "kezchat"
    elif "events" in tables:
        kind = "kezsig"
    else:
        raise MigrationError("the source is neither a kezchat nor a kezsig database")
    package = KINDS[kind][0]
    latest = migrations(package)[-1].version
    version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    if version != latest:
        raise MigrationError(
            f"the source is at schema version {version}, this kezchat expects {latest}:"
            " start the old server once with this version to upgrade it, then migrate"
        )
    return kind


def open_source(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise MigrationError(f"cannot open {path}: {e}") from None
    return conn


async def migrate(
    source: str, target: str, report: Callable[[str], None] = lambda _line: None
) -> Copied:
    """
    Copy the SQLite database at C{source} into the PostgreSQL database at
    the URL C{target}.
    """
    import asyncpg

    conn = open_source(source)
    try:
        conn.execute("BEGIN")
        kind = source_kind(conn)
        _sqlite_package, pg_package, tables = KINDS[kind]
        dsn, _min, _max = pool_settings(target)
        pg = await asyncpg.connect(dsn)
        try:
            # a target with data is refused before it is marked
            await _refuse_filled(pg, tables)
            # no server may start on the target until the copy commits
            await incomplete.mark(pg, pg_package)
            await upgrade(pg, pg_package)
            counts: dict[str, int] = {}
            async with pg.transaction():
                await _refuse_filled(pg, tables)
                for table, columns in tables.items():
                    counts[table] = await _copy(conn, pg, table, columns)
                    report(f"{table}: {counts[table]} rows")
                if "federation_outbox" in tables:
                    # the ids were copied: new ones continue after them
                    await pg.execute(
                        "SELECT setval(pg_get_serial_sequence('federation_outbox', 'id'),"
                        " COALESCE((SELECT MAX(id) FROM federation_outbox), 0) + 1, false)"
                    )
                await incomplete.clear(pg, pg_package)
        finally:
            await pg.close()
    finally:
        conn.close()
    return Copied(kind, counts)


async def _refuse_filled(pg: Any, tables: dict[str, list[str]]) -> None:
    for table in tables:
        if not await pg.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            continue
        if await pg.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise MigrationError(
                f"the target already holds {table}: migrate into an empty database"
            )


async def _copy(conn: sqlite3.Connection, pg: Any, table: str, columns: list[str]) -> int:
    cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
    total = 0
    while True:
        rows = cursor.fetchmany(BATCH)
        if not rows:
            return total
        records = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
        await pg.copy_records_to_table(table, records=records, columns=columns)
        total += len(records)
