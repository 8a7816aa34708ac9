-- The sender's copy: every accepted message is also kept in the sender's
-- own inbox, so each of the sender's devices (and a fresh log-in) sees both
-- sides of a conversation. A row is 'in' (received by its inbox's owner)
-- or 'out' (sent by the owner to to_fqhn, whose key is to_primary).
ALTER TABLE messages
    ADD COLUMN direction  TEXT NOT NULL DEFAULT 'in',
    ADD COLUMN to_fqhn    TEXT,
    ADD COLUMN to_primary TEXT;

DROP FUNCTION kez_add_messages(
    TEXT[], TEXT[], TEXT[], TEXT[], INTEGER[], DOUBLE PRECISION[], TEXT[], TEXT[]);

-- As before (idempotency keys claimed first, then counters in one global
-- order, duplicates answered with the first seq), plus: a message whose
-- recipient_primaries entry is not NULL, to someone other than its sender,
-- also gets the sender's copy, numbered in the sender's inbox, in the same
-- transaction. The sender's counter joins the one ordered walk over every
-- counter the batch touches, so the lock order stays global and two
-- batches still never deadlock. copy_seq is the copy's seq (NULL when none).
CREATE FUNCTION kez_add_messages(
    recipients          TEXT[],
    senders             TEXT[],
    sender_primaries    TEXT[],
    envelopes           TEXT[],
    sizes               INTEGER[],
    created             DOUBLE PRECISION[],
    keys                TEXT[],
    request_hashes      TEXT[],
    recipient_primaries TEXT[]
) RETURNS TABLE (
    ord          INTEGER,
    seq          BIGINT,
    created_at   DOUBLE PRECISION,
    duplicate    BOOLEAN,
    request_hash TEXT,
    copy_seq     BIGINT
)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    n         INTEGER := coalesce(cardinality(recipients), 0);
    i         INTEGER;
    w         RECORD;
    v_seq     BIGINT;
    v_created DOUBLE PRECISION;
    v_hash    TEXT;
    dup       BOOLEAN[] := array_fill(FALSE, ARRAY[n]);
    seqs      BIGINT[] := array_fill(0::BIGINT, ARRAY[n]);
    copies    BIGINT[] := array_fill(NULL::BIGINT, ARRAY[n]);
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
    FOR w IN
        SELECT x.owner, x.o::INTEGER AS o, x.out FROM (
            SELECT u.r AS owner, u.o, FALSE AS out
            FROM unnest(recipients) WITH ORDINALITY AS u(r, o)
            UNION ALL
            SELECT u.s, u.o, TRUE
            FROM unnest(senders, recipients, recipient_primaries) WITH ORDINALITY AS u(s, r, p, o)
            WHERE u.p IS NOT NULL AND u.s <> u.r
        ) AS x
        ORDER BY x.owner, x.o, x.out
    LOOP
        i := w.o;
        CONTINUE WHEN dup[i];
        INSERT INTO inbox_counters AS c (recipient, last_seq) VALUES (w.owner, 1)
        ON CONFLICT (recipient) DO UPDATE SET last_seq = c.last_seq + 1
        RETURNING c.last_seq INTO v_seq;
        IF w.out THEN
            copies[i] := v_seq;
            INSERT INTO messages AS m
                (recipient, seq, sender, sender_primary, envelope, size, created_at,
                 direction, to_fqhn, to_primary)
            VALUES
                (senders[i], v_seq, senders[i], sender_primaries[i], envelopes[i], sizes[i],
                 created[i], 'out', recipients[i], recipient_primaries[i]);
        ELSE
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
        SELECT u.o::INTEGER, u.s, u.c, u.d, u.h, u.cs
        FROM unnest(seqs, times, dup, hashes, copies) WITH ORDINALITY AS u(s, c, d, h, cs, o)
        ORDER BY u.o;
END
$$;
