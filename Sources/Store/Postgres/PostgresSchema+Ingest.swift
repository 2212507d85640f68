/// Webhook intake on PostgreSQL, applied as sets: the fast path of `PostgresStore.writeBatch`.
extension PostgresSchema {
    /// The class of the advisory locks `dispatcher_ingest_statuses` takes per bucket of wamids
    /// (two-key locks: apart from `intakeLock`'s one-key space).
    static let wamidLockClass: Int32 = 0x7761_6D69  // "wami"

    /// `dispatcher_ingest_statuses`: a batch of payloads without inbound messages in a handful of
    /// statements instead of a dozen per status. It takes `intakeLock` shared first (one status at
    /// a time takes it alone). The statuses' messages are found in one query and locked in id order
    /// (so several receivers writing overlapping batches wait for each other instead of
    /// deadlocking); each message's statuses are then folded in memory, in the order
    /// `dispatcher_ingest_many` would apply them (payload, then position), by the same
    /// forward-only rule (generated from `StatusRule.all`); then one UPDATE of the messages, one
    /// INSERT of the ids learnt and one of the events, whose conflicts are the duplicates. The
    /// answers are those of `dispatcher_ingest_many`, row for row.
    ///
    /// Where one status at a time could decide differently, it raises (SQLSTATE P0001, "dispatcher:
    /// …") and the caller writes the batch the slow way: a message with no wamid yet named by two
    /// wamids; a status that only matches through a wamid another status of the batch teaches; a
    /// message whose wamid another process changed while the batch waited for its lock; a wamid
    /// learnt here that statuses kept unmatched wait for, or a status kept unmatched under a wamid
    /// another batch has just taught.
    /// Any other error (a deadlock, a refused value) also fails the whole call, with nothing kept.
    static let ingestStatuses: String = {
        let times = StatusRule.all.map(\.timeColumn)
        var fold = ""
        for (i, rule) in StatusRule.all.enumerated() {
            let error =
                rule.recordsError
                ? "\n                    e_set := true; e_code := s.code; e_title := s.title; e_details := s.details;" : ""
            fold += """
                            \(i == 0 ? "IF" : "ELSIF") s.status = '\(rule.status.rawValue)' THEN
                                IF \(rule.sqlCondition(state: "cur_state", rank: "cur_rank")) THEN
                                    new_state := '\(rule.target.rawValue)'; cur_rank := \(rule.target.rank);\(error)
                                END IF;
                                t_\(rule.timeColumn) := LEAST(t_\(rule.timeColumn), s.ts);

                """
        }
        fold += "            END IF;\n"
        // The message folded so far goes into the UPDATE's arrays (when it changed): when the next
        // message begins, and after the last.
        let keep = """
            IF cur_id IS NOT NULL AND touched THEN
                u_id := u_id || cur_id; u_state := u_state || cur_state; u_rank := u_rank || cur_rank; u_wamid := u_wamid || cur_wamid;
                u_time := u_time || CASE WHEN moved THEN cur_time END; \(times.map { "u_\($0) := u_\($0) || t_\($0); " }.joined())
                u_error := u_error || e_set; u_code := u_code || e_code; u_title := u_title || e_title; u_details := u_details || e_details;
            END IF;
            """
        let targets = StatusRule.all.map { "WHEN '\($0.status.rawValue)' THEN '\($0.target.rawValue)'" }.joined(separator: " ")
        return """
            CREATE OR REPLACE FUNCTION dispatcher_ingest_statuses(p_payloads JSONB, p_bodies BYTEA[], \(ingestAnswer))
            RETURNS SETOF RECORD
            LANGUAGE plpgsql AS $$
            DECLARE
                ids BIGINT[];
                s RECORD;
                -- the message being folded
                cur_id TEXT; cur_phone TEXT; cur_state TEXT; cur_rank INTEGER; cur_wamid TEXT; cur_time DOUBLE PRECISION;
                moved BOOLEAN; touched BOOLEAN;\(times.map { " t_\($0) DOUBLE PRECISION;" }.joined())
                e_set BOOLEAN; e_code INTEGER; e_title TEXT; e_details TEXT;
                new_state TEXT; m_id TEXT;
                learnt TEXT[] := '{}';
                -- wamids of statuses that match no message (kept unmatched)
                waiting TEXT[] := '{}';
                buckets INTEGER[];
                b INTEGER;
                -- the statuses' events, in (payload, position) order once inserted
                ev_pn INTEGER[] := '{}'; ev_o INTEGER[] := '{}'; ev_wamid TEXT[] := '{}'; ev_message TEXT[] := '{}'; ev_status TEXT[] := '{}';
                ev_ts DOUBLE PRECISION[] := '{}'; ev_time DOUBLE PRECISION[] := '{}'; ev_recipient TEXT[] := '{}'; ev_callback TEXT[] := '{}';
                ev_code INTEGER[] := '{}'; ev_title TEXT[] := '{}'; ev_details TEXT[] := '{}'; ev_pricing TEXT[] := '{}'; ev_state TEXT[] := '{}';
                ev_phone TEXT[] := '{}'; ev_pricing_type TEXT[] := '{}';
                -- the messages' updates
                u_id TEXT[] := '{}'; u_state TEXT[] := '{}'; u_rank INTEGER[] := '{}'; u_wamid TEXT[] := '{}'; u_time DOUBLE PRECISION[] := '{}';
               \(times.map { " u_\($0) DOUBLE PRECISION[] := '{}';" }.joined())
                u_error BOOLEAN[] := '{}'; u_code INTEGER[] := '{}'; u_title TEXT[] := '{}'; u_details TEXT[] := '{}';
                -- ids learnt for numbers
                l_phone TEXT[] := '{}'; l_id TEXT[] := '{}'; l_kind TEXT[] := '{}'; l_time DOUBLE PRECISION[] := '{}'; l_order BIGINT[] := '{}';
            BEGIN
                -- Shared with other set batches, exclusive of one-at-a-time writes (see `intakeLock`).
                PERFORM pg_advisory_xact_lock_shared(\(intakeLock));
                WITH ins AS (
                    INSERT INTO webhook_payloads (received_at, signature, body, parse_error, statuses)
                    SELECT (e.v->>'time')::float8, e.v->>'signature', p_bodies[e.n], e.v->>'parse_error', (e.v->>'count')::integer
                    FROM jsonb_array_elements(p_payloads) WITH ORDINALITY AS e(v, n) ORDER BY e.n
                    RETURNING id)
                SELECT array_agg(id ORDER BY id) INTO ids FROM ins;
                FOR s IN
                    WITH st AS (
                        SELECT e.n::integer AS pn, x.o::integer AS o, (e.v->>'time')::float8 AS at, x.wamid, x.status, x.ts, x.recipient,
                               x.recipient_user, x.callback, x.code, x.title, x.details, x.pricing, x.phone, x.pricing_type
                        FROM jsonb_array_elements(p_payloads) WITH ORDINALITY AS e(v, n),
                             ROWS FROM (jsonb_to_recordset(COALESCE(e.v->'statuses', '[]'::jsonb)) AS (wamid TEXT, status TEXT,
                                 ts DOUBLE PRECISION, recipient TEXT, recipient_user TEXT, callback TEXT, code INTEGER, title TEXT, details TEXT,
                                 pricing TEXT, phone TEXT, pricing_type TEXT)) WITH ORDINALITY AS x(wamid, status, ts, recipient, recipient_user,
                                 callback, code, title, details, pricing, phone, pricing_type, o)),
                    found AS (
                        SELECT st.*, COALESCE(bw.id, bc.id) AS mid FROM st
                        LEFT JOIN LATERAL (SELECT mm.id FROM messages mm WHERE mm.wamid = st.wamid LIMIT 1) bw ON true
                        LEFT JOIN LATERAL (SELECT mm.id FROM messages mm WHERE bw.id IS NULL AND st.callback <> '' AND mm.id = st.callback
                                           AND (mm.wamid IS NULL OR mm.wamid = st.wamid) LIMIT 1) bc ON true),
                    locked AS (
                        SELECT mm.id, mm.phone, mm.state, mm.state_rank, mm.wamid, mm.run, r.sender FROM messages mm JOIN runs r ON r.name = mm.run
                        WHERE mm.id = ANY(ARRAY(SELECT mid FROM found WHERE mid IS NOT NULL)) ORDER BY mm.id FOR UPDATE OF mm)
                    SELECT f.*, l.phone AS m_phone, l.state AS m_state, l.state_rank AS m_rank, l.wamid AS m_wamid,
                           (f.phone IS NULL OR l.sender = f.phone OR (l.run LIKE 'api-%' AND position('@' in l.run) = 0)) AS ours
                    FROM found f LEFT JOIN locked l ON l.id = f.mid
                    ORDER BY f.mid NULLS LAST, f.pn, f.o
                LOOP
                    m_id := CASE WHEN s.ours THEN s.mid END;
                    IF s.mid IS DISTINCT FROM cur_id THEN
                        \(keep)
                        cur_id := s.mid;
                        IF s.mid IS NOT NULL THEN
                            cur_phone := s.m_phone; cur_state := s.m_state; cur_rank := s.m_rank; cur_wamid := s.m_wamid; moved := false; touched := false;
                            \(times.map { "t_\($0) := NULL; " }.joined())
                            e_set := false; e_code := NULL; e_title := NULL; e_details := NULL;
                        END IF;
                    END IF;
                    new_state := NULL;
                    IF m_id IS NOT NULL THEN
                        IF s.m_wamid <> s.wamid THEN
                            -- Found without a wamid, or with this one, but given another (a resend's) while
                            -- the batch waited for its lock: one at a time decides on the row as it is now.
                            RAISE EXCEPTION 'dispatcher: % has another wamid than when it was found', m_id USING ERRCODE = 'P0001';
                        END IF;
                        touched := true;
                        IF cur_wamid IS NULL THEN
                            cur_wamid := s.wamid;
                            learnt := learnt || s.wamid;
                        ELSIF cur_wamid <> s.wamid AND s.m_wamid IS NULL THEN
                            -- Two wamids for a message that had none: one at a time decides (the slow path).
                            RAISE EXCEPTION 'dispatcher: statuses of % name two wamids', m_id USING ERRCODE = 'P0001';
                        END IF;
                        IF COALESCE(s.recipient, '') <> '' AND s.recipient <> cur_phone THEN
                            l_phone := l_phone || cur_phone; l_id := l_id || s.recipient; l_kind := l_kind || 'wa_id'::text; l_time := l_time || s.at;
                            l_order := l_order || (s.pn::bigint * 1000000 + s.o);
                        END IF;
                        IF COALESCE(s.recipient_user, '') <> '' AND s.recipient_user <> cur_phone THEN
                            l_phone := l_phone || cur_phone; l_id := l_id || s.recipient_user; l_kind := l_kind || 'user_id'::text; l_time := l_time || s.at;
                            l_order := l_order || (s.pn::bigint * 1000000 + s.o);
                        END IF;
            \(fold)            IF new_state IS NOT NULL THEN
                            cur_state := new_state; moved := true; cur_time := s.at;
                        END IF;
                    ELSIF s.mid IS NULL AND s.wamid = ANY(learnt) THEN
                        RAISE EXCEPTION 'dispatcher: a status of % waits for a wamid learnt in the same batch', s.wamid USING ERRCODE = 'P0001';
                    ELSIF s.mid IS NULL THEN
                        waiting := waiting || s.wamid;
                    END IF;
                    ev_pn := ev_pn || s.pn; ev_o := ev_o || s.o; ev_wamid := ev_wamid || s.wamid; ev_message := ev_message || m_id;
                    ev_status := ev_status || s.status; ev_ts := ev_ts || s.ts; ev_time := ev_time || s.at;
                    ev_recipient := ev_recipient || COALESCE(s.recipient, s.recipient_user); ev_callback := ev_callback || s.callback;
                    ev_code := ev_code || s.code; ev_title := ev_title || s.title; ev_details := ev_details || s.details;
                    ev_pricing := ev_pricing || s.pricing; ev_state := ev_state || new_state; ev_phone := ev_phone || s.phone;
                    ev_pricing_type := ev_pricing_type || s.pricing_type;
                END LOOP;
                \(keep)
                -- A wamid learnt here, and one a status is kept unmatched under, are locked (after the
                -- messages): of two batches at once, one teaching a wamid and one keeping a status
                -- under it, the second sees what the first committed, and leaves it to one status at
                -- a time, which applies the status with the wamid. Without it each missed the other,
                -- and the status was never applied. Locked by one of 4,096 buckets, in order, at
                -- most 64 a batch (PostgreSQL's lock table is shared and small); a batch with more
                -- takes them all at once (the bucket -1 alone, where the others take it shared).
                IF cardinality(learnt) + cardinality(waiting) > 0 THEN
                    SELECT array_agg(DISTINCT hashtext(x) & 4095 ORDER BY hashtext(x) & 4095) INTO buckets
                        FROM unnest(learnt || waiting) AS x;
                    IF cardinality(buckets) > 64 THEN
                        PERFORM pg_advisory_xact_lock(\(wamidLockClass), -1);
                    ELSE
                        PERFORM pg_advisory_xact_lock_shared(\(wamidLockClass), -1);
                        FOREACH b IN ARRAY buckets LOOP
                            PERFORM pg_advisory_xact_lock(\(wamidLockClass), b);
                        END LOOP;
                    END IF;
                    IF EXISTS (SELECT 1 FROM status_events WHERE message_id IS NULL AND wamid = ANY(learnt))
                       OR EXISTS (SELECT 1 FROM messages WHERE wamid = ANY(waiting)) THEN
                        RAISE EXCEPTION 'dispatcher: statuses wait for a wamid learnt now' USING ERRCODE = 'P0001';
                    END IF;
                END IF;
                UPDATE messages m SET state = u.state, state_rank = u.rank, wamid = COALESCE(m.wamid, u.wamid),
                    updated_at = COALESCE(u.at, m.updated_at),
                    \(times.map { "\($0) = LEAST(m.\($0), u.\($0)), " }.joined())
                    error_code = CASE WHEN u.err THEN u.code ELSE m.error_code END,
                    error_title = CASE WHEN u.err THEN u.title ELSE m.error_title END,
                    error_details = CASE WHEN u.err THEN u.details ELSE m.error_details END
                FROM unnest(u_id, u_state, u_rank, u_wamid, u_time, \(times.map { "u_\($0), " }.joined())u_error, u_code, u_title, u_details)
                    AS u(id, state, rank, wamid, at, \(times.map { "\($0), " }.joined())err, code, title, details)
                WHERE m.id = u.id;
                INSERT INTO recipient_ids (phone, id, kind, learnt_at)
                    SELECT l.phone, l.id, l.kind, l.at FROM unnest(l_phone, l_id, l_kind, l_time, l_order) AS l(phone, id, kind, at, o)
                    ORDER BY l.phone, l.id, l.o ON CONFLICT DO NOTHING;
                FOR s IN
                    WITH ins AS (
                        INSERT INTO status_events (payload_id, wamid, message_id, status, timestamp, received_at, recipient_id, callback_data,
                            error_code, error_title, error_details, pricing_category, applied, phone_number_id, pricing_type)
                        SELECT ids[v.pn], v.wamid, v.message, v.status, v.ts, v.at, v.recipient, v.callback, v.code, v.title, v.details, v.pricing,
                               v.state IS NOT NULL, v.phone, v.pricing_type
                        FROM unnest(ev_pn, ev_wamid, ev_message, ev_status, ev_ts, ev_time, ev_recipient, ev_callback, ev_code, ev_title, ev_details,
                                    ev_pricing, ev_state, ev_phone, ev_pricing_type, ev_o)
                            AS v(pn, wamid, message, status, ts, at, recipient, callback, code, title, details, pricing, state, phone, pricing_type, o)
                        ORDER BY v.wamid, v.status, v.ts, v.pn, v.o
                        ON CONFLICT (wamid, status, timestamp) DO NOTHING
                        RETURNING payload_id, message_id, applied, wamid, status, timestamp)
                    SELECT p.i, p.id,
                           (SELECT count(*) FROM unnest(ev_pn) AS q(pn) WHERE q.pn = p.i) - count(ins.payload_id) AS dups,
                           count(ins.payload_id) FILTER (WHERE ins.message_id IS NULL) AS unmatched,
                           COALESCE(array_agg(CASE ins.status \(targets) END) FILTER (WHERE ins.applied), '{}') AS applied
                    FROM unnest(ids) WITH ORDINALITY AS p(id, i) LEFT JOIN ins ON ins.payload_id = p.id
                    GROUP BY p.i, p.id ORDER BY p.i
                LOOP
                    r_index := s.i - 1; r_error := NULL; r_payload := s.id; r_duplicates := s.dups; r_unmatched := s.unmatched;
                    r_inbound := 0; r_opt_outs := 0; r_applied := s.applied;
                    RETURN NEXT;
                END LOOP;
            END
            $$
            """
    }()
}
