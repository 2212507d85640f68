import Dispatcher
import Foundation

// dispatcher-bench: every benchmark, run on demand, printing rates and ratios (never asserted).
//
//   swift run -c release dispatcher-bench            # all benchmarks, 1,000,000 rows
//   swift run -c release dispatcher-bench --rows 200000
//   swift run -c release dispatcher-bench --only serve     # one status per POST under wrk, beside pywa
//   swift run -c release dispatcher-bench --only serve --wamids-known   # messages as a billing run leaves them
//   swift run -c release dispatcher-bench --only preview   # the whole preview beside csv.reader and xmllint
//   swift run -c release dispatcher-bench --only send --pin   # sender on core 0, sandbox + serve on the last
//
// Each measurement runs in a child process of this one, so that its peak memory (VmHWM) is its own.

let arguments = Array(CommandLine.arguments.dropFirst())

if arguments.first == "child" {
    // child KIND PATH: import and validate, then print one JSON line with the figures.
    // KIND is csv or xml (import and validate), or csv-read or xml-read (the reader alone).
    let kind = arguments[1], path = arguments[2]
    let format: ManifestFormat = kind.hasPrefix("xml") ? .xml : .csv
    let started = DispatchTime.now().uptimeNanoseconds
    var valid = 0, records = 0, issues = 0
    if kind.hasSuffix("-read") {
        try ManifestImporter.reader(for: path, format: format).read { _ in records += 1 }
        valid = records
    } else {
        let summary = try ManifestImporter(options: ValidationOptions()).importManifest(path: path, format: format) { _ in valid += 1 }
        records = summary.records
        issues = summary.issueCount
    }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
    let result: [String: Any] = [
        "records": records, "valid": valid, "issues": issues,
        "seconds": seconds, "peak_kb": peakMemoryKB(),
    ]
    print(String(decoding: try JSONSerialization.data(withJSONObject: result), as: UTF8.self))
    exit(0)
}

var rows = 1_000_000
if let i = arguments.firstIndex(of: "--rows"), i + 1 < arguments.count, let n = Int(arguments[i + 1]) { rows = n }
var only: String? = nil
if let i = arguments.firstIndex(of: "--only"), i + 1 < arguments.count { only = arguments[i + 1] }
var seconds = 10.0
if let i = arguments.firstIndex(of: "--seconds"), i + 1 < arguments.count, let n = Double(arguments[i + 1]) { seconds = n }
let benchmarks = ["import", "webhooks", "serve", "sandbox", "send", "organizations", "prepare", "preview", "report"]
if arguments.contains("--help") || arguments.contains("-h") {
    print(
        """
        usage: dispatcher-bench [--only \(benchmarks.joined(separator: "|"))] [--rows N] [--seconds S] [--pin]
                                [--org-rate N] [--no-webhooks] [--wamids-known]
        Every benchmark runs the release build's own processes on this machine and prints rates and
        ratios against the peers measured in the same run (docs/benchmarks.md says what each measures).
        """)
    exit(0)
}
if let only, !benchmarks.contains(only) {
    FileHandle.standardError.write(Data("dispatcher-bench: no benchmark '\(only)' (known: \(benchmarks.joined(separator: ", ")))\n".utf8))
    exit(2)
}
// Said before anything runs, not as a crash half way through: asked for alone, serve without wrk
// is refused; in a run of everything, skipped with a word.
let haveWrk = which("wrk") != nil
if only == "serve", !haveWrk {
    FileHandle.standardError.write(Data("dispatcher-bench: serve needs wrk (apt-get install wrk)\n".utf8))
    exit(2)
}
if only == nil, !haveWrk { print("serve: skipped, wrk is missing (apt-get install wrk)") }
let dataDirectory = "bench-data"
try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)

print("dispatcher benchmarks on \(ProcessInfo.processInfo.activeProcessorCount) cores, \(rows.formatted()) invoices")
print("")

