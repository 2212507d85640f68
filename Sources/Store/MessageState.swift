/// Where a message stands. States only move forward (`sent < delivered < read`); `failed` gives
/// way only to `delivered` or `read`, which prove the tenant got the message after all.
public enum MessageState: String, Sendable, Codable, CaseIterable, Comparable {
    /// Stored, not yet sent.
    case queued
    /// The request is in flight.
    case sending
    /// The request may have reached Meta but no answer was recorded: never resent blindly.
    case unknown
    /// Meta answered with a wamid.
    case accepted
    case sent
    case delivered
    case read
    /// Meta's error code, title and details are kept with it.
    case failed
    /// Never sent on purpose: nothing due, invalid, opted out, already sent in an earlier run.
    case skipped

    /// The order used by the forward-only rule, also stored as `state_rank`.
    public var rank: Int {
        switch self {
        case .queued: 0
        case .sending: 1
        case .unknown: 2
        case .accepted: 3
        case .sent: 4
        case .delivered: 5
        case .read: 6
        case .failed: 7
        case .skipped: 9
        }
    }

    /// No webhook can change it any more, short of `delivered`/`read` after `failed`.
    public var isFinal: Bool { self == .read || self == .failed || self == .skipped || self == .delivered }

    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }

    /// The state a webhook status leads to from this one, or nil when it changes nothing.
    ///
    /// The same rule as the SQL in the stores (tests hold them to each other): applying any
    /// permutation of a message's statuses ends in the same state.
    public func applying(_ status: String) -> MessageState? {
        switch status {
        case "sent": rank < MessageState.sent.rank ? .sent : nil
        case "delivered": (self == .failed || rank < MessageState.delivered.rank) ? .delivered : nil
        case "read": (self == .failed || rank < MessageState.read.rank) ? .read : nil
        case "failed": (self == .delivered || self == .read || self == .skipped || self == .failed) ? nil : .failed
        default: nil
        }
    }
}
