"""
The manifest mirror on PostgreSQL: one row per primary, replaced on upload.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import StoredManifest
from kezchat.storage.postgres.database import PostgresDatabase


class PostgresManifestStore:
    """
    L{kezchat.storage.ManifestStore} on PostgreSQL.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def put_manifest(self, manifest: StoredManifest) -> Deferred[StoredManifest]:
        async def upsert(conn: Any) -> StoredManifest:
            await conn.execute(
                "INSERT INTO manifests (primary_key, blob, blake3, stored_at)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (primary_key) DO UPDATE SET"
                " blob = excluded.blob, blake3 = excluded.blake3, stored_at = excluded.stored_at",
                manifest.primary, manifest.blob, manifest.blake3, manifest.stored_at,
            )
            return manifest

        return self._db.run(upsert, size=len(manifest.blob))

    def manifest(self, primary: str) -> Deferred[StoredManifest | None]:
        async def select(conn: Any) -> StoredManifest | None:
            row = await conn.fetchrow(
                "SELECT primary_key, blob, blake3, stored_at FROM manifests"
                " WHERE primary_key = $1",
                primary,
            )
            return None if row is None else StoredManifest(row[0], bytes(row[1]), row[2], row[3])

        return self._db.run(select)
