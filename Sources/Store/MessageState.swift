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
    /// Meta took it (a wamid) but holds it: `message_status` `held_for_quality_assessment` (Meta
    /// is assessing the template's quality) or `paused`. A `sent` status releases it.
    case held
    case sent
    case delivered
    case read
    /// Meta's error code, title and details are kept with it.
    case failed
    /// Never sent on purpose: nothing due, invalid, opted out, already sent in an earlier run.
    case skipped

    /// The order used by the forward-only rule, also stored as `state_rank`.
    /// `state = '…', state_rank = N`: this state as SQL sets it (the rank is never written by hand).
    public var sqlAssignment: String { "state = '\(rawValue)', state_rank = \(rank)" }

    public var rank: Int {
        switch self {
        case .queued: 0
        case .sending: 1
        case .unknown: 2
        case .accepted: 3
        case .held: 3  // beside accepted: both are "Meta took it"; every status moves it on
        case .sent: 4
        case .delivered: 5
        case .read: 6
        case .failed: 7
        case .skipped: 9
        }
    }

    /// Its place among `allCases`: unique (ranks are not: `held` and `accepted` share one), for
    /// counting into an array.
    public var ordinal: Int {
        switch self {
        case .queued: 0
        case .sending: 1
        case .unknown: 2
        case .accepted: 3
        case .held: 4
        case .sent: 5
        case .delivered: 6
        case .read: 7
        case .failed: 8
        case .skipped: 9
        }
    }

    /// No webhook can change it any more, short of `delivered`/`read` after `failed`.
    public var isFinal: Bool { self == .read || self == .failed || self == .skipped || self == .delivered }

    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }

    /// The state a webhook status leads to from this one, or nil when it changes nothing.
    ///
    /// `StatusRule.all` is the rule; both engines' SQL is generated from it (tests hold them to
    /// each other): applying any permutation of a message's statuses ends in the same state.
    public func applying(_ status: WebhookStatus) -> MessageState? {
        guard let rule = StatusRule.for(status), rule.moves(from: self) else { return nil }
        return rule.target
    }
}

/// The forward-only rule, as data: the one place it is written. A status moves a message to its
/// target when the message's rank is lower (and it is not one the rule keeps), or when the message
/// is in a state the rule overrides (a late `delivered` proves a `failed` wrong). `SQLiteStore` and
/// `PostgresSchema` generate their SQL from this table; `MessageState.applying` reads it.
public struct StatusRule: Sendable {
    /// Meta's status.
    public let status: WebhookStatus
    public let target: MessageState
    /// The message's column keeping the earliest time Meta gave for this status.
    public let timeColumn: String
    /// Lower-ranked states this status does not move.
    public let keeps: [MessageState]
    /// States this status moves although their rank is not lower.
    public let overrides: [MessageState]
    /// The status carries Meta's error code, title and details, kept with the message.
    public let recordsError: Bool

    public static let all: [StatusRule] = [
        StatusRule(status: "sent", target: .sent, timeColumn: "sent_at", keeps: [], overrides: [], recordsError: false),
        StatusRule(
            status: "delivered", target: .delivered, timeColumn: "delivered_at", keeps: [], overrides: [.failed], recordsError: false),
        StatusRule(status: "read", target: .read, timeColumn: "read_at", keeps: [], overrides: [.failed], recordsError: false),
        StatusRule(
            status: "failed", target: .failed, timeColumn: "failed_at", keeps: [.delivered, .read], overrides: [], recordsError: true),
    ]

    /// The rule of a status; nil for `played` and any status Meta adds later (kept in the history only).
    public static func `for`(_ status: WebhookStatus) -> StatusRule? { all.first { $0.status == status } }

    public func moves(from state: MessageState) -> Bool {
        (state.rank < target.rank && !keeps.contains(state)) || overrides.contains(state)
    }

    /// The same test in SQL, on a `messages` row's `state` and `state_rank`.
    public var sqlCondition: String { sqlCondition(state: "state", rank: "state_rank") }

    /// The same test in SQL, on the state and rank named (columns, or PL/pgSQL variables).
    public func sqlCondition(state: String, rank: String) -> String {
        func list(_ states: [MessageState]) -> String { states.map { "'\($0.rawValue)'" }.joined(separator: ", ") }
        var condition = "\(rank) < \(target.rank)"
        if !keeps.isEmpty { condition += " AND \(state) NOT IN (\(list(keeps)))" }
        if !overrides.isEmpty { condition = "(\(condition) OR \(state) IN (\(list(overrides))))" }
        return condition
    }
}

/// What became of an invoice, from the states of its messages (one per phone, and any sent again):
/// the first that applies, so that each invoice is counted once. The raw values are the numbers
/// PostgreSQL's report query computes (`ReportSQL.invoiceOutcomes`).
public enum InvoiceOutcome: Int, Sendable, CaseIterable {
    /// A message was delivered (or read).
    case delivered = 0
    /// None delivered, and one may still be: queued, sending, unknown, accepted, held, sent.
    case open = 1
    /// Every message ended; those that failed, failed because the number is not on WhatsApp (131026).
    case notOnWhatsApp = 2
    /// Every message ended, one failed for another reason.
    case failed = 3
    /// Every message was skipped on purpose.
    case notSent = 4

    /// An invoice's messages, folded into bits as they are read (in any order).
    public struct Marks: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let seen = Marks(rawValue: 1)
        public static let delivered = Marks(rawValue: 2)
        public static let read = Marks(rawValue: 4)
        public static let open = Marks(rawValue: 8)
        public static let notOnWhatsApp = Marks(rawValue: 16)
        public static let failed = Marks(rawValue: 32)

        /// What one message in `state` (with Meta's `errorCode` when failed) says of its invoice.
        public init(state: MessageState, errorCode: Int?) {
            switch state {
            case .delivered: self = [.seen, .delivered]
            case .read: self = [.seen, .delivered, .read]
            case .queued, .sending, .unknown, .accepted, .held, .sent: self = [.seen, .open]
            case .failed: self = errorCode == Self.notOnWhatsAppCode ? [.seen, .notOnWhatsApp] : [.seen, .failed]
            case .skipped: self = .seen
            }
        }

        static let notOnWhatsAppCode = 131026
    }

    public init(_ marks: Marks) {
        if marks.contains(.delivered) {
            self = .delivered
        } else if marks.contains(.open) {
            self = .open
        } else if marks.contains(.failed) {
            self = .failed
        } else if marks.contains(.notOnWhatsApp) {
            self = .notOnWhatsApp
        } else {
            self = .notSent
        }
    }
}
