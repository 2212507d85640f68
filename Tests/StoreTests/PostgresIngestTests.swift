import Foundation
import PostgresNIO
import StoreTesting
import Testing

@testable import Store

/// PostgreSQL's fast webhook path (`dispatcher_ingest_statuses`, statuses applied as sets) against
/// its slow one (`dispatcher_ingest_many`, one status at a time, the reference): the same random
/// batches, on two databases seeded alike, must leave the same messages, events and learnt ids
/// and give the same answers. (SQLite has one path only.)
@Suite(.serialized)
struct PostgresIngestTests {
    static let states: [MessageState] = [.queued, .sending, .unknown, .accepted, .held, .sent, .delivered, .read, .failed, .skipped]

    /// Runs from two numbers and an organization-less daily API run, whose messages are in every
    /// state, some with their wamid known, some not.
    func seedMessages(_ store: PostgresStore, messages: Int, random: inout some RandomNumberGenerator) async throws {
        for (run, sender) in [("march", "555"), ("other", "777"), ("api-2026-12-01", "999")] {
            try await store.saveRun(RunRecord(name: run, manifest: "m.csv", template: "invoice", sender: sender, createdAt: 0))
        }
        for i in 0..<messages {
            let state = Self.states.randomElement(using: &random)!
            let run = ["march", "march", "march", "other", "api-2026-12-01"].randomElement(using: &random)!
            let wamid: String? = Bool.random(using: &random) ? "wamid.D\(i)" : nil
            let sentAt: Double? = Bool.random(using: &random) ? 1_772_000_050 : nil
            _ = try await store.rows(
                """
                INSERT INTO messages (id, run, invoice_id, phone, template, language, state, state_rank, wamid, created_at, updated_at, sent_at)
                VALUES (\("d-\(i)"), \(run), \("INV-\(i)"), \("1809555\(1000 + i)"), 'invoice', 'es', \(state.rawValue), \(state.rank),
                        \(wamid), 0, 0, \(sentAt))
                """)
        }
    }

