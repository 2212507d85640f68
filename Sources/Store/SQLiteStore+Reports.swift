import Foundation
import GRDB

extension SQLiteStore {
    /// Reads columns by position, not by name: GRDB's name lookup lowercases the name on every
    /// access, which was a fifth of a million-message report's time.
    public func reportRows(run: String, after: Int64?, limit: Int) async throws -> [ReportRow] {
        try await pool.read { db in
            let statement = try db.cachedStatement(
                sql: """
                    SELECT m.seq, m.id, m.run, m.invoice_id, m.phone, m.template, m.language, m.state, m.wamid, m.error_code, m.error_title,
                        m.error_details, m.skip_reason, m.attempts, m.created_at, m.updated_at, m.accepted_at, m.sent_at, m.delivered_at,
                        m.read_at, m.failed_at, i.landlord, i.tenant_name, i.property, i.amount_minor, i.currency, i.period, i.email
                    FROM messages m JOIN invoices i ON i.run = m.run AND i.invoice_id = m.invoice_id
                    WHERE m.run = ? AND m.seq > ? ORDER BY m.seq LIMIT ?
                    """)
            var rows: [ReportRow] = []
            rows.reserveCapacity(limit)
            let cursor = try Row.fetchCursor(statement, arguments: [run, after ?? 0, limit])
            while let r = try cursor.next() {
                let message = MessageRecord(
                    id: r[1], run: r[2], invoiceID: r[3], phone: r[4], template: r[5], language: r[6],
                    state: MessageState(rawValue: r[7]) ?? .unknown, wamid: r[8], errorCode: r[9], errorTitle: r[10], errorDetails: r[11],
                    skipReason: r[12], attempts: r[13], createdAt: r[14], updatedAt: r[15], acceptedAt: r[16], sentAt: r[17],
                    deliveredAt: r[18], readAt: r[19], failedAt: r[20], requestBody: nil, landlord: r[21], tenantName: r[22], sequence: r[0]
                )
                rows.append(
                    ReportRow(
                        message: message, tenantName: r[22], landlord: r[21], property: r[23], amountMinor: r[24],
                        currency: r[25], period: r[26], email: r[27]))
            }
            return rows
        }
    }

