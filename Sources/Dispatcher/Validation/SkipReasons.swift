/// Why a message was not sent, or our own word on a failure, as the store keeps them: English
/// text (for messages.csv and the logs) built here, so that the report, which says them in its
/// reader's language, recognises exactly what was written.
public enum SkipReason {
    public static let nothingDue = "nothing due"
    public static let optedOut = "opted out"
    public static let alreadySent = "already sent in run "
    /// The start of `not sent: template 'invoice' (en) is PAUSED at Meta…`
    /// (`--skip-unapproved-languages`): put back in the queue when the run is sent again.
    public static let templateNotApproved = "not sent: "

    /// `nothing due (amount 0.00 DOP)`.
    public static func nothingDue(amount: String) -> String { "\(nothingDue) (amount \(amount))" }
    /// The tenant asked to stop: `opted out: …`.
    public static let optedOutByTenant = "\(optedOut): the tenant asked to stop receiving messages"
    /// `already sent in run feb (delivered); --resend sends it again`.
    public static func alreadySent(run: String, state: String) -> String {
        "\(alreadySent)\(run) (\(state)); --resend sends it again"
    }
}

/// Failure details the engine writes itself (Meta's are kept as Meta gave them).
public enum FailureDetail {
    public static let perUserLimit = "Meta's per-user limit: retry not before "
    /// Held back by Meta's per-user limit (131049) until `notBefore` (ISO 8601).
    public static func perUserLimit(notBefore: String) -> String { perUserLimit + notBefore }
}
