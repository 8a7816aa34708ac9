-- The handle registry. Handles and primaries are each bound once; the two
-- unique constraints hold across every chat-server sharing the database.
CREATE TABLE handles (
    fqhn          TEXT PRIMARY KEY,
    local         TEXT NOT NULL,
    server        TEXT NOT NULL,
    primary_key   TEXT NOT NULL CONSTRAINT handles_primary_key_unique UNIQUE,
    registered_at DOUBLE PRECISION NOT NULL
);
