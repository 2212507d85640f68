/// The PostgreSQL schema: the same tables as SQLite's, with PostgreSQL's types, and the hot paths
/// (webhook intake, the send ledger) as PL/pgSQL functions so that each costs one round trip and
/// runs atomically on the server.
///
/// Named migrations, applied in order under an advisory lock (several processes may start at
/// once). Once shipped, a migration is never changed: add a new one. Functions are replaced by a
/// later migration with `CREATE OR REPLACE`.
enum PostgresSchema {
    struct Migration {
        var name: String
        /// One statement each: PostgreSQL's extended protocol takes one statement per query.
        var statements: [String]
    }

    /// Serialises migrations between processes (`pg_advisory_xact_lock`).
    static let migrationLock: Int64 = 0x6469_7370_6174_6368  // "dispatch"

    static let migrations: [Migration] = [
        Migration(
            name: "v1: runs, invoices, messages, attempts, webhooks",
            statements: [
                """
                CREATE TABLE runs (
                    name TEXT PRIMARY KEY,
                    manifest TEXT NOT NULL,
                    template TEXT NOT NULL,
                    sender TEXT NOT NULL,
                    status TEXT NOT NULL,
                    created_at DOUBLE PRECISION NOT NULL,
                    finished_at DOUBLE PRECISION,
                    halt_reason TEXT
                )
                """,
                """
                CREATE TABLE invoices (
                    run TEXT NOT NULL REFERENCES runs(name),
                    invoice_id TEXT NOT NULL,
                    line INTEGER NOT NULL,
                    tenant_name TEXT NOT NULL,
                    tenant_id TEXT,
                    landlord TEXT,
                    property TEXT,
                    amount_minor BIGINT NOT NULL,
                    currency TEXT NOT NULL,
                    period TEXT NOT NULL,
                    due_date TEXT,
                    locale TEXT NOT NULL,
                    document_url TEXT,
                    email TEXT,
                    skip_reason TEXT,
                    PRIMARY KEY (run, invoice_id)
                )
                """,
                """
                CREATE TABLE messages (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    run TEXT NOT NULL REFERENCES runs(name),
                    invoice_id TEXT NOT NULL,
                    phone TEXT NOT NULL,
                    template TEXT NOT NULL,
                    language TEXT NOT NULL,
                    state TEXT NOT NULL,
                    state_rank INTEGER NOT NULL,
                    wamid TEXT UNIQUE,
                    error_code INTEGER,
                    error_title TEXT,
                    error_details TEXT,
                    skip_reason TEXT,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    created_at DOUBLE PRECISION NOT NULL,
                    updated_at DOUBLE PRECISION NOT NULL,
                    accepted_at DOUBLE PRECISION,
                    sent_at DOUBLE PRECISION,
                    delivered_at DOUBLE PRECISION,
                    read_at DOUBLE PRECISION,
                    failed_at DOUBLE PRECISION,
                    request_body TEXT
                )
                """,
                "CREATE INDEX messages_run_state ON messages(run, state)",
                "CREATE INDEX messages_run_seq ON messages(run, seq)",
                """
                CREATE TABLE attempts (
                    message_id TEXT NOT NULL REFERENCES messages(id),
                    number INTEGER NOT NULL,
                    started_at DOUBLE PRECISION NOT NULL,
                    finished_at DOUBLE PRECISION,
                    outcome TEXT NOT NULL,
                    wamid TEXT,
                    error_code INTEGER,
                    error_title TEXT,
                    error_details TEXT,
                    PRIMARY KEY (message_id, number)
                )
                """,
                """
                CREATE TABLE webhook_payloads (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    received_at DOUBLE PRECISION NOT NULL,
                    signature TEXT,
                    body BYTEA NOT NULL,
                    parse_error TEXT,
                    statuses INTEGER NOT NULL DEFAULT 0
                )
                """,
                """
                CREATE TABLE status_events (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    payload_id BIGINT NOT NULL REFERENCES webhook_payloads(id),
                    wamid TEXT NOT NULL,
                    message_id TEXT,
                    status TEXT NOT NULL,
                    timestamp DOUBLE PRECISION NOT NULL,
                    received_at DOUBLE PRECISION NOT NULL,
                    recipient_id TEXT,
                    callback_data TEXT,
                    error_code INTEGER,
                    error_title TEXT,
                    error_details TEXT,
                    pricing_category TEXT,
                    applied BOOLEAN NOT NULL DEFAULT false,
                    UNIQUE (wamid, status, timestamp)
                )
                """,
                "CREATE INDEX status_events_message ON status_events(message_id)",
                "CREATE INDEX status_events_unmatched_wamid ON status_events(wamid) WHERE message_id IS NULL",
                "CREATE INDEX status_events_unmatched_callback ON status_events(callback_data) WHERE message_id IS NULL",
                """
                CREATE TABLE inbound_messages (
                    wamid TEXT PRIMARY KEY,
                    payload_id BIGINT NOT NULL REFERENCES webhook_payloads(id),
                    from_phone TEXT NOT NULL,
                    timestamp DOUBLE PRECISION NOT NULL,
                    type TEXT NOT NULL,
                    body TEXT
                )
                """,
                """
                CREATE TABLE opt_outs (
                    phone TEXT PRIMARY KEY,
                    at DOUBLE PRECISION NOT NULL,
                    word TEXT NOT NULL,
                    wamid TEXT
                )
                """,
            ]),
        Migration(
            name: "v2: sender leases",
            statements: [
                """
                CREATE TABLE sender_leases (
                    sender TEXT PRIMARY KEY,
                    holder TEXT NOT NULL,
                    run TEXT NOT NULL,
                    acquired_at DOUBLE PRECISION NOT NULL,
                    expires_at DOUBLE PRECISION NOT NULL
                )
                """
            ]),
        // Functions are written once, as they are now: a migration that changes one re-creates it
        // (CREATE OR REPLACE), and an earlier migration creating it uses the same text (PL/pgSQL
        // resolves tables and functions when it runs, so v3 may name what v4 adds).
        Migration(
            name: "v3: intake and ledger functions", statements: [applyStatus, attachPending, ingest, beginAttempts, recordOutcomes]),
        Migration(
            name: "v4: opt-outs under every id Meta gives a tenant",
            statements: [
                "ALTER TABLE inbound_messages ADD COLUMN from_user_id TEXT",
                "ALTER TABLE opt_outs ADD COLUMN kind TEXT NOT NULL DEFAULT 'wa_id'",
                "ALTER TABLE opt_outs ADD COLUMN source TEXT NOT NULL DEFAULT 'reply'",
                "ALTER TABLE opt_outs ADD COLUMN note TEXT",
                """
                CREATE TABLE opt_out_changes (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    key TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    change TEXT NOT NULL,
                    at DOUBLE PRECISION NOT NULL,
                    source TEXT NOT NULL,
                    word TEXT,
                    wamid TEXT,
                    note TEXT
                )
                """,
                """
                INSERT INTO opt_out_changes (key, kind, change, at, source, word, wamid)
                    SELECT phone, 'wa_id', 'out', at, 'reply', word, wamid FROM opt_outs ORDER BY at
                """,
                """
                CREATE TABLE recipient_ids (
                    phone TEXT NOT NULL,
                    id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    learnt_at DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (phone, id)
                )
                """,
                "CREATE INDEX recipient_ids_id ON recipient_ids(id)",
                learn, optOut, ingest, recordOutcomes,
            ]),
        Migration(name: "v5: the forward-only rule generated from StatusRule", statements: [applyStatus]),
        Migration(
            name: "v6: PDFs uploaded to Meta",
            statements: [
                """
                CREATE TABLE media (
                    url TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    sender TEXT NOT NULL,
                    media_id TEXT NOT NULL,
                    uploaded_at DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (url, sha256, sender)
                )
                """
            ]),
        Migration(name: "v7: held messages (Meta's message_status)", statements: [recordOutcomes]),
        // A status applies only to a message sent from the number Meta names in its webhook.
        Migration(
            name: "v8: statuses by sender number",
            statements: ["ALTER TABLE status_events ADD COLUMN phone_number_id TEXT", ingest, attachPending]),
        Migration(
            name: "v9: a sender number's sends per second, shared",
            statements: [
                """
                CREATE TABLE send_slots (
                    sender TEXT NOT NULL,
                    second BIGINT NOT NULL,
                    reserved INTEGER NOT NULL DEFAULT 0,
                    taken INTEGER NOT NULL DEFAULT 0,
                    capacity INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (sender, second)
                )
                """
            ]),
        Migration(
            name: "v10: receivers heard from",
            statements: ["CREATE TABLE receivers (id TEXT PRIMARY KEY, address TEXT NOT NULL, heard_at DOUBLE PRECISION NOT NULL)"]),
        Migration(
            name: "v11: prices and email fallbacks",
            statements: [
                "ALTER TABLE status_events ADD COLUMN pricing_type TEXT",
                """
                CREATE TABLE rate_cards (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    effective TEXT NOT NULL,
                    currency TEXT NOT NULL,
                    source TEXT NOT NULL,
                    imported_at DOUBLE PRECISION NOT NULL,
                    body TEXT NOT NULL
                )
                """,
                """
                CREATE TABLE fallbacks (
                    run TEXT NOT NULL,
                    invoice_id TEXT NOT NULL,
                    via TEXT NOT NULL,
                    address TEXT,
                    state TEXT NOT NULL,
                    detail TEXT,
                    started_at DOUBLE PRECISION NOT NULL,
                    finished_at DOUBLE PRECISION,
                    PRIMARY KEY (run, invoice_id)
                )
                """,
                ingest,
            ]),
        Migration(name: "v12: webhook payloads committed together", statements: [ingestMany]),
        // The feeder reads a run's queue by sequence while the run is still being stored: with
        // (run, seq) alone each read walked every skipped or sent row after the last queued one
        // (SQLite's (run, state) index carries its seq, the rowid, already).
        Migration(
            name: "v13: the queue by sequence",
            statements: ["CREATE INDEX messages_queued ON messages(run, seq) WHERE state = 'queued'"]),
        // What a resumed run closes (`markInterrupted`): found without reading the run's every attempt.
        Migration(
            name: "v14: attempts in flight",
            statements: ["CREATE INDEX attempts_in_flight ON attempts(message_id) WHERE outcome = 'sending'"]),
        // Webhook batches as sets (`ingestStatuses`): a few statements a batch, not a dozen a status.
        Migration(name: "v15: webhook statuses applied as sets", statements: [ingestStatuses]),
        Migration(name: "v16: an attempt begins only for a message still queued", statements: [beginAttempts]),
        Migration(
            name: "v17: webhook writes one at a time exclude those applied as sets", statements: [ingest, ingestMany, ingestStatuses]),
        // What the account-failure watcher looks for every second while a run sends: found among
        // the few failures with those codes, not by reading the run's every failed message.
        Migration(
            name: "v18: a run's failures by code",
            statements: ["CREATE INDEX messages_failed_code ON messages(run, error_code) WHERE state = 'failed'"]),
        // `GET /message-statuses?landlord=`: a landlord's messages in order through an index, not
        // by reading every message (of the run, or of every run) with its invoice. The landlord is
        // the invoice's, copied when the message is stored (its invoice is stored first). The
        // copy rewrites every message once: 63 s a million here, at the first start after upgrading,
        // with `messages` locked meanwhile. A dispatcher of before, still running on another
        // machine, stores messages without it: the trigger copies it then.
        Migration(
            name: "v19: messages by landlord",
            statements: [
                "ALTER TABLE messages ADD COLUMN landlord TEXT",
                """
                UPDATE messages m SET landlord = i.landlord FROM invoices i
                WHERE i.run = m.run AND i.invoice_id = m.invoice_id AND i.landlord IS NOT NULL
                """,
                "CREATE INDEX messages_landlord ON messages(landlord, seq) WHERE landlord IS NOT NULL",
                """
                CREATE FUNCTION dispatcher_message_landlord() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    SELECT i.landlord INTO NEW.landlord FROM invoices i WHERE i.run = NEW.run AND i.invoice_id = NEW.invoice_id;
                    RETURN NEW;
                END
                $$
                """,
                """
                CREATE TRIGGER messages_landlord_from_invoice BEFORE INSERT ON messages
                FOR EACH ROW WHEN (NEW.landlord IS NULL) EXECUTE FUNCTION dispatcher_message_landlord()
                """,
            ]),
        // A status kept unmatched, then its wamid learnt from another status's callback data: the
        // first is applied then too (it was not), and sets leave both cases to one at a time.
        Migration(name: "v20: statuses waiting for a wamid learnt from a webhook", statements: [ingest, ingestStatuses]),
    ]

