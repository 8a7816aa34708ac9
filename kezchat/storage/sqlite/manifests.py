"""
The manifest mirror on SQLite: one row per primary, replaced on upload.
"""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import StoredManifest
from kezchat.storage.sqlite.database import SQLiteDatabase


class SQLiteManifestStore:
    """
    L{kezchat.storage.ManifestStore} on SQLite.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def put_manifest(self, manifest: StoredManifest) -> Deferred[StoredManifest]:
        def upsert(conn: sqlite3.Connection) -> StoredManifest:
            conn.execute(
                "INSERT INTO manifests (primary_key, blob, blake3, stored_at)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (primary_key) DO UPDATE SET"
                " blob = excluded.blob, blake3 = excluded.blake3, stored_at = excluded.stored_at",
                (manifest.primary, manifest.blob, manifest.blake3, manifest.stored_at),
            )
            return manifest

        return self._db.write(upsert, size=len(manifest.blob))

    def manifest(self, primary: str) -> Deferred[StoredManifest | None]:
        def select(conn: sqlite3.Connection) -> StoredManifest | None:
            row = conn.execute(
                "SELECT primary_key, blob, blake3, stored_at FROM manifests WHERE primary_key = ?",
                (primary,),
            ).fetchone()
            return None if row is None else StoredManifest(row[0], bytes(row[1]), row[2], row[3])

        return self._db.read(select)
