import Dispatcher
import Foundation
import Sandbox
import StoreTesting
import Testing

@testable import Engine
@testable import Server
@testable import Store
@testable import WhatsApp

/// Opt-outs that hold when Meta's ids for a tenant differ from the number in the manifest.
@Suite("Opt-outs under every id Meta gives a tenant", .serialized)
struct OptOutTests {
    /// Mexico: the manifest's `52 55…` is `521 55…` for Meta; the sandbox answers that way and the
    /// tenant replies STOP from it. A username user replies STOP with `from_user_id` and no `from`.
    static let mexican = "525512345613"
    static let mexicanWaID = "5215512345613"
    static let username = "18095550197"
    static let ordinary = "18095550101"

    @Test(
        "a STOP under a wa_id that differs from the number, or under a user id only, skips next month's invoice; opting back in sends it",
        arguments: engines)
    func nextMonth(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let phones = [Self.mexican, Self.username, Self.ordinary]
            let march = RunOptions(run: "march", manifest: try manifest(phones, invoicePrefix: "MAR"), rate: 50)
            #expect(try await e.prepare(march).queued == 3)
            #expect(try await e.dispatch(march) == nil)
            try await h.eventually { try await h.store.optOuts().count == 2 }

            // What Meta told us about each number, and the STOPs as they came.
            #expect(try await h.store.recipientIDs(phone: Self.mexican) == [Self.mexicanWaID])
            let userID = try #require(try await h.store.recipientIDs(phone: Self.username).first)
            #expect(userID.hasPrefix("SB."))
            #expect(try await h.store.recipientIDs(phone: Self.ordinary).isEmpty)
            let optOuts = try await h.store.optOuts()
            #expect(Set(optOuts.map(\.id)) == [Self.mexicanWaID, userID])
            #expect(optOuts.first { $0.id == userID }?.kind == .userID)
            #expect(optOuts.allSatisfy { $0.source == .reply && $0.word == "STOP" })
            let inbound = try await h.store.inboundMessages(limit: 10)
            #expect(inbound.contains { $0.from == "" && $0.fromUserID == userID && $0.body == "STOP" })
            #expect(try await h.store.optedOutNumbers().isSuperset(of: [Self.mexican, Self.username]))

            // April: both are skipped as opted out, the third goes.
            // (Another third tenant each month: the same one would wait out Meta's 6-second pair limit.)
            let april = RunOptions(
                run: "april", manifest: try manifest([Self.mexican, Self.username, "18095550102"], invoicePrefix: "APR"), rate: 50)
            let prepared = try await e.prepare(april)
            #expect(prepared.optedOut == 2)
            #expect(prepared.queued == 1)
            #expect(try await e.dispatch(april) == nil)
            let skipped = try await h.store.messages(MessageFilter(run: "april", state: .skipped)).messages
            #expect(Set(skipped.map(\.phone)) == [Self.mexican, Self.username])
            #expect(skipped.allSatisfy { $0.skipReason?.hasPrefix("opted out") == true })

            // The Mexican tenant wrote STOP by mistake: opted back in by the manifest's number.
            let removed = try await h.store.removeOptOut(Self.mexican, note: "called the office", at: 5_000)
            #expect(removed.map(\.id) == [Self.mexicanWaID])
            #expect(try await !h.store.isOptedOut(phone: Self.mexican))
            #expect(try await h.store.isOptedOut(phone: Self.username))
            let changes = try await h.store.optOutChanges()
            #expect(changes.count == 3)
            #expect(changes.last?.change == .optedIn && changes.last?.note == "called the office")

            // Meta delivers the old STOP again: it must not undo the opt-in.
            let stop = try #require(inbound.first { $0.from == Self.mexicanWaID })
            var again = WebhookContents()
            again.inbound = [
                InboundText(wamid: stop.wamid, from: Self.mexicanWaID, timestamp: Int64(stop.timestamp), type: "text", body: "STOP")
            ]
            let result = try await h.store.ingestWebhook(
                body: Array("{}".utf8), signature: nil, contents: again, parseError: nil, at: 6_000)
            #expect(result.optOuts == 0)
            #expect(try await !h.store.isOptedOut(phone: Self.mexican))

            let may = RunOptions(
                run: "may", manifest: try manifest([Self.mexican, Self.username, "18095550103"], invoicePrefix: "MAY"), rate: 50)
            let mayPrepared = try await e.prepare(may)
            #expect(mayPrepared.optedOut == 1)
            #expect(mayPrepared.queued == 2)
            try await e.client.shutdown()
        }
    }

    @Test("a hand-added opt-out holds for the number's national variants; removing it keeps the history", arguments: engines)
    func byHand(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { (h: Harness) async throws in
            #expect(try await h.store.addOptOut("5511987654321", kind: .waID, note: "asked by email", at: 1_000))
            #expect(try await !h.store.addOptOut("5511987654321", kind: .waID, note: nil, at: 1_001))
            // Brazil's ninth digit: WhatsApp may know the number without it.
            #expect(try await h.store.isOptedOut(phone: "551187654321"))
            #expect(try await h.store.isOptedOut(phone: "5511987654321"))
            #expect(try await !h.store.isOptedOut(phone: "5511987654322"))
            #expect(try await h.store.optOuts().map(\.source) == [.manual])
            // Removed under the other form: the variant finds it.
            #expect(try await h.store.removeOptOut("551187654321", note: nil, at: 2_000).map(\.id) == ["5511987654321"])
            #expect(try await h.store.optOuts().isEmpty)
            #expect(try await h.store.removeOptOut("551187654321", note: nil, at: 2_001).isEmpty)
            #expect(try await h.store.optOutChanges().map(\.change) == [.optedOut, .optedIn])
        }
    }
}
