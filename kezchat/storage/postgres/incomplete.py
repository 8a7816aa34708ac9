"""
A database being filled by C{kezchat-admin migrate} is marked incomplete
until the copy commits, so no server starts on it half-made.

The copy itself is one transaction, but the schema is created (and
committed) before it; a migration killed midway used to leave a
schema-only database that a server would start on happily, letting anyone
register handles that exist in the source. The mark is a row in
C{kez_incomplete_migrations}, committed before the schema, and deleted by
the copy's own transaction: it goes exactly when the data arrives. A
server whose schema package is marked refuses to start.
"""

from __future__ import annotations

from typing import Any

from kezchat.startup import StartupError


class IncompleteMigration(StartupError):
    """
    The database is the target of a migration that did not finish.
    """


async def mark(conn: Any, package: str) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS kez_incomplete_migrations ("
        " package TEXT PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    await conn.execute(
        "INSERT INTO kez_incomplete_migrations (package) VALUES ($1) ON CONFLICT DO NOTHING",
        package,
    )


async def clear(conn: Any, package: str) -> None:
    """
    Remove the mark; run inside the copy's transaction.
    """
    await conn.execute("DELETE FROM kez_incomplete_migrations WHERE package = $1", package)


async def refuse_if_marked(conn: Any, package: str, where: str) -> None:
    """
    @raise IncompleteMigration: a migration into this database, for this
        schema package, started and never committed.
    """
    if not await conn.fetchval("SELECT to_regclass('kez_incomplete_migrations') IS NOT NULL"):
        return
    if await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM kez_incomplete_migrations WHERE package = $1)", package
    ):
        raise IncompleteMigration(
            f"{where} is the target of a `kezchat-admin migrate` that did not finish: its data"
            " is missing. Run the migration again (it refills the empty tables), or drop the"
            " database"
        )