    /// The forward-only rule, generated from `StatusRule.all` (as `SQLiteStore.apply`'s SQL): one
    /// UPDATE per status whose CASE conditions read the row as it was. The row is locked first, so
    /// the state returned (the new one, or NULL when the status changed nothing) is exact even with
    /// several receivers. Keeps the earliest time Meta gave for each status and learns the wamid.
    static let applyStatus: String = {
        var branches = ""
        for (i, rule) in StatusRule.all.enumerated() {
            let c = rule.sqlCondition
            let errors =
                rule.recordsError
                ? """
                ,
                                error_code = CASE WHEN \(c) THEN p_code ELSE error_code END,
                                error_title = CASE WHEN \(c) THEN p_title ELSE error_title END,
                                error_details = CASE WHEN \(c) THEN p_details ELSE error_details END
                """ : ""
            branches += """
                            \(i == 0 ? "IF" : "ELSIF") p_status = '\(rule.status.rawValue)' THEN
                                UPDATE messages SET \(rule.timeColumn) = LEAST(\(rule.timeColumn), p_ts), wamid = COALESCE(wamid, p_wamid),
                                    state = CASE WHEN \(c) THEN '\(rule.target.rawValue)' ELSE state END,
                                    state_rank = CASE WHEN \(c) THEN \(rule.target.rank) ELSE state_rank END,
                                    updated_at = CASE WHEN \(c) THEN p_time ELSE updated_at END\(errors)
                                WHERE id = p_message RETURNING state INTO new_state;

                """
        }
        return """
            CREATE OR REPLACE FUNCTION dispatcher_apply_status(p_message TEXT, p_wamid TEXT, p_status TEXT, p_ts DOUBLE PRECISION,
                p_code INTEGER, p_title TEXT, p_details TEXT, p_time DOUBLE PRECISION) RETURNS TEXT
            LANGUAGE plpgsql AS $$
            DECLARE
                old_state TEXT;
                new_state TEXT;
            BEGIN
                SELECT state INTO old_state FROM messages WHERE id = p_message FOR UPDATE;
            \(branches)    ELSE
                    -- played, or a value Meta adds later: kept in the history; only the wamid is learnt.
                    UPDATE messages SET wamid = COALESCE(wamid, p_wamid) WHERE id = p_message;
                    RETURN NULL;
                END IF;
                IF new_state IS DISTINCT FROM old_state THEN
                    RETURN new_state;
                END IF;
                RETURN NULL;
            END
            $$
            """
    }()

