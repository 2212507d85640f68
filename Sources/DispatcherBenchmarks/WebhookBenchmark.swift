import AsyncHTTPClient
import Engine
import Foundation
import NIOCore
import NIOHTTP1
import Server
import Store
import WhatsApp

/// Posts signed batches of 100 statuses to a real `dispatcher serve` (another process; SQLite, or
/// PostgreSQL with its default durable commits) over loopback: first as fast as it takes them,
/// then at a fixed 3,000 statuses/s.
struct WebhookBenchmark {
    let dispatcher: String
    let seconds: Double
    let secret = "bench-app-secret"

    struct Figures {
        var statuses: Int
        var seconds: Double
        var latencies: [Double]  // seconds, one per POST
        var failures: Int

        var rate: Double { Double(statuses) / seconds }
        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            let sorted = latencies.sorted()
            return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
    }

    /// `postgresAdminURL`: run against a new database on that PostgreSQL server instead of SQLite.
    func run(postgresAdminURL: String? = nil) async throws -> (saturation: Figures, paced: Figures, database: String) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dispatcher-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("bench.sqlite").path
        let database = try await Self.freshDatabase(sqlitePath: path, postgresAdminURL: postgresAdminURL)

        let messages = 120_000
        try await Self.seed(database, messages: messages)
        let (server, port) = try await Self.startServe(dispatcher: dispatcher, database: database, secret: secret)
        defer { stopProcess(server) }
        let url = "http://127.0.0.1:\(port)/webhook"

