import Dispatcher
import Foundation
import GRDB
import Sandbox
import StoreTesting
import Testing

@testable import Engine
@testable import Server
@testable import Store
@testable import WhatsApp

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite("Sandbox: Meta's answers and limits, from the client's side")
struct SandboxClientTests {
    @Test("an accepted send: Meta's answer shape, a wamid, and the request logged")
    func accepted() async throws {
        try await Harness.run { h in
            let client = GraphClient(configuration: h.graph)
            defer { Task { try? await client.shutdown() } }
            guard case .accepted(let wamid, let waID, _) = await client.send(invoiceRequest(to: "18095550101", id: "m-1")) else {
                Issue.record("not accepted"); return
            }
            #expect(wamid.hasPrefix("wamid."))
            #expect(waID == "18095550101")
            let log = try await h.requests()
            #expect(log.count == 1)
            #expect(log[0]["callbackData"] as? String == "m-1")
            try await client.shutdown()
        }
    }

    @Test("the phone number's fields in Meta's shape: throughput an object with its level")
    func phoneNumberShape() async throws {
        try await Harness.run { h in
            let client = GraphClient(configuration: h.graph)
            defer { Task { try? await client.shutdown() } }
            let (status, body) = try await client.get(
                "\(h.graph.root)/\(h.graph.phoneNumberID)?fields=display_phone_number,verified_name,quality_rating,throughput")
            #expect(status == 200)
            let object = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
            #expect((object["throughput"] as? [String: String]) == ["level": "HIGH"], "\(object)")
            #expect(object["quality_rating"] as? String == "GREEN")
            try await client.shutdown()
        }
    }

    @Test(
        "each refusal carries Meta's code and class",
        arguments: [
            ("token", 190, ErrorClass.halt), ("template", 132001, .halt), ("language", 132001, .halt), ("count", 132000, .final),
            ("malformed", 100, .final),
        ])
    func refusals(kind: String, code: Int, errorClass: ErrorClass) async throws {
        try await Harness.run { h in
            var configuration = h.graph
            if kind == "token" { configuration.accessToken = "expired" }
            let client = GraphClient(configuration: configuration)
            var request = invoiceRequest(to: "18095550101", id: "m-1", bodyParameters: kind == "count" ? 3 : 4)
            if kind == "template" { request.template.name = "no_such_template" }
            if kind == "language" { request.template.language.code = "ja" }
            let outcome = kind == "malformed" ? await client.send(body: Data("{\"messaging_product\":".utf8)) : await client.send(request)
            try await client.shutdown()
            guard case .rejected(let error) = outcome else { Issue.record("\(outcome)"); return }
            #expect(error.code == code)
            #expect(error.errorClass == errorClass)
        }
    }

    @Test("more than the throughput in one second: 130429 with Retry-After, classed as throttling")
    func throughput() async throws {
        try await Harness.run(throughput: 5) { h in
            let client = GraphClient(configuration: h.graph)
            // All at once: one after another, a loaded debug build spread 8 sends over more than a
            // second, and the sixth was rightly accepted.
            let outcomes = await withTaskGroup(of: SendOutcome.self) { group in
                for i in 0..<8 { group.addTask { await client.send(invoiceRequest(to: "1809555\(1000 + i)", id: "m-\(i)")) } }
                return await group.reduce(into: []) { $0.append($1) }
            }
            try await client.shutdown()
            let throttled = outcomes.compactMap { if case .rejected(let e) = $0 { e } else { nil } }
            #expect(outcomes.filter { if case .accepted = $0 { true } else { false } }.count == 5)
            #expect(throttled.count == 3)
            #expect(throttled.allSatisfy { $0.code == 130429 && $0.errorClass == .throttled && $0.retryAfter == 1 })
        }
    }

    @Test("a second message to one user within the pair interval: 131056, for that user only")
    func pairRate() async throws {
        try await Harness.run { h in
            let client = GraphClient(configuration: h.graph)
            let first = await client.send(invoiceRequest(to: "18095550101", id: "m-1"))
            let again = await client.send(invoiceRequest(to: "18095550101", id: "m-2"))
            let other = await client.send(invoiceRequest(to: "18095550102", id: "m-3"))
            try await client.shutdown()
            guard case .accepted = first, case .accepted = other, case .rejected(let error) = again else {
                Issue.record("\(first) \(again) \(other)"); return
            }
            #expect(error.code == 131056)
            #expect(error.errorClass == .pairRate)
        }
    }

