import Foundation
import Store
import StoreTesting
import Testing
import WhatsApp

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Several machines on one database, played by several processes on loopback: receivers behind a
/// load balancer, and one billing run per sender number.
@Suite("Several receivers and senders on one database (real processes)", .serialized)
struct MultiProcessTests {
    /// `n` accepted messages (every tenth with its send's answer lost: `unknown`, no wamid known)
    /// in run "multi".
    func seedAccepted(_ store: any DispatchStore, count n: Int) async throws -> [String: MessageState] {
        try await store.saveRun(RunRecord(name: "multi", manifest: "m.csv", template: "invoice", sender: "S", createdAt: 1))
        try await store.addInvoices(
            (0..<n).map {
                InvoiceRecord(
                    run: "multi", invoiceID: "I-\($0)", line: $0 + 2, tenantName: "T \($0)", amountMinor: 100, currency: "DOP",
                    period: "2026-03", locale: "es")
            })
        _ = try await store.addMessages(
            (0..<n).map {
                NewMessage(
                    id: "m-\($0)", run: "multi", invoiceID: "I-\($0)", phone: "1809555\(String(format: "%04d", $0))", template: "invoice",
                    language: "es")
            })
        var start: [String: MessageState] = [:]
        let numbers = try await store.beginAttempts(messageIDs: (0..<n).map { "m-\($0)" }, at: 2)
        var outcomes: [AttemptOutcome] = []
        for i in 0..<n {
            let id = "m-\(i)"
            if i % 10 == 0 {
                outcomes.append(.unknown(messageID: id, attempt: numbers[id]!, reason: "timed out"))
                start[id] = .unknown
            } else {
                outcomes.append(.accepted(messageID: id, attempt: numbers[id]!, wamid: "wamid.\(i)"))
                start[id] = .accepted
            }
        }
        try await store.recordOutcomes(outcomes, at: 3)
        return start
    }

    func payload(_ statuses: [(id: Int, status: String, ts: Int)]) -> [UInt8] {
        let items = statuses.map { s in
            #"{"id":"wamid.\#(s.id)","status":"\#(s.status)","timestamp":"\#(s.ts)","recipient_id":"1809555\#(String(format: "%04d", s.id))","biz_opaque_callback_data":"m-\#(s.id)"\#(s.status == "failed" ? #","errors":[{"code":131026,"title":"Message undeliverable"}]"# : "")}"#
        }.joined(separator: ",")
        return Array(
            #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"1","phone_number_id":"S"},"statuses":[\#(items)]}}]}]}"#
                .utf8)
    }

    func post(_ body: [UInt8], to url: String, signer: WebhookSignature) async throws -> Int {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = "POST"
        request.httpBody = Data(body)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue(signer.header(for: body), forHTTPHeaderField: "X-Hub-Signature-256")
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }

    @Test("two serve processes receiving the same statuses interleaved, duplicated and reordered end where one would", arguments: engines)
    func twoReceivers(engine: StoreEngine) async throws {
        let url = try await freshDatabaseURL(engine)
        let store = try await StoreOpener.open(url: url)
        let count = 300
        let start = try await seedAccepted(store, count: count)

        // Each message gets some of Meta's statuses (timestamps in Meta's order); the state one
        // receiver applying them in any order reaches is the rule's fold.
        var rng = SystemRandomNumberGenerator()
        let kinds = ["sent", "delivered", "read", "failed"]
        var statuses: [(id: Int, status: String, ts: Int)] = []
        var expected: [String: MessageState] = [:]
        var unique: [String: Int] = [:]
        for i in 0..<count {
            let chosen = kinds.filter { _ in Bool.random(using: &rng) }
            var state = start["m-\(i)"]!
            for (k, status) in chosen.enumerated() {
                state = state.applying(WebhookStatus(rawValue: status)) ?? state
                // Each status once to three times: Meta redelivers.
                for _ in 0..<Int.random(in: 1...3, using: &rng) { statuses.append((i, status, 1_772_000_000 + k)) }
            }
            expected["m-\(i)"] = state
            unique["m-\(i)"] = chosen.count
        }
        statuses.shuffle(using: &rng)

        let secret = "multi-secret"
        let signer = WebhookSignature(appSecret: secret)
        let ports = [freePort(), freePort() + 1]
        let receivers = try ports.map { port in
            try Running(
                ["serve", "--listen", "127.0.0.1:\(port)", "--db", url], in: packageRoot,
                environment: ["WHATSAPP_APP_SECRET": secret, "DISPATCHER_API_TOKEN": "t", "LOG_LEVEL": "error"])
        }
        defer { for r in receivers { r.kill(SIGTERM); _ = r.wait() } }
        for port in ports { try await waitForHTTP("http://127.0.0.1:\(port)/health") }

        // Payloads of 1 to 40 statuses, each to one receiver or the other, eight at a time.
        var payloads: [[UInt8]] = []
        var rest = statuses[...]
        while !rest.isEmpty {
            let n = min(rest.count, Int.random(in: 1...40, using: &rng))
            payloads.append(payload(Array(rest.prefix(n))))
            rest = rest.dropFirst(n)
        }
        let answers = try await withThrowingTaskGroup(of: [Int].self) { group in
            for lane in 0..<8 {
                let mine = payloads.enumerated().filter { $0.offset % 8 == lane }.map(\.element)
                group.addTask {
                    var codes: [Int] = []
                    for body in mine {
                        codes.append(try await post(body, to: "http://127.0.0.1:\(ports.randomElement()!)/webhook", signer: signer))
                    }
                    return codes
                }
            }
            return try await group.reduce(into: [Int]()) { $0 += $1 }
        }
        #expect(answers.count == payloads.count)
        #expect(answers.allSatisfy { $0 == 200 }, "\(Dictionary(answers.map { ($0, 1) }, uniquingKeysWith: +))")

        var wrong: [String] = []
        for i in 0..<count {
            let id = "m-\(i)"
            let message = try #require(try await store.message(id))
            if message.state != expected[id] { wrong.append("\(id): \(message.state) (expected \(expected[id]!))") }
            // Each status kept once in the history, however often it came.
            let events = try await store.events(messageID: id)
            if events.count != unique[id] { wrong.append("\(id): \(events.count) events (expected \(unique[id]!))") }
            // Those whose answer was lost learnt their wamid from the statuses.
            if unique[id]! > 0 && message.wamid != "wamid.\(i)" { wrong.append("\(id): wamid \(message.wamid ?? "none")") }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(10))")
        #expect(try await store.webhookPayloads(after: nil, limit: 100_000).count == payloads.count)
        // SIGTERM stops each receiver gracefully, its database connections closed last: exit 0.
        for r in receivers { r.kill(SIGTERM) }
        for r in receivers { #expect(await r.exit() == 0, "\(r.text)") }
    }

    /// A folder with the templates and a manifest of `invoices` tenants, invoice ids prefixed.
    func senderWorkspace(_ name: String, invoices: Int, prefix: String) throws -> URL {
        let folder = try temporaryDirectory()
        try FileManager.default.copyItem(
            at: packageRoot.appendingPathComponent("templates"), to: folder.appendingPathComponent("templates"))
        var csv = "invoice_id,tenant_name,phone,amount,currency,period,document_url\n"
        for i in 0..<invoices {
            csv +=
                "\(prefix)-\(i),Tenant \(i),+1809\(String(format: "%07d", i * 100 + 1)),\(100 + i).00,DOP,2026-03,https://docs.example.com/\(i).pdf\n"
        }
        try csv.write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
        return folder
    }

    func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out")
    }

