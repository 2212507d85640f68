import Dispatcher
import Foundation
import Sandbox
import StoreTesting
import Testing
import WhatsApp

@testable import Engine
@testable import Store

/// A new run sends while its messages are stored (issue 14: a million-invoice run's first request
/// within seconds, not after a minute of storing), against the real sandbox and both engines.
@Suite("Sending while storing", .serialized)
struct SendWhileStoringTests {
    /// Every message left the queue, none was accepted twice, every one the store does not call
    /// unknown or failed was accepted, and none it calls failed. (On a CI machine busy with other suites a request may
    /// pass its deadline: `unknown`, honestly; so the count accepted is not asserted alone.)
    func expectEachOnce(_ h: Harness, run: String, total: Int) async throws {
        let accepted = try await acceptedByMessage(h)
        let counts = try await h.store.stateCounts(run: run)
        #expect(counts[.queued] == nil && counts.values.reduce(0, +) == total, "\(counts)")
        #expect(accepted.values.allSatisfy { $0 == 1 }, "\(accepted.values.filter { $0 > 1 }.count) accepted more than once")
        // An unknown one may have been accepted: its answer came after the deadline.
        let (unknown, failed) = (counts[.unknown] ?? 0, counts[.failed] ?? 0)
        #expect(accepted.count >= total - unknown - failed && accepted.count <= total - failed, "\(accepted.count) accepted; \(counts)")
    }

    func options(_ run: String, _ manifest: String, rate: Double = 200) -> RunOptions {
        var options = RunOptions(run: run, manifest: manifest, rate: rate)
        options.sendWhileStoring = true
        return options
    }

