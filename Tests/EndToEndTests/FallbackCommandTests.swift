import Foundation
import Testing

/// A real SMTP server on loopback (Python's aiosmtpd, in the virtual environment `scripts/test`
/// makes: DISPATCHER_TEST_SMTP_PYTHON) that keeps what it receives in a Maildir, and an msmtp
/// configuration that sends to it: the fallback's mail goes through both, as in production.
final class SMTPServer: @unchecked Sendable {
    let process = Process()
    let port: Int
    let maildir: URL
    let msmtpConfig: URL

    init(in folder: URL) throws {
        guard let python = ProcessInfo.processInfo.environment["DISPATCHER_TEST_SMTP_PYTHON"], !python.isEmpty else {
            throw SMTPUnavailable()
        }
        port = freePort()
        maildir = folder.appendingPathComponent("mail")
        for sub in ["tmp", "new", "cur"] {
            try FileManager.default.createDirectory(at: maildir.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        msmtpConfig = folder.appendingPathComponent("msmtprc")
        try "defaults\nauth off\ntls off\naccount default\nhost 127.0.0.1\nport \(port)\n".write(
            to: msmtpConfig, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: msmtpConfig.path)
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(port)", "-c", "aiosmtpd.handlers.Mailbox", maildir.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Listening once a connection is taken.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if canConnect(port: port) { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        kill(process.processIdentifier, SIGKILL)
        throw SMTPUnavailable(reason: "aiosmtpd did not listen on \(port) within 20 s")
    }

    /// The `--sendmail` command for msmtp with this server's configuration.
    var sendmail: String { "msmtp -C \(msmtpConfig.path)" }

    /// Every message received, as text.
    func messages() throws -> [String] {
        try FileManager.default.contentsOfDirectory(at: maildir.appendingPathComponent("new"), includingPropertiesForKeys: nil)
            .map { try String(contentsOf: $0, encoding: .utf8) }
    }

    /// SIGKILL: aiosmtpd's loop does not stop on SIGTERM.
    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

struct SMTPUnavailable: Error, CustomStringConvertible {
    var reason =
        "DISPATCHER_TEST_SMTP_PYTHON is not set: run the tests with scripts/test (it makes a Python with aiosmtpd), or DISPATCHER_TEST_SKIP_SMTP=1 to skip them"
    var description: String { reason }
}

func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return withLoopback(port: port) { connect(fd, $0, $1) == 0 }
}

/// The decoded text and attachments of a MIME message, by Python's email package (not ours).
func mimeParts(_ message: String) async throws -> [String: String] {
    try await onOwnThread { try mimePartsBlocking(message) }
}

/// `mimeParts`, waiting for Python on the calling thread.
func mimePartsBlocking(_ message: String) throws -> [String: String] {
    let python = ProcessInfo.processInfo.environment["DISPATCHER_TEST_SMTP_PYTHON"] ?? "python3"
    let script = """
        import sys, json, email, email.policy, hashlib
        m = email.message_from_string(sys.stdin.read(), policy=email.policy.default)
        out = {"to": str(m["To"]), "subject": str(m["Subject"]), "from": str(m["From"]), "bcc": str(m["Bcc"] or "")}
        for part in m.walk():
            if part.get_content_type() == "text/plain": out["text"] = part.get_content()
            if part.get_content_type() == "application/pdf":
                out["pdf_name"] = part.get_filename(); out["pdf_sha256"] = hashlib.sha256(part.get_content()).hexdigest()
        print(json.dumps(out))
        """
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", script]
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    input.fileHandleForWriting.write(Data(message.utf8))
    try input.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return try JSONSerialization.jsonObject(with: data) as? [String: String] ?? [:]
}

let smtpTested = ProcessInfo.processInfo.environment["DISPATCHER_TEST_SKIP_SMTP"] != "1"

@Suite("dispatcher fallback (the executable, a real msmtp and SMTP server)", .enabled(if: smtpTested))
struct FallbackCommandTests {
    @Test("the sample month's tenant not on WhatsApp gets the invoice by email, once; the one without an address needs a call")
    func sampleMonth() async throws {
        let folder = try temporaryDirectory()
        let smtp = try await onOwnThread { try SMTPServer(in: folder) }  // (it waits for Python to listen)
        defer { smtp.stop() }
        let db = "sqlite:" + folder.appendingPathComponent("d.sqlite").path
        let sent = try await DispatcherProcess.run([
            "send", "samples/march-2026.csv", "--sandbox", "--db", db, "--out", folder.appendingPathComponent("r").path,
            "--settle", "10s",
        ])
        #expect(sent.status == 0, "\(sent.stderr)")
        let fallback = ["fallback", "march-2026", "--via", "smtp", "--from", "facturas@example.com", "--db", db, "--json"]

        let dry = try await DispatcherProcess.run(fallback + ["--dry-run", "--sendmail", smtp.sendmail])
        #expect(dry.status == 0)
        #expect(dry.stderr.contains("would send    PRO-2026-03-005 Ángela Polanco → angela.polanco@example.com"), "\(dry.stderr)")
        #expect(try smtp.messages().isEmpty)

        // The mail program fails: recorded, exit 1, and a later pass sends it.
        let broken = try await DispatcherProcess.run(fallback + ["--sendmail", "/bin/false"])
        #expect(broken.status == 1)
        #expect(broken.stderr.contains("FAILED        PRO-2026-03-005"), "\(broken.stderr)")

        let first = try await DispatcherProcess.run(fallback + ["--sendmail", smtp.sendmail])
        #expect(first.status == 0, "\(first.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(first.stdout.utf8)) as? [String: Any])
        let invoices = try #require(object["invoices"] as? [[String: Any]])
        #expect(invoices.map { $0["invoice_id"] as? String } == ["CAR-2026-03-007", "PRO-2026-03-005"])
        #expect(invoices.map { $0["outcome"] as? String } == ["no_address", "sent"])
        #expect(invoices.map { $0["reason"] as? String }.allSatisfy { $0?.hasPrefix("131026") == true })

        let mails = try smtp.messages()
        #expect(mails.count == 1)
        let parts = try await mimeParts(try #require(mails.first))
        #expect(parts["to"] == "Ángela Polanco <angela.polanco@example.com>")
        #expect(parts["from"] == "facturas@example.com")
        #expect(parts["subject"]?.hasPrefix("Factura PRO-2026-03-005") == true)
        let text = try #require(parts["text"])
        #expect(text.contains("Hola Ángela Polanco"))
        #expect(text.contains("RD$13,400.00"), "\(text)")
        // The PDF's host does not exist: the link goes instead.
        #expect(text.contains("https://docs.example.com/invoices/PRO-2026-03-005.pdf"))

        // Never twice.
        let again = try await DispatcherProcess.run(fallback + ["--sendmail", smtp.sendmail])
        #expect(again.status == 0)
        #expect(again.stderr.contains("sent before   PRO-2026-03-005"), "\(again.stderr)")
        #expect(try smtp.messages().count == 1)

        // Killed while handing it over (the mail program kills us): never resent by itself; sent
        // again only when the operator says so.
        let killer = folder.appendingPathComponent("killer")
        try "#!/bin/sh\nkill -9 $PPID\n".write(to: killer, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: killer.path)
        let killed = try await DispatcherProcess.run(fallback + ["--sendmail", killer.path, "--again", "PRO-2026-03-005"])
        #expect(killed.status == 137 || killed.status == 9, "\(killed.status) \(killed.stderr)")
        let after = try await DispatcherProcess.run(fallback + ["--sendmail", smtp.sendmail])
        #expect(after.stderr.contains("UNCERTAIN     PRO-2026-03-005"), "\(after.stderr)")
        #expect(try smtp.messages().count == 1)
        let resent = try await DispatcherProcess.run(fallback + ["--sendmail", smtp.sendmail, "--again", "PRO-2026-03-005"])
        #expect(resent.status == 0, "\(resent.stderr)")
        #expect(try smtp.messages().count == 2)

        // The report says what happened to each.
        let report = try await DispatcherProcess.run([
            "report", "march-2026", "--db", db, "--out", folder.appendingPathComponent("r2").path,
        ])
        #expect(report.status == 0, "\(report.stderr)")
        let html = try String(contentsOfFile: folder.appendingPathComponent("r2/index.html").path, encoding: .utf8)
        #expect(html.contains("angela.polanco@example.com · sent by email on"))
        #expect(html.contains("— · no email address: call"))
    }

    @Test("the property system's PDF is attached, fetched with its credentials; a name with quotes and accents arrives whole")
    func attachment() async throws {
        let folder = try temporaryDirectory()
        let smtp = try await onOwnThread { try SMTPServer(in: folder) }  // (it waits for Python to listen)
        defer { smtp.stop() }
        // The property system: a plain HTTP server over a folder holding the invoice PDF.
        let documents = folder.appendingPathComponent("site/api/v2/documents")
        try FileManager.default.createDirectory(at: documents, withIntermediateDirectories: true)
        let pdf = Data("%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".utf8)
        try pdf.write(to: documents.appendingPathComponent("INV-7.pdf"))
        let sitePort = freePort()
        let site = Process()
        site.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.environment["DISPATCHER_TEST_SMTP_PYTHON"] ?? "/usr/bin/python3")
        site.arguments = [
            "-m", "http.server", String(sitePort), "--bind", "127.0.0.1", "--directory", folder.appendingPathComponent("site").path,
        ]
        site.standardOutput = FileHandle.nullDevice
        site.standardError = FileHandle.nullDevice
        try site.run()
        defer {
            kill(site.processIdentifier, SIGKILL)
            site.waitUntilExit()
        }
        for _ in 0..<200 where !canConnect(port: sitePort) { try await Task.sleep(for: .milliseconds(100)) }

        let manifest = folder.appendingPathComponent("april.csv")
        try """
        invoice_id,tenant_id,name,whatsapp,amount,currency,term,due_date,landlord,locale,document_url,email
        INV-7,T-7,"Ève ""Q"" Müller",+1 809 555 0207,1500.00,DOP,2026040100,2026-04-10,Caribe,en,/api/v2/documents/INV-7.pdf,eve@example.com
        """.write(to: manifest, atomically: true, encoding: .utf8)
        let environment = [
            "DISPATCHER_PROPERTY_SYSTEM_URL": "http://127.0.0.1:\(sitePort)", "DISPATCHER_PROPERTY_SYSTEM_TOKEN": "service-token",
        ]
        let db = "sqlite:" + folder.appendingPathComponent("d.sqlite").path
        let sent = try await DispatcherProcess.run(
            ["send", manifest.path, "--sandbox", "--db", db, "--out", folder.appendingPathComponent("r").path, "--settle", "10s"],
            environment: environment)
        #expect(sent.status == 0, "\(sent.stdout)\n\(sent.stderr)")
        let fallback = try await DispatcherProcess.run(
            ["fallback", "april", "--via", "smtp", "--from", "billing@example.com", "--sendmail", smtp.sendmail, "--db", db],
            environment: environment)
        #expect(fallback.status == 0, "\(fallback.stderr)")
        #expect(fallback.stdout.contains("(PDF attached)"), "\(fallback.stdout)")
        let mails = try smtp.messages()
        #expect(mails.count == 1)
        let parts = try await mimeParts(try #require(mails.first))
        #expect(parts["pdf_name"] == "INV-7.pdf")
        let digest = try await onOwnThread { sha256Hex(pdf) }
        #expect(parts["pdf_sha256"] == digest)
        #expect(
            parts["to"] == "\"Ève \\\"Q\\\" Müller\" <eve@example.com>" || parts["to"] == "Ève \"Q\" Müller <eve@example.com>", "\(parts)")
        #expect(parts["text"]?.contains("attached") == true)
    }
}

func sha256Hex(_ data: Data) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try? process.run()
    input.fileHandleForWriting.write(data)
    try? input.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return String(text.prefix(64))
}
