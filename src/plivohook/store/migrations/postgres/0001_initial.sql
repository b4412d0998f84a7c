-- plivohook schema, PostgreSQL. Applied by PostgresStore.migrate() inside one transaction that
-- holds the migration advisory lock and records the version in schema_migrations.

CREATE TABLE messages (
    id               bigserial   PRIMARY KEY,
    message_uuid     text        NOT NULL UNIQUE,
    from_number      text        NOT NULL,
    to_number        text        NOT NULL,
    type             text        NOT NULL,
    text             text        NOT NULL,
    media            jsonb       NOT NULL,  -- [{"url": ..., "content_type": ...}]
    params           jsonb       NOT NULL,  -- [[key, value], ...] as received, in order
    method           text        NOT NULL,
    received_at      timestamptz NOT NULL,
    reply            text,                  -- Message XML, NULL for the empty <Response/>
    signature_scheme text        NOT NULL,
    fingerprint      text        NOT NULL
);
CREATE INDEX messages_from_number_idx ON messages (from_number, id);
CREATE INDEX messages_to_number_idx ON messages (to_number, id);

CREATE TABLE statuses (
    id                  bigserial   PRIMARY KEY,
    message_uuid        text        NOT NULL,
    status              text        NOT NULL,
    sequence            bigint,
    parent_message_uuid text,
    error_code          text,
    reply_to            text,
    params              jsonb       NOT NULL,
    method              text        NOT NULL,
    received_at         timestamptz NOT NULL,
    signature_scheme    text        NOT NULL,
    fingerprint         text        NOT NULL UNIQUE  -- one report, stored once
);
CREATE INDEX statuses_message_uuid_idx ON statuses (message_uuid);
CREATE INDEX statuses_reply_to_idx ON statuses (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX statuses_parent_message_uuid_idx ON statuses (parent_message_uuid)
    WHERE parent_message_uuid IS NOT NULL;

CREATE TABLE rejections (
    id               bigserial   PRIMARY KEY,
    method           text        NOT NULL,
    path             text        NOT NULL,
    query            text        NOT NULL,
    headers          jsonb       NOT NULL,  -- [[name, value], ...], secrets removed
    body             bytea       NOT NULL,  -- exactly as received
    reason           text        NOT NULL,
    received_at      timestamptz NOT NULL,
    signature_scheme text        NOT NULL,
    fingerprint      text        NOT NULL
);

CREATE TABLE nonces (
    key         text        PRIMARY KEY,  -- NonceClaim.key: "v2:<nonce>" or "v3:<nonce>"
    fingerprint text        NOT NULL,
    seen_at     timestamptz NOT NULL      -- received_at of the request that claimed it
);
CREATE INDEX nonces_seen_at_idx ON nonces (seen_at);

-- One group commit: apply a batch of write operations (a JSON array, see PostgresStore) with the
-- semantics of Store.write, in the caller's single transaction, and return
-- {"o": [outcome, ...], "r": [reply, ...]} in the order of the operations.
--
-- Uniqueness is decided here by the constraints: INSERT ... ON CONFLICT DO NOTHING waits for a
-- concurrent transaction inserting the same key and then sees its committed row (each statement
-- of a VOLATILE function takes a new snapshot under READ COMMITTED). Keys are claimed in one
-- global order -- every nonce by key, then every message by MessageUUID, then every status by
-- fingerprint -- so two batches racing over the same keys wait for each other, never deadlock.
CREATE FUNCTION plivohook_apply(ops jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    n       integer := jsonb_array_length(ops);
    outcome text[] := array_fill(NULL::text, ARRAY[n]);
    reply   text[] := array_fill(NULL::text, ARRAY[n]);
    retry   boolean[] := array_fill(false, ARRAY[n]);
    r       record;
    seen    text;
    stored  text;
BEGIN
    -- 1. Nonce claims. A claim with other content is a replay: that operation writes nothing.
    FOR r IN
        SELECT e.i::integer AS i, e.op->>'nk' AS k, e.op->>'nf' AS f,
               (e.op->>'at')::timestamptz AS at
        FROM jsonb_array_elements(ops) WITH ORDINALITY AS e(op, i)
        WHERE e.op->>'nk' IS NOT NULL
        ORDER BY e.op->>'nk' COLLATE "C", e.i
    LOOP
        LOOP
            INSERT INTO nonces (key, fingerprint, seen_at) VALUES (r.k, r.f, r.at)
            ON CONFLICT (key) DO NOTHING;
            EXIT WHEN FOUND;
            SELECT fingerprint INTO seen FROM nonces WHERE key = r.k;
            IF FOUND THEN
                IF seen = r.f THEN
                    retry[r.i] := true;
                ELSE
                    outcome[r.i] := 'replay';
                END IF;
                EXIT;
            END IF;
            -- pruned between the two statements: claim it again
        END LOOP;
    END LOOP;

    -- 2. Messages: stored once per MessageUUID; a duplicate gets the stored reply.
    FOR r IN
        SELECT e.i::integer AS i, e.op
        FROM jsonb_array_elements(ops) WITH ORDINALITY AS e(op, i)
        WHERE e.op->>'k' = 'm'
        ORDER BY e.op->>'u' COLLATE "C", e.i
    LOOP
        CONTINUE WHEN outcome[r.i] IS NOT NULL;
        INSERT INTO messages (message_uuid, from_number, to_number, type, text, media, params,
                              method, received_at, reply, signature_scheme, fingerprint)
        VALUES (r.op->>'u', r.op->>'from', r.op->>'to', r.op->>'type', r.op->>'text',
                r.op->'media', r.op->'params', r.op->>'method', (r.op->>'at')::timestamptz,
                r.op->>'reply', r.op->>'scheme', r.op->>'fp')
        ON CONFLICT (message_uuid) DO NOTHING;
        IF FOUND THEN
            outcome[r.i] := 'stored';
            reply[r.i] := r.op->>'reply';
        ELSE
            SELECT m.reply INTO stored FROM messages AS m WHERE m.message_uuid = r.op->>'u';
            outcome[r.i] := CASE WHEN retry[r.i] THEN 'retry' ELSE 'duplicate' END;
            reply[r.i] := stored;
        END IF;
    END LOOP;

    -- 3. Status reports: stored once per fingerprint.
    FOR r IN
        SELECT e.i::integer AS i, e.op
        FROM jsonb_array_elements(ops) WITH ORDINALITY AS e(op, i)
        WHERE e.op->>'k' = 's'
        ORDER BY e.op->>'fp' COLLATE "C", e.i
    LOOP
        CONTINUE WHEN outcome[r.i] IS NOT NULL;
        INSERT INTO statuses (message_uuid, status, sequence, parent_message_uuid, error_code,
                              reply_to, params, method, received_at, signature_scheme,
                              fingerprint)
        VALUES (r.op->>'u', r.op->>'status', (r.op->>'seq')::bigint, r.op->>'parent',
                r.op->>'error', r.op->>'reply_to', r.op->'params', r.op->>'method',
                (r.op->>'at')::timestamptz, r.op->>'scheme', r.op->>'fp')
        ON CONFLICT (fingerprint) DO NOTHING;
        outcome[r.i] := CASE WHEN FOUND THEN 'stored'
                             WHEN retry[r.i] THEN 'retry'
                             ELSE 'duplicate' END;
    END LOOP;

    -- 4. Rejections: kept whole, except a retry of one already kept under its nonce.
    FOR r IN
        SELECT e.i::integer AS i, e.op
        FROM jsonb_array_elements(ops) WITH ORDINALITY AS e(op, i)
        WHERE e.op->>'k' = 'r'
        ORDER BY e.i
    LOOP
        CONTINUE WHEN outcome[r.i] IS NOT NULL;
        IF retry[r.i] THEN
            outcome[r.i] := 'retry';
            CONTINUE;
        END IF;
        INSERT INTO rejections (method, path, query, headers, body, reason, received_at,
                                signature_scheme, fingerprint)
        VALUES (r.op->>'method', r.op->>'path', r.op->>'query', r.op->'headers',
                decode(r.op->>'body', 'base64'), r.op->>'reason', (r.op->>'at')::timestamptz,
                r.op->>'scheme', r.op->>'fp');
        outcome[r.i] := 'stored';
    END LOOP;

    RETURN jsonb_build_object('o', to_jsonb(outcome), 'r', to_jsonb(reply));
END
$fn$;
