public import Foundation
import Logging
import PostgresNIO
public import Store

/// The engines every store, webhook and run test runs on.
public enum StoreEngine: String, Sendable, CaseIterable, CustomStringConvertible {
    case sqlite
    case postgres

    public var description: String { rawValue }
}

/// SQLite always; PostgreSQL unless `DISPATCHER_TEST_SKIP_POSTGRES=1` says to skip it (loudly).
/// Without `DISPATCHER_TEST_POSTGRES_URL` the PostgreSQL cases fail, saying how to run them:
/// `scripts/test` starts a throw-away server and sets it.
public let engines: [StoreEngine] = {
    if ProcessInfo.processInfo.environment["DISPATCHER_TEST_SKIP_POSTGRES"] == "1" {
        FileHandle.standardError.write(Data("WARNING: DISPATCHER_TEST_SKIP_POSTGRES=1: PostgreSQL is NOT tested in this run\n".utf8))
        return [.sqlite]
    }
    return [.sqlite, .postgres]
}()

/// The PostgreSQL server the tests use: a user who may create databases.
public func postgresAdminURL() throws -> String {
    guard let url = ProcessInfo.processInfo.environment["DISPATCHER_TEST_POSTGRES_URL"], !url.isEmpty else {
        throw StoreError(
            """
            DISPATCHER_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts a throw-away PostgreSQL, \
            or set it to a server of yours (or DISPATCHER_TEST_SKIP_POSTGRES=1 to skip PostgreSQL)
            """)
    }
    return url
}

/// A fresh SQLite file in its own temporary folder.
public func freshSQLitePath() throws -> String {
    try scratchFolder("store").appendingPathComponent("dispatcher.sqlite").path
}

/// A new folder for one test's files. All of them live in this test process's own folder
/// (`dispatcher-tests-PID` in the temporary directory), removed when the process exits: a full
/// run used to leave a hundred folders behind.
public func scratchFolder(_ prefix: String) throws -> URL {
    let folder = ScratchRoot.url.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    return folder
}

private enum ScratchRoot {
    static let url: URL = {
        atexit { try? FileManager.default.removeItem(at: ScratchRoot.url) }
        return FileManager.default.temporaryDirectory.appendingPathComponent("dispatcher-tests-\(getpid())")
    }()
}

/// The URL of a new, empty database on the engine (a new SQLite file, or a new PostgreSQL database).
public func freshDatabaseURL(_ engine: StoreEngine) async throws -> String {
    switch engine {
    case .sqlite:
        return "sqlite:" + (try freshSQLitePath())
    case .postgres:
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(24)
        let url = try await PostgresStore.createDatabase(named: String(name), adminURL: try postgresAdminURL())
        return url + (url.contains("?") ? "&" : "?") + "max_connections=6"
    }
}

/// A new, empty, migrated store on the engine.
public func makeStore(_ engine: StoreEngine, busyTimeout: Double = 5) async throws -> any DispatchStore {
    try await StoreOpener.open(url: try await freshDatabaseURL(engine), busyTimeout: busyTimeout)
}

/// Another session holding a table locked, as a long migration or an operator's query would:
/// for tests of what receivers do while the database cannot take writes.
public final class PostgresTableLock: Sendable {
    let connection: PostgresConnection
    let logger: Logger

    public static func hold(_ table: String, databaseURL: String) async throws -> PostgresTableLock {
        let (connection, logger) = try await connect(databaseURL)
        try await connection.query("BEGIN", logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: "LOCK TABLE \(table) IN ACCESS EXCLUSIVE MODE"), logger: logger)
        return PostgresTableLock(connection: connection, logger: logger)
    }

    init(connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    public func release() async throws {
        try await connection.query("ROLLBACK", logger: logger)
        try await connection.close()
    }
}

/// Runs one statement as the test server's administrator (to refuse or cut a database's connections).
public func postgresAdmin(_ sql: String) async throws {
    let (connection, logger) = try await connect(try postgresAdminURL())
    try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    try await connection.close()
}

