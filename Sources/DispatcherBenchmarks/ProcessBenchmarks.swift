import AsyncHTTPClient
import Dispatcher
import Engine
import Foundation
import GRDB
import NIOCore
import NIOHTTP1
import Reports
import Server
import Store
import Synchronization
import WhatsApp

/// Where the send benchmark runs each process. By default all three share every core, as they
/// always have. With `--pin` (and `taskset`, two cores or more) the sender gets core 0 and the
/// sandbox and its receiver, which stand in for Meta's servers, the last core: the sender's CPU is
/// then its own, but on two cores the sandbox's core is saturated and its clock jitters, so its
/// throughput check answers 130429 now and then (measured: 0 to 4 per run).
struct Placement: Sendable {
    var sender: [String] = []
    var world: [String] = []

    static func choose(pin: Bool) -> Placement {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        guard pin, cores >= 2, let taskset = ["/usr/bin/taskset", "/bin/taskset"].first(where: FileManager.default.isExecutableFile) else {
            return Placement()
        }
        return Placement(sender: [taskset, "-c", "0"], world: [taskset, "-c", "\(cores - 1)"])
    }

    var label: String { sender.isEmpty ? "not pinned" : "pinned: send on core 0, sandbox + serve on core \(world.last ?? "")" }
}

/// A `dispatcher` subcommand as a separate process.
final class Child: @unchecked Sendable {
    let process = Process()

    init(_ dispatcher: String, _ arguments: [String], in folder: String, environment: [String: String] = [:], prefix: [String] = []) throws
    {
        process.executableURL = URL(fileURLWithPath: prefix.first ?? dispatcher)
        process.arguments = prefix.isEmpty ? arguments : Array(prefix.dropFirst()) + [dispatcher] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        var env = ProcessInfo.processInfo.environment
        env["LOG_LEVEL"] = "error"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

func childrenCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_CHILDREN.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(
        usage.ru_stime.tv_usec) / 1e6
}

func getJSON(_ url: String) async throws -> Any {
    let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
    let body = try await response.body.collect(upTo: 512 * 1024 * 1024)
    return try JSONSerialization.jsonObject(with: Data(body.readableBytesView))
}

func waitUp(_ url: String) async throws {
    for _ in 0..<100 {
        if (try? await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(1))) != nil { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw BenchError("\(url) did not come up")
}

func workspace() throws -> String {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dispatcher-bench-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: "templates", toPath: folder + "/templates")
    try #"{"rules":[{"match":"suffix:","outcome":"delivered_read"}]}"#.write(
        toFile: folder + "/scenario.json", atomically: true, encoding: .utf8)
    return folder
}

// MARK: - The sandbox