    /// Statuses for those messages and a few unknown ones, in Meta's shapes: any order, repeated
    /// ones, other numbers', failures with their error, ids other than the number.
    func batch(messages: Int, random: inout some RandomNumberGenerator, time: Double) -> [IngestJob] {
        (0..<Int.random(in: 1...6, using: &random)).map { j in
            var contents = WebhookContents()
            for k in 0..<Int.random(in: 0...8, using: &random) {
                let i = Int.random(in: 0..<(messages + 3), using: &random)
                let status: WebhookStatus = ["sent", "delivered", "read", "failed", "played"].randomElement(using: &random)!
                // Now and then another attempt's wamid (a message sent again after `unknown`).
                let wamid = Double.random(in: 0..<1, using: &random) < 0.1 ? "wamid.E\(i)" : "wamid.D\(i)"
                var update = StatusUpdate(
                    wamid: wamid, status: status, timestamp: 1_772_000_000 + Int64.random(in: 0..<100, using: &random))
                if Double.random(in: 0..<1, using: &random) < 0.95 { update.callbackData = "d-\(i)" }
                update.phoneNumberID = ["555", "555", "777", "999", nil].randomElement(using: &random)!
                if Double.random(in: 0..<1, using: &random) < 0.8 {
                    update.recipientID = Bool.random(using: &random) ? "1809555\(1000 + i)" : "X\(i)"
                }
                if Double.random(in: 0..<1, using: &random) < 0.3 { update.recipientUserID = "DO.\(i)" }
                if status == .failed {
                    (update.errorCode, update.errorTitle, update.errorDetails) = (131026, "Message undeliverable", "d\(k)")
                }
                if Bool.random(using: &random) { (update.pricingCategory, update.pricingType) = ("utility", "regular") }
                contents.statuses.append(update)
                if Double.random(in: 0..<1, using: &random) < 0.15 { contents.statuses.append(update) }
            }
            // Each POST its own body and time, as they arrive.
            return IngestJob(
                body: Array(#"{"post":\#(j),"at":\#(time)}"#.utf8), signature: "sha256=\(j)", contents: contents, parseError: nil,
                time: time + Double(j) / 100)
        }
    }

    /// What a batch leaves behind, as text to compare.
    func dump(_ store: PostgresStore) async throws -> [String] {
        var lines: [String] = []
        for query: PostgresQuery in [
            """
            SELECT concat_ws('|', id, state, state_rank, wamid, error_code, error_title, error_details, updated_at, sent_at,
                delivered_at, read_at, failed_at) FROM messages ORDER BY id
            """,
            // Payload ids differ where a batch fell back (a failed call still spends identity values):
            // payloads are told apart by their time, every one distinct.
            "SELECT concat_ws('|', received_at, signature, convert_from(body, 'UTF8'), parse_error, statuses) FROM webhook_payloads ORDER BY id",
            """
            SELECT concat_ws('|', wamid, message_id, status, timestamp, received_at, recipient_id, callback_data, error_code, error_title,
                error_details, pricing_category, applied, phone_number_id, pricing_type,
                (SELECT p.received_at FROM webhook_payloads p WHERE p.id = e.payload_id))
            FROM status_events e ORDER BY wamid, status, timestamp
            """,
            "SELECT concat_ws('|', phone, id, kind, learnt_at) FROM recipient_ids ORDER BY phone, id",
        ] {
            lines += try await store.rows(query).map { try $0.decode(String.self) }
        }
        return lines
    }

    /// Each answer, its payload named by its time.
    func answers(_ results: [Result<IngestResult, any Error>], _ store: PostgresStore) async throws -> [String] {
        var lines: [String] = []
        for result in results {
            let r = try result.get()
            let applied = r.applied.sorted { $0.key.rank < $1.key.rank }.map { "\($0.key.rawValue)=\($0.value)" }
            let time = try await store.rows("SELECT received_at FROM webhook_payloads WHERE id = \(r.payloadID)").first?.decode(Double.self)
            lines.append("\(String(describing: time)) \(r.statuses) \(r.duplicates) \(r.unmatched) \(applied)")
        }
        return lines
    }

    @Test("statuses applied as sets leave what one status at a time leaves, for random batches")
    func setsMatchOneAtATime() async throws {
        guard engines.contains(.postgres) else { return }
        var setsTaken = 0
        for n in UInt64(1)...40 {
            let fast = try #require(await makeStore(.postgres) as? PostgresStore)
            let slow = try #require(await makeStore(.postgres) as? PostgresStore)
            var random = SeededGenerator(seed: n)
            try await seedMessages(fast, messages: 30, random: &random)
            random = SeededGenerator(seed: n)
            try await seedMessages(slow, messages: 30, random: &random)
            for call in 0..<3 {
                let jobs = batch(messages: 30, random: &random, time: 1_772_000_000.5 + Double(call))
                let expected = try await answers(try await slow.writeOneStatusAtATime(jobs), slow)
                let results: [Result<IngestResult, any Error>]
                if let sets = try await fast.writeAsSets(jobs) {
                    setsTaken += 1
                    results = sets
                } else {
                    results = try await fast.writeOneStatusAtATime(jobs)
                }
                #expect(try await answers(results, fast) == expected, "seed \(n), call \(call)")
            }
            let (a, b) = (try await dump(fast), try await dump(slow))
            let same = a == b  // (not inside #expect, which would print both dumps whole)
            #expect(same, "seed \(n): \(zip(a, b).first { $0 != $1 }.map { "\($0.0) ≠ \($0.1)" } ?? "\(a.count) ≠ \(b.count) rows")")
            await fast.close()
            await slow.close()
        }
        // The fast path is the one taken, bar the batches it leaves to the slow one. Here one status
        // in twenty has no callback data (Meta's always have ours): it waits unmatched until another
        // status teaches its wamid, and the batch that does goes one at a time (87 of 120 as sets).
        #expect(setsTaken >= 75, "\(setsTaken) of 120 batches applied as sets")
    }

    @Test(
        "two writers at once, sets beside one status at a time (POSTs with inbound messages): every POST answered, the states one after another gives"
    )
    func twoWritersAtOnce() async throws {
        guard engines.contains(.postgres) else { return }
        let together = try #require(await makeStore(.postgres) as? PostgresStore)
        let alone = try #require(await makeStore(.postgres) as? PostgresStore)
        var random = SeededGenerator(seed: 99)
        try await seedMessages(together, messages: 40, random: &random)
        random = SeededGenerator(seed: 99)
        try await seedMessages(alone, messages: 40, random: &random)
        // 60 POSTs over the same 40 messages; one in five carries a tenant's reply, which goes one
        // status at a time.
        var jobs: [IngestJob] = []
        for call in 0..<20 { jobs += batch(messages: 40, random: &random, time: 1_772_000_000.5 + Double(call)) }
        // One wamid per message: which of two a message without one learns depends on which
        // arrives first, and here the order is the scheduler's.
        for k in jobs.indices {
            for i in jobs[k].contents!.statuses.indices {
                jobs[k].contents!.statuses[i].wamid = jobs[k].contents!.statuses[i].wamid.replacingOccurrences(
                    of: "wamid.E", with: "wamid.D")
            }
        }
        for k in jobs.indices where k % 5 == 0 {
            jobs[k].contents?.inbound = [
                InboundText(wamid: "wamid.in\(k)", from: "1809555\(1000 + k % 40)", timestamp: 1_772_000_000, type: "text", body: "gracias")
            ]
        }
        let answered = try await withThrowingTaskGroup(of: Int.self) { group in
            for job in jobs {
                group.addTask {
                    _ = try await together.ingestWebhook(
                        body: job.body, signature: job.signature, contents: job.contents, parseError: nil, at: job.time)
                    return 1
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(answered == jobs.count)
        // Set batches wait for one status at a time and the reverse (`PostgresSchema.intakeLock`):
        // no deadlock to wait out (without that lock: 3 to 8 deadlocks a run, a second each).
        #expect(together.conflictsRetried == 0)
        for job in jobs { _ = try await alone.writeOneStatusAtATime([job]) }
        // Statuses apply in any order (forward only, earliest times): the same ends either way.
        let query: PostgresQuery =
            "SELECT concat_ws('|', id, state, wamid, sent_at, delivered_at, read_at, failed_at) FROM messages ORDER BY id"
        let (a, b) = (
            try await together.rows(query).map { try $0.decode(String.self) },
            try await alone.rows(query).map { try $0.decode(String.self) }
        )
        let same = a == b
        #expect(same, "\(zip(a, b).first { $0 != $1 }.map { "\($0.0) ≠ \($0.1)" } ?? "\(a.count) ≠ \(b.count) rows")")
        let events = "SELECT count(*) FROM status_events"
        #expect(
            try await together.rows(PostgresQuery(unsafeSQL: events)).first?.decode(Int.self)
                == alone.rows(PostgresQuery(unsafeSQL: events)).first?.decode(Int.self))
        await together.close()
        await alone.close()
    }

    @Test("a message with no wamid yet named by two wamids is left to one status at a time, which keeps the first")
    func twoWamidsGoSlow() async throws {
        guard engines.contains(.postgres) else { return }
        let store = try #require(await makeStore(.postgres) as? PostgresStore)
        let ids = try await seed(store, phones: ["18095550101"])
        var contents = WebhookContents()
        contents.statuses = [
            StatusUpdate(wamid: "wamid.A", status: .sent, timestamp: 1_772_000_001, callbackData: ids[0]),
            StatusUpdate(wamid: "wamid.B", status: .delivered, timestamp: 1_772_000_002, callbackData: ids[0]),
        ]
        let job = IngestJob(body: Array("{}".utf8), signature: nil, contents: contents, parseError: nil, time: 1_772_000_003)
        #expect(try await store.writeAsSets([job]) == nil)
        let result = try #require(try await store.writeBatch([job]).first).get()
        #expect(result.unmatched == 1)
        #expect(result.applied == [.sent: 1])
        let row = try #require(try await store.rows("SELECT state, wamid FROM messages WHERE id = \(ids[0])").first)
        #expect(try row.decode((String, String).self) == ("sent", "wamid.A"))
        await store.close()
    }
}

/// SplitMix64: the same batches for a seed on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
