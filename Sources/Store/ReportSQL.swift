/// The report page's figures in SQL: `$1` is the run, `$2` the landlord ('' for every landlord).
/// The GROUP BY queries are PostgreSQL's (SQLite adds up one pass in Swift instead, `ReportPass`:
/// it sorts grouped rows); the example rows and the merging of figures serve both engines.
enum ReportSQL {
    static let join = "FROM messages m JOIN invoices i ON i.run = m.run AND i.invoice_id = m.invoice_id"
    /// On the message's own copy of its invoice's landlord (the same, stored with it): a message of
    /// another landlord is passed over without its invoice, and PostgreSQL can go through the
    /// landlord's index (`messages_landlord`).
    static let landlordFilter = "($2 = '' OR m.landlord = $2)"

    /// `sql` (one of the queries here) for one landlord: the filter without its "every landlord"
    /// branch; and either SQLite told to go through the landlord's index (`index`: `INDEXED BY`;
    /// without statistics it took the run's, and walked all of the run's failed or open messages
    /// for each example list), or (PostgreSQL, whose planner finds that index itself) each message's
    /// invoice looked up by its key: joined, the planner hashed the whole run's invoices for a
    /// landlord's thousand messages (68 ms a landlord at 200,000 invoices).
    static func oneLandlord(_ sql: String, index: String? = nil) -> String {
        let filtered = sql.replacing(landlordFilter, with: "m.landlord = $2")
        guard let index else { return filtered.replacing(join, with: lateralJoin) }
        return filtered.replacing("FROM messages m ", with: "FROM messages m INDEXED BY \(index) ")
    }

    static let lateralJoin =
        "FROM messages m JOIN LATERAL (SELECT * FROM invoices i WHERE i.run = m.run AND i.invoice_id = m.invoice_id LIMIT 1) i ON true"

    /// Per landlord, currency and state: messages.
    static let byLandlordAndState = """
        SELECT i.landlord, i.currency, m.state, COUNT(*)
        \(join) WHERE m.run = $1 AND \(landlordFilter)
        GROUP BY i.landlord, i.currency, m.state
        """

    /// Per landlord, currency, outcome (`InvoiceOutcome`'s raw value) and read or not: invoices
    /// with messages, and their amount.
    static let invoiceOutcomes = """
        SELECT i.landlord, i.currency, d.outcome, d.read, COUNT(*), CAST(SUM(i.amount_minor) AS BIGINT)
        FROM invoices i JOIN (
            SELECT invoice_id,
                CASE WHEN MAX(CASE WHEN state IN ('delivered', 'read') THEN 1 ELSE 0 END) = 1 THEN \(InvoiceOutcome.delivered.rawValue)
                    WHEN MAX(CASE WHEN state IN ('queued', 'sending', 'unknown', 'accepted', 'held', 'sent') THEN 1 ELSE 0 END) = 1
                        THEN \(InvoiceOutcome.open.rawValue)
                    WHEN MAX(CASE WHEN state = 'failed' AND error_code IS DISTINCT FROM \(InvoiceOutcome.Marks.notOnWhatsAppCode)
                        THEN 1 ELSE 0 END) = 1 THEN \(InvoiceOutcome.failed.rawValue)
                    WHEN MAX(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) = 1 THEN \(InvoiceOutcome.notOnWhatsApp.rawValue)
                    ELSE \(InvoiceOutcome.notSent.rawValue) END AS outcome,
                MAX(CASE WHEN state = 'read' THEN 1 ELSE 0 END) AS read
            FROM messages m WHERE run = $1 AND \(landlordFilter) GROUP BY invoice_id
        ) d ON d.invoice_id = i.invoice_id
        WHERE i.run = $1
        GROUP BY i.landlord, i.currency, d.outcome, d.read
        """

    /// Failed and unknown messages by error, largest first.
    static let problems = """
        SELECT m.state, m.error_code, m.error_title, COUNT(*) \(join)
        WHERE m.run = $1 AND \(landlordFilter) AND m.state IN ('failed', 'unknown')
        GROUP BY m.state, m.error_code, m.error_title ORDER BY COUNT(*) DESC LIMIT 500
        """

    static let sampleColumns = "SELECT m.seq, m.invoice_id, i.tenant_name, m.phone, i.email, m.error_details, m.skip_reason"

    /// The first messages of one group: `$3` state, `$4` code, `$5` title (NULL-safe), `$6` how many.
    static func samples(nullSafeEqual: String) -> String {
        """
        \(sampleColumns) \(join)
        WHERE m.run = $1 AND \(landlordFilter) AND m.state = $3 AND m.error_code \(nullSafeEqual) $4 AND m.error_title \(nullSafeEqual) $5
        ORDER BY m.seq LIMIT $6
        """
    }

    /// The first skipped messages: `$3` how many.
    static let skippedSamples = """
        \(sampleColumns) \(join)
        WHERE m.run = $1 AND \(landlordFilter) AND m.state = 'skipped' ORDER BY m.seq LIMIT $3
        """

    /// The first messages WhatsApp took whose outcome is not known yet (accepted, held, sent):
    /// `$3` how many. Their state and invoice amount are shown with them. (Queued ones were never
    /// sent, unknown ones have their own advice: neither is "wait".)
    static let pendingSamples = """
        SELECT m.seq, m.invoice_id, i.tenant_name, m.phone, m.state, i.amount_minor, i.currency \(join)
        WHERE m.run = $1 AND \(landlordFilter) AND m.state IN ('accepted', 'held', 'sent')
        ORDER BY m.seq LIMIT $3
        """

    /// Messages by the minute they were accepted and the minute they were delivered (or read);
    /// `minute` turns seconds into whole minutes in the engine's SQL.
    static func timeline(minute: (String) -> String) -> String {
        """
        SELECT \(minute("m.accepted_at")), \(minute("COALESCE(m.delivered_at, m.read_at)")), COUNT(*) \(join)
        WHERE m.run = $1 AND \(landlordFilter) AND (m.accepted_at IS NOT NULL OR m.delivered_at IS NOT NULL OR m.read_at IS NOT NULL)
        GROUP BY 1, 2
        """
    }

    /// The figures of one landlord in one currency, added to the summary the first time.
    static func figures(_ landlord: String?, _ currency: String, in summary: inout ReportSummary, index: inout [String: Int]) -> Int {
        let key = (landlord ?? "\u{0}") + "|" + currency
        if let at = index[key] { return at }
        summary.landlords.append(ReportSummary.Landlord(landlord: landlord, currency: currency))
        index[key] = summary.landlords.count - 1
        return summary.landlords.count - 1
    }

    /// Adds a row of `byLandlordAndState` to the summary.
    static func add(
        landlord: String?, currency: String, state: String, count: Int, to summary: inout ReportSummary, index: inout [String: Int]
    ) {
        guard let state = MessageState(rawValue: state) else { return }
        summary.states[state, default: 0] += count
        let at = figures(landlord, currency, in: &summary, index: &index)
        summary.landlords[at].messages += count
    }
}

extension Int64 {
    /// Adds without trapping: a report's total that would pass Int64 stays at its bound. A manifest
    /// cannot get there (its totals are checked on import); only many API calls with huge amounts could.
    mutating func addClamping(_ other: Int64) {
        let (sum, overflow) = addingReportingOverflow(other)
        self = overflow ? (other > 0 ? .max : .min) : sum
    }
}