    /// Remembers another id Meta gave for a number we sent to (as `SQLiteStore.learn`).
    static let learn = """
        CREATE OR REPLACE FUNCTION dispatcher_learn(p_phone TEXT, p_id TEXT, p_kind TEXT, p_time DOUBLE PRECISION) RETURNS VOID
        LANGUAGE plpgsql AS $$
        BEGIN
            IF COALESCE(p_id, '') <> '' AND p_id <> p_phone THEN
                INSERT INTO recipient_ids (phone, id, kind, learnt_at) VALUES (p_phone, p_id, p_kind, p_time) ON CONFLICT DO NOTHING;
            END IF;
        END
        $$
        """

    /// Keeps an opt-out and its change (as `SQLiteStore.optOut`); 1 when new, 0 when the id was opted out already.
    static let optOut = """
        CREATE OR REPLACE FUNCTION dispatcher_opt_out(p_id TEXT, p_kind TEXT, p_at DOUBLE PRECISION, p_word TEXT, p_source TEXT,
            p_note TEXT, p_wamid TEXT) RETURNS INTEGER
        LANGUAGE plpgsql AS $$
        DECLARE
            n INTEGER;
        BEGIN
            INSERT INTO opt_outs (phone, kind, at, word, source, note, wamid) VALUES (p_id, p_kind, p_at, p_word, p_source, p_note, p_wamid)
                ON CONFLICT (phone) DO NOTHING;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 1 THEN
                INSERT INTO opt_out_changes (key, kind, change, at, source, word, wamid, note)
                    VALUES (p_id, p_kind, 'out', p_at, p_source, p_word, p_wamid, p_note);
            END IF;
            RETURN n;
        END
        $$
        """

