import Foundation
import Store
import WhatsApp

/// One status per POST, the way Meta delivers them, from `wrk` (16 connections on 2 threads,
/// every body signed beforehand so that the generator does no hashing) to a receiver that
/// verifies each signature and stores each status durably: `dispatcher serve` on SQLite, the same
/// on PostgreSQL, and the peer, a pywa receiver (pywa on Flask under gunicorn with 2 workers, each
/// status committed to SQLite). All get the same bodies; each receiver runs as its own process.
struct ServeBenchmark {
    let dispatcher: String
    let seconds: Double
    let connections = 16
    let threads = 2
    let secret = "bench-app-secret"
    /// Messages seeded, three statuses each (sent, delivered, read): enough bodies that none
    /// repeats within the run at the rates seen here.
    let messages = 100_000
    /// Messages seeded with their wamids, as a billing run leaves them (`--wamids-known`); by
    /// default none, and each first status teaches its message's.
    var wamidsKnown = false

    struct Figures {
        var requests: Int
        var seconds: Double
        var non2xx: Int
        var errors: Int
        var p50: Double  // seconds
        var p99: Double
        var max: Double
        /// The receiver's CPU seconds during the load (ours only: one process).
        var cpu: Double? = nil
        var rate: Double { Double(requests - non2xx - errors) / seconds }
    }

    /// `signature<TAB>body` per line, one status per body.
    func writeBodies(to path: String) throws {
        let signature = WebhookSignature(appSecret: secret)
        let out = try BufferedFile(path: path)
        for n in 0..<messages * 3 {
            let message = n / 3
            let status = ["sent", "delivered", "read"][n % 3]
            let phone = "1809\(String(format: "%07d", message))"
            let pricing =
                status == "read" ? "" : #","pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}"#
            let body =
                #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"18095550000","phone_number_id":"123"},"contacts":[{"wa_id":"\#(phone)","user_id":"DO.\#(message)"}],"statuses":[{"id":"wamid.S\#(message)","status":"\#(status)","timestamp":"\#(1_772_000_000 + n)","recipient_id":"\#(phone)","biz_opaque_callback_data":"m-\#(message)"\#(pricing)}]}}]}]}"#
            out.append(signature.header(for: Array(body.utf8)) + "\t" + body + "\n")
        }
        try out.close()
    }

    /// Runs wrk against `port` and reads the figures its script prints.
    func load(port: Int, bodies: String) throws -> Figures {
        guard let wrk = which("wrk") else { throw BenchError("wrk is missing (Debian's wrk)") }
        let script = FileManager.default.currentDirectoryPath + "/scripts/peers/webhook.lua"
        let output = try runProcess(
            wrk,
            [
                "-t\(threads)", "-c\(connections)", "-d\(Int(seconds))s", "--timeout", "10s", "-s", script,
                "http://127.0.0.1:\(port)", "--", bodies, "\(threads)",
            ])
        guard let line = output.stdout.split(separator: "\n").last(where: { $0.hasPrefix("WRK_JSON ") }),
            let object = try JSONSerialization.jsonObject(with: Data(line.dropFirst(9).utf8)) as? [String: Any]
        else { throw BenchError("wrk printed no figures: \(output.stdout) \(output.stderr)") }
        func int(_ key: String) -> Int { (object[key] as? NSNumber)?.intValue ?? 0 }
        return Figures(
            requests: int("requests"), seconds: (object["seconds"] as? NSNumber)?.doubleValue ?? seconds, non2xx: int("non2xx"),
            errors: int("errors"), p50: Double(int("p50_us")) / 1e6, p99: Double(int("p99_us")) / 1e6, max: Double(int("max_us")) / 1e6)
    }

    /// `dispatcher serve` on `postgresAdminURL`'s server (a new database), or on a new SQLite file.
    func ours(bodies: String, postgresAdminURL: String?) async throws -> Figures {
        let folder = NSTemporaryDirectory() + "dispatcher-bench-serve-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let database = try await WebhookBenchmark.freshDatabase(sqlitePath: "\(folder)/serve.sqlite", postgresAdminURL: postgresAdminURL)
        try await WebhookBenchmark.seed(database, messages: messages, wamidsKnown: wamidsKnown)
        let (server, port) = try await WebhookBenchmark.startServe(dispatcher: dispatcher, database: database, secret: secret)
        defer { stopProcess(server) }
        let before = cpuSeconds(of: server.processIdentifier)
        var figures = try load(port: port, bodies: bodies)
        if let before, let after = cpuSeconds(of: server.processIdentifier) { figures.cpu = after - before }
        return figures
    }

    /// The pywa receiver (scripts/peers/pywa_receiver.py) under gunicorn from `venv`.
    func pywa(bodies: String, venv: String) async throws -> Figures {
        let folder = NSTemporaryDirectory() + "dispatcher-bench-pywa-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let port = 18_000 + Int.random(in: 0..<2000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "\(venv)/bin/gunicorn")
        server.arguments = [
            "-w", "2", "-b", "127.0.0.1:\(port)", "--log-level", "error", "--chdir",
            FileManager.default.currentDirectoryPath + "/scripts/peers", "pywa_receiver:app",
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["BENCH_DB"] = "\(folder)/pywa.sqlite"
        environment["BENCH_APP_SECRET"] = secret
        server.environment = environment
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        defer { stopProcess(server) }
        try await WebhookBenchmark.waitUntilUp("http://127.0.0.1:\(port)/health")
        return try load(port: port, bodies: bodies)
    }
}
