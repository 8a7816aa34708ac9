"""
Versioned schema: C{schema/NNN_name.sql} files applied in order, each once.

A database records the highest version applied in C{schema_version}; opening
it applies whatever newer files the installed code ships, in one
transaction per file. Files are never edited once released: a change is a
new file.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from typing import NamedTuple

from kezchat.startup import StartupError

_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


def migrations(package: str = "kezchat.storage.sqlite") -> list[Migration]:
    """
    The schema files shipped in C{package}'s C{schema/} folder, in order.
    """
    folder = resources.files(package).joinpath("schema")
    found = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two schema files share a version in {package}")
    return found


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] or 0


def upgrade(conn: sqlite3.Connection, package: str = "kezchat.storage.sqlite") -> int:
    """
    Apply every migration newer than the database; return the new version.

    Runs on the writer thread before anything else touches the database.
    """
    version = current_version(conn)
    available = migrations(package)
    if available and version > available[-1].version:
        raise StartupError(
            f"the database is at schema version {version}, newer than this "
            f"kezchat ({available[-1].version}): upgrade kezchat, or use a backup made by "
            "this version"
        )
    for migration in available:
        if migration.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process sharing the file may have applied it meanwhile
            version = current_version(conn)
            if migration.version <= version:
                conn.execute("COMMIT")
                continue
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at)"
                " VALUES (?, ?, julianday('now'))",
                (migration.version, migration.name),
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        version = migration.version
    return version


def _statements(sql: str) -> list[str]:
    """
    Split a schema file into statements (C{executescript} would commit
    implicitly and break the one-transaction-per-file rule).
    """
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not pending.strip().startswith("--"):
        statements.append(pending.strip())
    return [s for s in statements if s]