    /// `ingest`: learns the ids statuses give for a number (`recipient_id`,
    /// `recipient_user_id`); inbound messages may come with a user id and no number; a STOP is
    /// kept under both, and only the first time its message arrives (a redelivered STOP must not
    /// undo an opt-in made since).
    static let ingest = """
        CREATE OR REPLACE FUNCTION dispatcher_ingest(p_time DOUBLE PRECISION, p_signature TEXT, p_body BYTEA, p_parse_error TEXT,
            p_status_count INTEGER, p_statuses JSONB, p_inbound JSONB,
            OUT r_payload BIGINT, OUT r_duplicates INTEGER, OUT r_unmatched INTEGER, OUT r_inbound INTEGER, OUT r_opt_outs INTEGER,
            OUT r_applied TEXT[])
        LANGUAGE plpgsql AS $$
        DECLARE
            s RECORD;
            m_id TEXT;
            m_phone TEXT;
            teaches BOOLEAN;
            new_state TEXT;
            n INTEGER;
            added INTEGER;
        BEGIN
            PERFORM pg_advisory_xact_lock(\(intakeLock));
            r_duplicates := 0; r_unmatched := 0; r_inbound := 0; r_opt_outs := 0; r_applied := '{}';
            INSERT INTO webhook_payloads (received_at, signature, body, parse_error, statuses)
                VALUES (p_time, p_signature, p_body, p_parse_error, p_status_count) RETURNING id INTO r_payload;
            FOR s IN SELECT * FROM jsonb_to_recordset(COALESCE(p_statuses, '[]'::jsonb)) AS x(wamid TEXT, status TEXT,
                         ts DOUBLE PRECISION, recipient TEXT, recipient_user TEXT, callback TEXT, code INTEGER, title TEXT, details TEXT,
                         pricing TEXT, phone TEXT, pricing_type TEXT) LOOP
                m_id := NULL; m_phone := NULL; teaches := false;
                SELECT id, phone INTO m_id, m_phone FROM messages WHERE wamid = s.wamid;
                IF m_id IS NULL AND COALESCE(s.callback, '') <> '' THEN
                    -- The send's response may have been lost: the status tells us the wamid.
                    SELECT id, phone INTO m_id, m_phone FROM messages WHERE id = s.callback AND (wamid IS NULL OR wamid = s.wamid);
                    teaches := m_id IS NOT NULL;
                END IF;
                -- (A daily /send-invoice run without an organization, api-DATE, counts as any number's:
                -- several organizations' calls once shared one.)
                IF m_id IS NOT NULL AND s.phone IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM messages mm JOIN runs r ON r.name = mm.run WHERE mm.id = m_id
                    AND (r.sender = s.phone OR (r.name LIKE 'api-%' AND position('@' in r.name) = 0))) THEN
                    -- Another number's status: never applied to this number's message (kept, reported apart).
                    m_id := NULL; m_phone := NULL;
                END IF;
                new_state := NULL;
                IF m_id IS NOT NULL THEN
                    PERFORM dispatcher_learn(m_phone, s.recipient, 'wa_id', p_time);
                    PERFORM dispatcher_learn(m_phone, s.recipient_user, 'user_id', p_time);
                    new_state := dispatcher_apply_status(m_id, s.wamid, s.status, s.ts, s.code, s.title, s.details, p_time);
                    IF teaches THEN
                        -- The wamid learnt now: statuses kept unmatched under it (they came first,
                        -- without our callback data) are applied too, as in the other order.
                        PERFORM dispatcher_attach_pending(ARRAY[m_id], ARRAY[s.wamid], p_time);
                    END IF;
                END IF;
                INSERT INTO status_events (payload_id, wamid, message_id, status, timestamp, received_at, recipient_id, callback_data,
                    error_code, error_title, error_details, pricing_category, applied, phone_number_id, pricing_type)
                VALUES (r_payload, s.wamid, m_id, s.status, s.ts, p_time, COALESCE(s.recipient, s.recipient_user), s.callback, s.code,
                    s.title, s.details, s.pricing, new_state IS NOT NULL, s.phone, s.pricing_type)
                ON CONFLICT (wamid, status, timestamp) DO NOTHING;
                GET DIAGNOSTICS n = ROW_COUNT;
                IF n = 0 THEN
                    -- Seen before: it changed nothing then, unless it was waiting for its message.
                    r_duplicates := r_duplicates + 1;
                    CONTINUE;
                END IF;
                IF m_id IS NULL THEN
                    r_unmatched := r_unmatched + 1;
                END IF;
                IF new_state IS NOT NULL THEN
                    r_applied := array_append(r_applied, new_state);
                END IF;
            END LOOP;
            FOR s IN SELECT * FROM jsonb_to_recordset(COALESCE(p_inbound, '[]'::jsonb)) AS x(wamid TEXT, sender TEXT, sender_user TEXT,
                         ts DOUBLE PRECISION, type TEXT, body TEXT, opt_out TEXT) LOOP
                INSERT INTO inbound_messages (wamid, payload_id, from_phone, from_user_id, timestamp, type, body)
                    VALUES (s.wamid, r_payload, COALESCE(s.sender, ''), s.sender_user, s.ts, s.type, s.body) ON CONFLICT (wamid) DO NOTHING;
                GET DIAGNOSTICS n = ROW_COUNT;
                CONTINUE WHEN n = 0;
                r_inbound := r_inbound + 1;
                IF s.opt_out IS NOT NULL THEN
                    added := 0;
                    IF COALESCE(s.sender, '') <> '' THEN
                        added := added + dispatcher_opt_out(s.sender, 'wa_id', s.ts, s.opt_out, 'reply', NULL, s.wamid);
                    END IF;
                    IF COALESCE(s.sender_user, '') <> '' THEN
                        added := added + dispatcher_opt_out(s.sender_user, 'user_id', s.ts, s.opt_out, 'reply', NULL, s.wamid);
                    END IF;
                    IF added > 0 THEN
                        r_opt_outs := r_opt_outs + 1;
                    END IF;
                END IF;
            END LOOP;
        END
        $$
        """

