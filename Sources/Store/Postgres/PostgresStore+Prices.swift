import PostgresNIO

extension PostgresStore {
    public func saveRateCard(_ card: StoredRateCard) async throws {
        try await rows(
            """
            INSERT INTO rate_cards (effective, currency, source, imported_at, body)
            VALUES (\(card.effective), \(card.currency), \(card.source), \(card.importedAt), \(card.text))
            """)
    }

    public func rateCards() async throws -> [StoredRateCard] {
        try await rows("SELECT effective, currency, source, imported_at, body FROM rate_cards ORDER BY effective DESC, id DESC").map {
            let (effective, currency, source, importedAt, text) = try $0.decode((String, String, String, Double, String).self)
            return StoredRateCard(effective: effective, currency: currency, source: source, importedAt: importedAt, text: text)
        }
    }

    /// One of the SQL texts both engines share, with the run as `$1`.
    private func byRun(_ sql: (String) -> String, _ run: String) -> PostgresQuery {
        var binds = PostgresBindings()
        binds.append(run)
        return PostgresQuery(unsafeSQL: sql("$1"), binds: binds)
    }

    public func chargeCounts(run: String, states: [MessageState]) async throws -> [ChargeCount] {
        try await chargeCounts(run: run, states: states, landlord: nil)
    }

    /// One landlord's, when given (a report per landlord): through the landlord's index.
    func chargeCounts(run: String, states: [MessageState], landlord: String?) async throws -> [ChargeCount] {
        var binds = PostgresBindings()
        binds.append(run)
        if let landlord { binds.append(landlord) }
        let sql = FallbackSQL.charges(run: "$1", states: states, landlord: landlord == nil ? nil : "$2")
        return ChargeCount.merged(
            try await rows(PostgresQuery(unsafeSQL: sql, binds: binds)).map {
                let (landlord, currency, prefix, category, type, count) = try $0.decode(
                    (String?, String, String, String?, String?, Int).self)
                return ChargeCount(landlord: landlord, currency: currency, prefix: prefix, category: category, type: type, messages: count)
            })
    }

    public func fallbackCandidates(run: String) async throws -> [FallbackCandidate] {
        let found = try await rows(byRun(FallbackSQL.candidates, run)).map { try $0.decode((String, Int?, String?).self) }
        let done = try await fallbacks(run: run)
        var invoices: [String: InvoiceRecord] = [:]
        for row in try await rows(
            """
            SELECT \(unescaped: Self.invoiceColumns) FROM invoices WHERE run = \(run) AND invoice_id = ANY(\(found.map(\.0)))
            """)
        {
            let invoice = try Self.invoiceRecord(row)
            invoices[invoice.invoiceID] = invoice
        }
        return found.compactMap { id, code, title in
            invoices[id].map {
                FallbackCandidate(
                    invoice: $0, errorCode: code, reason: code.map { "\($0)\(title.map { ": \($0)" } ?? "")" } ?? "opted out",
                    fallback: done[id])
            }
        }
    }

    public func claimFallback(run: String, invoiceID: String, via: String, address: String?, at time: Double) async throws -> Bool {
        try await !rows(
            """
            INSERT INTO fallbacks (run, invoice_id, via, address, state, started_at) VALUES (\(run), \(invoiceID), \(via), \(address), 'sending', \(time))
            ON CONFLICT (run, invoice_id) DO UPDATE SET via = EXCLUDED.via, address = EXCLUDED.address, state = 'sending',
                detail = NULL, started_at = EXCLUDED.started_at, finished_at = NULL
            WHERE fallbacks.state IN ('failed', 'no_address')
            RETURNING invoice_id
            """
        ).isEmpty
    }

    public func finishFallback(
        run: String, invoiceID: String, claimedAt: Double, state: FallbackState, detail: String?, at time: Double
    ) async throws -> Bool {
        try await !rows(
            """
            UPDATE fallbacks SET state = \(state.rawValue), detail = \(detail), finished_at = \(time)
            WHERE run = \(run) AND invoice_id = \(invoiceID) AND state = 'sending' AND started_at = \(claimedAt)
            RETURNING invoice_id
            """
        ).isEmpty
    }

    public func markFallback(
        run: String, invoiceID: String, via: String, state: FallbackState, detail: String?, expecting: FallbackRecord?, at time: Double
    ) async throws -> Bool {
        if let expecting {
            return try await !rows(
                """
                UPDATE fallbacks SET via = \(via), state = \(state.rawValue), detail = \(detail), finished_at = \(time)
                WHERE run = \(run) AND invoice_id = \(invoiceID) AND state = \(expecting.state.rawValue) AND started_at = \(expecting.startedAt)
                RETURNING invoice_id
                """
            ).isEmpty
        }
        return try await !rows(
            """
            INSERT INTO fallbacks (run, invoice_id, via, state, detail, started_at, finished_at)
            VALUES (\(run), \(invoiceID), \(via), \(state.rawValue), \(detail), \(time), \(time))
            ON CONFLICT (run, invoice_id) DO UPDATE SET via = EXCLUDED.via, state = EXCLUDED.state, detail = EXCLUDED.detail,
                started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at
            WHERE fallbacks.state IN ('failed', 'no_address')
            RETURNING invoice_id
            """
        ).isEmpty
    }

    public func fallbacks(run: String) async throws -> [String: FallbackRecord] {
        var result: [String: FallbackRecord] = [:]
        for row in try await rows(
            "SELECT invoice_id, via, address, state, detail, started_at, finished_at FROM fallbacks WHERE run = \(run)")
        {
            let (id, via, address, state, detail, started, finished) = try row.decode(
                (String, String, String?, String, String?, Double, Double?).self)
            result[id] = FallbackRecord(
                run: run, invoiceID: id, via: via, address: address, state: FallbackState(rawValue: state) ?? .failed, detail: detail,
                startedAt: started, finishedAt: finished)
        }
        return result
    }
}
