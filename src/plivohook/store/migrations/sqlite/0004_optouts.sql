-- Issue 13 (replies). Who opted out of which of our numbers, and where each message's answer came
-- from. AUTOINCREMENT: opt-outs are deleted (START), and the API's cursors need ids that never
-- come back (a plain rowid table hands out max(id) + 1 again after the newest row goes).
CREATE TABLE opt_outs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    to_number TEXT NOT NULL,       -- our number the sender opted out of
    from_number TEXT NOT NULL,     -- the sender
    opted_out_at TEXT NOT NULL,    -- ISO 8601, UTC, microseconds
    message_uuid TEXT,             -- the STOP message; NULL when added by the API or the CLI
    UNIQUE (to_number, from_number)
);
CREATE INDEX opt_outs_from ON opt_outs (from_number);
-- "rule 3", "default", "compliance:stop", "opted-out", "none", "handler", "handler-error",
-- "handler-pending" (the handler has not answered yet); NULL for messages from before.
ALTER TABLE messages ADD COLUMN reply_source TEXT;
ALTER TABLE messages ADD COLUMN handler_error TEXT;