    /// The advisory lock webhook writes take first, so that they cannot deadlock on messages: a
    /// batch applied as sets locks its messages in id order and takes it shared (such batches run
    /// side by side); one status at a time (`dispatcher_ingest`, `dispatcher_ingest_many`) locks
    /// them as its statuses come and takes it alone. Those are rare (payloads with inbound
    /// messages, batches the sets leave), and wait for the set batches under way rather than
    /// deadlock with one and wait out `deadlock_timeout` (1 s).
    static let intakeLock: Int64 = 0x6469_7370_696E_7461  // "dispinta"

    /// What `dispatcher_ingest_many` and `dispatcher_ingest_statuses` answer, a row per payload
    /// (`PostgresStore.ingestResult` reads them).
    static let ingestAnswer = """
        OUT r_index INTEGER, OUT r_error TEXT, OUT r_payload BIGINT, OUT r_duplicates INTEGER, OUT r_unmatched INTEGER,
        OUT r_inbound INTEGER, OUT r_opt_outs INTEGER, OUT r_applied TEXT[]
        """

    /// `ingestMany`: several payloads' `dispatcher_ingest` in one call and one transaction (group
    /// commit across POSTs), each in a subtransaction (the EXCEPTION block): a payload that fails
    /// is rolled back alone and answered with its error (`r_error`), the others are kept.
    static let ingestMany = """
        CREATE OR REPLACE FUNCTION dispatcher_ingest_many(p_payloads JSONB, p_bodies BYTEA[], \(ingestAnswer))
        RETURNS SETOF RECORD
        LANGUAGE plpgsql AS $$
        DECLARE
            p RECORD;
            r RECORD;
        BEGIN
            -- Taken here too, outside the payloads' subtransactions (one rolled back would let go of its own).
            PERFORM pg_advisory_xact_lock(\(intakeLock));
            FOR p IN SELECT (e.n - 1)::integer AS i, e.v FROM jsonb_array_elements(p_payloads) WITH ORDINALITY AS e(v, n) LOOP
                r_index := p.i;
                r_error := NULL; r_payload := NULL; r_duplicates := NULL; r_unmatched := NULL; r_inbound := NULL;
                r_opt_outs := NULL; r_applied := NULL;
                BEGIN
                    SELECT * INTO r FROM dispatcher_ingest((p.v->>'time')::float8, p.v->>'signature', p_bodies[p.i + 1],
                        p.v->>'parse_error', (p.v->>'count')::integer, p.v->'statuses', p.v->'inbound');
                    r_payload := r.r_payload; r_duplicates := r.r_duplicates; r_unmatched := r.r_unmatched;
                    r_inbound := r.r_inbound; r_opt_outs := r.r_opt_outs; r_applied := r.r_applied;
                EXCEPTION WHEN OTHERS THEN
                    r_error := SQLSTATE || ': ' || SQLERRM;
                END;
                RETURN NEXT;
            END LOOP;
        END
        $$
        """

