import Foundation

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Peak resident memory of this process in KiB (VmHWM from /proc/self/status).
func peakMemoryKB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}

func which(_ name: String) -> String? {
    for folder in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(folder)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

func runProcess(_ executable: String, _ arguments: [String]) throws -> (stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

/// Runs a whole command under `/usr/bin/time`: its wall time, its peak memory (MB) and what it
/// printed on stderr.
func timedCommand(_ executable: String, _ arguments: [String]) throws -> (seconds: Double, peakMB: Double, stderr: String) {
    let started = ContinuousClock.now
    let result = try runProcess("/usr/bin/time", ["-f", "peak_kb=%M", executable] + arguments)
    let elapsed = ContinuousClock.now - started
    let peak = result.stderr.split(separator: "\n").last { $0.hasPrefix("peak_kb=") }.flatMap { Double($0.dropFirst(8)) } ?? 0
    return (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, peak / 1024, result.stderr)
}

/// Reads a file to its end and drops what it read: afterwards it is in the page cache.
func warmPageCache(_ path: String) throws {
    guard let file = FileHandle(forReadingAtPath: path) else { throw BenchError("cannot read \(path)") }
    defer { try? file.close() }
    while let chunk = try file.read(upToCount: 4 << 20), !chunk.isEmpty {}
}

/// Writes a realistic month of invoices: 13 columns, accents, two phones on one row in ten, a
/// quoted property with a `;` in one row in five. Deterministic, and skipped when the file exists.
struct ManifestGenerator {
    var rows: Int
    let names = [
        "María Pérez", "José Rodríguez", "Ana Núñez", "Ramón Peña", "Carmen Jiménez", "Luis Almánzar", "Rosa Inés Cabral", "Félix Durán",
    ]
    let landlords = ["Inmobiliaria Caribe", "Residencial Los Próceres", "Torres del Malecón"]

    func writeCSV(to path: String) throws {
        if FileManager.default.fileExists(atPath: path) { return }
        print("generating \(path)…")
        try write(path) { out in
            out.append(
                "\u{FEFF}invoice_id;name;whatsapp;phone2;grandTotal;currency;term;due_date;landlord;property;reference;locale;document_url;email\r\n"
            )
            for i in 0..<rows {
                let phone2 = i % 10 == 0 ? "+1 829 \(600 + i % 300) \(String(format: "%04d", (i * 7) % 10000))" : ""
                let property = i % 5 == 0 ? "\"Torre \"\"Norte\"\"; Apto \(i % 40)\"" : "Calle \(i % 90) #\(i % 300)"
                out.append(
                    "INV-2026-03-\(i);\(names[i % names.count]) \(i);+1 809 \(String(format: "%03d", i / 10000 % 1000)) \(String(format: "%04d", i % 10000));\(phone2);\(1000 + i % 90000).\(String(format: "%02d", i % 100));DOP;2026030100;2026-03-10;\(landlords[i % 3]);\(property);T-\(i);es-DO;https://docs.example.com/invoices/INV-2026-03-\(i).pdf;tenant\(i)@example.com\r\n"
                )
            }
        }
    }

    func writeXML(to path: String) throws {
        if FileManager.default.fileExists(atPath: path) { return }
        print("generating \(path)…")
        try write(path) { out in
            out.append("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<invoices currency=\"DOP\" locale=\"es-DO\">\n")
            for i in 0..<rows {
                out.append(
                    "  <invoice>\n    <invoice_id>INV-2026-03-\(i)</invoice_id>\n    <tenant_name>\(names[i % names.count]) \(i)</tenant_name>\n"
                )
                out.append("    <phone>+1 809 \(String(format: "%03d", i / 10000 % 1000)) \(String(format: "%04d", i % 10000))</phone>\n")
                if i % 10 == 0 { out.append("    <phone>+1 829 \(600 + i % 300) \(String(format: "%04d", (i * 7) % 10000))</phone>\n") }
                out.append(
                    "    <amount>\(1000 + i % 90000).\(String(format: "%02d", i % 100))</amount>\n    <period>2026-03</period>\n    <due_date>2026-03-10</due_date>\n"
                )
                out.append(
                    "    <landlord>\(landlords[i % 3])</landlord>\n    <property>Torre Norte &amp; Sur, Apto \(i % 40)</property>\n    <tenant_id>T-\(i)</tenant_id>\n"
                )
                out.append(
                    "    <document_url>https://docs.example.com/invoices/INV-2026-03-\(i).pdf</document_url>\n    <email>tenant\(i)@example.com</email>\n  </invoice>\n"
                )
            }
            out.append("</invoices>\n")
        }
    }

    private func write(_ path: String, _ body: (BufferedFile) throws -> Void) throws {
        let out = try BufferedFile(path: path + ".partial")
        try body(out)
        try out.close()
        try FileManager.default.moveItem(atPath: path + ".partial", toPath: path)
    }
}

/// Appends text to a file through a 1 MiB buffer.
final class BufferedFile {
    private let handle: FileHandle
    private var buffer = Data()

    init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw BenchError("cannot create \(path)") }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        buffer.reserveCapacity(1 << 20)
    }

    func append(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= 1 << 20 {
            try? handle.write(contentsOf: buffer)
            buffer.removeAll(keepingCapacity: true)
        }
    }

    func close() throws {
        try handle.write(contentsOf: buffer)
        try handle.close()
    }
}

/// Stops a server the benchmark started: SIGINT (gunicorn's quick shutdown; serve's too), then
/// SIGKILL if it is still there after five seconds. (Foundation's `waitUntilExit` spins a core
/// while it waits, so it is called only once the process is gone.)
func stopProcess(_ process: Process) {
    guard process.isRunning else { return }
    process.interrupt()
    for _ in 0..<100 where process.isRunning { usleep(50_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat; nil when gone.
func cpuSeconds(of pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    // Fields after the command's ")": state is the 3rd field of the line, utime the 14th, stime the 15th.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
