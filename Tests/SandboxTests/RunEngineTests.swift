import Dispatcher
import Foundation
import Logging
import Sandbox
import StoreTesting
import Testing

@testable import Engine
@testable import Server
@testable import Store
@testable import WhatsApp

/// A manifest with one invoice per phone (the same phone may repeat).
func manifest(_ phones: [String], invoicePrefix: String = "INV") throws -> String {
    var text = "invoice_id,tenant_name,phone,amount,currency,period,due_date,landlord,document_url\n"
    for (i, phone) in phones.enumerated() {
        text +=
            "\(invoicePrefix)-\(i + 1),Tenant \(i + 1),+\(phone),\(1000 + i).50,DOP,2026-03,2026-03-10,Caribe,https://docs.example.com/INV-\(i + 1).pdf\n"
    }
    let path = try freshPath().replacingOccurrences(of: "dispatcher.sqlite", with: "manifest.csv")
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

func makeEngine(_ h: Harness) throws -> RunEngine {
    let catalog = try TemplateCatalog(directory: testPackageRoot.appendingPathComponent("templates").path)
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return RunEngine(
        store: h.store, client: GraphClient(configuration: h.graph),
        renderer: try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es"),
        validation: ValidationOptions(), logger: logger)
}

/// Requests the sandbox accepted, by the message id they carried.
func acceptedByMessage(_ h: Harness) async throws -> [String: Int] {
    var counts: [String: Int] = [:]
    for request in try await h.requests() where request["wamid"] != nil {
        counts[request["callbackData"] as? String ?? "", default: 0] += 1
    }
    return counts
}

/// One test at a time: they watch pacing as requests arrive, and with the suite in parallel on two
/// cores the test process stalled for 150-200 ms at times, which showed as bunched arrivals.
@Suite("The billing run against the sandbox", .serialized)
struct RunEngineTests {
    @Test(
        "a whole month: every message ends where its number says; running again sends nothing; another run skips what was sent",
        arguments: engines)
    func month(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let options = RunOptions(
                run: "march", manifest: testPackageRoot.appendingPathComponent("samples/march-2026.csv").path, rate: 200)
            let first = try await e.prepare(options)
            #expect(first.queued == 26)
            #expect(try await e.dispatch(options) == nil)
            // Two stay `sent` for good, so this waits for the counts rather than a settle window
            // (the window itself is tested in virtual time, EngineTests' SettleTests).
            let expected: [MessageState: Int] = [.sent: 2, .delivered: 5, .read: 16, .failed: 3, .skipped: 1]
            try await h.eventually { try await h.store.stateCounts(run: "march") == expected }
            #expect(try await acceptedByMessage(h).values.allSatisfy { $0 == 1 })
            let requests = try await h.requests().count

            let again = try await e.prepare(options)
            #expect(again.queued == 0 && again.resumed == 0)
            #expect(try await e.dispatch(options) == nil)
            #expect(try await h.requests().count == requests)

            let april = RunOptions(run: "march-again", manifest: options.manifest, rate: 200)
            let other = try await e.prepare(april)
            #expect(other.queued == 0)
            #expect(other.alreadySent == 26)
            #expect(try await e.dispatch(april) == nil)
            #expect(try await h.requests().count == requests)
            #expect(try await h.store.stateCounts(run: "march-again") == [.skipped: 27])

            let resend = RunOptions(run: "march-resend", manifest: options.manifest, rate: 200, resend: true)
            #expect(try await e.prepare(resend).queued == 26)
            try await e.client.shutdown()
        }
    }

    /// End to end on the wall clock: what the loop released, and what reached the sandbox. That
    /// the rate is also reached (and exactly how the pacing behaves) is checked in virtual time
    /// (EngineTests' `DispatchMachineTests.pacing`): on two cores shared with the rest of the suite
    /// the achieved rate here says more about the machine than about the loop.
    @Test(
        "retry after a crash (or a second Ctrl-C): what was left in flight becomes unknown, and --include-unknown resends it",
        arguments: engines)
    func retryAfterCrash(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            try await seedMessages(h.store, phones: ["18095550100", "18095550200"], run: "crashed")
            // Both requests were in flight when the process died.
            _ = try await h.store.beginAttempts(messageIDs: ["m-18095550100", "m-18095550200"], at: 1)
            let held = try await e.requeueForRetry(run: "crashed")
            #expect(held.requeued.isEmpty, "nothing is resent without --include-unknown")
            #expect(try await h.store.stateCounts(run: "crashed") == [.unknown: 2])
            #expect(try await h.store.attempts(messageID: "m-18095550100").map(\.outcome) == [.unknown])
            let selection = try await e.requeueForRetry(run: "crashed", includeUnknown: true)
            #expect(Set(selection.requeued) == ["m-18095550100", "m-18095550200"])
            #expect(try await h.store.stateCounts(run: "crashed") == [.queued: 2])
        }
    }

    @Test("pacing end to end: no one-second window holds more than the rate", arguments: engines)
    func pacing(engine: StoreEngine) async throws {
        let phones = (0..<150).map { "1809" + String(format: "%07d", $0 * 100) }
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let options = RunOptions(run: "paced", manifest: try manifest(phones), rate: 50)
            _ = try await e.prepare(options)
            #expect(try await e.dispatch(options) == nil)
            try await e.client.shutdown()
            let times = try await h.requests().compactMap { $0["at"] as? Double }.sorted()
            #expect(times.count == 150)
            var most = 0
            var start = 0
            for end in times.indices {
                while times[end] - times[start] >= 1 { start += 1 }
                most = max(most, end - start + 1)
            }
            // As the requests left: what the pacer controls, exactly. Where the sandbox (in this same
            // process) receives them, a loaded machine adds its own jitter: with the whole suite in
            // one run on two cores, 63 and 67 were seen in one window (the releases still at most
            // 50). The bound there catches sends released in bunches (a window's worth at once puts
            // up to twice the rate there, 100), not that jitter; the exact pacing is checked in
            // virtual time.
            #expect(e.mostSendsInOneSecond <= 50, "most in one second as they left: \(e.mostSendsInOneSecond)")
            #expect(most < 80, "most in one second at the sandbox: \(most)")
            #expect(try await h.store.stateCounts(run: "paced")[.failed] == nil)
        }
    }

    @Test("several invoices to one tenant are spaced by the pair interval; other tenants do not wait", arguments: engines)
    func pairRule(engine: StoreEngine) async throws {
        let phones = ["18095550101", "18095550101", "18095550101", "18095550102", "18095550103"]
        try await Harness.run(pairInterval: 1, engine: engine) { h in
            let e = try makeEngine(h)
            var options = RunOptions(run: "pairs", manifest: try manifest(phones), rate: 100)
            // More than the sandbox's interval: what is measured there is the arrival, and on two
            // busy cores a request can spend a few hundred ms between the gate and the wire (with
            // half a second more, a fresh-clone CI run of the whole suite once saw the sandbox
            // refuse one as too soon, 2026-12-03; one and a half seconds more now).
            options.pairSpacing = .milliseconds(2500)
            _ = try await e.prepare(options)
            #expect(try await e.dispatch(options) == nil)
            try await e.client.shutdown()
            let log = try await h.requests()
            #expect(log.allSatisfy { $0["errorCode"] == nil })
            let same = log.filter { $0["to"] as? String == "18095550101" }.compactMap { $0["at"] as? Double }
            #expect(same.count == 3)
            #expect(zip(same, same.dropFirst()).allSatisfy { $1 - $0 >= 0.99 })
            let others = log.filter { $0["to"] as? String != "18095550101" }.compactMap { $0["at"] as? Double }
            #expect(others.allSatisfy { $0 < same[1] })
        }
    }

    @Test("throttling (130429) slows the sender down and retries: nothing fails", arguments: engines)
    func throttling(engine: StoreEngine) async throws {
        let phones = (0..<40).map { "1809" + String(format: "%07d", $0 * 100) }
        try await Harness.run(throughput: 10, engine: engine) { h in
            let e = try makeEngine(h)
            let options = RunOptions(run: "throttled", manifest: try manifest(phones), rate: 20)
            _ = try await e.prepare(options)
            #expect(try await e.dispatch(options) == nil)
            try await e.client.shutdown()
            let counts = try await h.store.stateCounts(run: "throttled")
            #expect(counts[.failed] == nil)
            #expect(counts.values.reduce(0, +) == 40)
            #expect(try await h.requests().contains { $0["errorCode"] as? Int == 130429 })
        }
    }

    @Test("a systemic error halts the run with everything unsent still queued; after the fix it continues", arguments: engines)
    func haltAndContinue(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let options = RunOptions(run: "halt", manifest: try manifest((0..<100).map { "1809" + String(format: "%07d", $0 * 100) }), rate: 50)
        try await Harness.run(scenario: Scenario(rules: [.init(match: "suffix:", outcome: .tokenExpired)]), store: store) { h in
            let e = try makeEngine(h)
            _ = try await e.prepare(options)
            guard case .halted(let error) = try await e.dispatch(options) else { Issue.record("not halted"); return }
            try await e.client.shutdown()
            #expect(error.code == 190)
            #expect(haltAdvice(error).contains("WHATSAPP_ACCESS_TOKEN"))
            // The first answer halted the run: what left meanwhile (one round trip of sends, 20 ms
            // apart; 13 were seen in a loaded debug build) was refused too, and the rest of the
            // two seconds of sends never left.
            let requests = try await h.requests()
            #expect(requests.allSatisfy { $0["errorCode"] as? Int == 190 })
            #expect(requests.count < 50, "\(requests.count) requests before the halt")
            #expect(try await h.store.stateCounts(run: "halt") == [.queued: 100])
        }
        try await Harness.run(store: store) { h in
            let e = try makeEngine(h)
            _ = try await e.prepare(options)
            #expect(try await e.dispatch(options) == nil)
            try await e.client.shutdown()
            #expect(try await h.store.stateCounts(run: "halt")[.queued] == nil)
            #expect(try await acceptedByMessage(h).count == 100)
        }
    }

    @Test(
        "transient errors are retried, an unanswered request is unknown until its webhook says, 131049 fails for a day", arguments: engines)
    func errorClasses(engine: StoreEngine) async throws {
        try await Harness.run(clientTimeout: .seconds(1), engine: engine) { h in
            let e = try makeEngine(h)
            let options = RunOptions(
                run: "classes", manifest: try manifest(["18095550190", "18095550194", "18095550195", "18095550107"]), rate: 50)
            _ = try await e.prepare(options)
            #expect(try await e.dispatch(options) == nil)
            try await e.client.shutdown()
            let ids = try await h.store.messages(MessageFilter(run: "classes")).messages
            func message(_ phone: String) -> MessageRecord { ids.first { $0.phone == phone }! }
            #expect(try await h.store.attempts(messageID: message("18095550190").id).map(\.outcome) == [.retry, .accepted])
            #expect(message("18095550195").state == .failed)
            #expect(message("18095550195").errorDetails?.contains("retry not before") == true)
            #expect(try await h.store.attempts(messageID: message("18095550194").id).map(\.outcome) == [.unknown])
            // The unknown one is resolved by its webhook, matched by biz_opaque_callback_data.
            try await h.eventually { try await h.store.message(message("18095550194").id)?.state == .read }
            try await h.eventually { try await h.store.message(message("18095550107").id)?.state == .failed }
        }
    }

    @Test("a number that opted out is skipped, with the reason", arguments: engines)
    func optedOut(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            var contents = WebhookContents()
            contents.inbound = [InboundText(wamid: "wamid.in", from: "18095550101", timestamp: 1, type: "text", body: "BAJA")]
            _ = try await h.store.ingestWebhook(body: [], signature: nil, contents: contents, parseError: nil, at: 1)
            let e = try makeEngine(h)
            let options = RunOptions(run: "optout", manifest: try manifest(["18095550101", "18095550102"]), rate: 50)
            let preparation = try await e.prepare(options)
            #expect(preparation.optedOut == 1)
            #expect(try await e.dispatch(options) == nil)
            try await e.client.shutdown()
            #expect(try await h.requests().map { $0["to"] as? String } == ["18095550102"])
            let skipped = try await h.store.messages(MessageFilter(run: "optout", state: .skipped)).messages
            #expect(skipped.first?.skipReason?.contains("opted out") == true)
        }
    }

    @Test(
        "a manifest invalid at its last row stores nothing, though batches of it were written; with --skip-invalid the rest is queued",
        arguments: engines)
    func invalidAfterBatches(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            do {
                try await invalidAfterBatches(h, e)
                try await e.client.shutdown()
            } catch {
                try? await e.client.shutdown()
                throw error
            }
        }
    }

    func invalidAfterBatches(_ h: Harness, _ e: RunEngine) async throws {
        // More invoices than a preparation batch, so that batches reach the store before the bad row is read.
        let count = RunEngine.preparationBatch * 2 + 500
        var phones = (0..<count).map { "1809\(String(format: "%07d", 1_000_000 + $0))" }
        phones[count - 1] = "12"  // too short to be a phone number
        let path = try manifest(phones)
        let options = RunOptions(run: "big", manifest: path, rate: 200)
        let refused = try await e.prepare(options)
        #expect(!refused.preview.isValid)
        #expect(refused.preview.errors.first?.line == count + 1)
        #expect(refused.queued == 0)
        #expect(try await h.store.run(named: "big") == nil)
        #expect(try await h.store.stateCounts(run: "big").isEmpty)
        #expect(try await h.store.messageSequences(run: "big") == nil)

        var skipping = options
        skipping.skipInvalid = true
        let taken = try await e.prepare(skipping)
        #expect(taken.queued == count - 1)
        #expect(try await h.store.stateCounts(run: "big") == [.queued: count - 1])
        // The same manifest again, still invalid, on the run now stored: nothing of it changes.
        let again = try await e.prepare(options)
        #expect(!again.preview.isValid && again.queued == 0 && again.resumed == 0)
        #expect(try await h.store.stateCounts(run: "big") == [.queued: count - 1])
        #expect(try await h.requests().isEmpty)
    }

    @Test("a preparation cancelled half way ends, stores nothing of a new run, and leaves the reader thread free")
    func cancelledPreparation() async throws {
        try await Harness.run(engine: .sqlite) { h in
            let e = try makeEngine(h)
            let phones = (0..<(RunEngine.preparationBatch * 20)).map { "1809\(String(format: "%07d", 2_000_000 + $0))" }
            let options = RunOptions(run: "cancelled", manifest: try manifest(phones), rate: 200)
            let preparing = Task { try await e.prepare(options) }
            try await Task.sleep(for: .milliseconds(300))
            preparing.cancel()
            // Waited for with a deadline: a reader left waiting for room would hang the preparation;
            // that must fail this test, not hang it.
            let ended = Finished()
            Task {
                _ = await preparing.result
                await ended.set()
            }
            let deadline = ContinuousClock.now + .seconds(60)
            while await !ended.isSet, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            let finished = await ended.isSet
            try await e.client.shutdown()
            #expect(finished, "the cancelled preparation never ended")
            guard finished else { return }
            let result = await preparing.result
            if case .success(let preparation) = result {
                // Done before the cancellation arrived: then everything is there.
                #expect(preparation.queued == phones.count)
            } else {
                #expect(try await h.store.run(named: "cancelled") == nil)
                #expect(try await h.store.stateCounts(run: "cancelled").isEmpty)
            }
        }
    }

    @Test("--resend run again after a stop resumes its own copies: an invoice is resent once, not once per attempt", arguments: engines)
    func resendResumes(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            let path = try manifest(phones(20))
            let first = RunOptions(run: "first", manifest: path, rate: 200)
            _ = try await e.prepare(first)
            #expect(try await e.dispatch(first) == nil)
            let again = RunOptions(run: "again", manifest: path, rate: 200, resend: true)
            #expect(try await e.prepare(again).queued == 20)
            // Stopped before sending, then the same command: its -r2 copies are resumed, no -r3 made.
            let resumed = try await e.prepare(again)
            #expect(resumed.queued == 0 && resumed.resumed == 20, "\(resumed.queued) queued, \(resumed.resumed) resumed")
            #expect(try await e.dispatch(again) == nil)
            // Accepted once each as -r2 (the pair rule may have Meta refuse and the run retry some: same ids).
            let accepted = try await acceptedByMessage(h).filter { $0.key.contains("-r") }
            let counts = try await h.store.stateCounts(run: "again")
            #expect(counts[.queued] == nil && counts.values.reduce(0, +) == 20, "\(counts)")
            // Every -r2 the store does not call unknown or failed (a loaded CI) was accepted, once; no -r3.
            #expect(accepted.allSatisfy { $0.key.hasSuffix("-r2") && $0.value == 1 }, "\(accepted)")
            let (unknown, failed) = (counts[.unknown] ?? 0, counts[.failed] ?? 0)  // unknown: perhaps accepted after the deadline
            #expect(accepted.count >= 20 - unknown - failed && accepted.count <= 20 - failed, "\(accepted.count); \(counts)")
            try await e.client.shutdown()
        }
    }
}

/// Set once something has ended.
actor Finished {
    private(set) var isSet = false
    func set() { isSet = true }

}
