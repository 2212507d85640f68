import GRDB

extension SQLiteStore {
    public func reportRows(run: String, after: Int64?, limit: Int) async throws -> [ReportRow] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT m.*, i.landlord AS landlord, i.tenant_name AS tenant_name, i.property AS property, i.amount_minor AS amount_minor,
                    i.currency AS currency, i.period AS period, i.email AS email
                FROM messages m JOIN invoices i ON i.run = m.run AND i.invoice_id = m.invoice_id
                WHERE m.run = ? AND m.seq > ? ORDER BY m.seq LIMIT ?
                """, arguments: [run, after ?? 0, limit]).map { row in
                ReportRow(message: MessageRecord(row: row), tenantName: row["tenant_name"], landlord: row["landlord"], property: row["property"],
                          amountMinor: row["amount_minor"], currency: row["currency"], period: row["period"], email: row["email"])
            }
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
}
