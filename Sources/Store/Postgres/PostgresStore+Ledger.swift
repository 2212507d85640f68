import Foundation
import PostgresNIO

/// The send ledger on PostgreSQL: the same rules as `SQLiteStore`'s, each call one round trip.
extension PostgresStore {
    public func beginAttempts(messageIDs: [String], at time: Double) async throws -> [String: Int] {
        guard !messageIDs.isEmpty else { return [:] }
        var numbers: [String: Int] = [:]
        for row in try await rows("SELECT r_id, r_number FROM dispatcher_begin_attempts(\(messageIDs), \(time))") {
            let (id, number) = try row.decode((String, Int).self)
            numbers[id] = number
        }
        return numbers
    }

    struct OutcomeJSON: Encodable {
        var kind, id: String
        var number: Int
        var wamid: String?
        var wa_id: String?
        var code: Int?
        var title, details: String?
        var final: Bool?
    }

    public func recordOutcomes(_ outcomes: [AttemptOutcome], at time: Double) async throws {
        guard !outcomes.isEmpty else { return }
        let json = try Self.json(
            outcomes.map { outcome in
                switch outcome {
                case .accepted(let id, let number, let wamid, let waID, let held):
                    OutcomeJSON(kind: held ? "held" : "accepted", id: id, number: number, wamid: wamid, wa_id: waID)
                case .rejected(let id, let number, let error, let final):
                    OutcomeJSON(
                        kind: "rejected", id: id, number: number, code: error.code, title: error.title, details: error.details, final: final
                    )
                case .unknown(let id, let number, let reason):
                    OutcomeJSON(kind: "unknown", id: id, number: number, title: reason)
                }
            })
        try await rows("SELECT dispatcher_record_outcomes(\(json)::jsonb, \(time))")
    }

    public func discardUnsentRun(_ name: String) async throws -> Bool {
        let logger = self.logger
        return try await transaction { connection in
            // The run's row locked first: a second process cannot begin an attempt in between.
            try await connection.query("SELECT name FROM runs WHERE name = \(name) FOR UPDATE", logger: logger)
            for try await attempted in try await connection.query(
                """
                SELECT EXISTS (SELECT 1 FROM attempts WHERE message_id IN (SELECT id FROM messages WHERE run = \(name)))
                """, logger: logger
            ).decode(Bool.self) where attempted {
                return false
            }
            try await connection.query("DELETE FROM messages WHERE run = \(name)", logger: logger)
            try await connection.query("DELETE FROM invoices WHERE run = \(name)", logger: logger)
            try await connection.query("DELETE FROM runs WHERE name = \(name)", logger: logger)
            return true
        }
    }

    public func markInterrupted(run: String, at time: Double) async throws -> Int {
        let logger = self.logger
        return try await transaction { connection in
            try await connection.query(
                """
                UPDATE attempts SET outcome = 'unknown', finished_at = \(time),
                    error_title = 'interrupted: the process stopped while this request may have been in flight'
                WHERE outcome = 'sending' AND EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.message_id AND m.run = \(run))
                """, logger: logger)
            var changed = 0
            for try await _ in try await connection.query(
                """
                UPDATE messages SET \(unescaped: MessageState.unknown.sqlAssignment), updated_at = \(time) WHERE run = \(run) AND state = 'sending' RETURNING id
                """, logger: logger)
            {
                changed += 1
            }
            return changed
        }
    }

    public func queuedMessages(run: String, after: Int64?, limit: Int) async throws -> [QueuedMessage] {
        try await rows(
            """
            SELECT seq, id, phone, request_body, language FROM messages WHERE run = \(run) AND state = 'queued' AND seq > \(after ?? 0) ORDER BY seq LIMIT \(limit)
            """
        ).map { row in
            let (sequence, id, phone, body, language) = try row.decode((Int64, String, String, String?, String).self)
            return QueuedMessage(sequence: sequence, id: id, phone: phone, requestBody: body, language: language)
        }
    }

    public func reserveSendSlots(sender: String, seconds: ClosedRange<Int64>, count: Int, capacity: Int) async throws {
        let logger = self.logger
        try await transaction { connection in
            try await connection.query(
                """
                INSERT INTO send_slots (sender, second, reserved, capacity)
                SELECT \(sender), s, \(count), \(capacity) FROM generate_series(\(seconds.lowerBound)::bigint, \(seconds.upperBound)::bigint) AS s
                ON CONFLICT (sender, second) DO UPDATE
                SET reserved = GREATEST(send_slots.reserved, EXCLUDED.reserved), capacity = GREATEST(send_slots.capacity, EXCLUDED.capacity)
                """, logger: logger)
            try await connection.query(
                "DELETE FROM send_slots WHERE sender = \(sender) AND second < \(seconds.lowerBound - SendSlots.kept)", logger: logger)
        }
    }

    public func releaseSendSlots(sender: String, after second: Int64) async throws {
        try await rows("UPDATE send_slots SET reserved = 0 WHERE sender = \(sender) AND second > \(second)")
    }

