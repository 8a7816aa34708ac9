"""
The server domain a chat database belongs to.

Every handle in the database is C{local@server}. Starting on an existing
database with another C{--server} would silently turn every registered
handle into a 404, so the domain is recorded the first time and a
different one is refused at start-up unless the operator says so.
"""

from __future__ import annotations

import sqlite3

from twisted.logger import Logger

from kezchat.startup import StartupError

OVERRIDE_FLAG = "--allow-server-change"


class ServerDomain:
    """
    Records C{server} in a new database; refuses a database recorded for
    another domain unless C{allow_change}.
    """

    log = Logger()

    def __init__(self, server: str, *, allow_change: bool = False) -> None:
        self.server = server
        self.allow_change = allow_change

    def check(self, conn: sqlite3.Connection) -> None:
        """
        Run on the writer thread when the database opens.

        @raise StartupError: the database belongs to another domain.
        """
        row = conn.execute("SELECT value FROM settings WHERE name = 'server'").fetchone()
        recorded = row[0] if row is not None else None
        if recorded is None:
            # a database from before the domain was recorded: its handles say
            other = conn.execute(
                "SELECT server FROM handles WHERE server != ? LIMIT 1", (self.server,)
            ).fetchone()
            recorded = other[0] if other is not None else None
        if self.must_record(recorded, stored=row is not None):
            self._record(conn)

    def must_record(self, recorded: str | None, *, stored: bool) -> bool:
        """
        The rule, for every backend: whether to (re)record C{server}, given
        the domain the database belongs to (C{recorded}, read from its
        settings or else from its handles; C{None} for a new database) and
        whether the settings already hold it (C{stored}).

        @raise StartupError: it belongs to another domain and the operator
            did not say to change it.
        """
        if recorded == self.server:
            return not stored
        if recorded is not None:
            if not self.allow_change:
                raise StartupError(
                    f"the database belongs to server {recorded!r}, not {self.server!r}: "
                    f"its handles would all vanish. Start with --server {recorded}, "
                    f"or pass {OVERRIDE_FLAG} to make it {self.server!r}"
                )
            self.log.warn(
                "the database's server changes from {old} to {new} ({flag}); handles "
                "registered under {old} are no longer served",
                old=recorded, new=self.server, flag=OVERRIDE_FLAG,
            )
        return True

    def _record(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO settings (name, value) VALUES ('server', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (self.server,),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
