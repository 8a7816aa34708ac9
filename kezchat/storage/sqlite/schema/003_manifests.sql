-- The shared-files manifest mirror (SPEC §3.4): the latest blob of each
-- primary, kept byte for byte (the owner's sigchain commits to its BLAKE3).
CREATE TABLE manifests (
    primary_key TEXT PRIMARY KEY,
    blob        BLOB NOT NULL,
    blake3      TEXT NOT NULL,
    stored_at   REAL NOT NULL
) WITHOUT ROWID;
