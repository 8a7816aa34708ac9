-- The federation outbox: messages from local senders to handles of other
-- servers, kept until the destination server has stored them. The id is
-- the order of delivery (per destination, so per sender-recipient pair)
-- and, with this server's domain, the idempotency key the destination
-- stores the message under: a delivery repeated after a crash or a lost
-- answer is stored there once.
CREATE TABLE federation_outbox (
    id              BIGSERIAL PRIMARY KEY,
    destination     TEXT NOT NULL,
    sender          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    envelope        TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT
);

CREATE INDEX federation_outbox_by_destination ON federation_outbox (destination, id);
-- a client's resend (same sender, same key) is queued once
CREATE UNIQUE INDEX federation_outbox_idempotency
    ON federation_outbox (sender, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Which server instance delivers to a destination (several instances
-- share a PostgreSQL database): one at a time, so the queue order holds.
-- A lease a dead instance held lapses at expires_at.
CREATE TABLE federation_leases (
    destination TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
