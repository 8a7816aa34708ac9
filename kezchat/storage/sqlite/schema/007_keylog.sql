-- The key directory: an append-only RFC 9162 Merkle log with one leaf per
-- registration, appended in the registration's own transaction.
--
-- log_leaves holds each leaf's bytes exactly as accepted (the JCS form of
-- the registration request) under its index, and the handle it registered.
-- log_nodes holds the hash of every complete (perfect) subtree: node
-- (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level). They
-- never change once their last leaf is in, so any root or proof is a
-- handful of them, read in one query. The log's signing key is the
-- setting 'log_key' (hex Ed25519 seed), created on first start.
CREATE TABLE log_leaves (
    idx  INTEGER PRIMARY KEY,
    fqhn TEXT NOT NULL UNIQUE,
    leaf BLOB NOT NULL
);

CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
