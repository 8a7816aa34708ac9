-- Sigchain events, append-only. One row per (primary, seq): the primary key
-- is what makes two concurrent appends of the same seq end in exactly one
-- stored event. `hash` is the SHA-256 of the event's JCS bytes (the next
-- event's prev); `revokes` is the seq a revoke names, kept as a column so
-- an append can be judged without parsing earlier events.
CREATE TABLE events (
    primary_key TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    revokes     INTEGER,
    hash        TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (primary_key, seq)
) WITHOUT ROWID;
