import Foundation

/// Unix seconds as ISO 8601 (UTC, `2026-03-01T12:00:00Z`): how the API, the reports and messages
/// to operators show a time. The one formatter of the project.
public func iso8601(_ seconds: Double?) -> String? {
    seconds.map { Date(timeIntervalSince1970: $0).formatted(.iso8601) }
}
