import Foundation
import GRDB

/// The embedded store: one SQLite file in WAL mode, shared by `serve` and the CLI.
///
/// Commits are durable (`synchronous=FULL`): a webhook acknowledged with a 200 survives a power
/// cut. Writers wait up to `busyTimeout` for each other; past that a write fails, and the webhook
/// route answers 503 so that Meta retries.
public final class SQLiteStore: DispatchStore {
    let pool: DatabasePool
    public let path: String
    private let batcher: IngestBatcher

    /// Opens (creating if needed) and migrates the database at `path`.
    public init(path: String, busyTimeout: Double = 5) throws {
        self.path = path
        self.batcher = IngestBatcher()
        var configuration = Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // Readers do not map the file (SQLite's default): a scan of a million-message run
            // mapped all of it into the process (a report's peak 620-640 MB, a send's estimate
            // 1.2 GB), and reading through pread was no slower (measured, docs/benchmarks.md).
            // The writer keeps 64 MB of pages (SQLite's default is 2 MB): message ids are hashes, so
            // a million-message run inserts all over its unique index, and with the default cache
            // each insert read its leaf page back from the file.
            if !db.configuration.readonly {
                try db.execute(sql: "PRAGMA cache_size = -65536")
            }
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            if try pool.read({ try SQLiteStore.migrator.hasBeenSuperseded($0) }) {
                throw StoreError(
                    "it was upgraded by a newer dispatcher (its schema has migrations this one does not know): use that version")
            }
            let (applied, pending) = try pool.read { db in
                (try SQLiteStore.migrator.appliedIdentifiers(db), SQLiteStore.migrator.migrations.count)
            }
            if !applied.isEmpty && applied.count < pending {
                migrationNotice(pending - applied.count, database: "SQLite database at \(path)")
            }
            try SQLiteStore.migrator.migrate(pool)
        } catch {
            throw StoreError("cannot open the SQLite database at \(path): \(error)")
        }
    }

    // MARK: - Schema

    /// Named migrations: once shipped, never changed (add new ones instead).
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: runs, invoices, messages, attempts, webhooks") { db in
            try db.execute(
                sql: """
                    CREATE TABLE runs (
                        name TEXT PRIMARY KEY NOT NULL,
                        manifest TEXT NOT NULL,
                        template TEXT NOT NULL,
                        sender TEXT NOT NULL,
                        status TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        finished_at REAL,
                        halt_reason TEXT
                    );
                    CREATE TABLE invoices (
                        run TEXT NOT NULL REFERENCES runs(name),
                        invoice_id TEXT NOT NULL,
                        line INTEGER NOT NULL,
                        tenant_name TEXT NOT NULL,
                        tenant_id TEXT,
                        landlord TEXT,
                        property TEXT,
                        amount_minor INTEGER NOT NULL,
                        currency TEXT NOT NULL,
                        period TEXT NOT NULL,
                        due_date TEXT,
                        locale TEXT NOT NULL,
                        document_url TEXT,
                        email TEXT,
                        skip_reason TEXT,
                        PRIMARY KEY (run, invoice_id)
                    );
                    CREATE TABLE messages (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
                        created_at REAL NOT NULL,
                        updated_at REAL NOT NULL,
                        accepted_at REAL,
                        sent_at REAL,
                        delivered_at REAL,
                        read_at REAL,
                        failed_at REAL,
                        request_body TEXT
                    );
                    CREATE INDEX messages_run_state ON messages(run, state);
                    CREATE TABLE attempts (
                        message_id TEXT NOT NULL REFERENCES messages(id),
                        number INTEGER NOT NULL,
                        started_at REAL NOT NULL,
                        finished_at REAL,
                        outcome TEXT NOT NULL,
                        wamid TEXT,
                        error_code INTEGER,
                        error_title TEXT,
                        error_details TEXT,
                        PRIMARY KEY (message_id, number)
                    );
                    CREATE TABLE webhook_payloads (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        received_at REAL NOT NULL,
                        signature TEXT,
                        body BLOB NOT NULL,
                        parse_error TEXT,
                        statuses INTEGER NOT NULL DEFAULT 0
                    );
                    CREATE TABLE status_events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        payload_id INTEGER NOT NULL REFERENCES webhook_payloads(id),
                        wamid TEXT NOT NULL,
                        message_id TEXT,
                        status TEXT NOT NULL,
                        timestamp REAL NOT NULL,
                        received_at REAL NOT NULL,
                        recipient_id TEXT,
                        callback_data TEXT,
                        error_code INTEGER,
                        error_title TEXT,
                        error_details TEXT,
                        pricing_category TEXT,
                        applied INTEGER NOT NULL DEFAULT 0,
                        UNIQUE (wamid, status, timestamp)
                    );
                    CREATE INDEX status_events_message ON status_events(message_id);
                    CREATE INDEX status_events_unmatched_wamid ON status_events(wamid) WHERE message_id IS NULL;
                    CREATE INDEX status_events_unmatched_callback ON status_events(callback_data) WHERE message_id IS NULL;
                    CREATE TABLE inbound_messages (
                        wamid TEXT PRIMARY KEY NOT NULL,
                        payload_id INTEGER NOT NULL REFERENCES webhook_payloads(id),
                        from_phone TEXT NOT NULL,
                        timestamp REAL NOT NULL,
                        type TEXT NOT NULL,
                        body TEXT
                    );
                    CREATE TABLE opt_outs (
                        phone TEXT PRIMARY KEY NOT NULL,
                        at REAL NOT NULL,
                        word TEXT NOT NULL,
                        wamid TEXT
                    );
                    """)
        }
        migrator.registerMigration("v2: messages of a run in order") { db in
            // Reports and the send queue page through a run by sequence: without this index SQLite
            // sorted the whole run for every page (a million-message report took 107 s).
            try db.execute(sql: "CREATE INDEX messages_run_seq ON messages(run, seq)")
        }
        migrator.registerMigration("v3: sender leases") { db in
            try db.execute(
                sql: """
                    CREATE TABLE sender_leases (
                        sender TEXT PRIMARY KEY NOT NULL,
                        holder TEXT NOT NULL,
                        run TEXT NOT NULL,
                        acquired_at REAL NOT NULL,
                        expires_at REAL NOT NULL
                    )
                    """)
        }
        migrator.registerMigration("v4: opt-outs under every id Meta gives a tenant") { db in
            try db.execute(
                sql: """
                    ALTER TABLE inbound_messages ADD COLUMN from_user_id TEXT;
                    ALTER TABLE opt_outs ADD COLUMN kind TEXT NOT NULL DEFAULT 'wa_id';
                    ALTER TABLE opt_outs ADD COLUMN source TEXT NOT NULL DEFAULT 'reply';
                    ALTER TABLE opt_outs ADD COLUMN note TEXT;
                    CREATE TABLE opt_out_changes (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        key TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        change TEXT NOT NULL,
                        at REAL NOT NULL,
                        source TEXT NOT NULL,
                        word TEXT,
                        wamid TEXT,
                        note TEXT
                    );
                    INSERT INTO opt_out_changes (key, kind, change, at, source, word, wamid)
                        SELECT phone, 'wa_id', 'out', at, 'reply', word, wamid FROM opt_outs ORDER BY at;
                    CREATE TABLE recipient_ids (
                        phone TEXT NOT NULL,
                        id TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        learnt_at REAL NOT NULL,
                        PRIMARY KEY (phone, id)
                    );
                    CREATE INDEX recipient_ids_id ON recipient_ids(id);
                    """)
        }
        migrator.registerMigration("v5: PDFs uploaded to Meta") { db in
            try db.execute(
                sql: """
                    CREATE TABLE media (
                        url TEXT NOT NULL,
                        sha256 TEXT NOT NULL,
                        sender TEXT NOT NULL,
                        media_id TEXT NOT NULL,
                        uploaded_at REAL NOT NULL,
                        PRIMARY KEY (url, sha256, sender)
                    )
                    """)
        }
        migrator.registerMigration("v6: statuses by sender number") { db in
            // A status applies only to a message sent from the number Meta names in its webhook;
            // one for another number is kept (and reported) unapplied.
            try db.execute(sql: "ALTER TABLE status_events ADD COLUMN phone_number_id TEXT")
        }
        migrator.registerMigration("v7: a sender number's sends per second, shared") { db in
            try db.execute(
                sql: """
                    CREATE TABLE send_slots (
                        sender TEXT NOT NULL,
                        second INTEGER NOT NULL,
                        reserved INTEGER NOT NULL DEFAULT 0,
                        taken INTEGER NOT NULL DEFAULT 0,
                        capacity INTEGER NOT NULL DEFAULT 0,
                        PRIMARY KEY (sender, second)
                    )
                    """)
        }
        migrator.registerMigration("v8: receivers heard from") { db in
            try db.execute(
                sql: "CREATE TABLE receivers (id TEXT PRIMARY KEY NOT NULL, address TEXT NOT NULL, heard_at REAL NOT NULL)")
        }
        migrator.registerMigration("v9: prices and email fallbacks") { db in
            try db.execute(
                sql: """
                    ALTER TABLE status_events ADD COLUMN pricing_type TEXT;
                    CREATE TABLE rate_cards (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        effective TEXT NOT NULL,
                        currency TEXT NOT NULL,
                        source TEXT NOT NULL,
                        imported_at REAL NOT NULL,
                        body TEXT NOT NULL
                    );
                    CREATE TABLE fallbacks (
                        run TEXT NOT NULL,
                        invoice_id TEXT NOT NULL,
                        via TEXT NOT NULL,
                        address TEXT,
                        state TEXT NOT NULL,
                        detail TEXT,
                        started_at REAL NOT NULL,
                        finished_at REAL,
                        PRIMARY KEY (run, invoice_id)
                    );
                    """)
        }
        migrator.registerMigration("v10: a message's pricing on its row; skipped invoices indexed") { db in
            // What Meta's statuses said of a message's pricing (the greatest value, as the history
            // gives it), kept on the message so that a report reads it in its one pass instead of
            // looking up each message's statuses (3 s a million on this machine).
            try db.execute(
                sql: """
                    ALTER TABLE messages ADD COLUMN pricing_category TEXT;
                    ALTER TABLE messages ADD COLUMN pricing_type TEXT;
                    UPDATE messages SET
                        pricing_category = (SELECT MAX(e.pricing_category) FROM status_events e WHERE e.message_id = messages.id),
                        pricing_type = (SELECT MAX(e.pricing_type) FROM status_events e WHERE e.message_id = messages.id)
                    WHERE id IN (SELECT message_id FROM status_events
                                 WHERE message_id IS NOT NULL AND (pricing_category IS NOT NULL OR pricing_type IS NOT NULL));
                    CREATE INDEX invoices_skipped ON invoices(run, line) WHERE skip_reason IS NOT NULL;
                    """)
        }
        migrator.registerMigration("v11: attempts in flight") { db in
            // What a resumed run closes (`markInterrupted`): found without reading the run's every attempt.
            try db.execute(sql: "CREATE INDEX attempts_in_flight ON attempts(message_id) WHERE outcome = 'sending'")
        }
        migrator.registerMigration("v12: a run's failures by code") { db in
            // What the account-failure watcher looks for every second (`firstFailureSQL`).
            try db.execute(sql: "CREATE INDEX messages_failed_code ON messages(run, error_code) WHERE state = 'failed'")
        }
        migrator.registerMigration("v13: messages by landlord") { db in
            // `GET /message-statuses?landlord=`: a landlord's messages in order, found through an
            // index instead of reading every message of the run (or of every run) and its invoice
            // (1.3 s a page for a landlord of 100 invoices in a million, 2026-12-03). The landlord
            // is the invoice's, copied when the message is stored (its invoice is stored first).
            // The copy rewrites every message once: about 9 s a million, at the first start after
            // upgrading. A dispatcher of before, still running, stores messages without it: the
            // trigger copies it then (the dispatcher's own inserts give it, and cost the trigger
            // one lookup only when their invoice has no landlord).
            try db.execute(
                sql: """
                    ALTER TABLE messages ADD COLUMN landlord TEXT;
                    UPDATE messages SET landlord = (SELECT i.landlord FROM invoices i WHERE i.run = messages.run AND i.invoice_id = messages.invoice_id);
                    CREATE INDEX messages_landlord ON messages(landlord, seq) WHERE landlord IS NOT NULL;
                    CREATE TRIGGER messages_landlord_from_invoice AFTER INSERT ON messages
                    WHEN NEW.landlord IS NULL
                      AND EXISTS (SELECT 1 FROM invoices i WHERE i.run = NEW.run AND i.invoice_id = NEW.invoice_id AND i.landlord IS NOT NULL)
                    BEGIN
                        UPDATE messages SET landlord = (SELECT i.landlord FROM invoices i WHERE i.run = NEW.run AND i.invoice_id = NEW.invoice_id)
                        WHERE seq = NEW.seq;
                    END;
                    """)
        }
        return migrator
    }

    // MARK: - Runs

    public func saveRun(_ run: RunRecord) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO runs (name, manifest, template, sender, status, created_at, finished_at, halt_reason)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at,
                        halt_reason = excluded.halt_reason
                    """,
                arguments: [
                    run.name, run.manifest, run.template, run.sender, run.status.rawValue, run.createdAt, run.finishedAt, run.haltReason,
                ])
        }
    }

    public func run(named name: String) async throws -> RunRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE name = ?", arguments: [name]).map(RunRecord.init(row:))
        }
    }

    public func runs(including: @Sendable (String) -> Bool) async throws -> [RunSummary] {
        try await pool.read { db in
            let runs = try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY created_at DESC, name").map(RunRecord.init(row:))
            return try runs.filter { including($0.name) }.map { run in
                let invoices = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM invoices WHERE run = ?", arguments: [run.name]) ?? 0
                return RunSummary(run: run, invoices: invoices, counts: try Self.counts(db, run: run.name))
            }
        }
    }

    public func stateCounts(run: String) async throws -> [MessageState: Int] {
        try await pool.read { db in try Self.counts(db, run: run) }
    }

    public func heardFromReceiver(id: String, address: String, at time: Double) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO receivers (id, address, heard_at) VALUES (?, ?, ?)
                    ON CONFLICT (id) DO UPDATE SET address = excluded.address, heard_at = excluded.heard_at
                    """, arguments: [id, address, time])
        }
    }

    public func lastHeardReceiver() async throws -> (address: String, at: Double)? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT address, heard_at FROM receivers ORDER BY heard_at DESC LIMIT 1").map { ($0[0], $0[1]) }
        }
    }

    public func statusesForOtherNumbers() async throws -> [(number: String, statuses: Int)] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT phone_number_id, COUNT(*) FROM status_events
                    WHERE message_id IS NULL AND phone_number_id IS NOT NULL
                    GROUP BY phone_number_id ORDER BY phone_number_id
                    """
            ).map { ($0[0], $0[1]) }
        }
    }

    static func counts(_ db: Database, run: String) throws -> [MessageState: Int] {
        var counts: [MessageState: Int] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM messages WHERE run = ? GROUP BY state", arguments: [run]) {
            if let state = MessageState(rawValue: row["state"]) { counts[state] = row["n"] }
        }
        return counts
    }

    // MARK: - Invoices and messages

    public func addInvoices(_ invoices: [InvoiceRecord]) async throws {
        try await pool.write { db in
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO invoices (run, invoice_id, line, tenant_name, tenant_id, landlord, property, amount_minor,
                        currency, period, due_date, locale, document_url, email, skip_reason)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(run, invoice_id) DO NOTHING
                    """)
            for i in invoices {
                try statement.execute(arguments: [
                    i.run, i.invoiceID, i.line, i.tenantName, i.tenantID, i.landlord, i.property, i.amountMinor,
                    i.currency, i.period, i.dueDate, i.locale, i.documentURL, i.email, i.skipReason,
                ])
            }
        }
    }

    public func addMessages(_ messages: [NewMessage]) async throws -> [MessageInsert] {
        let now = Date().timeIntervalSince1970
        return try await pool.write { db in
            let insert = try db.cachedStatement(
                sql: """
                    INSERT INTO messages (id, run, invoice_id, phone, template, language, state, state_rank, skip_reason,
                        created_at, updated_at, request_body, landlord)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                        (SELECT landlord FROM invoices WHERE run = ?2 AND invoice_id = ?3))
                    ON CONFLICT(id) DO NOTHING
                    """)
            var outcomes: [MessageInsert] = []
            outcomes.reserveCapacity(messages.count)
            // Statuses that arrived before their message are rare; when there is none at all (this
            // transaction sees every one stored), no message needs looking for them.
            let anyPending = try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM status_events WHERE message_id IS NULL)") ?? true
            for m in messages {
                try insert.execute(arguments: [
                    m.id, m.run, m.invoiceID, m.phone, m.template, m.language, m.state.rawValue, m.state.rank,
                    m.skipReason, now, now, m.requestBody,
                ])
                if db.changesCount == 1 {
                    outcomes.append(.inserted(id: m.id))
                    // A status may have arrived before the message was stored (the send's
                    // response lost, a crash): it is applied now.
                    if anyPending { try Self.attachPendingEvents(db, messageID: m.id, wamid: nil) }
                } else {
                    let row = try Row.fetchOne(db, sql: "SELECT run, state FROM messages WHERE id = ?", arguments: [m.id])!
                    outcomes.append(.exists(id: m.id, run: row["run"], state: MessageState(rawValue: row["state"]) ?? .unknown))
                }
            }
            return outcomes
        }
    }

    public func storedMessages(ids: [String]) async throws -> [String: StoredMessage] {
        try await pool.read { db in
            var found: [String: StoredMessage] = [:]
            for start in stride(from: 0, to: ids.count, by: 500) {
                let chunk = Array(ids[start..<min(start + 500, ids.count)])
                let marks = chunk.map { _ in "?" }.joined(separator: ",")
                for row in try Row.fetchAll(
                    db, sql: "SELECT id, run, state FROM messages WHERE id IN (\(marks))", arguments: StatementArguments(chunk))
                {
                    found[row["id"]] = StoredMessage(run: row["run"], state: MessageState(rawValue: row["state"]) ?? .unknown)
                }
            }
            return found
        }
    }

    /// The messages with their tenant's name (and the landlord, on the message itself). With
    /// `index`, the messages are read through that index only.
    static func messageColumns(index: String? = nil) -> String {
        """
        m.*, i.tenant_name AS tenant_name
        FROM messages m \(index.map { "INDEXED BY \($0) " } ?? "")LEFT JOIN invoices i ON i.run = m.run AND i.invoice_id = m.invoice_id
        """
    }

    public func message(_ idOrWamid: String) async throws -> MessageRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.messageColumns()) WHERE m.id = ? OR m.wamid = ?", arguments: [idOrWamid, idOrWamid])
                .map(MessageRecord.init(row:))
        }
    }

    public func events(messageID: String) async throws -> [StatusEventRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM status_events WHERE message_id = ? ORDER BY timestamp, id", arguments: [messageID])
                .map(StatusEventRecord.init(row:))
        }
    }

    public func attempts(messageID: String) async throws -> [AttemptRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM attempts WHERE message_id = ? ORDER BY number", arguments: [messageID])
                .map(AttemptRecord.init(row:))
        }
    }

    public func messages(_ filter: MessageFilter) async throws -> MessagePage {
        let limit = max(1, min(filter.limit, 1000))
        let (sql, arguments) = Self.messagesSQL(filter, limit: limit + 1)
        return try await pool.read { db in
            let rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            let messages = rows.prefix(limit).map(MessageRecord.init(row:))
            return MessagePage(messages: Array(messages), next: rows.count > limit ? messages.last?.sequence : nil)
        }
    }

    /// A page of `messages(_:)`: the statement and its arguments.
    static func messagesSQL(_ filter: MessageFilter, limit: Int) -> (String, StatementArguments) {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let run = filter.run { conditions.append("m.run = ?"); arguments += [run] }
        if let state = filter.state { conditions.append("m.state = ?"); arguments += [state.rawValue] }
        if let landlord = filter.landlord {
            conditions.append("m.landlord = ?")
            arguments += [landlord]
            // Only the stretch of the landlord's messages where the run's lie (the first and the
            // last of the run found by the (run, seq) index), not their earlier runs'.
            if let run = filter.run {
                conditions.append(
                    "m.seq BETWEEN (SELECT MIN(seq) FROM messages WHERE run = ?) AND (SELECT MAX(seq) FROM messages WHERE run = ?)")
                arguments += [run, run]
            }
        }
        if let after = filter.after { conditions.append("m.seq > ?"); arguments += [after] }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        // A landlord's messages through their own index: without statistics SQLite could as well
        // take the run's, and walk all of it for a landlord with a few.
        let columns = messageColumns(index: filter.landlord == nil ? nil : "messages_landlord")
        return ("SELECT \(columns) \(whereClause) ORDER BY m.seq LIMIT \(limit)", arguments)
    }

    // MARK: - Webhooks

    public func ingestWebhook(
        body: [UInt8], signature: String?, contents: WebhookContents?, parseError: String?,
        at time: Double
    ) async throws -> IngestResult {
        try await batcher.submit(
            IngestJob(body: body, signature: signature, contents: contents, parseError: parseError, time: time),
            write: { try await self.writeBatch($0) })
    }

    /// Stores webhook payloads that arrived together in one transaction (one fsync). Written
    /// first without a savepoint each (two statements fewer a payload); should one of them fail,
    /// that transaction is rolled back and the batch written again with a savepoint per payload,
    /// so that the failing one rolls back alone. Only a payload's failure is written again: the
    /// transaction's own (the database locked past the busy timeout) is thrown at once, as before,
    /// not waited for twice. Called by the batcher only.
    func writeBatch(_ jobs: [IngestJob]) async throws -> [Result<IngestResult, any Error>] {
        if jobs.count > 1 {
            do {
                return try await pool.write { db in
                    do {
                        return try jobs.map { .success(try Self.ingest(db, $0)) }
                    } catch {
                        throw PayloadRefused()
                    }
                }
            } catch is PayloadRefused {
                // Rolled back: written again below, a savepoint each.
            }
        }
        return try await pool.write { db in
            jobs.map { job in
                Result {
                    var result: IngestResult? = nil
                    try db.inSavepoint {
                        result = try Self.ingest(db, job)
                        return .commit
                    }
                    return result!
                }
            }
        }
    }

    /// A payload of a batch written without savepoints failed (`writeBatch`).
    private struct PayloadRefused: Error {}

    static func ingest(_ db: Database, _ job: IngestJob) throws -> IngestResult {
        try db.cachedStatement(
            sql: "INSERT INTO webhook_payloads (received_at, signature, body, parse_error, statuses) VALUES (?, ?, ?, ?, ?)"
        )
        .execute(arguments: [job.time, job.signature, Data(job.body), job.parseError, job.contents?.statuses.count ?? 0])
        var result = IngestResult(payloadID: db.lastInsertedRowID)
        guard let contents = job.contents else { return result }
        for update in contents.statuses {
            result.statuses += 1
            try Self.ingest(db, update, payloadID: result.payloadID, at: job.time, into: &result)
        }
        let inbound = try db.cachedStatement(
            sql: """
                INSERT INTO inbound_messages (wamid, payload_id, from_phone, from_user_id, timestamp, type, body) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(wamid) DO NOTHING
                """)
        for message in contents.inbound {
            try inbound.execute(arguments: [
                message.wamid, result.payloadID, message.from ?? "", message.fromUserID,
                Double(message.timestamp), message.type, message.body,
            ])
            // A STOP Meta delivers again is not a new opt-out (it would undo an opt-in made since).
            guard db.changesCount == 1 else { continue }
            result.inbound += 1
            guard message.isOptOut else { continue }
            var added = false
            for (id, kind) in message.senderIDs {
                added =
                    try optOut(
                        db,
                        OptOut(
                            id: id, kind: kind, at: Double(message.timestamp), word: message.body?.uppercased() ?? "",
                            source: .reply, wamid: message.wamid)) || added
            }
            if added { result.optOuts += 1 }
        }
        return result
    }

    /// Keeps an opt-out and its change; false when the id was opted out already.
    static func optOut(_ db: Database, _ o: OptOut) throws -> Bool {
        try db.cachedStatement(
            sql: """
                INSERT INTO opt_outs (phone, kind, at, word, source, note, wamid) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(phone) DO NOTHING
                """
        ).execute(arguments: [o.id, o.kind.rawValue, o.at, o.word, o.source.rawValue, o.note, o.wamid])
        guard db.changesCount == 1 else { return false }
        try db.cachedStatement(
            sql: """
                INSERT INTO opt_out_changes (key, kind, change, at, source, word, wamid, note) VALUES (?, ?, 'out', ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [o.id, o.kind.rawValue, o.at, o.source.rawValue, o.word, o.wamid, o.note])
        return true
    }

    /// Remembers another id Meta gave for a number we sent to.
    static func learn(_ db: Database, phone: String, id: String, kind: OptOutKind, at time: Double) throws {
        guard !id.isEmpty, id != phone else { return }
        try db.cachedStatement(sql: "INSERT INTO recipient_ids (phone, id, kind, learnt_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .execute(arguments: [phone, id, kind.rawValue, time])
    }

    /// Matches one status to its message (by wamid, else by our id echoed in
    /// `biz_opaque_callback_data`), applies it under the forward-only rule, and keeps it in the history.
    static func ingest(_ db: Database, _ u: StatusUpdate, payloadID: Int64, at time: Double, into result: inout IngestResult) throws {
        var match = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT id, state, phone, run FROM messages WHERE wamid = ?"), arguments: [u.wamid])
        var teaches = false
        if match == nil, let callback = u.callbackData, !callback.isEmpty {
            // The send's response may have been lost: the status tells us the wamid (applied below).
            match = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT id, state, phone, run FROM messages WHERE id = ? AND (wamid IS NULL OR wamid = ?)"),
                arguments: [callback, u.wamid])
            teaches = match != nil
        }
        if let found = match, let number = u.phoneNumberID, try !sentFrom(db, run: found["run"], number: number) {
            // Another number's status: never applied to this number's message (kept, reported apart).
            match = nil
        }
        if let match {
            let phone: String = match["phone"]
            if let id = u.recipientID { try learn(db, phone: phone, id: id, kind: .waID, at: time) }
            if let id = u.recipientUserID { try learn(db, phone: phone, id: id, kind: .userID, at: time) }
        }
        var applied: MessageState? = nil
        if let match {
            applied = try apply(db, u, to: match["id"], from: MessageState(rawValue: match["state"]) ?? .unknown, at: time)
            // The wamid learnt now: statuses kept unmatched under it (they came first, without our
            // callback data) are applied too, as they would have been in the other order.
            if teaches { try attachPendingEvents(db, messageID: match["id"], wamid: u.wamid) }
        }
        try db.cachedStatement(
            sql: """
                INSERT INTO status_events (payload_id, wamid, message_id, status, timestamp, received_at, recipient_id, callback_data,
                    error_code, error_title, error_details, pricing_category, applied, phone_number_id, pricing_type)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(wamid, status, timestamp) DO NOTHING
                """
        ).execute(arguments: [
            payloadID, u.wamid, match?["id"] as String?, u.status.rawValue, Double(u.timestamp), time, u.recipientID ?? u.recipientUserID,
            u.callbackData, u.errorCode, u.errorTitle, u.errorDetails, u.pricingCategory, applied != nil, u.phoneNumberID,
            u.pricingType,
        ])
        if db.changesCount == 0 {
            // Seen before: it changed nothing then, unless it was waiting for its message.
            result.duplicates += 1
            return
        }
        if match == nil { result.unmatched += 1 }
        if let applied { result.applied[applied, default: 0] += 1 }
    }

    /// The forward-only rule, in SQL: one UPDATE whose CASE conditions read the row as it was, so
    /// two receivers applying statuses at once cannot undo each other. Also keeps the earliest
    /// timestamp Meta gave for each status and learns the wamid. Returns the new state if it changed
    /// (from `current`, read in the same transaction).
    static func apply(
        _ db: Database, _ u: StatusUpdate, to messageID: String, from current: MessageState, at time: Double
    ) throws -> MessageState? {
        // (The statements are built once: built for every status, their text and its hash for
        // GRDB's statement cache showed in the writer's profile.)
        let arguments: StatementArguments = [
            Double(u.timestamp), u.wamid, time, messageID, u.errorCode, u.errorTitle, u.errorDetails, u.pricingCategory, u.pricingType,
        ]
        guard let sql = applySQL[u.status.rawValue] else {
            // `played`, future values: kept in the history; only the wamid (and pricing) is learnt.
            try db.cachedStatement(sql: learnOnlySQL).execute(arguments: arguments)
            return nil
        }
        try db.cachedStatement(sql: sql).execute(arguments: arguments)
        return current.applying(u.status)
    }

    /// The message's pricing: the greatest value any status gave (as `status_events` holds them).
    private static let pricingSQL = """
        pricing_category = CASE WHEN pricing_category IS NULL OR ?8 > pricing_category THEN COALESCE(?8, pricing_category)
            ELSE pricing_category END,
        pricing_type = CASE WHEN pricing_type IS NULL OR ?9 > pricing_type THEN COALESCE(?9, pricing_type) ELSE pricing_type END
        """

    /// A status without a rule: only the wamid and pricing (the arguments as `applySQL`'s).
    private static let learnOnlySQL = "UPDATE messages SET wamid = COALESCE(wamid, ?2), \(pricingSQL) WHERE id = ?4"

    /// The forward-only UPDATE for each status with a rule, by its raw value; arguments: ?1 Meta's
    /// timestamp, ?2 wamid, ?3 received at, ?4 message id, ?5-?7 error code, title, details,
    /// ?8-?9 pricing category and type.
    private static let applySQL: [String: String] = Dictionary(
        uniqueKeysWithValues: StatusRule.all.map { rule in
            let (condition, column, state) = (rule.sqlCondition, rule.timeColumn, rule.target)
            let errors =
                rule.recordsError
                ? """
                , error_code = CASE WHEN \(condition) THEN ?5 ELSE error_code END,
                error_title = CASE WHEN \(condition) THEN ?6 ELSE error_title END,
                error_details = CASE WHEN \(condition) THEN ?7 ELSE error_details END
                """ : ""
            let sql = """
                UPDATE messages SET
                    \(column) = CASE WHEN \(column) IS NULL OR \(column) > ?1 THEN ?1 ELSE \(column) END,
                    wamid = COALESCE(wamid, ?2),
                    state = CASE WHEN \(condition) THEN '\(state.rawValue)' ELSE state END,
                    state_rank = CASE WHEN \(condition) THEN \(state.rank) ELSE state_rank END,
                    updated_at = CASE WHEN \(condition) THEN ?3 ELSE updated_at END\(errors),
                    \(pricingSQL)
                WHERE id = ?4
                """
            return (rule.status.rawValue, sql)
        })

    /// Whether `run` was sent from `number` (its sender). A daily `/send-invoice` run without an
    /// organization (`api-DATE`) counts as any number's: before runs were kept per organization,
    /// several organizations' calls shared one, named after the first caller's number.
    static func sentFrom(_ db: Database, run: String, number: String) throws -> Bool {
        if run.hasPrefix("api-") && !run.contains("@") { return true }
        return try String.fetchOne(db.cachedStatement(sql: "SELECT sender FROM runs WHERE name = ?"), arguments: [run]) == number
    }

    /// The statuses kept unmatched that name a message, by its id in the callback data (first
    /// argument) or by its wamid (second). Two lookups joined, one per partial index: written as
    /// one `OR`, SQLite's planner (which has no statistics here) walked every unmatched status
    /// instead, and statuses are kept unmatched for good when they are about messages other tools
    /// sent from the same number, or about another number. With 200,000 of them that was 58 ms
    /// for every message added or accepted; now it is two index lookups whatever their number.
    static let pendingEventsSQL = """
        SELECT * FROM status_events WHERE message_id IS NULL AND callback_data = ?1
        UNION
        SELECT * FROM status_events WHERE message_id IS NULL AND wamid = ?2
        ORDER BY timestamp, id
        """

    /// Applies statuses that arrived before their message was known, in Meta's time order.
    static func attachPendingEvents(_ db: Database, messageID: String, wamid: String?) throws {
        // Cached: this runs for every accepted send (a statement compiled each time cost more than the lookup).
        let rows = try Row.fetchAll(db.cachedStatement(sql: pendingEventsSQL), arguments: [messageID, wamid ?? ""])
        guard !rows.isEmpty else { return }
        let now = Date().timeIntervalSince1970
        for row in rows {
            let eventWamid: String = row["wamid"]
            // A status naming us only by callback data, with another wamid than ours, is not ours;
            // nor one about another sender number.
            if let wamid, eventWamid != wamid { continue }
            if let number = row["phone_number_id"] as String?,
                try !sentFrom(
                    db, run: String.fetchOne(db, sql: "SELECT run FROM messages WHERE id = ?", arguments: [messageID]) ?? "", number: number
                )
            {
                continue
            }
            let update = StatusUpdate(
                wamid: eventWamid, status: WebhookStatus(rawValue: row["status"]), timestamp: Int64(row["timestamp"] as Double),
                errorCode: row["error_code"], errorTitle: row["error_title"], errorDetails: row["error_details"],
                pricingCategory: row["pricing_category"], pricingType: row["pricing_type"])
            let current =
                try String.fetchOne(db, sql: "SELECT state FROM messages WHERE id = ?", arguments: [messageID]).flatMap(
                    MessageState.init(rawValue:)) ?? .unknown
            let applied = try apply(db, update, to: messageID, from: current, at: now) != nil
            try db.execute(
                sql: "UPDATE status_events SET message_id = ?, applied = ? WHERE id = ?",
                arguments: [messageID, applied, row["id"] as Int64])
        }
    }

    public func firstFailure(run: String, codes: [Int], since: Double) async throws -> (code: Int, title: String?)? {
        guard !codes.isEmpty else { return nil }
        return try await pool.read { db in
            guard let row = try Row.fetchOne(db, sql: Self.firstFailureSQL(codes: codes), arguments: [run, since]) else { return nil }
            return (row[0], row[1])
        }
    }

    /// A run's first failure with one of `codes` since an instant: asked every second while a run
    /// sends, so found by the index of failures by code (v12), among the few with those codes. By
    /// the run's failed messages instead it read every one of them each time: 59 ms a second
    /// with 50,000 failed (those not on WhatsApp are common), and more as the run went on.
    static func firstFailureSQL(codes: [Int]) -> String {
        """
        SELECT error_code, error_title FROM messages
        WHERE run = ? AND state = 'failed' AND error_code IN (\(codes.map(String.init).joined(separator: ","))) AND failed_at >= ? LIMIT 1
        """
    }

    // MARK: - Opt-outs

    public func optOuts() async throws -> [OptOut] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM opt_outs ORDER BY at, phone").map(Self.optOut(row:))
        }
    }

    static func optOut(row r: Row) -> OptOut {
        OptOut(
            id: r["phone"], kind: OptOutKind(rawValue: r["kind"]) ?? .waID, at: r["at"], word: r["word"],
            source: OptOutSource(rawValue: r["source"]) ?? .reply, note: r["note"], wamid: r["wamid"])
    }

    /// Read at every `/send-invoice` call and every run. `CROSS JOIN` keeps the opt-outs (few) on
    /// the outside: SQLite's planner put the WhatsApp ids learnt (one per tenant ever messaged)
    /// there, and read them all: 59 ms with 500,000 of them, now 1.6 ms.
    public func optedOutNumbers() async throws -> Set<String> {
        try await pool.read { db in Set(try String.fetchAll(db, sql: Self.optedOutSQL)) }
    }

    static let optedOutSQL = """
        SELECT phone FROM opt_outs
        UNION SELECT r.phone FROM opt_outs o CROSS JOIN recipient_ids r ON r.id = o.phone
        """

    public func addOptOut(_ id: String, kind: OptOutKind, note: String?, at time: Double) async throws -> Bool {
        try await pool.write { db in
            try Self.optOut(db, OptOut(id: id, kind: kind, at: time, word: "", source: .manual, note: note))
        }
    }

    public func removeOptOut(_ number: String, note: String?, at time: Double) async throws -> [OptOut] {
        try await pool.write { db in
            var ids = Set([number] + WhatsAppID.variants(of: number))
            for id in Array(ids) {
                ids.formUnion(try String.fetchAll(db, sql: "SELECT id FROM recipient_ids WHERE phone = ?", arguments: [id]))
            }
            let list = Array(ids)
            let marks = list.map { _ in "?" }.joined(separator: ",")
            let removed = try Row.fetchAll(
                db, sql: "SELECT * FROM opt_outs WHERE phone IN (\(marks)) ORDER BY at", arguments: StatementArguments(list)
            )
            .map(Self.optOut(row:))
            for o in removed {
                try db.execute(sql: "DELETE FROM opt_outs WHERE phone = ?", arguments: [o.id])
                try db.execute(
                    sql: """
                        INSERT INTO opt_out_changes (key, kind, change, at, source, note) VALUES (?, ?, 'in', ?, 'manual', ?)
                        """, arguments: [o.id, o.kind.rawValue, time, note])
            }
            return removed
        }
    }

    public func optOutChanges() async throws -> [OptOutChange] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM opt_out_changes ORDER BY id").map { r in
                OptOutChange(
                    id: r["key"], kind: OptOutKind(rawValue: r["kind"]) ?? .waID,
                    change: OptOutChange.Change(rawValue: r["change"]) ?? .optedOut, at: r["at"],
                    source: OptOutSource(rawValue: r["source"]) ?? .reply, word: r["word"], wamid: r["wamid"], note: r["note"])
            }
        }
    }

    public func recipientIDs(phone: String) async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM recipient_ids WHERE phone = ? ORDER BY learnt_at, id", arguments: [phone])
        }
    }

    public func ping() async throws {
        _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs") }
    }

    public var location: String { "sqlite:\(path)" }

    // MARK: - Senders

    public func acquireSenderLease(sender: String, holder: String, run: String, ttl: Double, at time: Double) async throws -> SenderLease {
        try await pool.write { db in
            try db.execute(sql: SenderLeaseSQL.acquire, arguments: [sender, holder, run, time, time + ttl])
            let row = try Row.fetchOne(db, sql: "SELECT * FROM sender_leases WHERE sender = ?", arguments: [sender])!
            return SenderLease(
                sender: row["sender"], holder: row["holder"], run: row["run"], acquiredAt: row["acquired_at"], expiresAt: row["expires_at"])
        }
    }

    public func releaseSenderLease(sender: String, holder: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM sender_leases WHERE sender = ? AND holder = ?", arguments: [sender, holder])
        }
    }

    // MARK: - Audit

    public func webhookPayloads(after: Int64?, limit: Int) async throws -> [StoredPayload] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM webhook_payloads WHERE id > ? ORDER BY id LIMIT ?", arguments: [after ?? 0, limit]).map
            { r in
                StoredPayload(
                    id: r["id"], receivedAt: r["received_at"], signature: r["signature"], body: [UInt8](r["body"] as Data),
                    parseError: r["parse_error"], statuses: r["statuses"])
            }
        }
    }

    public func inboundMessages(limit: Int) async throws -> [InboundRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM inbound_messages ORDER BY timestamp, wamid LIMIT ?", arguments: [limit]).map { r in
                InboundRecord(
                    wamid: r["wamid"], from: r["from_phone"], fromUserID: r["from_user_id"], timestamp: r["timestamp"],
                    type: r["type"], body: r["body"])
            }
        }
    }
}

/// The lease rule, the same SQL on both engines: take the lease if nobody has it, if it has
/// expired, or if we have it already (a renewal keeps when it was first taken).
enum SenderLeaseSQL {
    static let acquire = """
        INSERT INTO sender_leases (sender, holder, run, acquired_at, expires_at) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (sender) DO UPDATE SET holder = excluded.holder, run = excluded.run, expires_at = excluded.expires_at,
            acquired_at = CASE WHEN sender_leases.holder = excluded.holder THEN sender_leases.acquired_at ELSE excluded.acquired_at END
        WHERE sender_leases.holder = excluded.holder OR sender_leases.expires_at <= excluded.acquired_at
        """
}

// MARK: - Rows to records

extension RunRecord {
    init(row: Row) {
        self.init(
            name: row["name"], manifest: row["manifest"], template: row["template"], sender: row["sender"],
            status: RunStatus(stored: row["status"]), createdAt: row["created_at"], finishedAt: row["finished_at"],
            haltReason: row["halt_reason"])
    }
}

extension MessageRecord {
    init(row: Row) {
        self.init(
            id: row["id"], run: row["run"], invoiceID: row["invoice_id"], phone: row["phone"], template: row["template"],
            language: row["language"], state: MessageState(rawValue: row["state"]) ?? .unknown, wamid: row["wamid"],
            errorCode: row["error_code"], errorTitle: row["error_title"], errorDetails: row["error_details"],
            skipReason: row["skip_reason"], attempts: row["attempts"], createdAt: row["created_at"], updatedAt: row["updated_at"],
            acceptedAt: row["accepted_at"], sentAt: row["sent_at"], deliveredAt: row["delivered_at"], readAt: row["read_at"],
            failedAt: row["failed_at"], requestBody: row["request_body"], landlord: row["landlord"], tenantName: row["tenant_name"],
            sequence: row["seq"])
    }
}

extension StatusEventRecord {
    init(row: Row) {
        self.init(
            wamid: row["wamid"], messageID: row["message_id"], status: row["status"], timestamp: row["timestamp"],
            receivedAt: row["received_at"], applied: row["applied"], errorCode: row["error_code"],
            errorTitle: row["error_title"], errorDetails: row["error_details"])
    }
}

extension AttemptRecord {
    init(row: Row) {
        self.init(
            number: row["number"], startedAt: row["started_at"], finishedAt: row["finished_at"],
            outcome: AttemptResult(rawValue: row["outcome"]) ?? .unknown,
            wamid: row["wamid"], errorCode: row["error_code"], errorTitle: row["error_title"])
    }
}
