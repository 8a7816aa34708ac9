-- The relay: opaque envelopes per recipient, numbered by a per-recipient
-- counter that never goes back (deleting messages leaves gaps, never reuse).
CREATE TABLE inbox_counters (
    recipient TEXT PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);

CREATE TABLE messages (
    recipient      TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    sender         TEXT NOT NULL,
    sender_primary TEXT NOT NULL,
    envelope       TEXT NOT NULL,
    size           INTEGER NOT NULL,
    created_at     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (recipient, seq)
);

CREATE INDEX messages_by_age ON messages (created_at);

-- A sender's retry with the same idempotency key gets the first result.
-- request_hash, when given, lets a caller tell a retry from a different
-- request reusing the key.
CREATE TABLE idempotency (
    sender       TEXT NOT NULL,
    key          TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    request_hash TEXT,
    PRIMARY KEY (sender, key)
);

CREATE INDEX idempotency_by_age ON idempotency (created_at);

-- Store a batch of messages in one statement (one round trip, one
-- transaction), safe with any number of chat-servers writing at once:
--
-- 1. Each idempotency key is claimed with INSERT .. ON CONFLICT DO NOTHING.
--    A key another transaction is claiming makes this one wait for it; if
--    it committed, ours is a duplicate. So a key is stored exactly once.
-- 2. Each fresh message takes the next seq of its recipient with an upsert
--    on inbox_counters, whose row lock is held until commit: writers to one
--    inbox are serialised, seqs are unique and commit in seq order (seeing
--    seq n committed means every seq below n that exists is committed).
-- 3. Duplicates report the seq and time of the first message.
--
-- Locks are always taken in one global order (all keys by (sender, key),
-- then all counters by recipient), so two batches never deadlock.
-- Returns one row per input, in input order (ord is 1-based).
CREATE FUNCTION kez_add_messages(
    recipients       TEXT[],
    senders          TEXT[],
    sender_primaries TEXT[],
    envelopes        TEXT[],
    sizes            INTEGER[],
    created          DOUBLE PRECISION[],
    keys             TEXT[],
    request_hashes   TEXT[]
) RETURNS TABLE (
    ord          INTEGER,
    seq          BIGINT,
    created_at   DOUBLE PRECISION,
    duplicate    BOOLEAN,
    request_hash TEXT
)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    n         INTEGER := coalesce(cardinality(recipients), 0);
    i         INTEGER;
    v_seq     BIGINT;
    v_created DOUBLE PRECISION;
    v_hash    TEXT;
    dup       BOOLEAN[] := array_fill(FALSE, ARRAY[n]);
    seqs      BIGINT[] := array_fill(0::BIGINT, ARRAY[n]);
    times     DOUBLE PRECISION[] := created;
    hashes    TEXT[] := request_hashes;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    FOR i IN
        SELECT u.o::INTEGER FROM unnest(senders, keys) WITH ORDINALITY AS u(s, k, o)
        WHERE u.k IS NOT NULL ORDER BY u.s, u.k, u.o
    LOOP
        INSERT INTO idempotency AS t (sender, key, recipient, seq, created_at, request_hash)
        VALUES (senders[i], keys[i], recipients[i], 0, created[i], request_hashes[i])
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            dup[i] := TRUE;
        END IF;
    END LOOP;
    FOR i IN
        SELECT u.o::INTEGER FROM unnest(recipients) WITH ORDINALITY AS u(r, o)
        ORDER BY u.r, u.o
    LOOP
        CONTINUE WHEN dup[i];
        INSERT INTO inbox_counters AS c (recipient, last_seq) VALUES (recipients[i], 1)
        ON CONFLICT (recipient) DO UPDATE SET last_seq = c.last_seq + 1
        RETURNING c.last_seq INTO v_seq;
        seqs[i] := v_seq;
        INSERT INTO messages AS m
            (recipient, seq, sender, sender_primary, envelope, size, created_at)
        VALUES
            (recipients[i], v_seq, senders[i], sender_primaries[i], envelopes[i], sizes[i],
             created[i]);
        IF keys[i] IS NOT NULL THEN
            UPDATE idempotency AS t SET seq = v_seq
            WHERE t.sender = senders[i] AND t.key = keys[i];
        END IF;
    END LOOP;
    FOR i IN 1..n LOOP
        CONTINUE WHEN NOT dup[i];
        SELECT t.seq, t.created_at, t.request_hash INTO v_seq, v_created, v_hash
        FROM idempotency AS t WHERE t.sender = senders[i] AND t.key = keys[i];
        seqs[i] := v_seq;
        times[i] := v_created;
        hashes[i] := v_hash;
    END LOOP;
    RETURN QUERY
        SELECT u.o::INTEGER, u.s, u.c, u.d, u.h
        FROM unnest(seqs, times, dup, hashes) WITH ORDINALITY AS u(s, c, d, h, o)
        ORDER BY u.o;
END
$$;
