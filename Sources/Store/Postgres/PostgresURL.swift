import Foundation

/// What a `postgres://` URL says, libpq style:
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…&connect_timeout=…&statement_timeout=…&max_connections=…]`.
///
/// - `sslmode`: `disable`, `prefer` (the default: TLS when the server offers it), `require` (TLS,
///   certificate not checked, as libpq), `verify-full` (TLS, certificate and host name checked).
/// - `connect_timeout` (seconds, default 10), `statement_timeout` (seconds, default 30): a query
///   that takes longer fails instead of hanging a webhook or a run.
/// - `max_connections`: the pool's size (default 16).
/// - `host=/path`: a Unix socket folder instead of TCP.
public struct PostgresURL: Sendable, Equatable {
    public enum TLSMode: String, Sendable { case disable, prefer, require, verifyFull = "verify-full" }

    public var host: String
    public var port: Int
    public var socketFolder: String?
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    public var connectTimeout: Double
    public var statementTimeout: Double
    public var maxConnections: Int

    public init(_ text: String) throws {
        guard text.hasPrefix("postgres://") || text.hasPrefix("postgresql://"), let components = URLComponents(string: text) else {
            throw StoreError("'\(Self.redacted(text))' is not a PostgreSQL URL: use postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
        port = components.port ?? 5432
        user = components.user.flatMap { $0.removingPercentEncoding } ?? ProcessInfo.processInfo.environment["USER"] ?? "postgres"
        password = components.password.flatMap { $0.removingPercentEncoding }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? user : (path.removingPercentEncoding ?? path)
        tls = .prefer
        connectTimeout = 10
        statementTimeout = 30
        maxConnections = 16
        for item in components.queryItems ?? [] where !item.name.isEmpty {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                switch value {
                case "disable", "allow": tls = .disable
                case "prefer": tls = .prefer
                case "require", "verify-ca": tls = .require
                case "verify-full": tls = .verifyFull
                default: throw StoreError("sslmode=\(value) is not one of disable, prefer, require, verify-full")
                }
            case "connect_timeout": connectTimeout = try Self.positive(value, item.name)
            case "statement_timeout": statementTimeout = try Self.positive(value, item.name)
            case "max_connections": maxConnections = Int(try Self.positive(value, item.name))
            case "host": socketFolder = value
            default:
                throw StoreError(
                    "unknown PostgreSQL URL option '\(item.name)' (known: sslmode, connect_timeout, statement_timeout, max_connections, host)"
                )
            }
        }
    }

    /// The URL without its password, for logs and errors.
    public var redacted: String {
        let at = socketFolder.map { "[\($0)]" } ?? "\(host):\(port)"
        return "postgres://\(user)@\(at)/\(database)"
    }

    public static func redacted(_ text: String) -> String {
        guard let at = text.lastIndex(of: "@"), let scheme = text.range(of: "://") else { return text }
        return String(text[..<scheme.upperBound]) + "…" + String(text[at...])
    }

    private static func positive(_ value: String, _ name: String) throws -> Double {
        guard let number = Double(value), number > 0 else { throw StoreError("\(name)=\(value) is not a positive number") }
        return number
    }
}