/// How many connections the dispatcher has open to `databaseURL`'s database (its `application_name`).
public func dispatcherConnections(to databaseURL: String) async throws -> Int {
    let database = try PostgresURL(databaseURL).database
    let (connection, logger) = try await connect(try postgresAdminURL())
    let rows = try await connection.query(
        "SELECT count(*)::int FROM pg_stat_activity WHERE datname = \(database) AND application_name = 'dispatcher'", logger: logger
    ).collect()
    try await connection.close()
    return try rows[0].decode(Int.self)
}

/// A connection of the test's own, beside the store's pool (the test server takes no TLS).
func connect(_ text: String) async throws -> (PostgresConnection, Logger) {
    let url = try PostgresURL(text)
    var logger = Logger(label: "test.postgres")
    logger.logLevel = .critical
    let configuration = PostgresConnection.Configuration(
        host: url.host, port: url.port, username: url.user, password: url.password,
        database: url.database, tls: .disable)
    return (try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger), logger)
}

/// A server's bound port, handed from its `onListening` callback to the test that waits for it.
public actor Ready {
    private var port: Int?
    private var waiters: [CheckedContinuation<Int, Never>] = []
    public init() {}
    public func set(_ port: Int) {
        self.port = port
        waiters.forEach { $0.resume(returning: port) }
        waiters = []
    }
    public func wait() async -> Int {
        if let port { return port }
        return await withCheckedContinuation { waiters.append($0) }
    }
}

// Records and webhooks the store tests and the server tests both start from.

public func freshStore(busyTimeout: Double = 5) throws -> SQLiteStore {
    try SQLiteStore(path: try freshSQLitePath(), busyTimeout: busyTimeout)
}

/// A run with one invoice and one queued message per phone.
@discardableResult
public func seed(
    _ store: any DispatchStore, run: String = "march", invoice: String = "INV-1", phones: [String] = ["18095550101"],
    landlord: String = "Caribe"
) async throws -> [String] {
    try await store.saveRun(RunRecord(name: run, manifest: "m.csv", template: "invoice", sender: "123", createdAt: 1_772_000_000))
    try await store.addInvoices([
        InvoiceRecord(
            run: run, invoiceID: invoice, line: 2, tenantName: "María Pérez", landlord: landlord,
            amountMinor: 1_234_550, currency: "DOP", period: "2026-03", locale: "es-DO")
    ])
    let messages = phones.map {
        NewMessage(id: "m-\(invoice)-\($0)", run: run, invoiceID: invoice, phone: $0, template: "invoice", language: "es")
    }
    _ = try await store.addMessages(messages)
    return messages.map(\.id)
}

/// A status as Meta would send it for our message.
public func status(
    _ wamid: String, _ status: WebhookStatus, at timestamp: Int64, callback: String? = nil, error: Int? = nil
) -> StatusUpdate {
    StatusUpdate(
        wamid: wamid, status: status, timestamp: timestamp, recipientID: "18095550101", callbackData: callback,
        errorCode: error, errorTitle: error.map { "error \($0)" }, errorDetails: error.map { "details \($0)" })
}

public func ingest(_ store: any DispatchStore, _ updates: [StatusUpdate], inbound: [InboundText] = []) async throws -> IngestResult {
    var contents = WebhookContents()
    contents.statuses = updates
    contents.inbound = inbound
    return try await store.ingestWebhook(
        body: Array("{}".utf8), signature: "sha256=test", contents: contents, parseError: nil,
        at: Date().timeIntervalSince1970)
}

/// Every ordering of a list.
public func permutations<T>(_ items: [T]) -> [[T]] {
    guard items.count > 1 else { return [items] }
    return items.indices.flatMap { i -> [[T]] in
        var rest = items
        let head = rest.remove(at: i)
        return permutations(rest).map { [head] + $0 }
    }
}