    @Test(
        "one run per sender number: a second send refuses, another number proceeds, a crashed holder's lease is taken over at once",
        arguments: engines)
    func senderLease(engine: StoreEngine) async throws {
        let url = try await freshDatabaseURL(engine)
        let store = try await StoreOpener.open(url: url)
        let folder = try senderWorkspace("april.csv", invoices: 40, prefix: "A")
        let other = try senderWorkspace("may.csv", invoices: 10, prefix: "B")
        let common = ["LOG_LEVEL": "error", "DISPATCHER_SENDER_LEASE_SECONDS": "3"]
        var numberA = common
        numberA["WHATSAPP_PHONE_NUMBER_ID"] = "NUMBER-A"
        var numberB = common
        numberB["WHATSAPP_PHONE_NUMBER_ID"] = "NUMBER-B"

        // The first run sends slowly from number A.
        let first = try Running(
            ["send", "april.csv", "--sandbox", "--rate", "4", "--settle", "1s", "--db", url], in: folder, environment: numberA)
        try await eventually {
            try await store.stateCounts(run: "april").filter { ![.queued, .skipped].contains($0.key) }.values.reduce(0, +) > 0
        }

        // A second run from number A is refused, saying who sends and what to do.
        let second = try await DispatcherProcess.run(
            ["send", "april.csv", "--sandbox", "--run", "april-again", "--db", url], in: folder, environment: numberA)
        #expect(second.status == 1)
        #expect(second.stderr.contains("sender NUMBER-A is busy: run 'april'"), "\(second.stderr)")
        #expect(second.stderr.contains("--wait-for-sender"))
        #expect(try await store.stateCounts(run: "april-again").isEmpty)

        // Number B is not held up.
        let parallel = try await DispatcherProcess.run(
            ["send", "may.csv", "--sandbox", "--settle", "1s", "--db", url], in: other, environment: numberB)
        #expect(parallel.status == 0, "\(parallel.stderr)")
        #expect(first.process.isRunning, "number B's run finished while number A's was still sending")
        #expect(try await store.stateCounts(run: "may")[.queued] == nil)

        // The holder dies on this host: the same command run again at once takes its lease over
        // (no waiting for it to expire; a holder on another host would be waited for).
        first.kill(SIGKILL)
        _ = await first.exit()
        let resumed = try await DispatcherProcess.run(
            ["send", "april.csv", "--sandbox", "--settle", "1s", "--db", url],
            in: folder, environment: numberA)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let counts = try await store.stateCounts(run: "april")
        #expect(counts[.queued] == nil && counts[.sending] == nil, "\(counts)")
        #expect(counts.values.reduce(0, +) == 40)
        // Never twice: at most one accepted attempt per message.
        let messages = try await store.messages(MessageFilter(run: "april", limit: 100)).messages
        #expect(messages.count == 40)
        for message in messages {
            #expect(try await store.attempts(messageID: message.id).filter { $0.outcome == .accepted }.count <= 1, "\(message.id)")
        }
    }
}