    @Test("transient answers the first time (131000, 133004, HTTP 500), then acceptance", arguments: ["90", "91", "92"])
    func transientOnce(suffix: String) async throws {
        try await Harness.run(pairBurst: 10) { h in
            let client = GraphClient(configuration: h.graph)
            let first = await client.send(invoiceRequest(to: "180955501\(suffix)", id: "m-1"))
            let second = await client.send(invoiceRequest(to: "180955501\(suffix)", id: "m-1"))
            try await client.shutdown()
            guard case .rejected(let error) = first else { Issue.record("\(first)"); return }
            #expect(error.errorClass == .transient)
            if suffix == "92" { #expect(error.httpStatus == 500 && error.code == nil) }
            guard case .accepted = second else { Issue.record("\(second)"); return }
        }
    }

    @Test("131049 (per-user marketing limit) is refused at once and classed wait-a-day")
    func marketingLimit() async throws {
        try await Harness.run { h in
            let client = GraphClient(configuration: h.graph)
            let outcome = await client.send(invoiceRequest(to: "18095550195", id: "m-1"))
            try await client.shutdown()
            guard case .rejected(let error) = outcome else { Issue.record("\(outcome)"); return }
            #expect(error.code == 131049)
            #expect(error.errorClass == .waitDay)
        }
    }

    @Test("a slow answer still arrives; no answer at all is unknown, not a failure")
    func slowAndTimeout() async throws {
        try await Harness.run(clientTimeout: .seconds(1)) { h in
            let client = GraphClient(configuration: h.graph)
            let timedOut = await client.send(invoiceRequest(to: "18095550194", id: "m-1"))
            try await client.shutdown()
            guard case .unknown = timedOut else { Issue.record("\(timedOut)"); return }
        }
        // The answer takes 3 s; the deadline leaves room for a CI machine busy with the other suites.
        try await Harness.run(clientTimeout: .seconds(20)) { h in
            let client = GraphClient(configuration: h.graph)
            let started = ContinuousClock.now
            let slow = await client.send(invoiceRequest(to: "18095550193", id: "m-2"))
            try await client.shutdown()
            guard case .accepted = slow else { Issue.record("\(slow)"); return }
            #expect(ContinuousClock.now - started >= .seconds(3))
        }
    }
}

@Suite("Sandbox webhooks through the real receiver")
struct SandboxWebhookTests {
    /// Sends to each number and waits until every message has a settled state in the store.
    func sendAll(_ h: Harness, _ phones: [String]) async throws {
        try await seedMessages(h.store, phones: phones)
        let client = GraphClient(configuration: h.graph)
        for phone in phones {
            // The attempt is recorded before the request leaves, as the engine does: a status may
            // come back before the answer (it did, on a loaded machine), and it must find it.
            let attempt = try await h.store.beginAttempt(messageID: "m-\(phone)", at: 1)
            if case .accepted(let wamid, _, _) = await client.send(invoiceRequest(to: phone, id: "m-\(phone)")) {
                try await h.store.recordAccepted(messageID: "m-\(phone)", attempt: attempt, wamid: wamid, at: 2)
            }
        }
        try await client.shutdown()
    }