    /// `recordOutcomes`: an accepted send whose `wa_id` differs from the number is remembered.
    static let recordOutcomes = """
        CREATE OR REPLACE FUNCTION dispatcher_record_outcomes(p_outcomes JSONB, p_time DOUBLE PRECISION) RETURNS VOID
        LANGUAGE plpgsql AS $$
        DECLARE
            o RECORD;
        BEGIN
            FOR o IN SELECT * FROM jsonb_to_recordset(p_outcomes) AS x(kind TEXT, id TEXT, number INTEGER, wamid TEXT, wa_id TEXT,
                         code INTEGER, title TEXT, details TEXT, final BOOLEAN) LOOP
                IF o.kind = 'accepted' OR o.kind = 'held' THEN
                    UPDATE attempts SET outcome = 'accepted', finished_at = p_time, wamid = o.wamid, error_code = NULL,
                        error_title = NULL, error_details = NULL
                    WHERE message_id = o.id AND number = o.number;
                    UPDATE messages SET wamid = o.wamid, accepted_at = COALESCE(accepted_at, p_time), updated_at = p_time,
                        state = CASE WHEN state_rank < \(MessageState.accepted.rank) THEN o.kind ELSE state END,
                        state_rank = CASE WHEN state_rank < \(MessageState.accepted.rank) THEN \(MessageState.accepted.rank) ELSE state_rank END
                    WHERE id = o.id;
                    IF o.wa_id IS NOT NULL THEN
                        PERFORM dispatcher_learn(phone, o.wa_id, 'wa_id', p_time) FROM messages WHERE id = o.id;
                    END IF;
                    PERFORM dispatcher_attach_pending(ARRAY[o.id], ARRAY[o.wamid], p_time);
                ELSIF o.kind = 'rejected' THEN
                    UPDATE attempts SET outcome = CASE WHEN o.final THEN 'rejected' ELSE 'retry' END, finished_at = p_time,
                        wamid = NULL, error_code = o.code, error_title = o.title, error_details = o.details
                    WHERE message_id = o.id AND number = o.number;
                    UPDATE messages SET state = CASE WHEN o.final THEN 'failed' ELSE 'queued' END,
                        state_rank = CASE WHEN o.final THEN \(MessageState.failed.rank) ELSE \(MessageState.queued.rank) END,
                        error_code = o.code, error_title = o.title, error_details = o.details, updated_at = p_time,
                        failed_at = CASE WHEN o.final THEN p_time ELSE failed_at END
                    WHERE id = o.id AND state = 'sending';
                ELSE
                    UPDATE attempts SET outcome = 'unknown', finished_at = p_time, wamid = NULL, error_code = NULL,
                        error_title = o.title, error_details = NULL
                    WHERE message_id = o.id AND number = o.number;
                    UPDATE messages SET \(MessageState.unknown.sqlAssignment), updated_at = p_time WHERE id = o.id AND state = 'sending';
                END IF;
            END LOOP;
        END
        $$
        """

