import Foundation
public import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import Synchronization

/// The store on PostgreSQL, for several machines: receivers behind a load balancer and one sender
/// process per number, all on one database. The same semantics as `SQLiteStore` (the same tests
/// run on both): the forward-only rule and the statuses that wait for their message are SQL, in
/// the functions of `PostgresSchema`, so two receivers applying statuses at once cannot undo each
/// other.
///
/// Every write is one statement (a function call) or one short transaction; a deadlock between
/// receivers (PostgreSQL aborts one of them) is retried here. Commits are durable as the server is
/// configured (`synchronous_commit`, on by default): a webhook is acknowledged after its commit.
public final class PostgresStore: DispatchStore {
    let client: PostgresClient
    let runner: Task<Void, Never>
    /// Group commit, two batches at a time. Batches of statuses lock their messages in id order
    /// (`dispatcher_ingest_statuses`), and the rest wait for them (`PostgresSchema.intakeLock`),
    /// so two writers do not deadlock as four did when each batch locked in payload order (p99
    /// 885 ms, PostgreSQL's 1 s `deadlock_timeout`). Measured
    /// (2 cores, durable, 8 senders posting 100 statuses): one writer 15,763-17,816 statuses/s,
    /// two 20,492, three 17,519-24,246; one status per POST was the same within the noise for all
    /// three (2,060-3,663/s, bound by the receiver's CPU), so two: the gain without the spread.
    let batcher = IngestBatcher(maxWriters: 2)
    /// Deadlocks and serialisation failures met and retried since the store opened (a whole call,
    /// or one payload of a webhook batch written again alone).
    private let conflicts = Atomic<Int>(0)
    public var conflictsRetried: Int { conflicts.load(ordering: .relaxed) }
    let logger: Logger
    public let url: PostgresURL

