import Dispatcher
import Foundation

/// What the sandbox does with a message to one recipient.
public enum Outcome: String, Sendable, Codable, CaseIterable {
    /// sent, delivered, read.
    case deliveredRead = "delivered_read"
    /// sent, delivered; never read.
    case delivered
    /// sent, read (no delivered: Meta does this).
    case readWithoutDelivered = "read_without_delivered"
    /// sent only: the phone is off for good.
    case neverDelivered = "never_delivered"
    /// Accepted, then failed 131026 in a webhook: not on WhatsApp.
    case undeliverable
    /// Refused at once with 131049 (per-user marketing limit).
    case marketingLimit = "marketing_limit"
    /// Accepted, then failed 131050 in a webhook (opted out of marketing).
    case optedOutOfMarketing = "opted_out_of_marketing"
    /// The first request answers 131000, later ones go through.
    case transientOnce = "transient_once"
    /// The first request answers 133004 (server temporarily unavailable).
    case unavailableOnce = "unavailable_once"
    /// The first request answers HTTP 500 with no envelope.
    case serverErrorOnce = "server_error_once"
    /// Answers after 3 seconds.
    case slow
    /// The first request is taken (statuses follow by webhook) but never answered.
    case timeoutOnce = "timeout_once"
    /// read, sent, delivered, delivered again, read again: out of order and duplicated.
    case reorderedDuplicated = "reordered_duplicated"
    /// sent, failed 131026, then delivered after all (several devices).
    case lateFailure = "late_failure"
    /// delivered, read, then the tenant replies "STOP".
    case replyStop = "reply_stop"
    /// delivered, read, then the tenant replies "STOP" as a username user (2026): statuses carry
    /// `recipient_user_id` and an empty `recipient_id`, the reply `from_user_id` and no `from`.
    case replyStopUsername = "reply_stop_username"
    /// delivered, read, then the tenant replies with thanks.
    case replyThanks = "reply_thanks"
    /// Every request answers 190: the token expired (a run halts).
    case tokenExpired = "token_expired"
    /// Every request answers 131042: payment problem (a run halts).
    case paymentIssue = "payment_issue"
    /// Accepted, then failed 131042 in a webhook: the payment problem Meta reports after the fact.
    case paymentIssueByWebhook = "payment_issue_by_webhook"
    /// Accepted, then failed 131048 in a webhook: the number hit Meta's spam rate limit.
    case spamLimitByWebhook = "spam_limit_by_webhook"
    /// Taken but held (`message_status: held_for_quality_assessment`), released later: sent, delivered.
    case heldForQuality = "held_for_quality"
}

/// How outcomes are chosen: rules from a scenario file first, then the default rules on the
/// recipient number's last digits (documented in docs/sandbox.md).
public struct Scenario: Sendable, Decodable {
    public struct Rule: Sendable, Decodable {
        /// A whole number (`18095550101`) or `suffix:DIGITS`.
        public var match: String
        public var outcome: Outcome

        public init(match: String, outcome: Outcome) {
            self.match = match
            self.outcome = outcome
        }
    }

    /// A window during which every send request is refused, whoever it is for: a Meta outage
    /// (`133004` with HTTP 503, `131000` or `1`/`2` with 500) or a throughput upgrade (`131057`).
    /// `start` and `seconds` count from the first send request the sandbox receives.
    public struct Outage: Sendable, Decodable {
        public var start: Double
        public var seconds: Double
        public var code: Int

        public init(start: Double, seconds: Double, code: Int = 133004) {
            self.start = start
            self.seconds = seconds
            self.code = code
        }
    }

