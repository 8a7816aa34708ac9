-- Sigchain events, append-only. One row per (primary, seq): the primary key
-- is the last line that makes two concurrent appends of the same seq end in
-- exactly one stored event, whichever kezsig instances they reach. `hash` is
-- the SHA-256 of the event's JCS bytes (the next event's prev); `revokes` is
-- the seq a revoke names.
CREATE TABLE events (
    primary_key TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    type        TEXT NOT NULL,
    revokes     BIGINT,
    hash        TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (primary_key, seq)
);
