"""
The server domain a PostgreSQL chat database belongs to: the same rule as
L{kezchat.storage.sqlite.settings.ServerDomain}, checked by every instance
at start, under a lock so that instances starting together on a new
database record one domain.
"""

from __future__ import annotations

from typing import Any

from kezchat.storage.sqlite.settings import ServerDomain

#: the advisory lock key of the check ("kezdomn")
DOMAIN_LOCK = 0x6B657A646F6D6E


class PostgresServerDomain(ServerDomain):
    """
    Records C{server} in a new database; refuses a database recorded for
    another domain unless C{allow_change}.
    """

    async def check_async(self, conn: Any) -> None:
        """
        Run with a connection when the database opens.

        @raise kezchat.startup.StartupError: the database belongs to
            another domain.
        """
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DOMAIN_LOCK)
            row = await conn.fetchval("SELECT value FROM settings WHERE name = 'server'")
            recorded = row
            if recorded is None:
                # a database from before the domain was recorded: its handles say
                recorded = await conn.fetchval(
                    "SELECT server FROM handles WHERE server != $1 LIMIT 1", self.server
                )
            if not self.must_record(recorded, stored=row is not None):
                return
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES ('server', $1)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                self.server,
            )
