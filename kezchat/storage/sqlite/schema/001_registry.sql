-- The handle registry. Handles and primaries are each bound once.
CREATE TABLE handles (
    fqhn          TEXT PRIMARY KEY,
    local         TEXT NOT NULL,
    server        TEXT NOT NULL,
    primary_key   TEXT NOT NULL UNIQUE,
    registered_at REAL NOT NULL
);
