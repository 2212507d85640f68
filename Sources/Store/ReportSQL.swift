/// The report page's figures in SQL: `$1` is the run, `$2` the landlord ('' for every landlord).
/// The GROUP BY queries are PostgreSQL's (SQLite adds up one pass in Swift instead, `ReportPass`:
/// it sorts grouped rows); the example rows and the merging of figures serve both engines.
enum ReportSQL {
    static let join = "FROM messages m JOIN invoices i ON i.run = m.run AND i.invoice_id = m.invoice_id"
    static let landlordFilter = "($2 = '' OR i.landlord = $2)"

    /// Per landlord, currency and state: messages, and those failed as unreachable (131026).
    static let byLandlordAndState = """
        SELECT i.landlord, i.currency, m.state, COUNT(*), SUM(CASE WHEN m.error_code = 131026 THEN 1 ELSE 0 END)
        \(join) WHERE m.run = $1 AND \(landlordFilter)
        GROUP BY i.landlord, i.currency, m.state
        """

    /// Per landlord and currency: invoices with messages, billed, and billed for invoices by their
    /// outcome (`InvoiceOutcome`): delivered (read or not), read, pending, failed.
    static let invoiceAmounts = """
        SELECT i.landlord, i.currency, COUNT(*), CAST(SUM(i.amount_minor) AS BIGINT),
            CAST(SUM(CASE WHEN d.delivered = 1 THEN i.amount_minor ELSE 0 END) AS BIGINT),
            CAST(SUM(CASE WHEN d.read = 1 THEN i.amount_minor ELSE 0 END) AS BIGINT),
            CAST(SUM(CASE WHEN d.delivered = 0 AND d.open = 1 THEN i.amount_minor ELSE 0 END) AS BIGINT),
            CAST(SUM(CASE WHEN d.delivered = 0 AND d.open = 0 AND d.failed = 1 THEN i.amount_minor ELSE 0 END) AS BIGINT)
        FROM invoices i JOIN (
            SELECT invoice_id, MAX(CASE WHEN state IN ('delivered', 'read') THEN 1 ELSE 0 END) AS delivered,
                MAX(CASE WHEN state = 'read' THEN 1 ELSE 0 END) AS read,
                MAX(CASE WHEN state IN ('queued', 'sending', 'unknown', 'accepted', 'held', 'sent') THEN 1 ELSE 0 END) AS open,
                MAX(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed
            FROM messages WHERE run = $1 GROUP BY invoice_id
        ) d ON d.invoice_id = i.invoice_id
        WHERE i.run = $1 AND \(landlordFilter)
        GROUP BY i.landlord, i.currency
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
        landlord: String?, currency: String, state: String, count: Int, unreachable: Int, to summary: inout ReportSummary,
        index: inout [String: Int]
    ) {
        guard let state = MessageState(rawValue: state) else { return }
        summary.states[state, default: 0] += count
        let at = figures(landlord, currency, in: &summary, index: &index)
        summary.landlords[at].messages += count
        switch state {
        case .failed:
            summary.landlords[at].failed += count
            summary.landlords[at].unreachable += unreachable
        case .queued, .sending, .accepted, .held, .sent, .unknown:
            summary.landlords[at].pending += count
        default:
            break
        }
    }

    /// Adds a row of `invoiceAmounts` to the summary.
    static func addAmounts(
        landlord: String?, currency: String, invoices: Int, billed: Int64, delivered: Int64, read: Int64, pending: Int64,
        failed: Int64, to summary: inout ReportSummary, index: inout [String: Int]
    ) {
        let at = figures(landlord, currency, in: &summary, index: &index)
        summary.landlords[at].invoices += invoices
        summary.landlords[at].billedMinor.addClamping(billed)
        summary.landlords[at].deliveredMinor.addClamping(delivered)
        summary.landlords[at].readMinor.addClamping(read)
        summary.landlords[at].pendingMinor.addClamping(pending)
        summary.landlords[at].failedMinor.addClamping(failed)
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