    public func takeSendSlot(sender: String, second: Int64, capacity: Int) async throws -> Bool {
        let logger = self.logger
        return try await transaction { connection in
            // The second's row exists and is locked: takers of one second go one at a time.
            try await connection.query(
                """
                INSERT INTO send_slots (sender, second) VALUES (\(sender), \(second))
                ON CONFLICT (sender, second) DO NOTHING
                """, logger: logger)
            var rows: [Int64: (reserved: Int, taken: Int, capacity: Int)] = [:]
            for try await (at, reserved, taken, cap) in try await connection.query(
                """
                SELECT second, reserved, taken, capacity FROM send_slots
                WHERE sender = \(sender) AND second IN (\(second - 1), \(second)) ORDER BY second FOR UPDATE
                """, logger: logger
            ).decode((Int64, Int, Int, Int).self) {
                rows[at] = (reserved, taken, cap)
            }
            guard SendSlots.allows(previous: rows[second - 1], current: rows[second], capacity: capacity) else { return false }
            try await connection.query(
                """
                UPDATE send_slots SET taken = taken + 1 WHERE sender = \(sender) AND second = \(second)
                """, logger: logger)
            if second % 64 == 0 {
                try await connection.query(
                    "DELETE FROM send_slots WHERE sender = \(sender) AND second < \(second - SendSlots.kept)", logger: logger)
            }
            return true
        }
    }

    public func claimAttempt(messageID: String, at time: Double) async throws -> Int? {
        let logger = self.logger
        return try await transaction { connection in
            var number: Int? = nil
            for try await attempts in try await connection.query(
                """
                UPDATE messages SET state = 'sending', state_rank = \(MessageState.sending.rank), attempts = attempts + 1, updated_at = \(time)
                WHERE id = \(messageID) AND state = 'queued' RETURNING attempts
                """, logger: logger
            ).decode(Int.self) {
                number = attempts
            }
            guard let number else { return nil }
            try await connection.query(
                "INSERT INTO attempts (message_id, number, started_at, outcome) VALUES (\(messageID), \(number), \(time), 'sending')",
                logger: logger)
            return number
        }
    }

    public func queuedTemplates(run: String) async throws -> [TemplateLanguage] {
        try await rows(
            """
            SELECT DISTINCT COALESCE(request_body::jsonb #>> '{template,name}', template), language
            FROM messages WHERE run = \(run) AND state = 'queued'
            """
        ).map {
            let (template, language) = try $0.decode((String, String).self)
            return TemplateLanguage(template: template, language: language)
        }
    }

    public func skipQueued(run: String, template: String, language: String, reason: String, at time: Double) async throws -> Int {
        try await rows(
            """
            UPDATE messages SET \(unescaped: MessageState.skipped.sqlAssignment), skip_reason = \(reason), updated_at = \(time)
            WHERE run = \(run) AND state = 'queued' AND language = \(language)
              AND COALESCE(request_body::jsonb #>> '{template,name}', template) = \(template)
            RETURNING id
            """
        ).count
    }

    public func requeueSkipped(run: String, reasonPrefix prefix: String, at time: Double) async throws -> [String] {
        try await rows(
            """
            UPDATE messages SET \(unescaped: MessageState.queued.sqlAssignment), skip_reason = NULL, updated_at = \(time)
            WHERE run = \(run) AND state = 'skipped' AND starts_with(skip_reason, \(prefix))
            RETURNING id
            """
        ).map { try $0.decode(String.self) }
    }

    public func cachedMedia(url: String, sha256: String, sender: String, notBefore: Double) async throws -> String? {
        try await rows(
            """
            SELECT media_id FROM media WHERE url = \(url) AND sha256 = \(sha256) AND sender = \(sender) AND uploaded_at >= \(notBefore)
            """
        ).first?.decode(String.self)
    }

    public func saveMedia(url: String, sha256: String, sender: String, mediaID: String, at time: Double) async throws {
        try await rows(
            """
            INSERT INTO media (url, sha256, sender, media_id, uploaded_at) VALUES (\(url), \(sha256), \(sender), \(mediaID), \(time))
            ON CONFLICT (url, sha256, sender) DO UPDATE SET media_id = excluded.media_id, uploaded_at = excluded.uploaded_at
            """)
    }

    public func replaceQueuedRequest(messageID: String, body: String, at time: Double) async throws -> Bool {
        try await !rows(
            """
            UPDATE messages SET request_body = \(body), updated_at = \(time) WHERE id = \(messageID) AND state = 'queued' RETURNING id
            """
        ).isEmpty
    }

    public func failQueued(messageID: String, title: String, details: String?, at time: Double) async throws -> Bool {
        try await !rows(
            """
            UPDATE messages SET \(unescaped: MessageState.failed.sqlAssignment), error_code = NULL, error_title = \(title),
                error_details = \(details), failed_at = \(time), updated_at = \(time)
            WHERE id = \(messageID) AND state = 'queued' RETURNING id
            """
        ).isEmpty
    }

    public func requeue(messageIDs: [String], at time: Double) async throws -> [String] {
        guard !messageIDs.isEmpty else { return [] }
        var done = Set<String>()
        for row in try await rows(
            """
            UPDATE messages SET \(unescaped: MessageState.queued.sqlAssignment), updated_at = \(time), error_code = NULL, error_title = NULL, error_details = NULL
            WHERE id = ANY(\(messageIDs)) AND state IN ('failed', 'unknown') AND delivered_at IS NULL AND read_at IS NULL
            RETURNING id
            """)
        {
            done.insert(try row.decode(String.self))
        }
        return messageIDs.filter(done.contains)
    }
}
