-- A sender's copy of a message to another server that was given up (the
-- destination did not take it within the retention period) is marked
-- undeliverable, and a notice item (an "out" item with the same envelope,
-- marked too) is added to the sender's inbox so online devices learn it.
ALTER TABLE messages ADD COLUMN undeliverable INTEGER NOT NULL DEFAULT 0;