    public func skippedInvoices(run: String) async throws -> [InvoiceRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM invoices WHERE run = ? AND skip_reason IS NOT NULL ORDER BY line", arguments: [run])
                .map(Self.invoiceRecord)
        }
    }

    public func invoice(run: String, invoiceID: String) async throws -> InvoiceRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM invoices WHERE run = ? AND invoice_id = ?", arguments: [run, invoiceID])
                .map(Self.invoiceRecord)
        }
    }

    static func invoiceRecord(_ r: Row) -> InvoiceRecord {
        InvoiceRecord(
            run: r["run"], invoiceID: r["invoice_id"], line: r["line"], tenantName: r["tenant_name"], tenantID: r["tenant_id"],
            landlord: r["landlord"], property: r["property"], amountMinor: r["amount_minor"], currency: r["currency"],
            period: r["period"], dueDate: r["due_date"], locale: r["locale"], documentURL: r["document_url"],
            email: r["email"], skipReason: r["skip_reason"])
    }

    /// The page's figures, from passes over the run's messages in sequence added up here rather
    /// than by GROUP BY: SQLite sorts a million grouped rows in a temporary B-tree (6 s for the
    /// page's four queries), where a hash table in this loop costs a fraction of the reading. The
    /// run is cut in two at an invoice boundary and both halves are read at once (the pool has
    /// several readers; this machine has two cores), then merged.
    public func reportSummary(run: String, landlord: String?, samples: Int) async throws -> ReportSummary {
        let filter = landlord ?? ""
        let halves: [ClosedRange<Int64>] = try await pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT MIN(seq), MAX(seq) FROM messages WHERE run = ?", arguments: [run]),
                let first = row[0] as Int64?, let last = row[1] as Int64?
            else { return [] }
            // The messages of an invoice are stored together: cut where the invoice changes.
            let middle = first + (last - first) / 2
            guard
                let invoice = try String.fetchOne(
                    db, sql: "SELECT invoice_id FROM messages WHERE run = ? AND seq >= ? ORDER BY seq LIMIT 1",
                    arguments: [run, middle]),
                let cut = try Int64.fetchOne(
                    db, sql: "SELECT MIN(seq) FROM messages WHERE run = ? AND seq > ? AND invoice_id != ?",
                    arguments: [run, middle, invoice])
            else { return [first...last] }
            return [first...(cut - 1), cut...last]
        }
        let partials = try await withThrowingTaskGroup(of: ReportPass.self) { group in
            for range in halves {
                group.addTask { try await self.pool.read { db in try ReportPass(db, run: run, landlord: filter, range: range) } }
            }
            return try await group.reduce(into: [ReportPass]()) { $0.append($1) }
        }
        var summary = ReportSummary()
        var problems: [ReportPass.Problem: Int] = [:]
        var figures: [String: Int] = [:]
        for partial in partials {
            summary.states.merge(partial.states) { $0 + $1 }
            summary.sendsPerMinute.merge(partial.sendsPerMinute) { $0 + $1 }
            summary.deliveriesPerMinute.merge(partial.deliveriesPerMinute) { $0 + $1 }
            problems.merge(partial.problems) { $0 + $1 }
            for f in partial.figures {
                let at = ReportSQL.figures(f.landlord, f.currency, in: &summary, index: &figures)
                summary.landlords[at].invoices += f.invoices
                summary.landlords[at].messages += f.messages
                summary.landlords[at].billedMinor.addClamping(f.billedMinor)
                summary.landlords[at].deliveredMinor.addClamping(f.deliveredMinor)
                summary.landlords[at].readMinor.addClamping(f.readMinor)
                summary.landlords[at].pendingMinor.addClamping(f.pendingMinor)
                summary.landlords[at].failedMinor.addClamping(f.failedMinor)
                summary.landlords[at].failed += f.failed
                summary.landlords[at].unreachable += f.unreachable
                summary.landlords[at].pending += f.pending
            }
        }
        let groups = problems.sorted(by: { $0.value > $1.value }).prefix(500)
        return try await pool.read { [summary] db in
            var summary = summary
            func sample(_ r: Row) -> ReportSummary.Sample {
                ReportSummary.Sample(
                    sequence: r[0], invoiceID: r[1], tenantName: r[2], phone: r[3], email: r[4], errorDetails: r[5], skipReason: r[6])
            }
            let groupSamples = try db.cachedStatement(sql: ReportSQL.samples(nullSafeEqual: "IS"))
            for (problem, count) in groups {
                let rows = try Row.fetchAll(
                    groupSamples, arguments: [run, filter, problem.state.rawValue, problem.code, problem.title, samples])
                summary.problems.append(
                    ReportSummary.Group(
                        state: problem.state, errorCode: problem.code, errorTitle: problem.title, count: count,
                        samples: rows.map(sample)))
            }
            let open = [MessageState.accepted, .held, .sent].reduce(0) { $0 + (summary.states[$1] ?? 0) }
            if open > 0 {
                summary.pending = try Row.fetchAll(db, sql: ReportSQL.pendingSamples, arguments: [run, filter, samples]).map {
                    ReportSummary.Pending(
                        sequence: $0[0], invoiceID: $0[1], tenantName: $0[2], phone: $0[3], state: MessageState(rawValue: $0[4]) ?? .sent,
                        amountMinor: $0[5], currency: $0[6])
                }
            }
            if let skipped = summary.states[.skipped] {
                let rows = try Row.fetchAll(db, sql: ReportSQL.skippedSamples, arguments: [run, filter, samples])
                summary.skipped = ReportSummary.Group(
                    state: .skipped, errorCode: nil, errorTitle: nil, count: skipped, samples: rows.map(sample))
            }
            return summary
        }
    }
}

/// One pass over a range of a run's messages (in sequence), adding up what the report page shows.
/// Columns are read by position and as numbers where they can be (the invoice by its rowid);
/// landlords, currencies and states are matched by their bytes, with no String per row.
struct ReportPass: Sendable {
    struct Problem: Hashable, Sendable { var state: MessageState; var code: Int?; var title: String? }

    var states: [MessageState: Int] = [:]
    var figures: [ReportSummary.Landlord] = []
    var problems: [Problem: Int] = [:]
    var sendsPerMinute: [Int: Int] = [:]
    var deliveriesPerMinute: [Int: Int] = [:]