    /// Statuses that arrived before their message was known (`p_wamids[i]` is '' when the wamid
    /// is not known yet), applied in Meta's time order. Returns how many were attached.
    static let attachPending = """
        CREATE OR REPLACE FUNCTION dispatcher_attach_pending(p_ids TEXT[], p_wamids TEXT[], p_time DOUBLE PRECISION) RETURNS INTEGER
        LANGUAGE plpgsql AS $$
        DECLARE
            e RECORD;
            i INTEGER;
            new_state TEXT;
            attached INTEGER := 0;
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM status_events WHERE message_id IS NULL) THEN
                RETURN 0;
            END IF;
            FOR i IN 1 .. COALESCE(cardinality(p_ids), 0) LOOP
                FOR e IN SELECT * FROM status_events
                         WHERE message_id IS NULL AND (callback_data = p_ids[i] OR wamid = p_wamids[i])
                         ORDER BY timestamp, id LOOP
                    -- A status naming us only by callback data, with another wamid than ours, is not ours.
                    CONTINUE WHEN p_wamids[i] <> '' AND e.wamid <> p_wamids[i];
                    -- Nor one about another sender number.
                    CONTINUE WHEN e.phone_number_id IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM messages mm JOIN runs r ON r.name = mm.run WHERE mm.id = p_ids[i]
                        AND (r.sender = e.phone_number_id OR (r.name LIKE 'api-%' AND position('@' in r.name) = 0)));
                    new_state := dispatcher_apply_status(p_ids[i], e.wamid, e.status, e.timestamp, e.error_code, e.error_title,
                                                         e.error_details, p_time);
                    UPDATE status_events SET message_id = p_ids[i], applied = new_state IS NOT NULL WHERE id = e.id;
                    attached := attached + 1;
                END LOOP;
            END LOOP;
            RETURN attached;
        END
        $$
        """

