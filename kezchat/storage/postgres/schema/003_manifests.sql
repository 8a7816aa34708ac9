-- The shared-files manifest mirror: the latest blob of each primary, kept
-- byte for byte (the owner's sigchain commits to its BLAKE3).
CREATE TABLE manifests (
    primary_key TEXT PRIMARY KEY,
    blob        BYTEA NOT NULL,
    blake3      TEXT NOT NULL,
    stored_at   DOUBLE PRECISION NOT NULL
);