var table: [(String, String, String, String)] = []

// DISPATCHER_BENCH_DISPATCHER: another build's binary (an earlier commit's, for before/after in one session).
let dispatcherPath =
    ProcessInfo.processInfo.environment["DISPATCHER_BENCH_DISPATCHER"]
    ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("dispatcher").path

if only == nil || only == "import" {
    let csvPath = "\(dataDirectory)/invoices-\(rows).csv"
    let xmlPath = "\(dataDirectory)/invoices-\(rows).xml"
    try ManifestGenerator(rows: rows).writeCSV(to: csvPath)
    try ManifestGenerator(rows: rows).writeXML(to: xmlPath)

    func child(_ kind: String, _ path: String) throws -> [String: Any] {
        let output = try runProcess(CommandLine.arguments[0], ["child", kind, path])
        guard let data = output.stdout.split(separator: "\n").last.map({ Data($0.utf8) }),
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw BenchError("child \(kind) printed no figures: \(output.stderr)")
        }
        return object
    }

    // 1. Manifest import and validation.
    for (kind, path) in [("csv", csvPath), ("xml", xmlPath)] {
        let figures = try child(kind, path)
        let seconds = figures["seconds"] as! Double
        let records = figures["records"] as! Int
        let peak = Double(figures["peak_kb"] as! Int) / 1024
        let size = Double((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0) / 1_048_576
        table.append(
            (
                "import+validate \(kind.uppercased()) (\(String(format: "%.0f", size)) MB)",
                "\(Int(Double(records) / seconds).formatted()) rows/s",
                String(format: "%.2f s", seconds), String(format: "peak %.0f MB", peak)
            ))
        let readOnly = try child(kind + "-read", path)
        let readSeconds = readOnly["seconds"] as! Double
        table.append(
            (
                "  of which reading alone", "\(Int(Double(rows) / readSeconds).formatted()) rows/s",
                String(format: "%.2f s", readSeconds), String(format: "validation %.2f s", seconds - readSeconds)
            ))
        if figures["valid"] as! Int != rows {
            print("warning: \(kind): \(figures["valid"]!) of \(rows) valid, \(figures["issues"]!) issues")
        }
        // References on the same file.
        if kind == "xml", let xmllint = which("xmllint") {
            let started = Date()
            _ = try runProcess(xmllint, ["--stream", "--noout", path])
            let reference = Date().timeIntervalSince(started)
            table.append(
                (
                    "  reference: xmllint --stream --noout", "\(Int(Double(rows) / reference).formatted()) rows/s",
                    String(format: "%.2f s", reference), String(format: "ours / xmllint = %.2f×", seconds / reference)
                ))
        }
        if kind == "csv", let python = which("python3") {
            let started = Date()
            _ = try runProcess(
                python, ["-c", "import csv,sys\nn=0\nfor r in csv.reader(open(sys.argv[1], newline='', encoding='utf-8')): n+=1", path])
            let reference = Date().timeIntervalSince(started)
            table.append(
                (
                    "  reference: Python csv.reader (read only)", "\(Int(Double(rows) / reference).formatted()) rows/s",
                    String(format: "%.2f s", reference),
                    String(format: "rate ratio ours/python: %.2f× with validation", reference / seconds)
                ))
        }
    }

}

