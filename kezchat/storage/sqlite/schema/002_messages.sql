-- The relay: opaque envelopes per recipient, numbered by a per-recipient
-- counter that never goes back (deleting messages leaves gaps, never reuse).
CREATE TABLE inbox_counters (
    recipient TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE messages (
    recipient      TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    sender         TEXT NOT NULL,
    sender_primary TEXT NOT NULL,
    envelope       TEXT NOT NULL,
    size           INTEGER NOT NULL,
    created_at     REAL NOT NULL,
    PRIMARY KEY (recipient, seq)
) WITHOUT ROWID;

CREATE INDEX messages_by_age ON messages (created_at);

-- A sender's retry with the same idempotency key gets the first result.
CREATE TABLE idempotency (
    sender     TEXT NOT NULL,
    key        TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sender, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_by_age ON idempotency (created_at);
