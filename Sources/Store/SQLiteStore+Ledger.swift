import Foundation
import GRDB

/// The send ledger: attempts recorded before requests leave, outcomes after.
extension SQLiteStore {
    public func beginAttempts(messageIDs: [String], at time: Double) async throws -> [String: Int] {
        try await pool.write { db in try Self.beginAttempts(db, messageIDs: messageIDs, at: time) }
    }

    public func recordOutcomes(_ outcomes: [AttemptOutcome], at time: Double) async throws {
        try await pool.write { db in try Self.recordOutcomes(db, outcomes, at: time) }
    }

    /// One transaction, so one commit (one fsync) per tick of the billing run.
    public func recordLedger(outcomes: [AttemptOutcome], begin messageIDs: [String], at time: Double) async throws -> [String: Int] {
        if outcomes.isEmpty && messageIDs.isEmpty { return [:] }
        return try await pool.write { db in
            try Self.recordOutcomes(db, outcomes, at: time)
            return try Self.beginAttempts(db, messageIDs: messageIDs, at: time)
        }
    }

    static func beginAttempts(_ db: Database, messageIDs: [String], at time: Double) throws -> [String: Int] {
        var numbers: [String: Int] = [:]
        guard !messageIDs.isEmpty else { return numbers }
        let select = try db.cachedStatement(sql: "SELECT attempts, state FROM messages WHERE id = ?")
        let update = try db.cachedStatement(
            sql: "UPDATE messages SET state = 'sending', state_rank = ?, attempts = ?, updated_at = ? WHERE id = ?")
        let insert = try db.cachedStatement(
            sql: "INSERT INTO attempts (message_id, number, started_at, outcome) VALUES (?, ?, ?, 'sending')")
        for id in messageIDs {
            guard let row = try Row.fetchOne(select, arguments: [id]) else { throw StoreError("no message \(id)") }
            // Moved since it was read (another process began it, or a late status of an earlier attempt).
            guard row[1] as String == MessageState.queued.rawValue else { continue }
            let number = (row[0] as Int) + 1
            try update.execute(arguments: [MessageState.sending.rank, number, time, id])
            try insert.execute(arguments: [id, number, time])
            numbers[id] = number
        }
        return numbers
    }

    static func recordOutcomes(_ db: Database, _ outcomes: [AttemptOutcome], at time: Double) throws {
        guard !outcomes.isEmpty else { return }
        let attempt = try db.cachedStatement(
            sql: """
                UPDATE attempts SET outcome = ?, finished_at = ?, wamid = ?, error_code = ?, error_title = ?, error_details = ?
                WHERE message_id = ? AND number = ?
                """)
        for outcome in outcomes {
            switch outcome {
            case .accepted(let id, let number, let wamid, let waID, let held):
                try attempt.execute(arguments: ["accepted", time, wamid, nil, nil, nil, id, number])
                if let waID,
                    let phone = try String.fetchOne(db.cachedStatement(sql: "SELECT phone FROM messages WHERE id = ?"), arguments: [id])
                {
                    try Self.learn(db, phone: phone, id: waID, kind: .waID, at: time)
                }
                // Only forward: a webhook may already have said `sent` or more.
                try db.cachedStatement(
                    sql: """
                        UPDATE messages SET wamid = ?, accepted_at = COALESCE(accepted_at, ?), updated_at = ?,
                            state = CASE WHEN state_rank < \(MessageState.accepted.rank) THEN ? ELSE state END,
                            state_rank = CASE WHEN state_rank < \(MessageState.accepted.rank) THEN \(MessageState.accepted.rank) ELSE state_rank END
                        WHERE id = ?
                        """
                ).execute(arguments: [wamid, time, time, (held ? MessageState.held : .accepted).rawValue, id])
                try Self.attachPendingEvents(db, messageID: id, wamid: wamid)
            case .rejected(let id, let number, let error, let final):
                try attempt.execute(arguments: [
                    (final ? AttemptResult.rejected : .retry).rawValue, time, nil, error.code, error.title, error.details, id, number,
                ])
                let state: MessageState = final ? .failed : .queued
                try db.cachedStatement(
                    sql: """
                        UPDATE messages SET state = ?, state_rank = ?, error_code = ?, error_title = ?, error_details = ?, updated_at = ?,
                            failed_at = CASE WHEN ? THEN ? ELSE failed_at END
                        WHERE id = ? AND state = 'sending'
                        """
                ).execute(arguments: [state.rawValue, state.rank, error.code, error.title, error.details, time, final, time, id])
            case .unknown(let id, let number, let reason):
                try attempt.execute(arguments: ["unknown", time, nil, nil, reason, nil, id, number])
                try db.cachedStatement(
                    sql: "UPDATE messages SET \(MessageState.unknown.sqlAssignment), updated_at = ? WHERE id = ? AND state = 'sending'"
                )
                .execute(arguments: [time, id])
            }
        }
    }

