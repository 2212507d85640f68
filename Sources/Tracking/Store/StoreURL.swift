/// Opens the store a database URL names: `sqlite:PATH` (the default, `sqlite:dispatcher.sqlite`)
/// or `sqlite://PATH`. PostgreSQL (`postgres://…`) is the next engine.
public enum StoreOpener {
    public static func open(url: String, busyTimeout: Double = 5) throws -> any DispatchStore {
        if url.hasPrefix("sqlite://") { return try SQLiteStore(path: String(url.dropFirst(9)), busyTimeout: busyTimeout) }
        if url.hasPrefix("sqlite:") { return try SQLiteStore(path: String(url.dropFirst(7)), busyTimeout: busyTimeout) }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            throw StoreError("PostgreSQL is not supported yet: use sqlite:PATH (the embedded default)")
        }
        if url.hasSuffix(".sqlite") || url.hasSuffix(".db") { return try SQLiteStore(path: url, busyTimeout: busyTimeout) }
        throw StoreError("'\(url)' is not a database URL: use sqlite:PATH (e.g. sqlite:dispatcher.sqlite)")
    }
}