    @Test("each scripted outcome ends in its state, read back from the receiver's store (signatures verified)", arguments: engines)
    func outcomes(engine: StoreEngine) async throws {
        let expected: [(String, MessageState)] = [
            ("18095550101", .read), ("18095550104", .delivered), ("18095550105", .read), ("18095550106", .sent), ("18095550107", .failed),
            ("18095550108", .read), ("18095550109", .delivered), ("18095550113", .read), ("18095550112", .read), ("18095550196", .failed),
        ]
        try await Harness.run(engine: engine) { h in
            try await sendAll(h, expected.map(\.0))
            let wanted = Dictionary(expected.map { ($0.1, 1) }, uniquingKeysWith: +)
            do {
                try await h.eventually {
                    let counts = try await h.store.stateCounts(run: "t")
                    let optOuts = try await h.store.optOuts().count
                    let replies = try await h.store.inboundMessages(limit: 100).count
                    return counts == wanted && optOuts == 1 && replies == 2
                }
            } catch {
                let states = try await h.store.messages(MessageFilter(run: "t")).messages.map { "\($0.phone) \($0.state)" }
                Issue.record(
                    "\(error): \(states), opt-outs \(try await h.store.optOuts().count), replies \(try await h.store.inboundMessages(limit: 100).count), webhooks \(try await h.control("webhooks"))"
                )
                return
            }
            for (phone, state) in expected {
                let message = try #require(try await h.store.message("m-\(phone)"))
                #expect(message.state == state, "\(phone)")
            }
            #expect(try await h.store.message("m-18095550105")?.deliveredAt == nil)  // read without delivered
            #expect(try await h.store.message("m-18095550107")?.errorCode == 131026)
            #expect(try await h.store.message("m-18095550196")?.errorCode == 131050)
            #expect(try await h.store.message("m-18095550109")?.errorCode == 131026)  // failed, then delivered after all
            #expect(try await h.store.optOuts().map(\.id) == ["18095550113"])
            // The reordered, duplicated one: the history keeps each status once.
            #expect(try await h.store.events(messageID: "m-18095550108").map(\.status).sorted() == ["delivered", "read", "sent"])
            // The thank-you reply (non-ASCII, \u-escaped by the sandbox) was verified and stored.
            let reply = try await h.store.inboundMessages(limit: 100).first { $0.from == "18095550112" }?.body
            #expect(reply == "¡Gracias! Recibí la factura 👍")
        }
    }

    @Test("a receiver that cannot store (503) gets the same statuses again until it can")
    func redelivery() async throws {
        let path = try freshPath()
        let store = try SQLiteStore(path: path, busyTimeout: 0.2)
        var configuration = Configuration()
        configuration.allowsUnsafeTransactions = true
        let locker = try DatabaseQueue(path: path, configuration: configuration)
        try await Harness.run(store: store) { h in
            try await h.post("webhooks/pause")
            try await sendAll(h, ["18095550101"])
            try locker.inDatabase { db in try db.execute(sql: "BEGIN EXCLUSIVE TRANSACTION") }
            try await h.post("webhooks/resume")
            try await h.eventually {
                let deliveries = try await h.control("webhooks") as? [[String: Any]] ?? []
                return deliveries.contains { $0["httpStatus"] as? Int == 503 }
            }
            #expect(try await h.store.message("m-18095550101")?.state == .accepted)
            try locker.inDatabase { db in try db.execute(sql: "ROLLBACK") }
            try await h.eventually(timeout: .seconds(15)) { try await h.store.message("m-18095550101")?.state == .read }
        }
    }

    @Test("many statuses due at once go in batches, across several entries")
    func batching() async throws {
        let phones = (0..<120).map { "1809" + String(format: "%07d", $0 * 100) }  // ending 00: delivered and read
        try await Harness.run { h in
            try await h.post("webhooks/pause")
            try await sendAll(h, phones)
            try await h.post("webhooks/resume")
            try await h.eventually(timeout: .seconds(15)) { try await h.store.stateCounts(run: "t")[.read] == 120 }
            let deliveries = try await h.control("webhooks") as? [[String: Any]] ?? []
            #expect(deliveries.contains { ($0["statuses"] as? Int ?? 0) > 50 })
            #expect(deliveries.allSatisfy { ($0["statuses"] as? Int ?? 0) <= 100 })
        }
    }
}

@Suite("Meta-style JSON")
struct MetaJSONTests {
    @Test("non-ASCII is \\u-escaped, beyond the BMP as surrogate pairs; the receiver's signature check uses those bytes")
    func escaping() throws {
        let scenario = Scenario()
        #expect(scenario.outcome(for: "18095550112") == .replyThanks)
        #expect(Scenario.defaultOutcome(for: "18095550107") == .undeliverable)
        let custom = try JSONDecoder().decode(
            Scenario.self,
            from: Data(#"{"rules":[{"match":"suffix:07","outcome":"delivered"},{"match":"18095550101","outcome":"token_expired"}]}"#.utf8))
        #expect(custom.outcome(for: "18095550107") == .delivered)
        #expect(custom.outcome(for: "18095550101") == .tokenExpired)
        #expect(custom.outcome(for: "18095550102") == .deliveredRead)
    }
}
