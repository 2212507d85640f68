import Dispatcher
import Foundation
import Sandbox
import StoreTesting
import Testing

@testable import Engine
@testable import Store
@testable import WhatsApp

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The billing run as any caller (not only the CLI) drives it.
@Suite("BillingRun: lease, prepare, send, status, settle")
struct BillingRunTests {
    @Test("a run ends done with its counts; a halted one stores why; a number another run holds is refused", arguments: engines)
    func wholeRun(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            let options = RunOptions(run: "billing", manifest: try manifest(phones(20)), rate: 100)
            let billing = BillingRun(engine: e, run: "billing", settleWindow: .seconds(30))
            let outcome = try await billing.perform(prepare: { engine in
                _ = try await engine.prepare(options)
                return options
            })
            #expect(outcome.stop == nil)
            // Every number here is delivered, then read: the window ends once each has a final state.
            #expect(outcome.counts[.delivered, default: 0] + outcome.counts[.read, default: 0] == 20, "\(outcome.counts)")
            let stored = try #require(try await h.store.run(named: "billing"))
            #expect(stored.status == .done && stored.finishedAt != nil)

            // Another run holds the number (it could take it: the lease was given back): refused
            // before anything is prepared or sent.
            let other = SenderLeaseKeeper(store: h.store, sender: e.client.configuration.phoneNumberID, run: "other", ttl: 60)
            try await other.acquire()
            let requests = try await h.requests().count
            await #expect(throws: SenderBusy.self) {
                _ = try await BillingRun(engine: e, run: "billing", settleWindow: .seconds(1)).perform(prepare: { _ in
                    Issue.record("prepared while another run held the number")
                    return options
                })
            }
            #expect(try await h.requests().count == requests)
            await other.release()
        }
    }

    @Test(
        "a run and /send-invoice calls on one number share its rate through the store: a call waits while the run's pace is the whole rate, then goes",
        arguments: engines)
    func sharedRate(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            // At 9/s the run's pace (a send every 1/(9 × 0.985) s) fills every second: it reserves all 9.
            let options = RunOptions(run: "shared", manifest: try manifest(phones(27)), rate: 9)
            async let run = BillingRun(engine: e, run: "shared", settleWindow: .seconds(1)).perform(prepare: { engine in
                _ = try await engine.prepare(options)
                return options
            })
            // Once the run is sending (a loaded machine may take a while to prepare it)…
            try await h.eventually { try await h.requests().count >= 3 }
            // …three landlords press "send" (the API's own rate is 80/s).
            let answers = try await withThrowingTaskGroup(of: String.self) { group in
                for i in 0..<3 {
                    group.addTask {
                        var request = URLRequest(url: URL(string: "\(h.receiverURL)/send-invoice")!)
                        request.httpMethod = "POST"
                        request.setValue("Bearer api-token", forHTTPHeaderField: "Authorization")
                        request.httpBody = Data(
                            #"{"phoneNumbers":["+1 809 777 00\#(i)0"],"tenantName":"T\#(i)","invoicePeriod":"marzo 2026","totalAmount":100,"currency":"DOP","templateName":"invoice","invoiceId":"API-\#(i)"}"#
                                .utf8)
                        let (data, _) = try await URLSession.shared.data(for: request)
                        return String(decoding: data, as: UTF8.self)
                    }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            let outcome = try await run
            #expect(outcome.stop == nil)
            #expect(answers.allSatisfy { $0.contains(#""success":true"#) }, "\(answers)")
            // None of the calls went while the run was sending (they would have passed the rate).
            let log = try await h.requests().filter { $0["wamid"] != nil }
            let runTimes = log.filter { ($0["to"] as? String)?.hasPrefix("1809777") == false }.compactMap { $0["at"] as? Double }
            let callTimes = log.filter { ($0["to"] as? String)?.hasPrefix("1809777") == true }.compactMap { $0["at"] as? Double }
            #expect(runTimes.count == 27)
            #expect(callTimes.count == 3)
            #expect(callTimes.min() ?? 0 > runTimes.max() ?? .infinity, "a call went while the run was using the whole rate")
            // The run gave back the seconds it had reserved ahead (ten, up to its last send's second + 9 or so):
            // six seconds after its last send, a call has the number's whole rate again.
            let later = Int64((runTimes.max() ?? 0).rounded(.down)) + 6
            #expect(
                try await h.store.takeSendSlot(sender: e.client.configuration.phoneNumberID, second: later, capacity: 80),
                "the run's unused reservations were not given back")
        }
    }

    @Test("a halt is stored with its reason, and the unsent stay queued", arguments: engines)
    func halted(engine: StoreEngine) async throws {
        try await Harness.run(scenario: Scenario(rules: [.init(match: "suffix:", outcome: .tokenExpired)]), engine: engine) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            let options = RunOptions(run: "halting", manifest: try manifest(phones(30)), rate: 50)
            let outcome = try await BillingRun(engine: e, run: "halting", settleWindow: .seconds(30)).perform(prepare: { engine in
                _ = try await engine.prepare(options)
                return options
            })
            guard case .halted(let error) = outcome.stop else {
                Issue.record("not halted: \(String(describing: outcome.stop))")
                return
            }
            #expect(error.code == 190)
            let stored = try #require(try await h.store.run(named: "halting"))
            #expect(stored.status == .halted)
            #expect(stored.haltReason?.contains("190") == true)
            #expect(outcome.counts == [.queued: 30])
        }
    }

    @Test("a dispatch whose task is cancelled ends at once, interrupted, with nothing sent twice on the next run")
    func cancelledDispatch() async throws {
        try await Harness.run(engine: .sqlite) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            let options = RunOptions(run: "cancelled", manifest: try manifest(phones(300)), rate: 50)
            _ = try await e.prepare(options)
            let sending = Task { try await e.dispatch(options) }
            // Mid-run: once requests are going (on a loaded machine the first may take a while).
            try await h.eventually { try await h.requests().count >= 5 }
            sending.cancel()
            // Before, a cancelled loop lost its ledger writer and spun forever.
            let stop = try await withDeadline(.seconds(20)) { try await sending.value }
            #expect(stop == .interrupted)
            let sent = try await h.requests().count
            #expect(sent > 0 && sent < 300)
            // The next run resolves what was left `sending` and sends the rest, none twice.
            let again = RunEngine(store: h.store, client: e.client, renderer: e.renderer, validation: e.validation, logger: e.logger)
            _ = try await again.prepare(options)
            #expect(try await again.dispatch(options) == nil)
            #expect(try await acceptedByMessage(h).values.allSatisfy { $0 == 1 })
        }
    }
}
