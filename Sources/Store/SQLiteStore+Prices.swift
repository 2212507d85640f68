import GRDB

extension SQLiteStore {
    public func saveRateCard(_ card: StoredRateCard) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "INSERT INTO rate_cards (effective, currency, source, imported_at, body) VALUES (?, ?, ?, ?, ?)",
                arguments: [card.effective, card.currency, card.source, card.importedAt, card.text])
        }
    }

    public func rateCards() async throws -> [StoredRateCard] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT effective, currency, source, imported_at, body FROM rate_cards ORDER BY effective DESC, id DESC"
            ).map { StoredRateCard(effective: $0[0], currency: $0[1], source: $0[2], importedAt: $0[3], text: $0[4]) }
        }
    }

    public func chargeCounts(run: String, states: [MessageState]) async throws -> [ChargeCount] {
        // Counted in a cursor, not by GROUP BY: SQLite sorts the grouped rows (3.9 s for a
        // million delivered messages).
        try await pool.read { db in
            let states = states.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            let statement = try db.makeStatement(
                sql: """
                    SELECT i.landlord, i.currency, m.phone, m.pricing_category, m.pricing_type \(ReportSQL.join)
                    WHERE m.run = ? AND m.state IN (\(states))
                    """)
            let rows = try Row.fetchCursor(statement, arguments: [run])
            let c = SQLiteColumns(statement)
            var tally = ChargeTally()
            var buckets: [String: Int] = [:]
            var named: [(landlord: String?, currency: String)] = []
            while try rows.next() != nil {
                let landlord = c.stringOrNil(0), currency = c.string(1)
                let key = (landlord.map { "=" + $0 } ?? "") + "\u{1F}" + currency
                let bucket =
                    buckets[key]
                    ?? {
                        named.append((landlord, currency))
                        buckets[key] = named.count - 1
                        return named.count - 1
                    }()
                tally.add(bucket: bucket, phone: c.bytes(2), category: c.bytes(3), type: c.bytes(4))
            }
            return tally.counts { named[$0] }
        }
    }

    public func fallbackCandidates(run: String) async throws -> [FallbackCandidate] {
        try await pool.read { db in
            let found = try Row.fetchAll(db, sql: FallbackSQL.candidates(run: "?"), arguments: [run])
            let done = try Self.fallbacks(db, run: run)
            return try found.compactMap { row -> FallbackCandidate? in
                let id: String = row[0]
                guard
                    let invoice = try Row.fetchOne(
                        db, sql: "SELECT * FROM invoices WHERE run = ? AND invoice_id = ?", arguments: [run, id]
                    ).map(Self.invoiceRecord)
                else { return nil }
                let code: Int? = row[1]
                let title: String? = row[2]
                return FallbackCandidate(
                    invoice: invoice, errorCode: code,
                    reason: code.map { "\($0)\(title.map { ": \($0)" } ?? "")" } ?? "opted out", fallback: done[id])
            }
        }
    }

    public func claimFallback(run: String, invoiceID: String, via: String, address: String?, at time: Double) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO fallbacks (run, invoice_id, via, address, state, started_at) VALUES (?, ?, ?, ?, 'sending', ?)
                    ON CONFLICT (run, invoice_id) DO UPDATE SET via = excluded.via, address = excluded.address, state = 'sending',
                        detail = NULL, started_at = excluded.started_at, finished_at = NULL
                    WHERE fallbacks.state IN ('failed', 'no_address')
                    """, arguments: [run, invoiceID, via, address, time])
            return db.changesCount == 1
        }
    }

    public func finishFallback(
        run: String, invoiceID: String, claimedAt: Double, state: FallbackState, detail: String?, at time: Double
    ) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE fallbacks SET state = ?, detail = ?, finished_at = ?
                    WHERE run = ? AND invoice_id = ? AND state = 'sending' AND started_at = ?
                    """, arguments: [state.rawValue, detail, time, run, invoiceID, claimedAt])
            return db.changesCount == 1
        }
    }

    public func markFallback(
        run: String, invoiceID: String, via: String, state: FallbackState, detail: String?, expecting: FallbackRecord?, at time: Double
    ) async throws -> Bool {
        try await pool.write { db in
            if let expecting {
                try db.execute(
                    sql: """
                        UPDATE fallbacks SET via = ?, state = ?, detail = ?, finished_at = ?
                        WHERE run = ? AND invoice_id = ? AND state = ? AND started_at = ?
                        """,
                    arguments: [via, state.rawValue, detail, time, run, invoiceID, expecting.state.rawValue, expecting.startedAt])
            } else {
                try db.execute(
                    sql: """
                        INSERT INTO fallbacks (run, invoice_id, via, state, detail, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (run, invoice_id) DO UPDATE SET via = excluded.via, state = excluded.state, detail = excluded.detail,
                            started_at = excluded.started_at, finished_at = excluded.finished_at
                        WHERE fallbacks.state IN ('failed', 'no_address')
                        """, arguments: [run, invoiceID, via, state.rawValue, detail, time, time])
            }
            return db.changesCount == 1
        }
    }

    public func fallbacks(run: String) async throws -> [String: FallbackRecord] {
        try await pool.read { db in try Self.fallbacks(db, run: run) }
    }

    static func fallbacks(_ db: Database, run: String) throws -> [String: FallbackRecord] {
        var result: [String: FallbackRecord] = [:]
        for r in try Row.fetchAll(
            db, sql: "SELECT invoice_id, via, address, state, detail, started_at, finished_at FROM fallbacks WHERE run = ?",
            arguments: [run])
        {
            result[r[0]] = FallbackRecord(
                run: run, invoiceID: r[0], via: r[1], address: r[2], state: FallbackState(rawValue: r[3]) ?? .failed, detail: r[4],
                startedAt: r[5], finishedAt: r[6])
        }
        return result
    }
}