    init(_ db: Database, run: String, landlord: String, range: ClosedRange<Int64>) throws {
        let stateNames = Dictionary(uniqueKeysWithValues: MessageState.allCases.map { (Data($0.rawValue.utf8), $0) })
        struct Bucket: Hashable { var landlord: Int; var currency: Int }
        // Landlords and currencies are few: found by comparing bytes with those seen (no hashing
        // per row); figures kept in an array, found through the last bucket used.
        var landlordBytes: [[UInt8]] = [], landlordNames: [String?] = [nil]
        var currencyBytes: [[UInt8]] = [], currencyNames: [String] = []
        func find(_ data: Data, in known: inout [[UInt8]], add: (Data) -> Void) -> Int {
            let found = data.withUnsafeBytes { new -> Int? in
                for (i, bytes) in known.enumerated() where bytes.count == new.count {
                    if new.isEmpty { return i }
                    if bytes.withUnsafeBytes({ memcmp($0.baseAddress!, new.baseAddress!, new.count) == 0 }) { return i }
                }
                return nil
            }
            if let found { return found }
            known.append([UInt8](data))
            add(data)
            return known.count - 1
        }
        var bucketIndex: [Bucket: Int] = [:]
        var figures: [ReportSummary.Landlord] = []
        var lastBucket = Bucket(landlord: -1, currency: -1), lastAt = -1
        var lastInvoice: Int64 = -1
        var invoiceAt = 0, invoiceAmount: Int64 = 0, invoiceDelivered = false
        var invoiceRead = false, invoiceOpen = false, invoiceFailed = false
        // An invoice's outcome (as `ReportSQL.invoiceAmounts`): delivered (read or not), else
        // pending while a message may still arrive, else failed.
        func closeInvoice() {
            guard lastInvoice >= 0 else { return }
            if invoiceDelivered {
                figures[invoiceAt].deliveredMinor.addClamping(invoiceAmount)
                if invoiceRead { figures[invoiceAt].readMinor.addClamping(invoiceAmount) }
            } else if invoiceOpen {
                figures[invoiceAt].pendingMinor.addClamping(invoiceAmount)
            } else if invoiceFailed {
                figures[invoiceAt].failedMinor.addClamping(invoiceAmount)
            }
        }
        var stateCounts = [Int](repeating: 0, count: MessageState.allCases.count)
        var sends: (minute: Int, count: Int) = (Int.min, 0), deliveries: (minute: Int, count: Int) = (Int.min, 0)
        func add(_ run: (minute: Int, count: Int), to perMinute: inout [Int: Int]) {
            if run.count > 0 { perMinute[run.minute, default: 0] += run.count }
        }
        let rows = try Row.fetchCursor(
            db,
            sql: """
                SELECT i.landlord, i.currency, i.rowid, i.amount_minor, m.state, m.error_code, m.accepted_at,
                    COALESCE(m.delivered_at, m.read_at), m.error_title
                \(ReportSQL.join) WHERE m.run = ? AND (? = '' OR i.landlord = ?) AND m.seq BETWEEN ? AND ? ORDER BY m.seq
                """, arguments: [run, landlord, landlord, range.lowerBound, range.upperBound])
        while let r = try rows.next() {
            let landlordAt = try r.withUnsafeData(atIndex: 0) { data -> Int in
                guard let data else { return 0 }
                return 1 + find(data, in: &landlordBytes) { landlordNames.append(String(decoding: $0, as: UTF8.self)) }
            }
            let currencyAt = try r.withUnsafeData(atIndex: 1) { data -> Int in
                find(data ?? Data(), in: &currencyBytes) { currencyNames.append(String(decoding: $0, as: UTF8.self)) }
            }
            let bucket = Bucket(landlord: landlordAt, currency: currencyAt)
            if bucket != lastBucket {
                lastBucket = bucket
                lastAt =
                    bucketIndex[bucket]
                    ?? {
                        figures.append(ReportSummary.Landlord(landlord: landlordNames[landlordAt], currency: currencyNames[currencyAt]))
                        bucketIndex[bucket] = figures.count - 1
                        return figures.count - 1
                    }()
            }
            let state = try r.withUnsafeData(atIndex: 4) { data in data.flatMap { stateNames[$0] } } ?? .unknown
            stateCounts[state.ordinal] += 1
            // The messages of one invoice are stored together: an invoice counts once, when it changes.
            let invoice: Int64 = r[2]
            if invoice != lastInvoice {
                closeInvoice()
                lastInvoice = invoice
                invoiceAt = lastAt
                invoiceAmount = r[3]
                invoiceDelivered = false
                invoiceRead = false
                invoiceOpen = false
                invoiceFailed = false
                figures[lastAt].invoices += 1
                figures[lastAt].billedMinor.addClamping(invoiceAmount)
            }
            figures[lastAt].messages += 1
            switch state {
            case .delivered, .read:
                invoiceDelivered = true
                if state == .read { invoiceRead = true }
            case .failed:
                invoiceFailed = true
                figures[lastAt].failed += 1
                if r[5] as Int? == 131026 { figures[lastAt].unreachable += 1 }
            case .queued, .sending, .accepted, .held, .sent, .unknown:
                invoiceOpen = true
                figures[lastAt].pending += 1
            case .skipped:
                break
            }
            if state == .failed || state == .unknown { problems[Problem(state: state, code: r[5], title: r[8]), default: 0] += 1 }
            // Minutes come in runs (messages are sent in sequence): counted per run, added when it ends.
            if let at = r[6] as Double? {
                let minute = Int(at / 60)
                if minute == sends.minute { sends.count += 1 } else { add(sends, to: &sendsPerMinute); sends = (minute, 1) }
            }
            if let at = r[7] as Double? {
                let minute = Int(at / 60)
                if minute == deliveries.minute {
                    deliveries.count += 1
                } else {
                    add(deliveries, to: &deliveriesPerMinute); deliveries = (minute, 1)
                }
            }
        }
        closeInvoice()
        add(sends, to: &sendsPerMinute)
        add(deliveries, to: &deliveriesPerMinute)
        for state in MessageState.allCases where stateCounts[state.ordinal] > 0 { states[state] = stateCounts[state.ordinal] }
        self.figures = figures
    }
}
