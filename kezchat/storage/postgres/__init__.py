"""
The PostgreSQL backend: the same stores as SQLite's, for several
chat-server instances sharing one database (C{--db postgresql://...}).
Needs the C{postgres} extra (asyncpg) and Twisted's asyncio reactor.
"""

from kezchat.storage.postgres.database import PostgresDatabase, is_postgres_url
from kezchat.storage.postgres.manifests import PostgresManifestStore
from kezchat.storage.postgres.messages import PostgresMessageStore
from kezchat.storage.postgres.registry import PostgresRegistryStore

__all__ = [
    "PostgresDatabase",
    "PostgresManifestStore",
    "PostgresMessageStore",
    "PostgresRegistryStore",
    "is_postgres_url",
]