    @Test(
        "checked first with nothing stored but the run; the checks' counts are the store's; every message sent once",
        arguments: engines)
    func sendsEveryMessageOnce(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let numbers = phones(300)
            let streamed = options("streamed", try manifest(numbers))
            let preparation = try await e.prepare(streamed)
            #expect(preparation.storing && preparation.queued == 300 && preparation.preview.isValid)
            #expect(try await h.store.run(named: "streamed")?.status == .sending)
            #expect(try await h.store.stateCounts(run: "streamed").isEmpty, "stored before sending")

            // The same invoices under other ids, stored before sending: what the checks read from the store.
            let stored = RunOptions(run: "stored", manifest: try manifest(numbers, invoicePrefix: "B"))
            #expect(try await e.prepare(stored).queued == 300)
            #expect(
                try await e.queuedTemplates(run: "streamed")
                    == h.store.queuedTemplates(run: "stored").sorted { $0.template + $0.language < $1.template + $1.language })
            let charges = try await e.queuedCharges(run: "streamed")
            #expect(charges.map(\.messages).reduce(0, +) == 300)
            #expect(
                Set(charges.map { "\($0.landlord ?? "")|\($0.currency)|\($0.prefix)|\($0.messages)" })
                    == Set(
                        try await h.store.chargeCounts(run: "stored", states: [.queued]).map {
                            "\($0.landlord ?? "")|\($0.currency)|\($0.prefix)|\($0.messages)"
                        }))

            #expect(try await e.dispatch(streamed) == nil)
            try await expectEachOnce(h, run: "streamed", total: 300)
            #expect(e.stored?.queued == 300 && e.stored?.alreadySent == 0)
            try await e.client.shutdown()
        }
    }

    @Test("a run of several batches, stored while it sends: every message sent exactly once", arguments: engines)
    func severalBatches(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            // 400/s: a debug build storing, sending, simulating Meta and receiving its webhooks on
            // two cores at 1,000/s left some requests waiting past their deadline (unknown, honestly).
            let total = 2 * RunEngine.preparationBatch + 500
            let run = options("batches", try manifest(phones(total)), rate: 400)
            #expect(try await e.prepare(run).queued == total)
            #expect(try await e.dispatch(run) == nil)
            try await expectEachOnce(h, run: "batches", total: total)
            try await e.client.shutdown()
        }
    }

    @Test(
        "a manifest changed after it was checked: the run halts naming it, and nothing read from the change is stored or sent",
        arguments: engines)
    func changedAfterCheck(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let path = try manifest(phones(30))
            let run = options("changed", path)
            #expect(try await e.prepare(run).queued == 30)
            // Still valid, but not what was checked (nor priced): one more invoice.
            let handle = try #require(FileHandle(forWritingAtPath: path))
            try handle.seekToEnd()
            try handle.write(
                contentsOf: Data(
                    "INV-31,Tenant 31,+18095559900,99999.00,DOP,2026-03,2026-03-10,Caribe,https://docs.example.com/x.pdf\n".utf8))
            try handle.close()
            guard case .halted(let error)? = try await e.dispatch(run) else {
                Issue.record("not halted")
                return
            }
            #expect(error.title.contains("changed after it was checked"), "\(error.title)")
            #expect(try await h.requests().isEmpty)
            #expect(try await h.store.stateCounts(run: "changed").isEmpty)
            try await e.client.shutdown()
        }
    }

    @Test("an invalid manifest sends nothing and stores nothing, not even the run", arguments: engines)
    func invalidStoresNothing(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let path = try manifest(phones(20))
            var text = try String(contentsOfFile: path, encoding: .utf8)
            text += "INV-21,Tenant 21,+1809notaphone,100.00,DOP,2026-03,2026-03-10,Caribe,https://docs.example.com/x.pdf\n"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let preparation = try await e.prepare(options("invalid", path))
            #expect(!preparation.preview.isValid)
            #expect(preparation.preview.errors.contains { $0.invoiceID == "INV-21" && $0.field == "phone" })
            #expect(try await h.store.run(named: "invalid") == nil)
            #expect(try await e.dispatch(options("invalid", path)) == nil)
            #expect(try await h.requests().isEmpty)
            try await e.client.shutdown()
        }
    }

    @Test(
        "a language not approved, skipped before storing: its messages are stored skipped with the reason, none sent",
        arguments: engines)
    func skippedLanguage(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let path = try languagesManifest(count: 30)
            let run = options("languages", path)
            _ = try await e.prepare(run)
            let french = try await e.queuedTemplates(run: "languages").filter { $0.language == "fr" }
            #expect(french.count == 1)
            for pair in french {
                #expect(
                    try await e.skipQueued(run: "languages", template: pair.template, language: "fr", reason: "not sent: not approved")
                        == 10)
            }
            #expect(try await e.queuedTemplates(run: "languages").allSatisfy { $0.language != "fr" })
            // Not priced either: the estimate and --max-cost count the 20 that will go.
            #expect(try await e.queuedCharges(run: "languages").map(\.messages).reduce(0, +) == 20)
            #expect(try await e.dispatch(run) == nil)
            // No request for a French tenant (every third); the others left the queue.
            let frenchPhones = Set(phones(30).enumerated().filter { $0.offset % 3 == 0 }.map(\.element))
            let to = try await h.requests().compactMap { $0["to"] as? String }
            #expect(!to.isEmpty && to.allSatisfy { !frenchPhones.contains($0) }, "\(to.filter(frenchPhones.contains))")
            let counts = try await h.store.stateCounts(run: "languages")
            #expect(counts[.skipped] == 10, "\(counts)")
            let skipped = try await h.store.messages(MessageFilter(run: "languages", state: .skipped, limit: 100)).messages
            #expect(skipped.allSatisfy { $0.language == "fr" && $0.skipReason == "not sent: not approved" })
            try await e.client.shutdown()
        }
    }

    @Test(
        "refused before its first request (over --max-cost, say): the checked run is stored as before, every message queued, none sent",
        arguments: engines)
    func refusedIsStoredQueued(engine: StoreEngine) async throws {
        struct Refused: Error {}
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let run = options("refused", try manifest(phones(50)))
            await #expect(throws: Refused.self) {
                _ = try await BillingRun(engine: e, run: "refused", settleWindow: .seconds(1)).send(
                    prepare: { engine throws in
                        let preparation = try await engine.prepare(run)
                        #expect(preparation.storing)
                        return run
                    },
                    beforeSending: { _ throws in
                        let counts = try await h.store.stateCounts(run: "refused")
                        #expect(counts.isEmpty)
                        throw Refused()
                    })
            }
            #expect(try await h.store.stateCounts(run: "refused") == [.queued: 50])
            #expect(try await h.requests().isEmpty)
            // Re-run (the run is in the store now): stored already, it sends all 50, once.
            #expect(try await e.prepare(run).resumed == 50)
            #expect(try await e.dispatch(run) == nil)
            try await expectEachOnce(h, run: "refused", total: 50)
            try await e.client.shutdown()
        }
    }

    @Test(
        "the first request leaves while the run is still being stored; a halt then waits for the rest, so every invoice is stored and queued with why",
        arguments: engines)
    func haltWhileStoring(engine: StoreEngine) async throws {
        let scenario = Scenario(outages: [.init(start: 0, seconds: 3600, code: 132000)])
        try await Harness.run(scenario: scenario, engine: engine) { h in
            let e = try makeEngine(h)
            let total = 6_000
            let run = options("big", try manifest(phones(total)), rate: 80)
            _ = try await e.prepare(run)
            async let stop = e.dispatch(run)
            try await h.eventually { try await !h.requests().isEmpty }
            let storedAtFirstRequest = try await h.store.stateCounts(run: "big").values.reduce(0, +)
            #expect(storedAtFirstRequest < total, "the first request waited for the whole run to be stored")
            guard case .halted(let error)? = try await stop else {
                Issue.record("not halted")
                return
            }
            #expect(error.code == 132000)
            let counts = try await h.store.stateCounts(run: "big")
            #expect(counts.values.reduce(0, +) == total, "\(counts)")
            let requests = try await h.requests().count
            #expect(requests < 200, "\(requests) requests: the halt came late")
            #expect(counts[.failed] == requests && counts[.queued] == total - requests, "\(counts)")
            try await e.client.shutdown()
        }
    }
}