// 2. Webhook intake: a real `dispatcher serve` (release build beside this one), durable commits,
// on SQLite, then on PostgreSQL (the server DISPATCHER_BENCH_POSTGRES_URL names; scripts/bench
// starts a throw-away one with PostgreSQL's durable defaults).
if only == nil || only == "webhooks" {
    let dispatcher = dispatcherPath
    guard FileManager.default.isExecutableFile(atPath: dispatcher) else {
        throw BenchError("build dispatcher first: swift build -c release")
    }
    var engines: [(String, String?)] = [("SQLite", nil)]
    if let postgres = ProcessInfo.processInfo.environment["DISPATCHER_BENCH_POSTGRES_URL"], !postgres.isEmpty {
        engines.append(("PostgreSQL", postgres))
    } else {
        print("webhook intake on PostgreSQL: skipped (set DISPATCHER_BENCH_POSTGRES_URL, or use scripts/bench)")
    }
    for (engine, postgres) in engines {
        print("webhook intake (\(engine)): \(Int(seconds)) s flat out, then \(Int(seconds)) s at 3,000 statuses/s…")
        let (saturation, paced, size) = try await WebhookBenchmark(dispatcher: dispatcher, seconds: seconds).run(postgresAdminURL: postgres)
        func ms(_ s: Double) -> String { String(format: "%.1f", s * 1000) }
        table.append(
            (
                "webhook intake, 8 senders flat out (\(engine))", "\(Int(saturation.rate).formatted()) statuses/s",
                String(format: "%.1f s", saturation.seconds),
                "ack p50 \(ms(saturation.percentile(0.5))) ms, p99 \(ms(saturation.percentile(0.99))) ms, \(saturation.failures) non-200"
            ))
        table.append(
            (
                "webhook intake at 3,000 statuses/s (\(engine))", "\(Int(paced.rate).formatted()) statuses/s",
                String(format: "%.1f s", paced.seconds),
                "ack p50 \(ms(paced.percentile(0.5))) ms, p99 \(ms(paced.percentile(0.99))) ms, max \(ms(paced.percentile(1))) ms, \(paced.failures) non-200; db \(size)"
            ))
    }
}

// 2b. One status per POST under wrk, as Meta posts them (issue 19): the pywa receiver first (its
// virtual environment made by scripts/bench: DISPATCHER_BENCH_PYWA), then serve on SQLite and on
// PostgreSQL (durable), all on the same pre-signed bodies.
if (only == nil && haveWrk) || only == "serve" {
    var benchmark = ServeBenchmark(dispatcher: dispatcherPath, seconds: seconds)
    benchmark.wamidsKnown = arguments.contains("--wamids-known")
    let bodies = NSTemporaryDirectory() + "dispatcher-bench-bodies-\(UUID().uuidString).txt"
    defer { try? FileManager.default.removeItem(atPath: bodies) }
    try benchmark.writeBodies(to: bodies)
    func ms(_ s: Double) -> String { String(format: "%.1f", s * 1000) }
    func row(_ name: String, _ f: ServeBenchmark.Figures, _ extra: String = "") -> (String, String, String, String) {
        (
            name, "\(Int(f.rate).formatted()) statuses/s", String(format: "%.1f s", f.seconds),
            "p50 \(ms(f.p50)) ms, p99 \(ms(f.p99)) ms, max \(ms(f.max)) ms, \(f.non2xx + f.errors) non-200\(extra)"
        )
    }
    var peer: ServeBenchmark.Figures? = nil
    if let venv = ProcessInfo.processInfo.environment["DISPATCHER_BENCH_PYWA"], !venv.isEmpty {
        print("serve: pywa receiver (gunicorn, 2 workers, SQLite), \(Int(seconds)) s under wrk…")
        peer = try await benchmark.pywa(bodies: bodies, venv: venv)
        table.append(row("one status per POST: pywa + Flask + gunicorn + SQLite", peer!))
    } else {
        print(
            "serve: the pywa peer skipped (set DISPATCHER_BENCH_PYWA to a virtual environment with pywa, flask, gunicorn; scripts/bench makes one)"
        )
    }
    var engines: [(String, String?)] = [("SQLite", nil)]
    if let postgres = ProcessInfo.processInfo.environment["DISPATCHER_BENCH_POSTGRES_URL"], !postgres.isEmpty {
        engines.append(("PostgreSQL", postgres))
    }
    for (engine, postgres) in engines {
        print("serve: dispatcher serve on \(engine), \(Int(seconds)) s under wrk…")
        let ours = try await benchmark.ours(bodies: bodies, postgresAdminURL: postgres)
        var ratio = peer.map { String(format: "; %.1f× pywa", ours.rate / $0.rate) } ?? ""
        if let cpu = ours.cpu { ratio += String(format: "; serve's CPU %.0f µs/status", cpu / Double(max(1, ours.requests)) * 1e6) }
        table.append(row("one status per POST: dispatcher serve (\(engine)\(benchmark.wamidsKnown ? ", wamids known" : ""))", ours, ratio))
    }
}

