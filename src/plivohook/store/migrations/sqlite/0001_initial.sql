-- The first schema: messages, delivery reports, rejections and nonces.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,  -- rows are never deleted, so ids only grow (cursors rely on it)
    message_uuid TEXT NOT NULL UNIQUE,
    from_number TEXT NOT NULL,
    to_number TEXT NOT NULL,
    type TEXT NOT NULL,
    text TEXT NOT NULL,
    media TEXT NOT NULL,          -- JSON list of {"url", "content_type"}
    params TEXT NOT NULL,         -- JSON list of [key, value] pairs, as received
    method TEXT NOT NULL,
    received_at TEXT NOT NULL,    -- ISO 8601, UTC, microseconds
    reply TEXT,                   -- Message XML answered, NULL for <Response/>
    signature_scheme TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
-- "from" filters the inbox by sender; "to" (a handful of our own numbers) is not worth an index
-- on every insert.
CREATE INDEX messages_from ON messages (from_number);

CREATE TABLE statuses (
    id INTEGER PRIMARY KEY,  -- rows are never deleted, so ids only grow (cursors rely on it)
    message_uuid TEXT NOT NULL,
    status TEXT NOT NULL,
    sequence INTEGER,
    parent_message_uuid TEXT,
    error_code TEXT,
    reply_to TEXT,
    params TEXT NOT NULL,
    method TEXT NOT NULL,
    received_at TEXT NOT NULL,
    signature_scheme TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE
);
CREATE INDEX statuses_message ON statuses (message_uuid);
CREATE INDEX statuses_reply_to ON statuses (reply_to);
CREATE INDEX statuses_parent ON statuses (parent_message_uuid);

CREATE TABLE rejections (
    id INTEGER PRIMARY KEY,  -- rows are never deleted, so ids only grow (cursors rely on it)
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,        -- JSON list of [name, value] pairs, secrets removed
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    received_at TEXT NOT NULL,
    signature_scheme TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);

CREATE TABLE nonces (
    -- A rowid table: rows append in arrival order, only the key's index takes a random insert.
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,     -- "<family>:<nonce>"
    fingerprint TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX nonces_seen_at ON nonces (seen_at);
