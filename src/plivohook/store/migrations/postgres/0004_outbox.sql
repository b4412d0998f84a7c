-- Issue 15 (forwarding): the transactional outbox. One row per event and destination, inserted
-- by plivohook_apply in the transaction that stores the message or delivery report (the block
-- between "forward: begin" and "forward: end"); the forwarding worker moves it from pending to
-- delivered or dead (see plivohook/forward/outbox.py for the contract).

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,        -- the storage order: a conversation is delivered in id order
    event_id text NOT NULL,          -- the webhook-id / Nats-Msg-Id, the same on every attempt
    event_type text NOT NULL,        -- message.received or message.status
    destination text NOT NULL,       -- a forward URL (password redacted) or nats:<stream>/<subject>
    payload bytea NOT NULL,          -- the event's JSON, exactly as sent and signed
    conversation text NOT NULL,      -- the From-To pair: the ordering key
    message_uuid text NOT NULL,      -- the message's (or the report's) MessageUUID, for the API
    created_at timestamptz NOT NULL, -- the record's received_at: the max age counts from here
    next_attempt_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    leased_until timestamptz,
    leased_by text,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    last_status_code integer,
    last_error text,
    delivered_at timestamptz,
    UNIQUE (destination, event_id)
);
CREATE INDEX outbox_claim_idx ON outbox (destination, state, next_attempt_at);
-- The conversation's earlier pending rows, looked up for each candidate of a claim.
CREATE INDEX outbox_conversation_idx ON outbox (destination, conversation, state, id);
CREATE INDEX outbox_message_idx ON outbox (message_uuid);
CREATE INDEX outbox_state_idx ON outbox (state, id);