// 3. The sandbox flat out, its webhooks into a real serve.
if only == nil || only == "sandbox" {
    print("sandbox: 20,000 sends flat out…")
    table += try await sandboxBenchmark(dispatcher: dispatcherPath, sends: 20_000)
}

// 4. Sending: achieved rate and CPU per message.
if only == nil || only == "send" {
    let placement = Placement.choose(pin: arguments.contains("--pin"))
    print("send: \(placement.label)")
    for (rate, latency) in [(80, 0), (80, 100), (1000, 0), (1000, 100)] {
        print("send at \(rate)/s with +\(latency) ms…")
        table.append(
            try await sendBenchmark(
                dispatcher: dispatcherPath, rate: rate, latencyMs: latency, seconds: rate == 80 ? 15 : 10,
                placement: placement))
    }
    // The store already holding 200,000 statuses of messages that are not ours (other tools
    // sending from the number, another number): each message added and accepted looks among them.
    print("send at 1000/s with 200,000 unmatched statuses in the store…")
    table.append(
        try await sendBenchmark(
            dispatcher: dispatcherPath, rate: 1000, latencyMs: 0, seconds: 10, placement: placement, unmatched: 200_000))
}

// 4b. Several organizations, each its own number, in one send (issue 16).
if only == nil || only == "organizations" {
    let placement = Placement.choose(pin: arguments.contains("--pin"))
    // --org-rate: the rate per number (1,000 by default, the issue's figure; lower to see pacing
    // apart from the machine's limit: sandbox, receiver and sender share its cores).
    var orgRate = 1000
    if let i = arguments.firstIndex(of: "--org-rate"), i + 1 < arguments.count, let n = Int(arguments[i + 1]) { orgRate = n }
    print("organizations: 4 numbers at \(orgRate)/s each in one send (\(placement.label))…")
    // --no-webhooks: the sandbox posts no statuses and no serve runs (the sender and the sandbox alone).
    table += try await organizationsBenchmark(
        dispatcher: dispatcherPath, numbers: 4, rate: orgRate, seconds: max(10, 10_000 / orgRate), placement: placement,
        webhooks: !arguments.contains("--no-webhooks"))
}

// 5. A whole send of the big manifest, until its first request: memory and time to start (issue 14).
if only == nil || only == "prepare" {
    print("prepare: dispatcher send of \(rows.formatted()) invoices, until its first request…")
    let manifest = "\(dataDirectory)/invoices-\(rows).csv"
    try ManifestGenerator(rows: rows).writeCSV(to: manifest)
    table += try await prepareBenchmark(dispatcher: dispatcherPath, manifest: manifest, rows: rows)
}

