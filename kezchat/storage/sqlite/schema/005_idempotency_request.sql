-- What an idempotency key was first used for: a hash of the recipient and
-- the envelope. A retry must match it; the same key on another request is
-- a conflict. Rows from before this column have NULL and match anything.
ALTER TABLE idempotency ADD COLUMN request_hash TEXT;