    public func discardUnsentRun(_ name: String) async throws -> Bool {
        try await pool.write { db in
            let attempted =
                try Bool.fetchOne(
                    db,
                    sql: """
                        SELECT EXISTS (SELECT 1 FROM attempts WHERE message_id IN (SELECT id FROM messages WHERE run = ?))
                        """, arguments: [name]) ?? false
            guard !attempted else { return false }
            try db.execute(sql: "DELETE FROM messages WHERE run = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM invoices WHERE run = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM runs WHERE name = ?", arguments: [name])
            return true
        }
    }

    public func markInterrupted(run: String, at time: Double) async throws -> Int {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE attempts SET outcome = 'unknown', finished_at = ?,
                        error_title = 'interrupted: the process stopped while this request may have been in flight'
                    WHERE outcome = 'sending' AND EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.message_id AND m.run = ?)
                    """, arguments: [time, run])
            try db.execute(
                sql: "UPDATE messages SET \(MessageState.unknown.sqlAssignment), updated_at = ? WHERE run = ? AND state = 'sending'",
                arguments: [time, run])
            return db.changesCount
        }
    }

    public func queuedMessages(run: String, after: Int64?, limit: Int) async throws -> [QueuedMessage] {
        try await pool.read { db in
            let rows = try Row.fetchCursor(
                db,
                sql:
                    "SELECT seq, id, phone, request_body, language FROM messages WHERE run = ? AND state = 'queued' AND seq > ? ORDER BY seq LIMIT ?",
                arguments: [run, after ?? 0, limit])
            var page: [QueuedMessage] = []
            while let row = try rows.next() {
                page.append(QueuedMessage(sequence: row[0], id: row[1], phone: row[2], requestBody: row[3], language: row[4]))
            }
            return page
        }
    }

    public func reserveSendSlots(sender: String, seconds: ClosedRange<Int64>, count: Int, capacity: Int) async throws {
        try await pool.write { db in
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO send_slots (sender, second, reserved, capacity) VALUES (?, ?, ?, ?)
                    ON CONFLICT (sender, second) DO UPDATE SET reserved = MAX(reserved, excluded.reserved), capacity = MAX(capacity, excluded.capacity)
                    """)
            for second in seconds { try statement.execute(arguments: [sender, second, count, capacity]) }
            try db.execute(
                sql: "DELETE FROM send_slots WHERE sender = ? AND second < ?", arguments: [sender, seconds.lowerBound - SendSlots.kept])
        }
    }

    public func releaseSendSlots(sender: String, after second: Int64) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE send_slots SET reserved = 0 WHERE sender = ? AND second > ?", arguments: [sender, second])
        }
    }

    public func takeSendSlot(sender: String, second: Int64, capacity: Int) async throws -> Bool {
        try await pool.write { db in
            var rows: [Int64: (reserved: Int, taken: Int, capacity: Int)] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT second, reserved, taken, capacity FROM send_slots WHERE sender = ? AND second IN (?, ?)",
                arguments: [sender, second - 1, second])
            {
                rows[row[0]] = (row[1], row[2], row[3])
            }
            guard SendSlots.allows(previous: rows[second - 1], current: rows[second], capacity: capacity) else { return false }
            try db.execute(
                sql: """
                    INSERT INTO send_slots (sender, second, taken) VALUES (?, ?, 1)
                    ON CONFLICT (sender, second) DO UPDATE SET taken = taken + 1
                    """, arguments: [sender, second])
            if second % 64 == 0 {
                try db.execute(
                    sql: "DELETE FROM send_slots WHERE sender = ? AND second < ?", arguments: [sender, second - SendSlots.kept])
            }
            return true
        }
    }

    public func claimAttempt(messageID: String, at time: Double) async throws -> Int? {
        try await pool.write { db in
            try db.execute(
                sql:
                    "UPDATE messages SET state = 'sending', state_rank = ?, attempts = attempts + 1, updated_at = ? WHERE id = ? AND state = 'queued'",
                arguments: [MessageState.sending.rank, time, messageID])
            guard db.changesCount == 1,
                let number = try Int.fetchOne(db, sql: "SELECT attempts FROM messages WHERE id = ?", arguments: [messageID])
            else { return nil }
            try db.execute(
                sql: "INSERT INTO attempts (message_id, number, started_at, outcome) VALUES (?, ?, ?, 'sending')",
                arguments: [messageID, number, time])
            return number
        }
    }

    public func queuedTemplates(run: String) async throws -> [TemplateLanguage] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT DISTINCT COALESCE(json_extract(request_body, '$.template.name'), template), language
                    FROM messages WHERE run = ? AND state = 'queued'
                    """, arguments: [run]
            ).map { TemplateLanguage(template: $0[0], language: $0[1]) }
        }
    }

    public func skipQueued(run: String, template: String, language: String, reason: String, at time: Double) async throws -> Int {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE messages SET \(MessageState.skipped.sqlAssignment), skip_reason = ?, updated_at = ?
                    WHERE run = ? AND state = 'queued' AND language = ? AND COALESCE(json_extract(request_body, '$.template.name'), template) = ?
                    """, arguments: [reason, time, run, language, template])
            return db.changesCount
        }
    }

    public func requeueSkipped(run: String, reasonPrefix prefix: String, at time: Double) async throws -> [String] {
        try await pool.write { db in
            let condition = "run = ? AND state = 'skipped' AND substr(skip_reason, 1, ?) = ?"
            let arguments: StatementArguments = [run, prefix.count, prefix]
            let ids = try String.fetchAll(db, sql: "SELECT id FROM messages WHERE \(condition)", arguments: arguments)
            try db.execute(
                sql: "UPDATE messages SET \(MessageState.queued.sqlAssignment), skip_reason = NULL, updated_at = ? WHERE \(condition)",
                arguments: [time] + arguments)
            return ids
        }
    }

    public func cachedMedia(url: String, sha256: String, sender: String, notBefore: Double) async throws -> String? {
        try await pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT media_id FROM media WHERE url = ? AND sha256 = ? AND sender = ? AND uploaded_at >= ?",
                arguments: [url, sha256, sender, notBefore])
        }
    }

    public func saveMedia(url: String, sha256: String, sender: String, mediaID: String, at time: Double) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO media (url, sha256, sender, media_id, uploaded_at) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(url, sha256, sender) DO UPDATE SET media_id = excluded.media_id, uploaded_at = excluded.uploaded_at
                    """, arguments: [url, sha256, sender, mediaID, time])
        }
    }

    public func replaceQueuedRequest(messageID: String, body: String, at time: Double) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE messages SET request_body = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
                arguments: [body, time, messageID])
            return db.changesCount == 1
        }
    }

    public func failQueued(messageID: String, title: String, details: String?, at time: Double) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE messages SET \(MessageState.failed.sqlAssignment), error_code = NULL, error_title = ?, error_details = ?,
                        failed_at = ?, updated_at = ?
                    WHERE id = ? AND state = 'queued'
                    """, arguments: [title, details, time, time, messageID])
            return db.changesCount == 1
        }
    }

    public func requeue(messageIDs: [String], at time: Double) async throws -> [String] {
        try await pool.write { db in
            var done: [String] = []
            let update = try db.cachedStatement(
                sql: """
                    UPDATE messages SET \(MessageState.queued.sqlAssignment), updated_at = ?, error_code = NULL, error_title = NULL, error_details = NULL
                    WHERE id = ? AND state IN ('failed', 'unknown') AND delivered_at IS NULL AND read_at IS NULL
                    """)
            for id in messageIDs {
                try update.execute(arguments: [time, id])
                if db.changesCount == 1 { done.append(id) }
            }
            return done
        }
    }
}
