-- Issue 15 (forwarding): the transactional outbox. One row per event and destination, inserted
-- in the transaction that stores the message or delivery report; the forwarding worker moves it
-- from pending to delivered or dead (see plivohook/forward/outbox.py for the contract).
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,       -- the storage order: a conversation is delivered in id order
    event_id TEXT NOT NULL,       -- the webhook-id / Nats-Msg-Id, the same on every attempt
    event_type TEXT NOT NULL,     -- message.received or message.status
    destination TEXT NOT NULL,    -- a forward URL (password redacted) or nats:<stream>/<subject>
    payload BLOB NOT NULL,        -- the event's JSON, exactly as sent and signed
    conversation TEXT NOT NULL,   -- the From-To pair: the ordering key
    message_uuid TEXT NOT NULL,   -- the message's (or the report's) MessageUUID, for the API
    created_at TEXT NOT NULL,     -- the record's received_at (ISO 8601, UTC): max age counts here
    next_attempt_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    leased_until TEXT,
    leased_by TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    last_status_code INTEGER,
    last_error TEXT,
    delivered_at TEXT,
    UNIQUE (destination, event_id)
);
CREATE INDEX outbox_claim ON outbox (destination, state, next_attempt_at);
-- The conversation's earlier pending rows, looked up for each candidate of a claim.
CREATE INDEX outbox_conversation ON outbox (destination, conversation, state, id);
CREATE INDEX outbox_message ON outbox (message_uuid);
CREATE INDEX outbox_state ON outbox (state, id);

-- One worker per database file delivers (SQLite has one writer anyway): the holder of this row,
-- renewed by every claim, until it expires.
CREATE TABLE outbox_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
