import Foundation
import GRDB

extension SQLiteStore {
    public func messageSequences(run: String, after: Int64?) async throws -> ClosedRange<Int64>? {
        try await pool.read { db in
            // Each in its own subquery: SQLite reads one end of the index for a lone MIN or MAX, but
            // walks the run's whole stretch of it for both in one SELECT (50 ms at 200,000 messages,
            // once for each landlord of `report --per-landlord`).
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT (SELECT MIN(seq) FROM messages WHERE run = ?1 AND seq > ?2), (SELECT MAX(seq) FROM messages WHERE run = ?1 AND seq > ?2)
                    """, arguments: [run, after ?? Int64.min])
            guard let first = row?[0] as Int64?, let last = row?[1] as Int64? else { return nil }
            return first...last
        }
    }

    /// The messages of the range, with each one's invoice found by `SQLiteInvoiceFollower` rather
    /// than joined in SQL. Cells are read by position from SQLite itself (`SQLiteColumns`): GRDB's
    /// name lookup lowercased the name on every access, a fifth of a million-message report's time.
    public func reportRows(run: String, sequences: ClosedRange<Int64>) async throws -> [ReportRow] {
        try await pool.read { db in
            let statement = try db.cachedStatement(
                sql: "\(Self.reportColumns) FROM messages WHERE seq BETWEEN ? AND ? AND run = ? ORDER BY seq")
            return try Self.reportRows(
                db, run: run, statement: statement, arguments: [sequences.lowerBound, sequences.upperBound, run],
                capacity: sequences.upperBound &- sequences.lowerBound &+ 1)
        }
    }

    /// One landlord's messages of the run through their index (`messages_landlord`), between the
    /// run's first and last sequence numbers.
    public func reportRows(run: String, landlord: String, after: Int64?, limit: Int) async throws -> [ReportRow] {
        try await pool.read { db in
            let statement = try db.cachedStatement(
                sql: """
                    \(Self.reportColumns) FROM messages INDEXED BY messages_landlord
                    WHERE landlord = ?1 AND seq > ?3 AND run = ?2
                      AND seq BETWEEN (SELECT MIN(seq) FROM messages WHERE run = ?2) AND (SELECT MAX(seq) FROM messages WHERE run = ?2)
                    ORDER BY seq LIMIT ?4
                    """)
            return try Self.reportRows(
                db, run: run, statement: statement, arguments: [landlord, run, after ?? Int64.min, limit], capacity: Int64(limit))
        }
    }

    static let reportColumns = """
        SELECT seq, id, invoice_id, phone, template, language, state, wamid, error_code, error_title, error_details,
            skip_reason, attempts, created_at, updated_at, accepted_at, sent_at, delivered_at, read_at, failed_at
        """

    /// The rows of `statement` (`reportColumns`), each with its invoice.
    static func reportRows(
        _ db: Database, run: String, statement: Statement, arguments: StatementArguments, capacity: Int64
    ) throws -> [ReportRow] {
        var invoices = try SQLiteInvoiceFollower(
            db, run: run, columns: "landlord, tenant_name, property, amount_minor, currency, period, email")
        var rows: [ReportRow] = []
        rows.reserveCapacity(Int(clamping: max(0, min(capacity, 1 << 16))))
        let cursor = try Row.fetchCursor(statement, arguments: arguments)
        let c = SQLiteColumns(statement)
        let states = StateNames()
        while try cursor.next() != nil {
            guard let invoiceID = c.bytes(2), let i = try invoices.invoice(invoiceID) else { continue }
            let tenantName = i.string(3), landlord = i.stringOrNil(2)
            let message = MessageRecord(
                id: c.string(1), run: run, invoiceID: c.string(2), phone: c.string(3), template: c.string(4), language: c.string(5),
                state: states.state(c.bytes(6)), wamid: c.stringOrNil(7), errorCode: c.intOrNil(8), errorTitle: c.stringOrNil(9),
                errorDetails: c.stringOrNil(10), skipReason: c.stringOrNil(11), attempts: Int(c.int64(12)),
                createdAt: c.doubleOrNil(13) ?? 0, updatedAt: c.doubleOrNil(14) ?? 0, acceptedAt: c.doubleOrNil(15),
                sentAt: c.doubleOrNil(16), deliveredAt: c.doubleOrNil(17), readAt: c.doubleOrNil(18), failedAt: c.doubleOrNil(19),
                requestBody: nil, landlord: landlord, tenantName: tenantName, sequence: c.int64(0)
            )
            rows.append(
                ReportRow(
                    message: message, tenantName: tenantName, landlord: landlord, property: i.stringOrNil(4),
                    amountMinor: i.int64(5), currency: i.string(6), period: i.string(7), email: i.stringOrNil(8)))
        }
        return rows
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
    /// run is cut in two and both halves are read at once (the pool has several readers; this
    /// machine has two cores), then merged. An invoice's messages need not be stored together (a
    /// re-run adds a message for an old invoice at the end): each pass marks the invoices it meets
    /// by rowid (`InvoiceMarks`), and invoices are counted once, from both halves' marks.
    public func reportSummary(run: String, landlord: String?, samples: Int) async throws -> ReportSummary {
        let filter = landlord ?? ""
        let halves: [ClosedRange<Int64>] =
            try await messageSequences(run: run).map { all in
                let (first, last) = (all.lowerBound, all.upperBound)
                let middle = first + (last - first) / 2
                return middle < last ? [first...middle, (middle + 1)...last] : [first...last]
            } ?? []
        let partials = try await withThrowingTaskGroup(of: ReportPass.self) { group in
            for range in halves {
                group.addTask {
                    try await self.pool.read { db in try ReportPass(db, run: run, landlord: filter, range: range) }
                }
            }
            return try await group.reduce(into: [ReportPass]()) { $0.append($1) }
        }
        var summary = ReportSummary()
        var problems: [ReportPass.Problem: Int] = [:]
        var figures: [String: Int] = [:]
        var marks: InvoiceMarks?
        var buckets: [[Int]] = []
        var charges: [ChargeCount] = []
        for (k, partial) in partials.enumerated() {
            summary.states.merge(partial.states) { $0 + $1 }
            summary.sendsPerMinute.merge(partial.sendsPerMinute) { $0 + $1 }
            summary.deliveriesPerMinute.merge(partial.deliveriesPerMinute) { $0 + $1 }
            problems.merge(partial.problems) { $0 + $1 }
            charges += partial.charges.counts { (partial.figures[$0].landlord, partial.figures[$0].currency) }
            buckets.append(
                partial.figures.map { f in
                    let at = ReportSQL.figures(f.landlord, f.currency, in: &summary, index: &figures)
                    summary.landlords[at].messages += f.messages
                    return at
                })
            var invoices = partial.invoices
            invoices.relabel(buckets[k])
            if marks == nil { marks = invoices } else { marks!.merge(invoices) }
        }
        marks?.forEach { bucket, amount, marks in
            summary.landlords[bucket].add(InvoiceOutcome(marks), read: marks.contains(.read), count: 1, amountMinor: amount)
        }
        summary.charges = ChargeCount.merged(charges)
        let groups = problems.sorted(by: { $0.value > $1.value }).prefix(500)
        return try await pool.read { [summary] db in
            var summary = summary
            func sample(_ r: Row) -> ReportSummary.Sample {
                ReportSummary.Sample(
                    sequence: r[0], invoiceID: r[1], tenantName: r[2], phone: r[3], email: r[4], errorDetails: r[5], skipReason: r[6])
            }
            // One landlord's examples through their index.
            func sql(_ query: String) -> String { filter.isEmpty ? query : ReportSQL.oneLandlord(query, index: "messages_landlord") }
            let groupSamples = try db.cachedStatement(sql: sql(ReportSQL.samples(nullSafeEqual: "IS")))
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
                summary.pending = try Row.fetchAll(db, sql: sql(ReportSQL.pendingSamples), arguments: [run, filter, samples]).map {
                    ReportSummary.Pending(
                        sequence: $0[0], invoiceID: $0[1], tenantName: $0[2], phone: $0[3], state: MessageState(rawValue: $0[4]) ?? .sent,
                        amountMinor: $0[5], currency: $0[6])
                }
            }
            if let skipped = summary.states[.skipped] {
                let rows = try Row.fetchAll(db, sql: sql(ReportSQL.skippedSamples), arguments: [run, filter, samples])
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
    /// Messages per landlord and currency (the invoices' figures are added up from `invoices`).
    var figures: [ReportSummary.Landlord] = []
    /// What the messages read say of their invoices, with each invoice's bucket in `figures`.
    var invoices: InvoiceMarks
    var problems: [Problem: Int] = [:]
    var sendsPerMinute: [Int: Int] = [:]
    var deliveriesPerMinute: [Int: Int] = [:]
    /// The delivered and read messages, for what Meta charged (`chargeCounts`).
    var charges = ChargeTally()

    init(_ db: Database, run: String, landlord: String, range: ClosedRange<Int64>) throws {
        let stateNames = StateNames()
        struct Bucket: Hashable { var landlord: Int; var currency: Int }
        // Landlords and currencies are few: found by comparing bytes with those seen (no hashing
        // per row); figures kept in an array, found through the last bucket used.
        var landlords = ByteNames(), currencies = ByteNames()
        var bucketIndex: [Bucket: Int] = [:]
        var figures: [ReportSummary.Landlord] = []
        var invoices = InvoiceMarks()
        var charged = ChargeTally()
        var lastBucket = Bucket(landlord: -1, currency: -1), lastAt = -1
        var stateCounts = [Int](repeating: 0, count: MessageState.allCases.count)
        var sends: (minute: Int, count: Int) = (Int.min, 0), deliveries: (minute: Int, count: Int) = (Int.min, 0)
        func add(_ run: (minute: Int, count: Int), to perMinute: inout [Int: Int]) {
            if run.count > 0 { perMinute[run.minute, default: 0] += run.count }
        }
        let columns = """
            SELECT invoice_id, state, error_code, accepted_at, COALESCE(delivered_at, read_at), error_title,
                phone, pricing_category, pricing_type
            """
        // One landlord's through their index: a report per landlord (`report --per-landlord`) read
        // the whole run for each, 124 s for 200 landlords of 200,000 messages.
        let statement =
            landlord.isEmpty
            ? try db.makeStatement(sql: "\(columns) FROM messages WHERE seq BETWEEN ? AND ? AND run = ? ORDER BY seq")
            : try db.makeStatement(
                sql:
                    "\(columns) FROM messages INDEXED BY messages_landlord WHERE landlord = ? AND seq BETWEEN ? AND ? AND run = ? ORDER BY seq"
            )
        let rows = try Row.fetchCursor(
            statement,
            arguments: landlord.isEmpty
                ? [range.lowerBound, range.upperBound, run] : [landlord, range.lowerBound, range.upperBound, run])
        var follower = try SQLiteInvoiceFollower(db, run: run, columns: "landlord, currency, amount_minor")
        let c = SQLiteColumns(statement)
        while try rows.next() != nil {
            guard let invoiceID = c.bytes(0), let i = try follower.invoice(invoiceID) else { continue }
            // A NULL landlord is bucket 0's; the others are 1 and up.
            let landlordAt = i.bytes(2).map { 1 + landlords.index($0) } ?? 0
            let currencyAt = currencies.index(i.bytes(3) ?? UnsafeRawBufferPointer(start: nil, count: 0))
            let bucket = Bucket(landlord: landlordAt, currency: currencyAt)
            if bucket != lastBucket {
                lastBucket = bucket
                lastAt =
                    bucketIndex[bucket]
                    ?? {
                        figures.append(
                            ReportSummary.Landlord(
                                landlord: landlordAt == 0 ? nil : landlords.names[landlordAt - 1], currency: currencies.names[currencyAt]))
                        bucketIndex[bucket] = figures.count - 1
                        return figures.count - 1
                    }()
            }
            let state = stateNames.state(c.bytes(1))
            stateCounts[state.ordinal] += 1
            figures[lastAt].messages += 1
            let code: Int? = state == .failed || state == .unknown ? c.intOrNil(2) : nil
            invoices.mark(i.int64(0), bucket: lastAt, amount: { i.int64(4) }, InvoiceOutcome.Marks(state: state, errorCode: code))
            if state == .failed || state == .unknown {
                problems[Problem(state: state, code: code, title: c.stringOrNil(5)), default: 0] += 1
            }
            if state == .delivered || state == .read {
                charged.add(bucket: lastAt, phone: c.bytes(6), category: c.bytes(7), type: c.bytes(8))
            }
            // Minutes come in runs (messages are sent in sequence): counted per run, added when it ends.
            if let at = c.doubleOrNil(3) {
                let minute = Int(at / 60)
                if minute == sends.minute { sends.count += 1 } else { add(sends, to: &sendsPerMinute); sends = (minute, 1) }
            }
            if let at = c.doubleOrNil(4) {
                let minute = Int(at / 60)
                if minute == deliveries.minute {
                    deliveries.count += 1
                } else {
                    add(deliveries, to: &deliveriesPerMinute); deliveries = (minute, 1)
                }
            }
        }
        add(sends, to: &sendsPerMinute)
        add(deliveries, to: &deliveriesPerMinute)
        for state in MessageState.allCases where stateCounts[state.ordinal] > 0 { states[state] = stateCounts[state.ordinal] }
        self.figures = figures
        self.invoices = invoices
        self.charges = charged
    }
}

/// What a report pass learned of each invoice it met: the marks of its messages, its landlord and
/// currency (a bucket) and its amount (13 bytes an invoice). Kept in chunks of 16,384 rowids: a
/// run's invoices have neighbouring rowids, and nothing needs to be known of them before the pass.
struct InvoiceMarks: Sendable {
    private static let shift: Int64 = 14
    private static let size = 1 << 14
    struct Chunk: Sendable {
        var marks = [UInt8](repeating: 0, count: InvoiceMarks.size)
        var buckets = [Int32](repeating: 0, count: InvoiceMarks.size)
        var amounts = [Int64](repeating: 0, count: InvoiceMarks.size)
    }
    private var chunks: [Int64: Chunk] = [:]

    mutating func mark(_ rowid: Int64, bucket: Int, amount: () -> Int64, _ new: InvoiceOutcome.Marks) {
        let (key, i) = (rowid >> Self.shift, Int(rowid & Int64(Self.size - 1)))
        if chunks[key] == nil { chunks[key] = Chunk() }
        // In place (no copy of the chunk): the dictionary's storage is unique.
        chunks[key]!.mark(i, bucket: bucket, amount: amount, new)
    }

    /// Buckets renumbered: `map[b]` for `b`.
    mutating func relabel(_ map: [Int]) {
        for key in Array(chunks.keys) {
            var chunk = chunks.removeValue(forKey: key)!  // out of the dictionary: changed in place
            for i in 0..<Self.size where chunk.marks[i] != 0 { chunk.buckets[i] = Int32(map[Int(chunk.buckets[i])]) }
            chunks[key] = chunk
        }
    }

    /// Another pass's marks added (an invoice whose messages fell in both is counted once).
    mutating func merge(_ other: InvoiceMarks) {
        for (key, theirs) in other.chunks {
            guard var chunk = chunks.removeValue(forKey: key) else {
                chunks[key] = theirs
                continue
            }
            for i in 0..<Self.size where theirs.marks[i] != 0 {
                chunk.mark(i, bucket: Int(theirs.buckets[i]), amount: { theirs.amounts[i] }, .init(rawValue: theirs.marks[i]))
            }
            chunks[key] = chunk
        }
    }

    /// Each invoice met: its bucket, amount and marks.
    func forEach(_ body: (Int, Int64, InvoiceOutcome.Marks) -> Void) {
        for chunk in chunks.values {
            for i in 0..<Self.size where chunk.marks[i] != 0 {
                body(Int(chunk.buckets[i]), chunk.amounts[i], InvoiceOutcome.Marks(rawValue: chunk.marks[i]))
            }
        }
    }
}

extension InvoiceMarks.Chunk {
    mutating func mark(_ i: Int, bucket: Int, amount: () -> Int64, _ new: InvoiceOutcome.Marks) {
        if marks[i] == 0 {
            buckets[i] = Int32(bucket)
            amounts[i] = amount()
        }
        marks[i] |= new.rawValue
    }
}