    /// Connects (failing clearly if the server is unreachable or refuses the credentials),
    /// migrates, and starts the connection pool.
    public static func open(url text: String, logger: Logger = Logger(label: "dispatcher.postgres")) async throws -> PostgresStore {
        let url = try PostgresURL(text)
        var quiet = logger
        quiet.logLevel = .critical
        // One connection first: its errors are the server's own (the pool would retry silently).
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: try Self.connectionConfiguration(url), id: 0, logger: quiet)
        } catch {
            throw StoreError(Self.explain(error, url: url))
        }
        do {
            try await Self.migrate(connection, logger: quiet)
        } catch {
            try? await connection.close()
            throw StoreError("cannot migrate the PostgreSQL database \(url.redacted): \(Self.explain(error, url: url))")
        }
        try? await connection.close()
        return try PostgresStore(url: url, logger: quiet)
    }

    /// Creates an empty database on the server `adminURL` names (its user must be allowed to) and
    /// returns its URL: for tests and benchmarks, which each want a database of their own.
    public static func createDatabase(named name: String, adminURL: String) async throws -> String {
        let admin = try PostgresURL(adminURL)
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
            throw StoreError("'\(name)' is not a plain database name (letters, digits, _)")
        }
        var logger = Logger(label: "dispatcher.postgres")
        logger.logLevel = .critical
        do {
            let connection = try await PostgresConnection.connect(configuration: try connectionConfiguration(admin), id: 0, logger: logger)
            do {
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
            } catch {
                try? await connection.close()
                throw error
            }
            try? await connection.close()
        } catch {
            throw StoreError("cannot create database \(name): \(explain(error, url: admin))")
        }
        guard var components = URLComponents(string: adminURL) else { throw StoreError("bad URL") }
        components.path = "/" + name
        return components.string!
    }

    private init(url: PostgresURL, logger: Logger) throws {
        self.url = url
        self.logger = logger
        let client = PostgresClient(configuration: try Self.clientConfiguration(url), backgroundLogger: logger)
        self.client = client
        runner = Task { await client.run() }
    }

    deinit { runner.cancel() }

    /// Stops the connection pool (its connections are closed) and waits for it. The pool runs in
    /// a task the store owns (`runner`) rather than as a service of each command's group: the
    /// store is opened by one-shot commands and tests that have no group, and `serve` and `send`
    /// close it last, after their servers and sends have stopped.
    public func close() async {
        runner.cancel()
        await runner.value
    }

    public var location: String { url.redacted }

    // MARK: - Connecting

    static func tlsConfiguration(_ url: PostgresURL) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if url.tls != .verifyFull { tls.certificateVerification = .none }
        return tls
    }

    static func startupParameters(_ url: PostgresURL) -> [(String, String)] {
        [("statement_timeout", "\(Int(url.statementTimeout * 1000))"), ("application_name", "dispatcher")]
    }

    static func connectionConfiguration(_ url: PostgresURL) throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS =
            switch url.tls {
            case .disable: .disable
            case .prefer: .prefer(try NIOSSLContext(configuration: tlsConfiguration(url)))
            case .require, .verifyFull: .require(try NIOSSLContext(configuration: tlsConfiguration(url)))
            }
        var configuration =
            if let folder = url.socketFolder {
                PostgresConnection.Configuration(
                    unixSocketPath: "\(folder)/.s.PGSQL.\(url.port)", username: url.user, password: url.password,
                    database: url.database)
            } else {
                PostgresConnection.Configuration(
                    host: url.host, port: url.port, username: url.user, password: url.password,
                    database: url.database, tls: tls)
            }
        configuration.options.connectTimeout = .milliseconds(Int64(url.connectTimeout * 1000))
        configuration.options.additionalStartupParameters = startupParameters(url)
        if url.tls == .verifyFull { configuration.options.tlsServerName = url.host }
        return configuration
    }

    static func clientConfiguration(_ url: PostgresURL) throws -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            switch url.tls {
            case .disable: .disable
            case .prefer: .prefer(tlsConfiguration(url))
            case .require, .verifyFull: .require(tlsConfiguration(url))
            }
        var configuration =
            if let folder = url.socketFolder {
                PostgresClient.Configuration(
                    unixSocketPath: "\(folder)/.s.PGSQL.\(url.port)", username: url.user, password: url.password,
                    database: url.database)
            } else {
                PostgresClient.Configuration(
                    host: url.host, port: url.port, username: url.user, password: url.password,
                    database: url.database, tls: tls)
            }
        configuration.options.connectTimeout = .milliseconds(Int64(url.connectTimeout * 1000))
        configuration.options.additionalStartupParameters = startupParameters(url)
        configuration.options.maximumConnections = url.maxConnections
        if url.tls == .verifyFull { configuration.options.tlsServerName = url.host }
        return configuration
    }

    /// The server's reason, in words an operator can act on (PostgresNIO hides it from
    /// `description` so that it cannot leak into logs by accident; it holds no secret).
    static func explain(_ error: any Error, url: PostgresURL) -> String {
        guard let error = error as? PSQLError else {
            if isUnreachable(error) {
                return "cannot reach PostgreSQL at \(url.socketFolder ?? "\(url.host):\(url.port)"): no connection could be made (\(error))"
            }
            return "\(error)"
        }
        if error.code == .server, let info = error.serverInfo {
            let message = info[.message] ?? "error"
            switch info[.sqlState] {
            case "28P01", "28000":
                return "PostgreSQL refused the credentials of user '\(url.user)' at \(url.redacted): \(message)"
            case "3D000":
                return "the database '\(url.database)' does not exist on \(url.host):\(url.port) (create it with: createdb \(url.database))"
            case let state?:
                return "PostgreSQL error \(state): \(message)"
            case nil:
                return "PostgreSQL: \(message)"
            }
        }
        if error.code == .connectionError || error.code == .serverClosedConnection || error.code == .uncleanShutdown {
            let reason = error.underlying.map { "\($0)" } ?? "\(error.code)"
            return "cannot reach PostgreSQL at \(url.socketFolder ?? "\(url.host):\(url.port)"): \(reason)"
        }
        if error.code == .sslUnsupported {
            return
                "the PostgreSQL server at \(url.host):\(url.port) does not offer TLS, and the URL asks for it (sslmode=\(url.tls.rawValue))"
        }
        if error.code == .authMechanismRequiresPassword {
            return "PostgreSQL wants a password for user '\(url.user)': put it in the URL (postgres://USER:PASSWORD@…)"
        }
        return String(reflecting: error)
    }

    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        // Up to date already (every start after the first): no lock. The advisory lock is the
        // server's, not the database's, so a start would otherwise wait for another database's
        // migration, past a short statement timeout.
        if let names = try? await connection.query("SELECT name FROM dispatcher_migrations", logger: logger).collect() {
            let applied = Set(names.compactMap { try? $0.decode(String.self) })
            if PostgresSchema.migrations.allSatisfy({ applied.contains($0.name) }) { return }
        }
        try await connection.query("BEGIN", logger: logger)
        do {
            try await connection.query("SELECT pg_advisory_xact_lock(\(PostgresSchema.migrationLock))", logger: logger)
            // The lock waited within the statement timeout; the migrations themselves may take
            // longer on a big database (v19 rewrites every message: 63 s for a million on this
            // 2-core machine, 2026-12-03), and cut short at 30 s they left the dispatcher unable to
            // start at all.
            try await connection.query("SET LOCAL statement_timeout = 0", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS dispatcher_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = Set<String>()
            for try await name in try await connection.query("SELECT name FROM dispatcher_migrations", logger: logger).decode(String.self) {
                applied.insert(name)
            }
            let pending = PostgresSchema.migrations.filter { !applied.contains($0.name) }
            if !applied.isEmpty && !pending.isEmpty { migrationNotice(pending.count, database: "PostgreSQL database") }
            for migration in pending {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO dispatcher_migrations (name) VALUES (\(migration.name))", logger: logger)
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }

    // MARK: - Queries

    /// A deadlock (two receivers locking the same messages in another order) or a serialisation
    /// failure aborts one statement, which changed nothing: it is tried again. Each try is bounded
    /// (connect timeout + statement timeout): with the server gone, the pool would otherwise wait
    /// for a connection for ever, and a webhook would hang instead of getting its 503. `limit`
    /// replaces that bound.
    func retrying<T: Sendable>(within limit: Duration? = nil, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await bounded(within: limit, body)
            } catch let error as PSQLError where attempt < 8 && ["40P01", "40001"].contains(error.serverInfo?[.sqlState]) {
                conflicts.add(1, ordering: .relaxed)
                attempt += 1
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...(5 << min(attempt, 5)))))
            } catch let error as StoreError {
                throw error
            } catch {
                throw StoreError(
                    Self.explain(error, url: url), refusedByServer: (error as? PSQLError)?.serverInfo != nil,
                    unavailable: Self.isUnreachable(error))
            }
        }
    }

    /// No connection to the server, or it went away: PostgresNIO's connection errors, and its
    /// pool giving up on connecting (`ConnectionPoolError`, whose cases are not public).
    static func isUnreachable(_ error: any Error) -> Bool {
        if let error = error as? PSQLError {
            if let state = error.serverInfo?[.sqlState] {
                // The server's passing conditions: a statement cancelled by its timeout (a lock
                // held too long), a lock not available, shutting down or starting up, too many
                // connections, and connection exceptions (class 08).
                return ["57014", "55P03", "57P01", "57P02", "57P03", "53300"].contains(state) || state.hasPrefix("08")
            }
            return [.connectionError, .serverClosedConnection, .uncleanShutdown, .clientClosedConnection].contains(error.code)
        }
        return String(reflecting: type(of: error)).contains("ConnectionPoolError")
    }

    /// `body`, or an error naming the server once `limit` (default: connect + statement timeout)
    /// has passed: a query written to a connection the server has cut may never complete, and the
    /// caller is answered anyway (`withDeadline`).
    func bounded<T: Sendable>(within limit: Duration? = nil, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let limit = limit ?? .milliseconds(Int64((url.connectTimeout + url.statementTimeout) * 1000))
        let timeout = StoreError(
            "PostgreSQL at \(url.socketFolder ?? "\(url.host):\(url.port)") did not answer within \(limit): is it running?",
            unavailable: true)
        do {
            return try await withDeadline(limit, body)
        } catch is DeadlineExceeded {
            throw timeout
        }
    }

    /// Runs one statement and reads every row.
    @discardableResult
    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await retrying { try await self.client.query(query, logger: self.logger).collect() }
    }

    /// Several statements on one connection, committed together or not at all.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await retrying {
            try await self.client.withConnection { connection in
                try await connection.query("BEGIN", logger: self.logger)
                do {
                    let value = try await body(connection)
                    try await connection.query("COMMIT", logger: self.logger)
                    return value
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: self.logger)
                    throw error
                }
            }
        }
    }

    /// JSON for `jsonb_to_recordset`: how lists of records with optional fields reach SQL in one parameter.
    static func json(_ value: some Encodable) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    // MARK: - Runs

    public func saveRun(_ run: RunRecord) async throws {
        try await rows(
            """
            INSERT INTO runs (name, manifest, template, sender, status, created_at, finished_at, halt_reason)
            VALUES (\(run.name), \(run.manifest), \(run.template), \(run.sender), \(run.status.rawValue), \(run.createdAt), \(run.finishedAt), \(run.haltReason))
            ON CONFLICT (name) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at, halt_reason = excluded.halt_reason
            """)
    }

    static let runColumns = "name, manifest, template, sender, status, created_at, finished_at, halt_reason"

    static func runRecord(_ row: PostgresRow) throws -> RunRecord {
        var r = Cells(row)
        return RunRecord(
            name: try r.next(), manifest: try r.next(), template: try r.next(), sender: try r.next(),
            status: RunStatus(stored: try r.next()), createdAt: try r.next(), finishedAt: try r.next(), haltReason: try r.next())
    }

    public func run(named name: String) async throws -> RunRecord? {
        try await rows("SELECT \(unescaped: Self.runColumns) FROM runs WHERE name = \(name)").first.map(Self.runRecord)
    }

    public func runs(including: @Sendable (String) -> Bool) async throws -> [RunSummary] {
        let runs = try await rows("SELECT \(unescaped: Self.runColumns) FROM runs ORDER BY created_at DESC, name").map(Self.runRecord)
        var summaries: [RunSummary] = []
        for run in runs where including(run.name) {
            let invoices =
                try await rows("SELECT COUNT(*) FROM invoices WHERE run = \(run.name)").first.map { try $0.decode(Int.self) } ?? 0
            summaries.append(RunSummary(run: run, invoices: invoices, counts: try await stateCounts(run: run.name)))
        }
        return summaries
    }

    public func heardFromReceiver(id: String, address: String, at time: Double) async throws {
        _ = try await rows(
            """
            INSERT INTO receivers (id, address, heard_at) VALUES (\(id), \(address), \(time))
            ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, heard_at = EXCLUDED.heard_at
            """)
    }

    public func lastHeardReceiver() async throws -> (address: String, at: Double)? {
        try await rows("SELECT address, heard_at FROM receivers ORDER BY heard_at DESC LIMIT 1").first.map {
            try $0.decode((String, Double).self)
        }
    }

    public func statusesForOtherNumbers() async throws -> [(number: String, statuses: Int)] {
        try await rows(
            """
            SELECT phone_number_id, COUNT(*) FROM status_events
            WHERE message_id IS NULL AND phone_number_id IS NOT NULL
            GROUP BY phone_number_id ORDER BY phone_number_id
            """
        ).map { try $0.decode((String, Int).self) }
    }

    public func stateCounts(run: String) async throws -> [MessageState: Int] {
        var counts: [MessageState: Int] = [:]
        for row in try await rows("SELECT state, COUNT(*) FROM messages WHERE run = \(run) GROUP BY state") {
            let (state, n) = try row.decode((String, Int).self)
            if let state = MessageState(rawValue: state) { counts[state] = n }
        }
        return counts
    }

    // MARK: - Invoices and messages

    struct InvoiceJSON: Encodable {
        var run, invoice_id: String
        var line: Int
        var tenant_name: String
        var tenant_id, landlord, property: String?
        var amount_minor: Int64
        var currency, period: String
        var due_date: String?
        var locale: String
        var document_url, email, skip_reason: String?
    }

    public func addInvoices(_ invoices: [InvoiceRecord]) async throws {
        guard !invoices.isEmpty else { return }
        let json = try Self.json(
            invoices.map { i in
                InvoiceJSON(
                    run: i.run, invoice_id: i.invoiceID, line: i.line, tenant_name: i.tenantName, tenant_id: i.tenantID,
                    landlord: i.landlord,
                    property: i.property, amount_minor: i.amountMinor, currency: i.currency, period: i.period, due_date: i.dueDate,
                    locale: i.locale, document_url: i.documentURL, email: i.email, skip_reason: i.skipReason)
            })
        try await rows(
            """
            INSERT INTO invoices (run, invoice_id, line, tenant_name, tenant_id, landlord, property, amount_minor, currency, period,
                due_date, locale, document_url, email, skip_reason)
            SELECT run, invoice_id, line, tenant_name, tenant_id, landlord, property, amount_minor, currency, period,
                due_date, locale, document_url, email, skip_reason
            FROM jsonb_to_recordset(\(json)::jsonb) AS x(run TEXT, invoice_id TEXT, line INTEGER, tenant_name TEXT, tenant_id TEXT,
                landlord TEXT, property TEXT, amount_minor BIGINT, currency TEXT, period TEXT, due_date TEXT, locale TEXT,
                document_url TEXT, email TEXT, skip_reason TEXT)
            ON CONFLICT (run, invoice_id) DO NOTHING
            """)
    }

    struct MessageJSON: Encodable {
        var n: Int
        var id, run, invoice_id, phone, template, language, state: String
        var state_rank: Int
        var skip_reason, request_body: String?
    }

    public func addMessages(_ messages: [NewMessage]) async throws -> [MessageInsert] {
        guard !messages.isEmpty else { return [] }
        let now = Date().timeIntervalSince1970
        let json = try Self.json(
            messages.enumerated().map { n, m in
                MessageJSON(
                    n: n, id: m.id, run: m.run, invoice_id: m.invoiceID, phone: m.phone, template: m.template, language: m.language,
                    state: m.state.rawValue, state_rank: m.state.rank, skip_reason: m.skipReason, request_body: m.requestBody)
            })
        let logger = self.logger
        return try await transaction { connection in
            var inserted = Set<String>()
            // In the manifest's order (`n`): the sequence numbers follow it.
            let rows = try await connection.query(
                """
                INSERT INTO messages (id, run, invoice_id, phone, template, language, state, state_rank, skip_reason, created_at, updated_at,
                    request_body, landlord)
                SELECT x.id, x.run, x.invoice_id, x.phone, x.template, x.language, x.state, x.state_rank, x.skip_reason, \(now), \(now),
                    x.request_body, i.landlord
                FROM jsonb_to_recordset(\(json)::jsonb) AS x(n INTEGER, id TEXT, run TEXT, invoice_id TEXT, phone TEXT, template TEXT,
                    language TEXT, state TEXT, state_rank INTEGER, skip_reason TEXT, request_body TEXT)
                LEFT JOIN invoices i ON i.run = x.run AND i.invoice_id = x.invoice_id
                ORDER BY x.n
                ON CONFLICT (id) DO NOTHING
                RETURNING id
                """, logger: logger)
            for try await id in rows.decode(String.self) { inserted.insert(id) }
            let others = messages.map(\.id).filter { !inserted.contains($0) }
            var existing: [String: (String, MessageState)] = [:]
            if !others.isEmpty {
                for try await (id, run, state) in try await connection.query(
                    "SELECT id, run, state FROM messages WHERE id = ANY(\(others))", logger: logger
                ).decode((String, String, String).self) {
                    existing[id] = (run, MessageState(rawValue: state) ?? .unknown)
                }
            }
            if !inserted.isEmpty {
                // A status may have arrived before the message was stored (the send's response
                // lost, a crash): it is applied now.
                let ids = Array(inserted)
                try await connection.query(
                    "SELECT dispatcher_attach_pending(\(ids), \(Array(repeating: "", count: ids.count)), \(now))",
                    logger: logger)
            }
            return messages.map { m in
                if inserted.contains(m.id) { return .inserted(id: m.id) }
                let (run, state) = existing[m.id] ?? (m.run, .unknown)
                return .exists(id: m.id, run: run, state: state)
            }
        }
    }

    static let messageColumns = """
        m.seq, m.id, m.run, m.invoice_id, m.phone, m.template, m.language, m.state, m.wamid, m.error_code, m.error_title,
        m.error_details, m.skip_reason, m.attempts, m.created_at, m.updated_at, m.accepted_at, m.sent_at, m.delivered_at,
        m.read_at, m.failed_at, m.request_body, m.landlord, i.tenant_name
        FROM messages m LEFT JOIN invoices i ON i.run = m.run AND i.invoice_id = m.invoice_id
        """

    static func messageRecord(_ row: PostgresRow) throws -> MessageRecord {
        var r = Cells(row)
        let sequence: Int64 = try r.next()
        return MessageRecord(
            id: try r.next(), run: try r.next(), invoiceID: try r.next(), phone: try r.next(), template: try r.next(),
            language: try r.next(),
            state: MessageState(rawValue: try r.next()) ?? .unknown, wamid: try r.next(), errorCode: try r.next(), errorTitle: try r.next(),
            errorDetails: try r.next(), skipReason: try r.next(), attempts: try r.next(), createdAt: try r.next(), updatedAt: try r.next(),
            acceptedAt: try r.next(), sentAt: try r.next(), deliveredAt: try r.next(), readAt: try r.next(), failedAt: try r.next(),
            requestBody: try r.next(), landlord: try r.next(), tenantName: try r.next(), sequence: sequence)
    }

    public func message(_ idOrWamid: String) async throws -> MessageRecord? {
        try await rows("SELECT \(unescaped: Self.messageColumns) WHERE m.id = \(idOrWamid) OR m.wamid = \(idOrWamid) LIMIT 1")
            .first.map(Self.messageRecord)
    }

    public func events(messageID: String) async throws -> [StatusEventRecord] {
        try await rows(
            """
            SELECT wamid, message_id, status, timestamp, received_at, applied, error_code, error_title, error_details
            FROM status_events WHERE message_id = \(messageID) ORDER BY timestamp, id
            """
        ).map { row in
            var r = Cells(row)
            return StatusEventRecord(
                wamid: try r.next(), messageID: try r.next(), status: try r.next(), timestamp: try r.next(),
                receivedAt: try r.next(), applied: try r.next(), errorCode: try r.next(), errorTitle: try r.next(),
                errorDetails: try r.next())
        }
    }

    public func attempts(messageID: String) async throws -> [AttemptRecord] {
        try await rows(
            """
            SELECT number, started_at, finished_at, outcome, wamid, error_code, error_title
            FROM attempts WHERE message_id = \(messageID) ORDER BY number
            """
        ).map { row in
            var r = Cells(row)
            return AttemptRecord(
                number: try r.next(), startedAt: try r.next(), finishedAt: try r.next(),
                outcome: AttemptResult(rawValue: try r.next() as String) ?? .unknown,
                wamid: try r.next(), errorCode: try r.next(), errorTitle: try r.next())
        }
    }

    public func messages(_ filter: MessageFilter) async throws -> MessagePage {
        var bindings = PostgresBindings()
        var conditions: [String] = []
        func condition(_ sql: String, _ value: some PostgresNonThrowingEncodable & PostgresDynamicTypeEncodable) {
            bindings.append(value)
            conditions.append(sql.replacingOccurrences(of: "?", with: "$\(bindings.count)"))
        }
        if let run = filter.run { condition("m.run = ?", run) }
        if let state = filter.state { condition("m.state = ?", state.rawValue) }
        // PostgreSQL's statistics choose between the landlord's index and the run's (a landlord
        // with half the run walks the run's): no hint needed, unlike SQLite's.
        if let landlord = filter.landlord { condition("m.landlord = ?", landlord) }
        if let after = filter.after { condition("m.seq > ?", after) }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let limit = max(1, min(filter.limit, 1000))
        let found = try await rows(
            PostgresQuery(
                unsafeSQL: "SELECT \(Self.messageColumns) \(whereClause) ORDER BY m.seq LIMIT \(limit + 1)",
                binds: bindings)
        ).map(Self.messageRecord)
        let page = Array(found.prefix(limit))
        return MessagePage(messages: page, next: found.count > limit ? page.last?.sequence : nil)
    }

    // MARK: - Reports

    public func messageSequences(run: String, after: Int64?) async throws -> ClosedRange<Int64>? {
        let row = try await rows("SELECT MIN(seq), MAX(seq) FROM messages WHERE run = \(run) AND seq > \(after ?? Int64.min)").first
        guard let row else { return nil }
        var r = Cells(row)
        let first: Int64? = try r.next(), last: Int64? = try r.next()
        guard let first, let last else { return nil }
        return first...last
    }

    /// Each message's invoice is looked up by its key (a LATERAL subquery the planner cannot turn
    /// into a join): as a join, PostgreSQL 15 chose to hash the whole run's invoices for every page
    /// of 10,000, and a million messages took 21 s (2026-12-03, `dispatcher-bench --only report`).
    public func reportRows(run: String, sequences: ClosedRange<Int64>) async throws -> [ReportRow] {
        try await rows(
            """
            \(unescaped: Self.reportColumns)
            WHERE m.run = \(run) AND m.seq BETWEEN \(sequences.lowerBound) AND \(sequences.upperBound) ORDER BY m.seq
            """
        ).map(Self.reportRow)
    }

    /// Through the landlord's index (`messages_landlord`), which the planner takes for a landlord's
    /// share of a run.
    public func reportRows(run: String, landlord: String, after: Int64?, limit: Int) async throws -> [ReportRow] {
        try await rows(
            """
            \(unescaped: Self.reportColumns)
            WHERE m.landlord = \(landlord) AND m.run = \(run) AND m.seq > \(after ?? Int64.min) ORDER BY m.seq LIMIT \(limit)
            """
        ).map(Self.reportRow)
    }

    static let reportColumns = """
        SELECT m.seq, m.id, m.run, m.invoice_id, m.phone, m.template, m.language, m.state, m.wamid, m.error_code, m.error_title,
            m.error_details, m.skip_reason, m.attempts, m.created_at, m.updated_at, m.accepted_at, m.sent_at, m.delivered_at,
            m.read_at, m.failed_at, i.landlord, i.tenant_name, i.property, i.amount_minor, i.currency, i.period, i.email
        FROM messages m
        JOIN LATERAL (SELECT * FROM invoices i WHERE i.run = m.run AND i.invoice_id = m.invoice_id LIMIT 1) i ON true
        """

    static func reportRow(_ row: PostgresRow) throws -> ReportRow {
        var r = Cells(row)
        let sequence: Int64 = try r.next()
        let message = MessageRecord(
            id: try r.next(), run: try r.next(), invoiceID: try r.next(), phone: try r.next(), template: try r.next(),
            language: try r.next(),
            state: MessageState(rawValue: try r.next()) ?? .unknown, wamid: try r.next(), errorCode: try r.next(),
            errorTitle: try r.next(),
            errorDetails: try r.next(), skipReason: try r.next(), attempts: try r.next(), createdAt: try r.next(),
            updatedAt: try r.next(),
            acceptedAt: try r.next(), sentAt: try r.next(), deliveredAt: try r.next(), readAt: try r.next(), failedAt: try r.next(),
            requestBody: nil, landlord: try r.next(), tenantName: try r.next(), sequence: sequence)
        return ReportRow(
            message: message, tenantName: message.tenantName ?? "", landlord: message.landlord, property: try r.next(),
            amountMinor: try r.next(), currency: try r.next(), period: try r.next(), email: try r.next())
    }

    public func skippedInvoices(run: String) async throws -> [InvoiceRecord] {
        try await rows(
            """
            SELECT \(unescaped: Self.invoiceColumns)
            FROM invoices WHERE run = \(run) AND skip_reason IS NOT NULL ORDER BY line
            """
        ).map(Self.invoiceRecord)
    }

    public func invoice(run: String, invoiceID: String) async throws -> InvoiceRecord? {
        try await rows("SELECT \(unescaped: Self.invoiceColumns) FROM invoices WHERE run = \(run) AND invoice_id = \(invoiceID)")
            .first.map(Self.invoiceRecord)
    }

    static let invoiceColumns = """
        run, invoice_id, line, tenant_name, tenant_id, landlord, property, amount_minor, currency, period, due_date, locale,
            document_url, email, skip_reason
        """

    static func invoiceRecord(_ row: PostgresRow) throws -> InvoiceRecord {
        var r = Cells(row)
        return InvoiceRecord(
            run: try r.next(), invoiceID: try r.next(), line: try r.next(), tenantName: try r.next(), tenantID: try r.next(),
            landlord: try r.next(), property: try r.next(), amountMinor: try r.next(), currency: try r.next(),
            period: try r.next(), dueDate: try r.next(), locale: try r.next(), documentURL: try r.next(),
            email: try r.next(), skipReason: try r.next())
    }

    /// The tables a report adds up get fresh statistics first when they have grown by more than a
    /// tenth (and 64 KB) since their last ANALYZE, or more rows changed than autovacuum waits for:
    /// a run stored a moment ago, before autovacuum came by. Without them the planner chose nested
    /// loops over whole tables: the page's GROUP BYs of a 9,000-message run took 5.5-9.2 s each,
    /// instead of milliseconds. Growth is read from the files' size, which is exact at once (the
    /// counters of changed rows reach `pg_stat_user_tables` up to 10 s late). ANALYZE reads a
    /// sample (30,000 rows at most) and takes no lock that readers or writers wait for.
    static let staleTables = """
        SELECT c.relname FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.relname IN ('messages', 'invoices', 'status_events')
          AND (pg_relation_size(c.oid) / 8192 > c.relpages * 1.1 + 8 OR s.n_mod_since_analyze > 50 + s.n_live_tup / 10)
        """

    func analyzeIfStale() async throws {
        let stale = try await rows(PostgresQuery(unsafeSQL: Self.staleTables)).map { try $0.decode(String.self) }
        if !stale.isEmpty {
            // The names are the three above (the query returns no other), so they go into the statement as they are.
            _ = try await rows(PostgresQuery(unsafeSQL: "ANALYZE \(stale.joined(separator: ", "))"))
        }
    }

    public func reportSummary(run: String, landlord: String?, samples: Int) async throws -> ReportSummary {
        try await analyzeIfStale()
        func query(_ sql: String, _ extra: (inout PostgresBindings) -> Void = { _ in }) -> PostgresQuery {
            var bindings = PostgresBindings()
            bindings.append(run)
            bindings.append(landlord ?? "")
            extra(&bindings)
            return PostgresQuery(unsafeSQL: landlord == nil ? sql : ReportSQL.oneLandlord(sql), binds: bindings)
        }
        // The five passes over the run at once, each on a connection of the pool (one after
        // another they took 0.7 + 3.2 + 0.3 + 0.7 + 1.4 s of a million messages, 2026-12-03); the
        // examples, which depend on them, after.
        async let byState = rows(query(ReportSQL.byLandlordAndState))
        async let outcomes = rows(query(ReportSQL.invoiceOutcomes))
        async let problems = rows(query(ReportSQL.problems))
        async let timeline = rows(query(ReportSQL.timeline { "CAST(FLOOR(\($0) / 60) AS BIGINT)" }))
        async let charges = chargeCounts(run: run, states: [.delivered, .read], landlord: landlord)
        var summary = ReportSummary()
        var index: [String: Int] = [:]
        for row in try await byState {
            let (landlord, currency, state, count) = try row.decode((String?, String, String, Int).self)
            ReportSQL.add(landlord: landlord, currency: currency, state: state, count: count, to: &summary, index: &index)
        }
        for row in try await outcomes {
            let (landlord, currency, outcome, read, invoices, amount) = try row.decode((String?, String, Int, Int, Int, Int64).self)
            guard let outcome = InvoiceOutcome(rawValue: outcome) else { continue }
            let at = ReportSQL.figures(landlord, currency, in: &summary, index: &index)
            summary.landlords[at].add(outcome, read: read == 1, count: invoices, amountMinor: amount)
        }
        func sample(_ row: PostgresRow) throws -> ReportSummary.Sample {
            let (sequence, invoice, tenant, phone, email, details, skip) = try row.decode(
                (Int64, String, String, String, String?, String?, String?).self)
            return ReportSummary.Sample(
                sequence: sequence, invoiceID: invoice, tenantName: tenant, phone: phone, email: email,
                errorDetails: details, skipReason: skip)
        }
        for row in try await problems {
            let (state, code, title, count) = try row.decode((String, Int?, String?, Int).self)
            let examples = try await rows(
                query(ReportSQL.samples(nullSafeEqual: "IS NOT DISTINCT FROM")) { b in
                    b.append(state)
                    b.append(code)
                    b.append(title)
                    b.append(samples)
                }
            ).map(sample)
            summary.problems.append(
                ReportSummary.Group(
                    state: MessageState(rawValue: state) ?? .unknown, errorCode: code, errorTitle: title,
                    count: count, samples: examples))
        }
        let open = [MessageState.accepted, .held, .sent].reduce(0) { $0 + (summary.states[$1] ?? 0) }
        if open > 0 {
            summary.pending = try await rows(query(ReportSQL.pendingSamples) { $0.append(samples) }).map {
                let (sequence, invoice, tenant, phone, state, amount, currency) = try $0.decode(
                    (Int64, String, String, String, String, Int64, String).self)
                return ReportSummary.Pending(
                    sequence: sequence, invoiceID: invoice, tenantName: tenant, phone: phone, state: MessageState(rawValue: state) ?? .sent,
                    amountMinor: amount, currency: currency)
            }
        }
        if let skipped = summary.states[.skipped] {
            let examples = try await rows(query(ReportSQL.skippedSamples) { $0.append(samples) }).map(sample)
            summary.skipped = ReportSummary.Group(state: .skipped, errorCode: nil, errorTitle: nil, count: skipped, samples: examples)
        }
        for row in try await timeline {
            let (sent, delivered, count) = try row.decode((Int?, Int?, Int).self)
            if let sent { summary.sendsPerMinute[sent, default: 0] += count }
            if let delivered { summary.deliveriesPerMinute[delivered, default: 0] += count }
        }
        summary.charges = try await charges.filter { landlord == nil || $0.landlord == landlord }
        return summary
    }

    // MARK: - Webhooks

    struct StatusJSON: Encodable {
        var wamid, status: String
        var ts: Int64
        var recipient, recipient_user, callback: String?
        var code: Int?
        var title, details, pricing: String?
        var phone: String?
        var pricing_type: String?
    }

    struct InboundJSON: Encodable {
        var wamid: String
        var sender, sender_user: String?
        var ts: Int64
        var type: String
        var body: String?
        /// The opt-out word as stored, when the message is one.
        var opt_out: String?
    }

    /// One payload's arguments to `dispatcher_ingest`, as an element of `dispatcher_ingest_many`'s list.
    struct PayloadJSON: Encodable {
        var time: Double
        var signature: String?
        var parse_error: String?
        var count: Int
        var statuses: [StatusJSON]?
        var inbound: [InboundJSON]?
    }

    static func payloadJSON(_ job: IngestJob) -> PayloadJSON {
        // In wamid order: every receiver then locks the messages of a payload in the same order,
        // so two receivers given overlapping payloads wait for each other instead of deadlocking.
        // (The final state does not depend on the order: that is the forward-only rule.)
        PayloadJSON(
            time: job.time, signature: job.signature, parse_error: job.parseError, count: job.contents?.statuses.count ?? 0,
            statuses: job.contents.map { c in
                c.statuses.sorted { ($0.wamid, $0.timestamp) < ($1.wamid, $1.timestamp) }.map { u in
                    StatusJSON(
                        wamid: u.wamid, status: u.status.rawValue, ts: u.timestamp, recipient: u.recipientID,
                        recipient_user: u.recipientUserID,
                        callback: u.callbackData,
                        code: u.errorCode, title: u.errorTitle, details: u.errorDetails, pricing: u.pricingCategory,
                        phone: u.phoneNumberID, pricing_type: u.pricingType)
                }
            },
            inbound: job.contents.map { c in
                c.inbound.map { m in
                    InboundJSON(
                        wamid: m.wamid, sender: m.from, sender_user: m.fromUserID, ts: m.timestamp, type: m.type, body: m.body,
                        opt_out: m.isOptOut ? (m.body?.uppercased() ?? "") : nil)
                }
            })
    }

    /// Group commit, as on SQLite: POSTs that arrive while a batch is being written go together
    /// into the next call (`IngestBatcher`), one transaction and one WAL flush for all of them.
    public func ingestWebhook(
        body: [UInt8], signature: String?, contents: WebhookContents?, parseError: String?,
        at time: Double
    ) async throws -> IngestResult {
        try await batcher.submit(
            IngestJob(body: body, signature: signature, contents: contents, parseError: parseError, time: time),
            write: { try await self.writeBatch($0) })
    }

    /// A batch in one round trip and one transaction. Payloads of statuses only (nearly all) go
    /// as sets (`writeAsSets`); the rest, and what that path leaves, one status at a time.
    func writeBatch(_ jobs: [IngestJob]) async throws -> [Result<IngestResult, any Error>] {
        if jobs.allSatisfy({ $0.contents?.inbound.isEmpty ?? true }), let results = try await writeAsSets(jobs) {
            return results
        }
        return try await writeOneStatusAtATime(jobs)
    }

    /// One status at a time, each payload in a subtransaction of its own
    /// (`dispatcher_ingest_many`): a payload that fails there (overlapping batches of two
    /// receivers deadlocked on it, a value the server refuses) is rolled back alone and written
    /// again alone afterwards, as it would have been without the batch. A throw (the server
    /// unreachable) fails the whole batch: nothing of it is stored, every caller gets a 503.
    func writeOneStatusAtATime(_ jobs: [IngestJob]) async throws -> [Result<IngestResult, any Error>] {
        if jobs.count == 1 { return [.success(try await ingestAlone(jobs[0]))] }
        let payloads = try Self.json(jobs.map(Self.payloadJSON))
        let bodies = jobs.map { ByteBuffer(bytes: $0.body) }
        var results = [Result<IngestResult, any Error>?](repeating: nil, count: jobs.count)
        let query: PostgresQuery = """
            SELECT r_index, r_error, r_payload, r_duplicates, r_unmatched, r_inbound, r_opt_outs, r_applied
            FROM dispatcher_ingest_many(\(payloads)::jsonb, \(bodies)::bytea[])
            """
        let found = try await retrying { () async throws -> [PostgresRow]? in
            do {
                return try await self.client.query(query, logger: self.logger).collect()
            } catch let error as PSQLError where error.serverInfo != nil {
                // The server refused the call as a whole (a value in one payload it cannot take
                // as JSON, such as a NUL): each payload is written alone below.
                return nil
            }
        }
        // Committed by now: a row that cannot be read is that payload's problem alone (answered
        // with an error; Meta sends it again, and the duplicate is recognised), not the batch's.
        for row in found ?? [] {
            var cells = Cells(row)
            guard let index = try? cells.next(Int.self), jobs.indices.contains(index) else { continue }
            do {
                if let error = try cells.next(String?.self) {
                    if error.hasPrefix("40P01") || error.hasPrefix("40001") { conflicts.add(1, ordering: .relaxed) }
                    logger.warning("webhook payload written again alone", metadata: ["error": "\(error)"])
                    continue
                }
                results[index] = .success(try Self.ingestResult(&cells, statuses: jobs[index].contents?.statuses.count ?? 0))
            } catch {
                results[index] = .failure(StoreError("the stored webhook payload's result could not be read: \(error)"))
            }
        }
        var unreachable: (any Error)? = nil
        for i in results.indices where results[i] == nil {
            // Once the server stops answering, the rest fail at once instead of each waiting out the timeout.
            if let unreachable {
                results[i] = .failure(unreachable)
                continue
            }
            do {
                results[i] = .success(try await ingestAlone(jobs[i]))
            } catch {
                results[i] = .failure(error)
                if !Self.isServerRefusal(error) { unreachable = error }
            }
        }
        return results.map { $0! }
    }

    /// The fast path for payloads of statuses only (`dispatcher_ingest_statuses`): the whole batch
    /// in one call, applied as sets, all or nothing. Nil when the server refused it (a case it
    /// leaves to one status at a time, a value it cannot take): nothing of it was kept, and the
    /// caller writes the batch the slow way, which answers each payload as before.
    func writeAsSets(_ jobs: [IngestJob]) async throws -> [Result<IngestResult, any Error>]? {
        let payloads = try Self.json(jobs.map(Self.payloadJSON))
        let bodies = jobs.map { ByteBuffer(bytes: $0.body) }
        let query: PostgresQuery = """
            SELECT r_index, r_error, r_payload, r_duplicates, r_unmatched, r_inbound, r_opt_outs, r_applied
            FROM dispatcher_ingest_statuses(\(payloads)::jsonb, \(bodies)::bytea[])
            """
        let found: [PostgresRow]
        do {
            found = try await retrying { try await self.client.query(query, logger: self.logger).collect() }
        } catch let error as StoreError where error.refusedByServer {
            logger.debug("webhook batch written one status at a time", metadata: ["reason": "\(error)"])
            return nil
        }
        // Committed by now (see `writeBatch` for a row that cannot be read).
        var results = [Result<IngestResult, any Error>](
            repeating: .failure(StoreError("the stored webhook payload's result was not returned")), count: jobs.count)
        for row in found {
            var cells = Cells(row)
            guard let index = try? cells.next(Int.self), jobs.indices.contains(index) else { continue }
            do {
                _ = try cells.next(String?.self)
                results[index] = .success(try Self.ingestResult(&cells, statuses: jobs[index].contents?.statuses.count ?? 0))
            } catch {
                results[index] = .failure(StoreError("the stored webhook payload's result could not be read: \(error)"))
            }
        }
        return results
    }

    /// An error the server answered with (the payload refused), not a server gone or slow.
    /// (`ingestAlone` throws through `retrying`, which turns every error into a `StoreError`.)
    static func isServerRefusal(_ error: any Error) -> Bool {
        (error as? StoreError)?.refusedByServer == true
    }

    /// One payload, one call of `dispatcher_ingest`.
    func ingestAlone(_ job: IngestJob) async throws -> IngestResult {
        let p = Self.payloadJSON(job)
        let statuses = try p.statuses.map(Self.json)
        let inbound = try p.inbound.map(Self.json)
        let row = try await rows(
            """
            SELECT r_payload, r_duplicates, r_unmatched, r_inbound, r_opt_outs, r_applied
            FROM dispatcher_ingest(\(p.time)::float8, \(p.signature)::text, \(ByteBuffer(bytes: job.body))::bytea, \(p.parse_error)::text,
                \(p.count)::integer, \(statuses)::jsonb, \(inbound)::jsonb)
            """)[0]
        var cells = Cells(row)
        return try Self.ingestResult(&cells, statuses: p.count)
    }

    /// r_payload, r_duplicates, r_unmatched, r_inbound, r_opt_outs, r_applied, from `cells`' position.
    static func ingestResult(_ r: inout Cells, statuses: Int) throws -> IngestResult {
        var result = IngestResult(payloadID: try r.next())
        result.statuses = statuses
        result.duplicates = try r.next()
        result.unmatched = try r.next()
        result.inbound = try r.next()
        result.optOuts = try r.next()
        for state in try r.next() as [String] {
            if let state = MessageState(rawValue: state) { result.applied[state, default: 0] += 1 }
        }
        return result
    }

    public func firstFailure(run: String, codes: [Int], since: Double) async throws -> (code: Int, title: String?)? {
        guard !codes.isEmpty else { return nil }
        let found = try await rows(
            """
            SELECT error_code, error_title FROM messages
            WHERE run = \(run) AND state = 'failed' AND error_code = ANY(\(codes)) AND failed_at >= \(since) LIMIT 1
            """)
        guard let row = found.first else { return nil }
        let (code, title) = try row.decode((Int, String?).self)
        return (code, title)
    }

    public func storedMessages(ids: [String]) async throws -> [String: StoredMessage] {
        var found: [String: StoredMessage] = [:]
        for start in stride(from: 0, to: ids.count, by: 5_000) {
            let chunk = Array(ids[start..<min(start + 5_000, ids.count)])
            for row in try await rows("SELECT id, run, state FROM messages WHERE id = ANY(\(chunk))") {
                let (id, run, state) = try row.decode((String, String, String).self)
                found[id] = StoredMessage(run: run, state: MessageState(rawValue: state) ?? .unknown)
            }
        }
        return found
    }

    // MARK: - Opt-outs

    static let optOutColumns = "phone, kind, at, word, source, note, wamid"

    static func optOut(_ row: PostgresRow) throws -> OptOut {
        let (id, kind, at, word, source, note, wamid) = try row.decode((String, String, Double, String, String, String?, String?).self)
        return OptOut(
            id: id, kind: OptOutKind(rawValue: kind) ?? .waID, at: at, word: word, source: OptOutSource(rawValue: source) ?? .reply,
            note: note, wamid: wamid)
    }

    public func optOuts() async throws -> [OptOut] {
        try await rows("SELECT \(unescaped: Self.optOutColumns) FROM opt_outs ORDER BY at, phone").map(Self.optOut)
    }

    /// Read at every `/send-invoice` call and every run: the ids learnt (one per tenant ever
    /// messaged) looked up by the opt-outs' (few), not hashed whole (60-76 ms with 500,000 of
    /// them, now 14-22 ms).
    public func optedOutNumbers() async throws -> Set<String> {
        Set(
            try await rows(
                """
                SELECT phone FROM opt_outs UNION SELECT phone FROM recipient_ids WHERE id = ANY (ARRAY(SELECT phone FROM opt_outs))
                """
            ).map { try $0.decode(String.self) })
    }

    public func addOptOut(_ id: String, kind: OptOutKind, note: String?, at time: Double) async throws -> Bool {
        try await rows("SELECT dispatcher_opt_out(\(id), \(kind.rawValue), \(time), '', 'manual', \(note), NULL)")[0].decode(Int.self) == 1
    }

    public func removeOptOut(_ number: String, note: String?, at time: Double) async throws -> [OptOut] {
        let logger = self.logger
        let ids = [number] + WhatsAppID.variants(of: number)
        return try await transaction { connection in
            var removed: [OptOut] = []
            for try await row in try await connection.query(
                """
                DELETE FROM opt_outs WHERE phone = ANY(\(ids)) OR phone IN (SELECT id FROM recipient_ids WHERE phone = ANY(\(ids)))
                RETURNING \(unescaped: Self.optOutColumns)
                """, logger: logger)
            {
                removed.append(try Self.optOut(row))
            }
            for o in removed {
                try await connection.query(
                    """
                    INSERT INTO opt_out_changes (key, kind, change, at, source, note) VALUES (\(o.id), \(o.kind.rawValue), 'in', \(time), 'manual', \(note))
                    """, logger: logger)
            }
            return removed.sorted { ($0.at, $0.id) < ($1.at, $1.id) }
        }
    }

    public func optOutChanges() async throws -> [OptOutChange] {
        try await rows("SELECT key, kind, change, at, source, word, wamid, note FROM opt_out_changes ORDER BY id").map { row in
            let (id, kind, change, at, source, word, wamid, note) = try row.decode(
                (String, String, String, Double, String, String?, String?, String?).self)
            return OptOutChange(
                id: id, kind: OptOutKind(rawValue: kind) ?? .waID, change: OptOutChange.Change(rawValue: change) ?? .optedOut,
                at: at, source: OptOutSource(rawValue: source) ?? .reply, word: word, wamid: wamid, note: note)
        }
    }

    public func recipientIDs(phone: String) async throws -> [String] {
        try await rows("SELECT id FROM recipient_ids WHERE phone = \(phone) ORDER BY learnt_at, id").map { try $0.decode(String.self) }
    }

    /// Within the connect timeout: `/health` must answer even while the server is gone.
    public func ping() async throws {
        try await retrying(within: .milliseconds(Int64(url.connectTimeout * 1000))) {
            _ = try await self.client.query("SELECT 1", logger: self.logger).collect()
        }
    }

    // MARK: - Senders

    public func acquireSenderLease(sender: String, holder: String, run: String, ttl: Double, at time: Double) async throws -> SenderLease {
        try await rows(
            PostgresQuery(
                unsafeSQL: SenderLeaseSQL.acquire,
                binds: {
                    var b = PostgresBindings()
                    b.append(sender); b.append(holder); b.append(run); b.append(time); b.append(time + ttl)
                    return b
                }()))
        let row = try await rows("SELECT sender, holder, run, acquired_at, expires_at FROM sender_leases WHERE sender = \(sender)")[0]
        let (s, h, r, acquired, expires) = try row.decode((String, String, String, Double, Double).self)
        return SenderLease(sender: s, holder: h, run: r, acquiredAt: acquired, expiresAt: expires)
    }

    public func releaseSenderLease(sender: String, holder: String) async throws {
        try await rows("DELETE FROM sender_leases WHERE sender = \(sender) AND holder = \(holder)")
    }

    // MARK: - Audit

    public func webhookPayloads(after: Int64?, limit: Int) async throws -> [StoredPayload] {
        try await rows(
            """
            SELECT id, received_at, signature, body, parse_error, statuses FROM webhook_payloads WHERE id > \(after ?? 0) ORDER BY id LIMIT \(limit)
            """
        ).map { row in
            var r = Cells(row)
            let id: Int64 = try r.next(), receivedAt: Double = try r.next(), signature: String? = try r.next()
            var body: ByteBuffer = try r.next()
            return StoredPayload(
                id: id, receivedAt: receivedAt, signature: signature, body: body.readBytes(length: body.readableBytes) ?? [],
                parseError: try r.next(), statuses: try r.next())
        }
    }

    public func inboundMessages(limit: Int) async throws -> [InboundRecord] {
        try await rows(
            """
            SELECT wamid, from_phone, from_user_id, timestamp, type, body FROM inbound_messages ORDER BY timestamp, wamid LIMIT \(limit)
            """
        ).map { row in
            let (wamid, from, userID, timestamp, type, body) = try row.decode((String, String, String?, Double, String, String?).self)
            return InboundRecord(wamid: wamid, from: from, fromUserID: userID, timestamp: timestamp, type: type, body: body)
        }
    }
}

/// Reads a row's columns in order.
struct Cells {
    let row: PostgresRandomAccessRow
    var index = 0

    init(_ row: PostgresRow) { self.row = row.makeRandomAccess() }

    mutating func next<T: PostgresDecodable>(_: T.Type = T.self) throws -> T {
        defer { index += 1 }
        return try row[index].decode(T.self)
    }
}

/// Said before migrating a database an older dispatcher used (not a new one): the first start after
/// an upgrade may rewrite a big table, and would otherwise look hung. A warning, so that `send`
/// (which logs only those) says it too.
func migrationNotice(_ count: Int, database: String) {
    Logger(label: "dispatcher.store").warning(
        "upgrading the \(database) (\(count) migration\(count == 1 ? "" : "s")): on a big one this can take a minute or more per million messages stored, and other processes using it wait"
    )
}
