import Foundation

/// Opens the store a database URL names: `sqlite:PATH` (the default, `sqlite:dispatcher.sqlite`),
/// `sqlite://PATH`, or `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (see `PostgresURL` for its options).
public enum StoreOpener {
    public static func open(url: String, busyTimeout: Double = 5) async throws -> any DispatchStore {
        if url.hasPrefix("sqlite://") { return try SQLiteStore(path: String(url.dropFirst(9)), busyTimeout: busyTimeout) }
        if url.hasPrefix("sqlite:") { return try SQLiteStore(path: String(url.dropFirst(7)), busyTimeout: busyTimeout) }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") { return try await PostgresStore.open(url: url) }
        if url.hasSuffix(".sqlite") || url.hasSuffix(".db") { return try SQLiteStore(path: url, busyTimeout: busyTimeout) }
        throw StoreError(
            "'\(PostgresURL.redacted(url))' is not a database URL: use sqlite:PATH (e.g. sqlite:dispatcher.sqlite) or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    }

    /// The store only if there is one already: nil for an SQLite file that does not exist (a
    /// dry run must not create a database).
    public static func openExisting(url: String) async throws -> (any DispatchStore)? {
        let path: String? =
            url.hasPrefix("sqlite://")
            ? String(url.dropFirst(9))
            : url.hasPrefix("sqlite:")
                ? String(url.dropFirst(7))
                : (url.hasSuffix(".sqlite") || url.hasSuffix(".db")) && !url.contains("://") ? url : nil
        if let path, !FileManager.default.fileExists(atPath: path) { return nil }
        return try await open(url: url)
    }
}
