-- Rate limits counted in the database, so that every chat-server instance
-- spends one budget: the hits of each subject ("send:<handle>",
-- "register:<client>") in fixed windows, counted with an atomic upsert. A
-- row is useless once its window has ended (expires_at) and is pruned then.
CREATE TABLE rate_windows (
    subject      TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    hits         INTEGER NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (subject, window_start)
);

CREATE INDEX rate_windows_by_expiry ON rate_windows (expires_at);
