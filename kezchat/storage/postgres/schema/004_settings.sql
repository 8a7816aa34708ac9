-- Facts about this database that the servers check at start-up: the
-- server domain its handles belong to (name 'server').
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