    /// The ledger entry before requests leave: each message `sending`, a new attempt numbered.
    /// A message no longer `queued` (taken since it was read) is left alone and gets no number.
    /// Fails (and changes nothing) if a message does not exist.
    static let beginAttempts = """
        CREATE OR REPLACE FUNCTION dispatcher_begin_attempts(p_ids TEXT[], p_time DOUBLE PRECISION)
            RETURNS TABLE (r_id TEXT, r_number INTEGER)
        LANGUAGE plpgsql AS $$
        DECLARE
            n INTEGER;
            missing TEXT;
        BEGIN
            RETURN QUERY
                WITH moved AS (
                    UPDATE messages SET \(MessageState.sending.sqlAssignment), attempts = attempts + 1, updated_at = p_time
                    WHERE id = ANY(p_ids) AND state = 'queued' RETURNING id, attempts
                )
                INSERT INTO attempts (message_id, number, started_at, outcome)
                SELECT id, attempts, p_time, 'sending' FROM moved
                RETURNING message_id, number;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n < cardinality(p_ids) THEN
                SELECT x INTO missing FROM unnest(p_ids) AS x WHERE NOT EXISTS (SELECT 1 FROM messages WHERE id = x) LIMIT 1;
                IF missing IS NOT NULL THEN
                    RAISE EXCEPTION 'no message %', missing;
                END IF;
            END IF;
        END
        $$
        """

}