-- This replaces 0003's version (opt-outs, fenced "replies"), adding the fenced "forward" block.
CREATE OR REPLACE FUNCTION plivohook_apply(ops jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    n       integer := jsonb_array_length(ops);
    outcome text[] := array_fill(NULL::text, ARRAY[n]);
    reply   text[] := array_fill(NULL::text, ARRAY[n]);
    retry   boolean[] := array_fill(false, ARRAY[n]);
    clash   boolean[] := array_fill(false, ARRAY[n]);
    r       record;
    seen    text;
    stored  text;
    -- replies: begin
    source  text[] := array_fill(NULL::text, ARRAY[n]);
    opted   boolean;
    chosen  text;
    chosen_source text;
    stored_source text;
    -- replies: end
BEGIN
    -- 1. Nonce claims ('nk', and 'xk' when both families verified). A claim with other content
    -- is a replay: that operation writes nothing more.
    FOR r IN
        SELECT c.i, c.k, c.f, c.at
        FROM (
            SELECT e.i::integer AS i, e.op->>'nk' AS k, e.op->>'nf' AS f,
                   (e.op->>'at')::timestamptz AS at
            FROM jsonb_array_elements(ops) WITH ORDINALITY AS e(op, i)
            WHERE e.op->>'nk' IS NOT NULL
            UNION ALL
            SELECT e.i::integer, e.op->>'xk', e.op->>'xf', (e.op->>'at')::timestamptz
            FROM jsonb_array_elements(ops) WITH ORDINALITY AS e(op, i)
            WHERE e.op->>'xk' IS NOT NULL
        ) AS c
        ORDER BY c.k COLLATE "C", c.i
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
        -- replies: begin
        -- The write carries the reply for both states ('reply'/'src' when the sender has not
        -- opted out of 'to', 'oreply'/'osrc' when they have): the state is looked up here, in
        -- the message's transaction, and the message's STOP/START ('act') applied if it is new.
        opted := false;
        IF r.op ? 'osrc' THEN
            opted := EXISTS (SELECT 1 FROM opt_outs AS o
                             WHERE o.to_number = r.op->>'to' AND o.from_number = r.op->>'from');
        END IF;
        chosen := CASE WHEN opted THEN r.op->>'oreply' ELSE r.op->>'reply' END;
        chosen_source := CASE WHEN opted THEN r.op->>'osrc' ELSE r.op->>'src' END;
        -- replies: end
        INSERT INTO messages (message_uuid, from_number, to_number, type, text, media, params,
                              method, received_at, reply, signature_scheme, fingerprint,
                              reply_source)
        VALUES (r.op->>'u', r.op->>'from', r.op->>'to', r.op->>'type', r.op->>'text',
                r.op->'media', r.op->'params', r.op->>'method', (r.op->>'at')::timestamptz,
                chosen, r.op->>'scheme', r.op->>'fp', chosen_source)
        ON CONFLICT (message_uuid) DO NOTHING;
        IF FOUND THEN
            outcome[r.i] := 'stored';
            reply[r.i] := chosen;
            -- replies: begin
            source[r.i] := chosen_source;
            IF r.op->>'act' = 'optout' THEN
                INSERT INTO opt_outs (to_number, from_number, opted_out_at, message_uuid)
                VALUES (r.op->>'to', r.op->>'from', (r.op->>'at')::timestamptz, r.op->>'u')
                ON CONFLICT (to_number, from_number) DO NOTHING;
            ELSIF r.op->>'act' = 'optin' THEN
                DELETE FROM opt_outs AS o
                WHERE o.to_number = r.op->>'to' AND o.from_number = r.op->>'from';
            END IF;
            -- replies: end
        ELSE
            -- Another text under a stored MessageUUID: the first stays, the clash is counted.
            UPDATE messages AS m SET conflicting_duplicates = m.conflicting_duplicates + 1
            WHERE m.message_uuid = r.op->>'u' AND m.text IS DISTINCT FROM r.op->>'text';
            clash[r.i] := FOUND;
            SELECT m.reply, m.reply_source INTO stored, stored_source
            FROM messages AS m WHERE m.message_uuid = r.op->>'u';
            outcome[r.i] := CASE WHEN retry[r.i] THEN 'retry' ELSE 'duplicate' END;
            reply[r.i] := stored;
            source[r.i] := stored_source;  -- replies
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

    -- forward: begin
    -- The outbox rows of every record stored now ('ev': its events, each with its destinations),
    -- in the order stored, so that a conversation is delivered in that order.
    INSERT INTO outbox (event_id, event_type, destination, payload, conversation, message_uuid,
                        created_at, next_attempt_at)
    SELECT v.ev->>'id', v.ev->>'t', d.dest,
           -- The reply the store chose: an opted-out sender's differs from the one the event
           -- was built with (replies), so the event says what GET /api/messages shows.
           CASE WHEN e.op->>'k' = 'm'
                     AND (reply[e.i::integer] IS DISTINCT FROM e.op->>'reply'
                          OR source[e.i::integer] IS DISTINCT FROM e.op->>'src')
                THEN convert_to(jsonb_set(jsonb_set((v.ev->>'p')::jsonb, '{data,reply}',
                                                    coalesce(to_jsonb(reply[e.i::integer]), 'null')),
                                          '{data,reply_source}',
                                          coalesce(to_jsonb(source[e.i::integer]), 'null'))::text,
                                'UTF8')
                ELSE convert_to(v.ev->>'p', 'UTF8') END,
           v.ev->>'c',
           e.op->>'u', (e.op->>'at')::timestamptz, (e.op->>'at')::timestamptz
    FROM jsonb_array_elements(ops) WITH ORDINALITY AS e(op, i)
    CROSS JOIN LATERAL jsonb_array_elements(e.op->'ev') WITH ORDINALITY AS v(ev, j)
    CROSS JOIN LATERAL jsonb_array_elements_text(v.ev->'d') WITH ORDINALITY AS d(dest, k)
    WHERE e.op ? 'ev' AND outcome[e.i::integer] = 'stored'
    ORDER BY e.i, v.j, d.k
    ON CONFLICT (destination, event_id) DO NOTHING;
    -- forward: end

    RETURN jsonb_build_object('o', to_jsonb(outcome), 'r', to_jsonb(reply),
                              'c', to_jsonb(clash),
                              's', to_jsonb(source));  -- replies
END
$fn$;
