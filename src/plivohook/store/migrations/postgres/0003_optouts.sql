-- Issue 13 (replies). Who opted out of which of our numbers, and where each message's answer came
-- from; plivohook_apply looks the opt-out up and applies STOP/START in the message's
-- transaction. The changes to the function are fenced with "replies: begin/end" so that another
-- migration replacing it can carry them over.

CREATE TABLE opt_outs (
    id           bigserial   PRIMARY KEY,
    to_number    text        NOT NULL,  -- our number the sender opted out of
    from_number  text        NOT NULL,  -- the sender
    opted_out_at timestamptz NOT NULL,
    message_uuid text,                  -- the STOP message; NULL when added by the API or CLI
    UNIQUE (to_number, from_number)
);
CREATE INDEX opt_outs_from_number_idx ON opt_outs (from_number, id);

-- "rule 3", "default", "compliance:stop", "opted-out", "none", "handler", "handler-error",
-- "handler-pending" (the handler has not answered yet); NULL for messages from before.
ALTER TABLE messages ADD COLUMN reply_source text;
ALTER TABLE messages ADD COLUMN handler_error text;
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

    RETURN jsonb_build_object('o', to_jsonb(outcome), 'r', to_jsonb(reply),
                              'c', to_jsonb(clash),
                              's', to_jsonb(source));  -- replies
END
$fn$;