        let batches = BatchSource(messages: messages, signature: WebhookSignature(appSecret: secret))
        let saturation = try await load(url: url, batches: batches, concurrency: 8, requestsPerSecond: nil, duration: seconds)
        let paced = try await load(url: url, batches: batches, concurrency: 8, requestsPerSecond: 30, duration: seconds)
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return (saturation, paced, postgresAdminURL == nil ? "\(size / 1_048_576) MB" : "PostgreSQL")
    }

    /// A new database on `postgresAdminURL`'s server, else a new SQLite file at `sqlitePath`.
    static func freshDatabase(sqlitePath: String, postgresAdminURL: String?) async throws -> String {
        guard let postgresAdminURL else { return "sqlite:\(sqlitePath)" }
        return try await PostgresStore.createDatabase(named: "bench_\(UInt32.random(in: 0...UInt32.max))", adminURL: postgresAdminURL)
    }

    /// Messages to receive statuses for, in a run "bench" of sender 123: m-0, m-1…
    /// `wamidsKnown`: each message accepted with its wamid (`wamid.SN`) in the ledger, as a billing
    /// run leaves it before Meta's first status; otherwise queued with none, so that each first
    /// status teaches its message's wamid (Meta's answer lost).
    static func seed(_ database: String, messages: Int, wamidsKnown: Bool = false) async throws {
        let store = try await StoreOpener.open(url: database)
        try await store.saveRun(RunRecord(name: "bench", manifest: "bench", template: "invoice", sender: "123", createdAt: 0))
        for start in stride(from: 0, to: messages, by: 10_000) {
            let range = start..<min(start + 10_000, messages)
            _ = try await store.addMessages(
                range.map {
                    NewMessage(
                        id: "m-\($0)", run: "bench", invoiceID: "INV-\($0)", phone: "1809\(String(format: "%07d", $0))",
                        template: "invoice", language: "es")
                })
            guard wamidsKnown else { continue }
            let attempts = try await store.beginAttempts(messageIDs: range.map { "m-\($0)" }, at: 1_771_999_999)
            try await store.recordOutcomes(
                range.map { .accepted(messageID: "m-\($0)", attempt: attempts["m-\($0)"] ?? 1, wamid: "wamid.S\($0)") }, at: 1_771_999_999)
        }
    }

    /// A release `dispatcher serve` of its own on a free port, once it answers /health.
    static func startServe(dispatcher: String, database: String, secret: String) async throws -> (Process, Int) {
        let port = 18_000 + Int.random(in: 0..<2000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: dispatcher)
        server.arguments = ["serve", "--listen", "127.0.0.1:\(port)", "--db", database]
        var environment = ProcessInfo.processInfo.environment
        environment["WHATSAPP_APP_SECRET"] = secret
        environment["LOG_LEVEL"] = "error"
        server.environment = environment
        try server.run()
        do {
            try await waitUntilUp("http://127.0.0.1:\(port)/health")
        } catch {
            server.terminate()
            throw error
        }
        return (server, port)
    }

    static func waitUntilUp(_ url: String) async throws {
        for _ in 0..<100 {
            if let response = try? await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(1)),
                response.status.code == 200
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw BenchError("no answer from \(url)")
    }

    /// `concurrency` workers post batches back to back, or together at `requestsPerSecond`.
    private func load(
        url: String, batches: BatchSource, concurrency: Int, requestsPerSecond: Double?, duration: Double
    ) async throws -> Figures {
        let started = ContinuousClock.now
        let deadline = started + .milliseconds(Int(duration * 1000))
        let results = try await withThrowingTaskGroup(of: Figures.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var figures = Figures(statuses: 0, seconds: 0, latencies: [], failures: 0)
                    var n = 0
                    while ContinuousClock.now < deadline {
                        if let rps = requestsPerSecond {
                            // Worker w sends requests w, w+c, w+2c… of an evenly spaced schedule.
                            let due = started + .microseconds(Int(Double(n * concurrency + worker) / rps * 1_000_000))
                            if due > deadline { break }
                            try await Task.sleep(until: due)
                        }
                        let (body, signature, count) = batches.next()
                        var request = HTTPClientRequest(url: url)
                        request.method = .POST
                        request.headers.add(name: "Content-Type", value: "application/json")
                        request.headers.add(name: "X-Hub-Signature-256", value: signature)
                        request.body = .bytes(ByteBuffer(bytes: body))
                        let sent = ContinuousClock.now
                        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                        _ = try await response.body.collect(upTo: 1 << 16)
                        let elapsed = ContinuousClock.now - sent
                        figures.latencies.append(Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
                        if response.status.code == 200 { figures.statuses += count } else { figures.failures += 1 }
                        n += 1
                    }
                    return figures
                }
            }
            var total = Figures(statuses: 0, seconds: 0, latencies: [], failures: 0)
            for try await figures in group {
                total.statuses += figures.statuses
                total.latencies += figures.latencies
                total.failures += figures.failures
            }
            return total
        }
        var figures = results
        let elapsed = ContinuousClock.now - started
        figures.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return figures
    }
}

/// Signed batches of 100 statuses in Meta's shape: each message gets sent, then delivered, then read.
final class BatchSource: @unchecked Sendable {
    private let lock = NSLock()
    private var cursor = 0
    let messages: Int
    let signature: WebhookSignature

    init(messages: Int, signature: WebhookSignature) {
        self.messages = messages
        self.signature = signature
    }

    func next() -> (body: [UInt8], signature: String, count: Int) {
        lock.lock()
        let first = cursor
        cursor += 100
        lock.unlock()
        let statuses = (first..<first + 100).map { n -> String in
            let message = (n / 3) % messages
            let status = ["sent", "delivered", "read"][n % 3]
            return
                #"{"id":"wamid.B\#(message)","status":"\#(status)","timestamp":"\#(1_772_000_000 + n)","recipient_id":"1809\#(String(format: "%07d", message))","biz_opaque_callback_data":"m-\#(message)","pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}}"#
        }
        let body = Array(
            #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"18095550000","phone_number_id":"123"},"statuses":[\#(statuses.joined(separator: ","))]}}]}]}"#
                .utf8)
        return (body, signature.header(for: body), 100)
    }
}