// 6. The whole `preview` a user runs, beside its peers on the same files in the same run (issue 19):
// Python's csv.reader reading the CSV, xmllint --stream reading the XML.
if only == nil || only == "preview" {
    let csvPath = "\(dataDirectory)/invoices-\(rows).csv"
    let xmlPath = "\(dataDirectory)/invoices-\(rows).xml"
    try ManifestGenerator(rows: rows).writeCSV(to: csvPath)
    try ManifestGenerator(rows: rows).writeXML(to: xmlPath)
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/time") else { throw BenchError("preview: /usr/bin/time is missing") }
    let out = NSTemporaryDirectory() + "bench-preview-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: out) }
    for (kind, path) in [("CSV", csvPath), ("XML", xmlPath)] {
        // Read once untimed first, so that both commands find it in the page cache: otherwise ours,
        // run first, also pays for the disk (7.6 s warm, 11.1 s cold, the same binary and hour).
        try warmPageCache(path)
        print("preview: dispatcher preview of the \(kind), whole command…")
        let ours = try timedCommand(dispatcherPath, ["preview", path, "--ignore-store", "--out", out, "--templates", "templates"])
        var peer: (name: String, seconds: Double)? = nil
        if kind == "CSV", let python = which("python3") {
            let read = "import csv,sys\nfor r in csv.reader(open(sys.argv[1], newline='', encoding='utf-8'), delimiter=';'): pass"
            peer = ("Python csv.reader", try timedCommand(python, ["-c", read, path]).seconds)
        } else if kind == "XML", let xmllint = which("xmllint") {
            peer = ("xmllint --stream --noout", try timedCommand(xmllint, ["--stream", "--noout", path]).seconds)
        }
        table.append(
            (
                "preview \(kind), whole command", "\(Int(Double(rows) / ours.seconds).formatted()) rows/s",
                String(format: "%.2f s", ours.seconds), String(format: "peak %.0f MB", ours.peakMB)
            ))
        if peer == nil { print("preview: no peer for the \(kind) (python3; xmllint is Debian's libxml2-utils): its ratio is not printed") }
        if let peer {
            table.append(
                (
                    "  beside: \(peer.name)", "\(Int(Double(rows) / peer.seconds).formatted()) rows/s",
                    String(format: "%.2f s", peer.seconds),
                    String(format: "ours / peer = %.2f× (target ≤ %@)", ours.seconds / peer.seconds, kind == "CSV" ? "3×" : "2×")
                ))
        }
    }
}

// 7. Reports of a 1,000,000-message run.
if only == nil || only == "report" {
    print("report: seeding \(rows.formatted()) messages (SQLite: once, kept in bench-data/)…")
    table += try await reportBenchmark(messages: rows, dispatcher: dispatcherPath)
    if let postgres = ProcessInfo.processInfo.environment["DISPATCHER_BENCH_POSTGRES_URL"], !postgres.isEmpty {
        print("report: seeding \(rows.formatted()) messages in PostgreSQL…")
        table += try await reportBenchmark(messages: rows, dispatcher: dispatcherPath, postgresAdminURL: postgres)
    }
}

let widths = [
    table.map(\.0.count).max()!, table.map(\.1.count).max()!, table.map(\.2.count).max()!,
]
for row in table {
    print(
        row.0.padding(toLength: widths[0] + 2, withPad: " ", startingAt: 0)
            + row.1.padding(toLength: widths[1] + 2, withPad: " ", startingAt: 0)
            + row.2.padding(toLength: widths[2] + 2, withPad: " ", startingAt: 0) + row.3)
}
print("")
print("Targets: import (issue 2) CSV ≥ 500,000 rows/s, XML within 2× of xmllint --stream, peak < 150 MB;")
print("         webhooks (issue 3) ≥ 20,000 statuses/s sustained, p99 ack < 50 ms at 3,000 statuses/s;")
print("         webhooks on PostgreSQL (issue 7) ≥ 10,000 statuses/s with one receiver;")
print("         one status per POST (issue 19): ≥ 10× the pywa receiver, p99 < 10 ms; ≥ 10,000/s on PostgreSQL;")
print("         sandbox (issue 4) ≥ 2,000 sends/s with their webhooks delivered;")
print("         send (issue 5) ≥ 98% of the rate and never above, ≤ 300 µs CPU/message at 1,000/s;")
print("         reports (issue 6) of 1,000,000 messages: CSV < 5 s, HTML < 2 s and < 5 MB;")
print("         four numbers at 1,000/s each in one send (issue 16): each ≥ 98% and never above, < 1 core in total;")
print("         send of 1,000,000 invoices (issue 14): peak < 250 MB, first request within 15 s.")