/// The sandbox (its own process) flat out: sends accepted per second, then how long until their
/// webhooks (3 statuses each) have all been taken by a real `dispatcher serve`.
func sandboxBenchmark(dispatcher: String, sends: Int) async throws -> [(String, String, String, String)] {
    let folder = try workspace()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let port = 21_000 + Int.random(in: 0..<5000)
    let serve = try Child(
        dispatcher, ["serve", "--listen", "127.0.0.1:\(port + 1)", "--db", "sqlite:\(folder)/serve.sqlite"], in: folder,
        environment: ["WHATSAPP_APP_SECRET": "bench"])
    defer { serve.stop() }
    let sandbox = try Child(
        dispatcher,
        [
            "sandbox", "--listen", "127.0.0.1:\(port)", "--webhook-url", "http://127.0.0.1:\(port + 1)/webhook",
            "--app-secret", "bench", "--throughput", "1000000", "--scenario", "scenario.json",
        ], in: folder)
    defer { sandbox.stop() }
    try await waitUp("http://127.0.0.1:\(port)/_sandbox/counters")
    try await waitUp("http://127.0.0.1:\(port + 1)/health")

    var config = HTTPClient.Configuration()
    config.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    let encoder = JSONEncoder()
    let started = ContinuousClock.now
    let accepted = try await withThrowingTaskGroup(of: Int.self) { group in
        let workers = 48
        for worker in 0..<workers {
            group.addTask {
                var ok = 0
                for n in stride(from: worker, to: sends, by: workers) {
                    let request = TemplateMessageRequest(
                        to: "1809" + String(format: "%07d", n), callbackData: "m-\(n)",
                        template: .init(
                            // The template with a document header, as the sandbox knows it from templates/.
                            name: "invoice_pdf", language: .init(code: "es"),
                            components: [
                                .init(type: "header", parameters: [.document(link: "https://docs.example.com/i.pdf", filename: "i.pdf")]),
                                .init(
                                    type: "body",
                                    parameters: [
                                        .text("María"), .text("marzo 2026"),
                                        .currency(fallback: "RD$1.00", code: "DOP", amount1000: 1000), .text("10 de marzo"),
                                    ]),
                            ]))
                    var http = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v23.0/SANDBOX/messages")
                    http.method = .POST
                    http.headers.add(name: "Authorization", value: "Bearer sandbox-token")
                    http.headers.add(name: "Content-Type", value: "application/json")
                    http.body = .bytes(ByteBuffer(bytes: try encoder.encode(request)))
                    let response = try await client.execute(http, timeout: .seconds(30))
                    let answer = try await response.body.collect(upTo: 65536)
                    if response.status.code == 200 {
                        ok += 1
                    } else if n < workers {
                        // Not silent: a refused send says why (a template the sandbox does not know
                        // made this benchmark print 0 sends/s for days).
                        print("sandbox refused send \(n): HTTP \(response.status.code) \(String(buffer: answer))")
                    }
                }
                return ok
            }
        }
        return try await group.reduce(0, +)
    }
    let sendTime = seconds(ContinuousClock.now - started)
    // Webhooks: wait until all 3 statuses of each have been delivered (accepted by serve).
    var delivered = 0
    while true {
        let counters = try await getJSON("http://127.0.0.1:\(port)/_sandbox/counters") as? [String: Int] ?? [:]
        delivered = counters["statuses_delivered"] ?? 0
        if delivered >= accepted * 3 || seconds(ContinuousClock.now - started) > 120 { break }
        try await Task.sleep(for: .milliseconds(200))
    }
    let allTime = seconds(ContinuousClock.now - started)
    try await client.shutdown()
    return [
        (
            "sandbox: sends accepted, 48 clients flat out", "\(Int(Double(accepted) / sendTime).formatted()) sends/s",
            String(format: "%.1f s", sendTime),
            "\(accepted.formatted()) of \(sends.formatted()) accepted"
        ),
        (
            "sandbox: their webhooks delivered to serve", "\(Int(Double(delivered) / allTime).formatted()) statuses/s",
            String(format: "%.1f s", allTime),
            "\(delivered.formatted()) statuses, all \(delivered >= accepted * 3 ? "delivered" : "NOT delivered")"
        ),
    ]
}

// MARK: - Sending

