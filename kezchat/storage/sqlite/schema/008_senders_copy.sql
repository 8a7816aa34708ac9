-- The sender's copy: every accepted message is also kept in the sender's
-- own inbox, so each of the sender's devices (and a fresh log-in) sees both
-- sides of a conversation. A row is "in" (received by its inbox's owner)
-- or "out" (sent by the owner to to_fqhn, whose key is to_primary).
ALTER TABLE messages ADD COLUMN direction TEXT NOT NULL DEFAULT 'in';
ALTER TABLE messages ADD COLUMN to_fqhn TEXT;
ALTER TABLE messages ADD COLUMN to_primary TEXT;