    public var rules: [Rule]
    public var outages: [Outage]?
    /// Template languages Meta does not have (`"fr"`, or `"invoice:fr"` for one template): sends
    /// in them answer 132001, as when a translation was never approved or was deleted.
    public var missingLanguages: [String]?
    /// Template statuses other than APPROVED, by `"invoice"` (every language) or `"invoice:fr"`:
    /// `PAUSED` answers 132015, `DISABLED` 132016, anything else (`PENDING`, `REJECTED`…) 132001;
    /// the template list shows them.
    public var templateStatuses: [String: String]?
    /// A template Meta pauses in the middle of a run (its quality dropped): after this many
    /// accepted sends with it, it is PAUSED in every language.
    public var pauseTemplate: PauseRule?

    public struct PauseRule: Sendable, Decodable {
        public var template: String
        public var afterSends: Int

        enum CodingKeys: String, CodingKey {
            case template
            case afterSends = "after_sends"
        }

        public init(template: String, afterSends: Int) {
            self.template = template
            self.afterSends = afterSends
        }
    }

    enum CodingKeys: String, CodingKey {
        case rules, outages
        case missingLanguages = "missing_languages"
        case templateStatuses = "template_statuses"
        case pauseTemplate = "pause_template"
    }

    public init(
        rules: [Rule] = [], outages: [Outage] = [], missingLanguages: [String] = [], templateStatuses: [String: String] = [:],
        pauseTemplate: PauseRule? = nil
    ) {
        self.rules = rules
        self.outages = outages
        self.missingLanguages = missingLanguages
        self.templateStatuses = templateStatuses
        self.pauseTemplate = pauseTemplate
    }

    /// The status the scenario gives `template` in `language` after `acceptedSends` sends with it.
    public func status(template: String, language: String, acceptedSends: Int) -> String {
        if let pause = pauseTemplate, pause.template == template, acceptedSends >= pause.afterSends { return "PAUSED" }
        return templateStatuses?["\(template):\(language)"] ?? templateStatuses?[template] ?? "APPROVED"
    }

    /// True when the scenario says Meta has no `template` in `language`.
    public func lacks(template: String, language: String) -> Bool {
        missingLanguages?.contains { $0 == language || $0 == "\(template):\(language)" } ?? false
    }

    /// The outage in force `elapsed` seconds after the first send request, if any.
    public func outage(at elapsed: Double) -> Outage? {
        outages?.first { elapsed >= $0.start && elapsed < $0.start + $0.seconds }
    }

    public static func load(path: String) throws -> Scenario {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SandboxError("scenario \(path): cannot be read (\(error.localizedDescription))")
        }
        do {
            return try JSONDecoder().decode(Scenario.self, from: data)
        } catch let error as DecodingError {
            let known = error.lastKey == "outcome" ? "; the outcomes are \(Outcome.allCases.map(\.rawValue).joined(separator: ", "))" : ""
            throw SandboxError("scenario \(path): \(error.readable(in: data))\(known) (docs/sandbox.md)")
        }
    }

    public func outcome(for number: String) -> Outcome {
        for rule in rules {
            if rule.match.hasPrefix("suffix:") {
                if number.hasSuffix(String(rule.match.dropFirst(7))) { return rule.outcome }
            } else if rule.match == number {
                return rule.outcome
            }
        }
        return Scenario.defaultOutcome(for: number)
    }

    /// The default rules: the last two digits first (the rarer, disruptive cases), then the last one.
    public static func defaultOutcome(for number: String) -> Outcome {
        switch number.suffix(2) {
        case "12": return .replyThanks
        case "13": return .replyStop
        case "90": return .transientOnce
        case "91": return .unavailableOnce
        case "92": return .serverErrorOnce
        case "93": return .slow
        case "94": return .timeoutOnce
        case "95": return .marketingLimit
        case "96": return .optedOutOfMarketing
        case "97": return .replyStopUsername
        default: break
        }
        switch number.last {
        case "4": return .delivered
        case "5": return .readWithoutDelivered
        case "6": return .neverDelivered
        case "7": return .undeliverable
        case "8": return .reorderedDuplicated
        case "9": return .lateFailure
        default: return .deliveredRead
        }
    }
}

public struct SandboxError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