/// `dispatcher send` (its own process) against the sandbox (another) at a rate and added latency:
/// the achieved rate measured from the sandbox's log of arrivals, and CPU per message.
/// `unmatched`: statuses the store already keeps that match none of our messages (what a number
/// other tools also send from collects for good), each message added and accepted looks among them.
func sendBenchmark(
    dispatcher: String, rate: Int, latencyMs: Int, seconds duration: Int, placement: Placement, unmatched: Int = 0
) async throws -> (String, String, String, String) {
    let folder = try workspace()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    if unmatched > 0 {
        _ = try SQLiteStore(path: folder + "/dispatcher.sqlite")
        try await DatabaseQueue(path: folder + "/dispatcher.sqlite").write { db in
            try db.execute(sql: "INSERT INTO webhook_payloads (received_at, body) VALUES (0, x'00')")
            try db.execute(
                sql: """
                    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                    INSERT INTO status_events (payload_id, wamid, status, timestamp, received_at, phone_number_id)
                    SELECT 1, 'wamid.other' || i, 'delivered', i, i, 'OTHER' FROM n
                    """, arguments: [unmatched])
        }
    }
    let messages = rate * duration
    var csv = "invoice_id,tenant_name,phone,amount,currency,period,document_url\n"
    for i in 0..<messages {
        csv +=
            "INV-\(i),Tenant \(i),+1809\(String(format: "%07d", i)),\(100 + i % 900).00,DOP,2026-03,https://docs.example.com/INV-\(i).pdf\n"
    }
    try csv.write(toFile: folder + "/run.csv", atomically: true, encoding: .utf8)
    let port = 26_000 + Int.random(in: 0..<5000)
    // Statuses go to a separate `serve` (as in production), so the send process only sends.
    let serve = try Child(
        dispatcher, ["serve", "--listen", "127.0.0.1:\(port + 1)", "--db", "sqlite:\(folder)/dispatcher.sqlite"], in: folder,
        environment: ["WHATSAPP_APP_SECRET": "bench"], prefix: placement.world)
    defer { serve.stop() }
    let sandbox = try Child(
        dispatcher,
        [
            "sandbox", "--listen", "127.0.0.1:\(port)", "--webhook-url", "http://127.0.0.1:\(port + 1)/webhook",
            "--app-secret", "bench", "--throughput", "\(rate)", "--latency-ms", "\(latencyMs)", "--scenario", "scenario.json",
        ],
        in: folder, prefix: placement.world)
    defer { sandbox.stop() }
    try await waitUp("http://127.0.0.1:\(port)/_sandbox/counters")
    let cpuBefore = childrenCPUSeconds()
    let (printed, exit) = try runSend(
        dispatcher, ["send", "run.csv", "--rate", "\(rate)", "--settle", "2s", "--stats"], in: folder, placement: placement,
        environment: [
            "WHATSAPP_API_BASE_URL": "http://127.0.0.1:\(port)", "WHATSAPP_ACCESS_TOKEN": "sandbox-token",
            "WHATSAPP_PHONE_NUMBER_ID": "SANDBOX",
        ])
    let stats = printed.split(separator: "\n").first { $0.hasPrefix("stats:") }.map(String.init) ?? "no stats"
    // "… N µs CPU per message while sending (X of a core); preparing took S s, M µs CPU per message"
    let cpuPerMessage = stats.range(of: #"[0-9]+ µs CPU per message"#, options: .regularExpression).map { String(stats[$0]) } ?? "?"
    let share = stats.range(of: #"[0-9.]+ of a core"#, options: .regularExpression).map { String(stats[$0]) } ?? "?"
    let preparing = stats.range(of: #"preparing took .*$"#, options: .regularExpression).map { String(stats[$0]) } ?? "?"
    let cpu = childrenCPUSeconds() - cpuBefore
    let requests = try await getJSON("http://127.0.0.1:\(port)/_sandbox/requests") as? [[String: Any]] ?? []
    let a = Arrivals(requests)
    return (
        "send at \(rate)/s, +\(latencyMs) ms API latency" + (unmatched > 0 ? ", \(unmatched.formatted()) unmatched statuses stored" : ""),
        String(format: "%.1f%% of the rate", a.rate / Double(rate) * 100),
        "\(cpuPerMessage.replacingOccurrences(of: " per message", with: "/msg sending")), \(share)",
        "\(a.accepted.formatted()) accepted, max \(a.most) in any 1 s, \(a.throttled) × 130429, exit \(exit); "
            + "\(preparing.replacingOccurrences(of: " CPU per message", with: "/msg")); whole process \(String(format: "%.0f", cpu / Double(messages) * 1e6)) µs/msg"
    )
}

/// One `dispatcher send` of a manifest for `numbers` organizations, each with its own sender
/// number at `rate` (issue 16: four numbers at 1,000/s in one process): each number's achieved
/// rate and busiest second from the sandbox's log of arrivals, and the send process's CPU.
/// `webhooks: false`: the sandbox posts no statuses and no `serve` runs, so that only the sender and
/// the sandbox share the machine (is the sender or the world the limit?).
func organizationsBenchmark(
    dispatcher: String, numbers: Int, rate: Int, seconds duration: Int, placement: Placement, webhooks: Bool = true
) async throws -> [(String, String, String, String)] {
    let folder = try workspace()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let ids = (1...numbers).map { "org\($0)" }
    let config = ids.enumerated().map { i, id in
        #"{"id": "\#(id)", "phone_number_id": "PN\#(i + 1)", "token_env": "BENCH_TOKEN"}"#
    }.joined(separator: ", ")
    try #"{"organizations": [\#(config)]}"#.write(toFile: folder + "/dispatcher.json", atomically: true, encoding: .utf8)
    var csv = "invoice_id,organization,tenant_name,phone,amount,currency,period\n"
    for i in 0..<(rate * duration) {
        for (n, id) in ids.enumerated() {
            csv += "\(id)-\(i),\(id),Tenant \(i),+1809\(n)\(String(format: "%06d", i)),\(100 + i % 900).00,DOP,2026-03\n"
        }
    }
    try csv.write(toFile: folder + "/run.csv", atomically: true, encoding: .utf8)
    let port = 26_000 + Int.random(in: 0..<5000)
    let serve =
        webhooks
        ? try Child(
            dispatcher, ["serve", "--listen", "127.0.0.1:\(port + 1)", "--db", "sqlite:\(folder)/dispatcher.sqlite"], in: folder,
            environment: ["WHATSAPP_APP_SECRET": "bench"], prefix: placement.world) : nil
    defer { serve?.stop() }
    let sandbox = try Child(
        dispatcher,
        [
            "sandbox", "--listen", "127.0.0.1:\(port)", "--app-secret", "bench", "--throughput", "\(rate)", "--scenario", "scenario.json",
        ] + (webhooks ? ["--webhook-url", "http://127.0.0.1:\(port + 1)/webhook"] : []),
        in: folder, prefix: placement.world)
    defer { sandbox.stop() }
    try await waitUp("http://127.0.0.1:\(port)/_sandbox/counters")
    let cpuBefore = childrenCPUSeconds()
    let (printed, exit) = try runSend(
        dispatcher, ["send", "run.csv", "--config", "dispatcher.json", "--rate", "\(rate)", "--settle", "2s", "--stats"], in: folder,
        placement: placement, environment: ["WHATSAPP_API_BASE_URL": "http://127.0.0.1:\(port)", "BENCH_TOKEN": "sandbox-token"])
    let cpu = childrenCPUSeconds() - cpuBefore
    // "[org1] stats: … (X of a core, the whole process); …": every lane's line gives the process's share.
    let shares = printed.split(separator: "\n").filter { $0.contains("stats:") }.compactMap { line in
        line.range(of: #"[0-9.]+ of a core"#, options: .regularExpression).map { String(line[$0]) }
    }
    let requests = try await getJSON("http://127.0.0.1:\(port)/_sandbox/requests") as? [[String: Any]] ?? []
    var rows: [(String, String, String, String)] = []
    var total = 0
    for (n, id) in ids.enumerated() {
        let a = Arrivals(requests.filter { $0["phoneNumberID"] as? String == "PN\(n + 1)" })
        total += a.accepted
        rows.append(
            (
                "\(numbers) numbers at \(rate)/s at once\(webhooks ? "" : ", no webhooks"): \(id)",
                String(format: "%.1f%% of the rate", a.rate / Double(rate) * 100),
                n == 0 ? "process: \(shares.first ?? "?") while sending" : "",
                "\(a.accepted.formatted()) accepted, max \(a.most) in any 1 s, \(a.throttled) × 130429"
            ))
    }
    rows.append(
        (
            "\(numbers) numbers at \(rate)/s at once\(webhooks ? "" : ", no webhooks"): all",
            "\(total.formatted()) accepted, exit \(exit)",
            String(format: "%.0f µs CPU/msg (whole process)", cpu / Double(max(total, 1)) * 1e6),
            "preparing included; one process, \(numbers) leases"
        ))
    return rows
}

/// A `dispatcher send` process (pinned as `placement` says), its stdout and exit status; the
/// environment adds to this one's, with the benchmarks' app secret and quiet logs.
func runSend(
    _ dispatcher: String, _ arguments: [String], in folder: String, placement: Placement, environment: [String: String]
) throws -> (printed: String, exit: Int32) {
    let send = Process()
    send.executableURL = URL(fileURLWithPath: placement.sender.first ?? dispatcher)
    send.arguments = placement.sender.isEmpty ? arguments : Array(placement.sender.dropFirst()) + [dispatcher] + arguments
    send.currentDirectoryURL = URL(fileURLWithPath: folder)
    var env = ProcessInfo.processInfo.environment
    env["WHATSAPP_APP_SECRET"] = "bench"
    env["LOG_LEVEL"] = "error"
    for (k, v) in environment { env[k] = v }
    send.environment = env
    let output = Pipe()
    send.standardOutput = output
    send.standardError = FileHandle.nullDevice
    try send.run()
    let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    send.waitUntilExit()
    return (printed, send.terminationStatus)
}

/// What the sandbox's log of requests says about a sender: accepted sends, the busiest sliding
/// second, 130429 answers, and the achieved rate from the first acceptance to the last.
struct Arrivals {
    var accepted = 0, most = 0, throttled = 0
    var rate = 0.0

    init(_ requests: [[String: Any]]) {
        let times = requests.filter { $0["wamid"] != nil }.compactMap { $0["at"] as? Double }.sorted()
        accepted = times.count
        throttled = requests.filter { $0["errorCode"] as? Int == 130429 }.count
        var start = 0
        for end in times.indices {
            while times[end] - times[start] >= 1 { start += 1 }
            most = max(most, end - start + 1)
        }
        rate = times.count > 1 ? Double(times.count - 1) / (times.last! - times.first!) : 0
    }
}

// MARK: - Reports

/// Reports of a seeded run of `messages` messages (issue 6, 19): `messages.csv` and the page
/// timed apart through `DeliveryReportWriter`, then the whole `dispatcher report` under
/// `/usr/bin/time` (its peak memory). On SQLite the seeded file is kept in bench-data/ and reused
/// (seeding takes a minute); on PostgreSQL (`postgresAdminURL`) a new database is seeded each time.
func reportBenchmark(messages: Int, dispatcher: String, postgresAdminURL: String? = nil) async throws -> [(String, String, String, String)]
{
    let folder = try workspace()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let sqlitePath = "bench-data/report-\(messages).sqlite"
    var database = "sqlite:\(sqlitePath)"
    if let postgresAdminURL {
        database = try await PostgresStore.createDatabase(
            named: "bench_report_\(UInt32.random(in: 0...UInt32.max))", adminURL: postgresAdminURL)
    }
    let engine = postgresAdminURL == nil ? "SQLite" : "PostgreSQL"
    let seeded = postgresAdminURL == nil && FileManager.default.fileExists(atPath: sqlitePath)
    let store = try await StoreOpener.open(url: database)
    let seedStart = ContinuousClock.now
    if !seeded {
        try await store.saveRun(
            RunRecord(name: "big", manifest: "big.csv", template: "invoice", sender: "123", status: .done, createdAt: 1_772_000_000))
        let landlords = ["Inmobiliaria Caribe", "Residencial Los Próceres", "Torres del Malecón"]
        for start in stride(from: 0, to: messages, by: 20_000) {
            let range = start..<min(start + 20_000, messages)
            try await store.addInvoices(
                range.map { i in
                    InvoiceRecord(
                        run: "big", invoiceID: "INV-\(i)", line: i + 2, tenantName: "Tenant \(i), \"Apto\" \(i % 40)",
                        landlord: landlords[i % 3],
                        property: "Torre \(i % 90)", amountMinor: Int64(100_000 + i % 90_000), currency: i % 10 == 0 ? "USD" : "DOP",
                        period: "2026-03",
                        locale: "es-DO", email: "t\(i)@example.com")
                })
            _ = try await store.addMessages(
                range.map { i in
                    NewMessage(
                        id: "m-\(i)", run: "big", invoiceID: "INV-\(i)", phone: "1809" + String(format: "%07d", i), template: "invoice",
                        language: "es")
                })
        }
        // Outcomes, in bulk: mostly read, some delivered, failed and unknown.
        // (Directly in SQL: a million statuses through the API would take minutes and measure something else.)
        let outcomes = """
            UPDATE messages SET
              state = CASE WHEN seq % 20 = 0 THEN 'failed' WHEN seq % 50 = 1 THEN 'unknown' WHEN seq % 7 = 0 THEN 'delivered' ELSE 'read' END,
              error_code = CASE WHEN seq % 20 = 0 THEN (CASE WHEN seq % 40 = 0 THEN 131026 ELSE 131049 END) END,
              error_title = CASE WHEN seq % 20 = 0 THEN 'Message undeliverable' END,
              wamid = 'wamid.' || seq, attempts = 1, accepted_at = 1772000000 + seq / 1000, sent_at = 1772000001 + seq / 1000,
              delivered_at = CASE WHEN seq % 20 != 0 AND seq % 50 != 1 THEN 1772000002 + seq / 1000 END,
              read_at = CASE WHEN seq % 20 != 0 AND seq % 50 != 1 AND seq % 7 != 0 THEN 1772000030 + seq / 1000 END
            """
        if postgresAdminURL == nil {
            try await DatabaseQueue(path: sqlitePath).write { db in try db.execute(sql: outcomes) }
        } else {
            guard let psql = which("psql") else { throw BenchError("report on PostgreSQL: psql is missing (Debian's postgresql-client)") }
            let ranks = MessageState.allCases.map { "WHEN '\($0.rawValue)' THEN \($0.rank)" }.joined(separator: " ")
            let result = try runProcess(
                psql,
                [
                    database, "-v", "ON_ERROR_STOP=1", "-c", outcomes, "-c", "UPDATE messages SET state_rank = CASE state \(ranks) END",
                    "-c", "ANALYZE",
                ])
            if !result.stderr.isEmpty { throw BenchError("report on PostgreSQL: seeding the outcomes failed: \(result.stderr)") }
        }
    }
    let seedTime = seconds(ContinuousClock.now - seedStart)
    let run = try await store.run(named: "big")!
    let writer = try await DeliveryReportWriter(templatesDirectory: "templates")
    try FileManager.default.createDirectory(atPath: folder + "/reports", withIntermediateDirectories: true)
    let files = ReportFiles(
        html: folder + "/reports/index.html", messagesCSV: folder + "/reports/messages.csv",
        landlordsCSV: folder + "/reports/landlords.csv")
    let csvStart = ContinuousClock.now
    try await writer.writeMessagesCSV(run: run, store: store, to: files.messagesCSV)
    let csvTime = seconds(ContinuousClock.now - csvStart)
    let pageStart = ContinuousClock.now
    try await writer.writePage(run: run, store: store, files: files)
    let pageTime = seconds(ContinuousClock.now - pageStart)
    await store.close()
    let htmlSize = (try FileManager.default.attributesOfItem(atPath: files.html)[.size] as? Int) ?? 0
    let csvSize = (try FileManager.default.attributesOfItem(atPath: files.messagesCSV)[.size] as? Int) ?? 0
    let label =
        "report of \(messages.formatted()) messages, \(engine)" + (seeded ? "" : " (seeded in \(String(format: "%.0f", seedTime)) s)")
    var rows = [
        (
            label + ": messages.csv", String(format: "%.2f s", csvTime), "\(csvSize / 1_048_576) MB",
            String(format: "%.0f rows/s", Double(messages) / csvTime)
        ),
        (
            label + ": index.html + landlords.csv", String(format: "%.2f s", pageTime), String(format: "%.0f KB", Double(htmlSize) / 1024),
            ""
        ),
    ]
    // The whole command, as a user runs it.
    if FileManager.default.isExecutableFile(atPath: "/usr/bin/time") {
        print("report: dispatcher report on \(engine), whole command…")
        let whole = try timedCommand(
            dispatcher, ["report", "big", "--db", database, "--out", folder + "/whole", "--timezone", "UTC"])
        let written = FileManager.default.fileExists(atPath: folder + "/whole/messages.csv")
        rows.append(
            (
                "dispatcher report, \(engine), whole command", String(format: "%.2f s", whole.seconds),
                String(format: "peak %.0f MB", whole.peakMB), written ? "" : "no messages.csv written: \(whole.stderr.suffix(300))"
            ))
    }
    return rows  // (a PostgreSQL database is left in the throw-away cluster, which `scripts/bench` deletes)
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

/// The whole `send` of a big manifest until its first request (issue 14): the release
/// `dispatcher send --sandbox` under `/usr/bin/time -v`, watched through its debug log: the first
/// request written ("first request written"), then, as a new run is stored while it sends, the
/// end of storing ("stored while sending"), or 30 s of sending, whichever comes first (storing
/// keeps half a minute ahead of the sends, so at 80/s a million take hours). Polling its database
/// instead would hold back SQLite's checkpoints and slow what is measured. Its peak memory at each
/// is read from /proc (VmHWM); then it is interrupted (SIGINT) as an operator would, it stores the
/// rest at full speed and writes its report, and `time`'s figure for the whole process (the
/// 1,000,000-message report included) is printed beside it.
func prepareBenchmark(dispatcher: String, manifest: String, rows: Int) async throws -> [(String, String, String, String)] {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/time") else {
        throw BenchError("prepare: /usr/bin/time is missing (apt install time)")
    }
    let folder = try workspace()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let send = Process()
    send.executableURL = URL(fileURLWithPath: "/usr/bin/time")
    send.arguments = [
        "-v", dispatcher, "send", URL(fileURLWithPath: manifest).standardizedFileURL.path, "--sandbox",
        "--db", "sqlite:\(folder)/dispatcher.sqlite", "--settle", "1s", "--out", "\(folder)/reports",
    ]
    send.currentDirectoryURL = URL(fileURLWithPath: folder)
    var env = ProcessInfo.processInfo.environment
    env["LOG_LEVEL"] = "debug"
    send.environment = env
    send.standardOutput = FileHandle.nullDevice
    let errors = Pipe()
    send.standardError = errors
    let started = ContinuousClock.now
    try send.run()
    var firstRequest: Duration? = nil
    var storedAt: Duration? = nil
    var peakKB = 0
    var storedPeakKB = 0
    var text = ""
    var pending = Data()
    let handle = errors.fileHandleForReading
    // `time` ignores SIGINT while its child runs: the child's peak is read, and the child interrupted.
    func child() -> String? {
        let children =
            (try? String(contentsOfFile: "/proc/\(send.processIdentifier)/task/\(send.processIdentifier)/children", encoding: .utf8))
            ?? ""
        return children.split(separator: " ").first.map(String.init)
    }
    func peak(_ child: String) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(child)/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
            .flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
    }
    var interrupted = false
    var interruptedAt: Duration? = nil
    let sendingFor = Duration.seconds(30)
    // Read on a thread of its own, looked at five times a second: the log may say nothing for
    // minutes while the run sends, and the 30 s must still end. (So the times printed are late by
    // up to 0.2 s.)
    let output = Mutex<(data: Data, ended: Bool)>((Data(), false))
    Thread.detachNewThread {
        while true {
            let chunk = handle.availableData
            output.withLock {
                $0.data.append(chunk)
                if chunk.isEmpty { $0.ended = true }
            }
            if chunk.isEmpty { return }
        }
    }
    while true {
        let (data, ended) = output.withLock { ($0.data, $0.ended) }
        pending = data
        if ended { break }
        try await Task.sleep(for: .milliseconds(200))
        guard !interrupted else { continue }
        let log = String(decoding: pending, as: UTF8.self)
        if firstRequest == nil, log.contains("first request written") {
            firstRequest = ContinuousClock.now - started
            if let child = child() { peakKB = peak(child) }
        }
        // Stored before sending (an older build, or a re-run): nothing more to wait for. Storing
        // keeps only half a minute ahead of sending (8f3110f), so at the default 80/s a million
        // invoices take hours to store: the send is interrupted after `sendingFor` at most.
        let storedAlready = firstRequest != nil && !log.contains("run: checked; storing while sending")
        let stored = log.contains("run: stored while sending")
        if let firstRequest, stored || storedAlready || ContinuousClock.now - started - firstRequest >= sendingFor {
            storedAt = stored ? ContinuousClock.now - started : nil
            if let child = child() {
                storedPeakKB = peak(child)
                _ = try? runProcess("/bin/kill", ["-INT", child])
            }
            interruptedAt = ContinuousClock.now - started
            interrupted = true
        }
    }
    send.waitUntilExit()
    let exitedAt = ContinuousClock.now - started
    text = String(decoding: pending, as: UTF8.self)
    let report = text.split(separator: "\n")
    let wholeKB =
        report.first { $0.contains("Maximum resident set size") }
        .flatMap { Int($0.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") } ?? 0
    guard let firstRequest else {
        throw BenchError("prepare: the send never started sending; it printed:\n\(text.suffix(2000))")
    }
    var lines = [
        (
            "send of \(rows.formatted()) invoices: start → first request", String(format: "%.1f s", seconds(firstRequest)),
            "peak \(peakKB / 1024) MB so far", "target ≤ 15 s, < 250 MB"
        )
    ]
    if let storedAt {
        lines.append(
            (
                "  … → every invoice stored (sending meanwhile)", String(format: "%.1f s", seconds(storedAt)),
                "peak \(storedPeakKB / 1024) MB so far",
                String(
                    format: "%.0f invoices/s stored; whole process with its report after the interrupt: peak %d MB",
                    Double(rows) / seconds(storedAt), wholeKB / 1024)
            ))
    } else if let interruptedAt {
        lines.append(
            (
                "  … sending (storing half a minute ahead) until interrupted", String(format: "at %.1f s", seconds(interruptedAt)),
                "peak \(storedPeakKB / 1024) MB so far",
                String(
                    format: "then the rest stored and the report written in %.1f s; whole process: peak %d MB",
                    seconds(exitedAt - interruptedAt), wholeKB / 1024)
            ))
    }
    return lines
}
