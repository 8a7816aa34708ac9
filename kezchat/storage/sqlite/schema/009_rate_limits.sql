-- Rate limits counted in the database, so that every process sharing it
-- spends one budget: the hits of each subject ("send:<handle>",
-- "register:<client>") in fixed windows. A row is useless once its window
-- has ended (expires_at) and is pruned then.
CREATE TABLE IF NOT EXISTS rate_windows (
    subject      TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    hits         INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (subject, window_start)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS rate_windows_by_expiry ON rate_windows (expires_at);
