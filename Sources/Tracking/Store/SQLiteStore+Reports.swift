import GRDB

extension SQLiteStore {
    /// Reads columns by position, not by name: GRDB's name lookup lowercases the name on every
    /// access, which was a fifth of a million-message report's time.
    public func reportRows(run: String, after: Int64?, limit: Int) async throws -> [ReportRow] {
        try await pool.read { db in
            let statement = try db.cachedStatement(sql: """
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
                    deliveredAt: r[18], readAt: r[19], failedAt: r[20], requestBody: nil, landlord: r[21], tenantName: r[22], sequence: r[0])
                rows.append(ReportRow(message: message, tenantName: r[22], landlord: r[21], property: r[23], amountMinor: r[24],
                                      currency: r[25], period: r[26], email: r[27]))
            }
            return rows
        }
    }

    public func skippedInvoices(run: String) async throws -> [InvoiceRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM invoices WHERE run = ? AND skip_reason IS NOT NULL ORDER BY line", arguments: [run]).map { r in
                InvoiceRecord(run: r["run"], invoiceID: r["invoice_id"], line: r["line"], tenantName: r["tenant_name"], tenantID: r["tenant_id"],
                              landlord: r["landlord"], property: r["property"], amountMinor: r["amount_minor"], currency: r["currency"],
                              period: r["period"], dueDate: r["due_date"], locale: r["locale"], documentURL: r["document_url"],
                              email: r["email"], skipReason: r["skip_reason"])
            }
        }
    }

    public func reportSummary(run: String, landlord: String?, samples: Int) async throws -> ReportSummary {
        try await pool.read { db in
            var summary = ReportSummary()
            var index: [String: Int] = [:]
            let arguments: StatementArguments = [run, landlord ?? ""]
            for r in try Row.fetchAll(db, sql: ReportSQL.byLandlordAndState, arguments: arguments) {
                ReportSQL.add(landlord: r[0], currency: r[1], state: r[2], count: r[3], unreachable: r[4], to: &summary, index: &index)
            }
            for r in try Row.fetchAll(db, sql: ReportSQL.invoiceAmounts, arguments: arguments) {
                ReportSQL.addAmounts(landlord: r[0], currency: r[1], invoices: r[2], billed: r[3], delivered: r[4], to: &summary, index: &index)
            }
            func sample(_ r: Row) -> ReportSummary.Sample {
                ReportSummary.Sample(sequence: r[0], invoiceID: r[1], tenantName: r[2], phone: r[3], email: r[4], errorDetails: r[5], skipReason: r[6])
            }
            let groupSamples = try db.cachedStatement(sql: ReportSQL.samples(nullSafeEqual: "IS"))
            for r in try Row.fetchAll(db, sql: ReportSQL.problems, arguments: arguments) {
                let state: String = r[0], code: Int? = r[1], title: String? = r[2]
                let rows = try Row.fetchAll(groupSamples, arguments: [run, landlord ?? "", state, code, title, samples])
                summary.problems.append(ReportSummary.Group(state: MessageState(rawValue: state) ?? .unknown, errorCode: code, errorTitle: title,
                                                            count: r[3], samples: rows.map(sample)))
            }
            if let skipped = summary.states[.skipped] {
                let rows = try Row.fetchAll(db, sql: ReportSQL.skippedSamples, arguments: [run, landlord ?? "", samples])
                summary.skipped = ReportSummary.Group(state: .skipped, errorCode: nil, errorTitle: nil, count: skipped, samples: rows.map(sample))
            }
            for r in try Row.fetchAll(db, sql: ReportSQL.timeline { "CAST(\($0) / 60 AS INTEGER)" }, arguments: arguments) {
                let count: Int = r[2]
                if let minute = r[0] as Int? { summary.sendsPerMinute[minute, default: 0] += count }
                if let minute = r[1] as Int? { summary.deliveriesPerMinute[minute, default: 0] += count }
            }
            return summary
        }
    }
}
