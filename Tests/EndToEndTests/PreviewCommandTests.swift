import Foundation
import StoreTesting
import Testing

/// Runs the real `dispatcher` executable, as a user would.
struct DispatcherProcess {
    static var executable: URL {
        // The test bundle sits in the same build folder as the executable.
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [here, here.deletingLastPathComponent()] {
            let url = candidate.appendingPathComponent("dispatcher")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return packageRoot.appendingPathComponent(".build/debug/dispatcher")
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `dispatcher` and waits for it on a thread of its own: a test blocking one of the two
    /// cooperative threads while a process runs starved every other test of half the machine.
    static func run(_ arguments: [String], in directory: URL = packageRoot, environment: [String: String] = [:]) async throws -> Output {
        try await onOwnThread { try runBlocking(arguments, in: directory, environment: environment) }
    }

    static func runBlocking(_ arguments: [String], in directory: URL, environment: [String: String]) throws -> Output {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }
}

/// `body` on a new thread, awaited without holding a cooperative thread.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func temporaryDirectory() throws -> URL {
    try scratchFolder("e2e")
}

@Suite("dispatcher preview (the executable)")
struct PreviewCommandTests {
    @Test("--json prints exactly the spec's object, and the report files exist")
    func jsonShape() async throws {
        let out = try temporaryDirectory()
        // No database yet: the preview reads none and creates none.
        let database = out.appendingPathComponent("none.sqlite")
        let result = try await DispatcherProcess.run([
            "preview", "samples/march-2026.csv", "--json", "--out", out.path, "--db", "sqlite:" + database.path,
        ])
        #expect(result.status == 0)
        #expect(!FileManager.default.fileExists(atPath: database.path))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["invoices", "messages", "recipients", "skipped", "errors", "report", "estimate"])
        #expect(object["invoices"] as? Int == 24)
        #expect(object["messages"] as? Int == 26)
        #expect(object["recipients"] as? Int == 26)
        let skipped = try #require(object["skipped"] as? [[String: Any]])
        #expect(skipped.count == 1)
        #expect(Set(skipped[0].keys) == ["invoice_id", "reason"])
        #expect(skipped[0]["invoice_id"] as? String == "CAR-2026-03-008")
        #expect((object["errors"] as? [Any])?.isEmpty == true)
        let report = try #require(object["report"] as? String)
        #expect(report == out.appendingPathComponent("index.html").path)
        let html = try String(contentsOfFile: report, encoding: .utf8)
        #expect(html.contains("RD$12,345.50"))
        #expect(!html.contains("{{"))
        #expect(html.contains("Sarah O&#39;Connor"))  // manifest text is escaped, never raw HTML
        #expect(html.components(separatedBy: "class=\"chat\"").count - 1 == 26)
        let csv = try String(contentsOfFile: out.appendingPathComponent("messages.csv").path, encoding: .utf8)
        #expect(csv.components(separatedBy: "\r\n").filter { !$0.isEmpty }.count == 27)  // the header and 26 messages
        #expect(result.stderr.contains("invoices     24"))

        // --bodies: every message's exact request, not only the first three on the page.
        let withBodies = try await DispatcherProcess.run([
            "preview", "samples/march-2026.csv", "--bodies", "--out", out.path, "--ignore-store",
        ])
        #expect(withBodies.status == 0)
        let rows = try String(contentsOfFile: out.appendingPathComponent("messages.csv").path, encoding: .utf8)
            .components(separatedBy: "\r\n").filter { !$0.isEmpty }
        #expect(rows.first?.hasSuffix(",text,request_body") == true)
        #expect(rows.count == 27)
        #expect(rows.dropFirst().allSatisfy { $0.contains("\"\"messaging_product\"\":\"\"whatsapp\"\"") }, "\(rows.prefix(2))")

        // --json --bodies: the same requests in the object, one per message, each Meta's JSON as sent.
        let json = try await DispatcherProcess.run([
            "preview", "samples/march-2026.csv", "--bodies", "--json", "--out", out.path, "--ignore-store",
        ])
        #expect(json.status == 0)
        let parsed = try #require(
            try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.stdout.prefix(300))")
        #expect(parsed["messages"] as? Int == 26)
        let requests = try #require(parsed["requests"] as? [[String: Any]])
        #expect(requests.count == 26)
        #expect(Set(requests.map { $0["message_id"] as? String ?? "" }).count == 26)
        let first = try #require(requests.first { $0["invoice_id"] as? String == "CAR-2026-03-001" })
        let body = try #require(first["body"] as? [String: Any])
        #expect(body["messaging_product"] as? String == "whatsapp")
        #expect(body["to"] as? String == (first["phone"] as? String)?.dropFirst().description)
        #expect(body["biz_opaque_callback_data"] as? String == first["message_id"] as? String)
    }

    @Test("an invalid manifest exits 65 with every error in the JSON, each naming line, invoice and field")
    func invalidManifest() async throws {
        let out = try temporaryDirectory()
        let result = try await DispatcherProcess.run(["preview", "samples/broken.csv", "--json", "--out", out.path])
        #expect(result.status == 65)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let errors = try #require(object["errors"] as? [[String: Any]])
        #expect(errors.count == 10)
        #expect(Set(errors[0].keys) == ["line", "invoice_id", "field", "message"])
        #expect(errors[0]["line"] as? Int == 3)
        #expect(errors[0]["invoice_id"] as? String == "BRK-2026-03-002")
        #expect(errors[0]["field"] as? String == "tenant_name")
    }

    @Test("a DTD in XML exits 65 and says why")
    func refusedXML() async throws {
        let out = try temporaryDirectory()
        let result = try await DispatcherProcess.run(["preview", "samples/broken.xml", "--out", out.path])
        #expect(result.status == 65)
        #expect(result.stdout.contains("DOCTYPE (DTD) is not allowed"))
    }

    @Test("usage errors exit 64; a broken template folder exits 1 with the reason")
    func usageAndConfiguration() async throws {
        let missing = try await DispatcherProcess.run(["preview", "no-such-file.csv"])
        #expect(missing.status == 64)
        #expect(missing.stderr.contains("no manifest at no-such-file.csv"))
        // Options are checked as they are read, before anything is opened or sent.
        let duration = try await DispatcherProcess.run(["send", "samples/march-2026.csv", "--sandbox", "--settle", "5x"])
        #expect(duration.status == 64)
        #expect(duration.stderr.contains("--settle") && duration.stderr.contains("'5x' is not a duration"), "\(duration.stderr)")
        let language = try await DispatcherProcess.run(["report", "march-2026", "--lang", "de"])
        #expect(language.status == 64)
        #expect(
            language.stderr.contains("--lang") && language.stderr.contains("en") && language.stderr.contains("es"), "\(language.stderr)")
        // A property-system secret too short for HS256: serve refuses to start, saying why.
        let weak = try await DispatcherProcess.run(
            ["serve", "--listen", "127.0.0.1:\(freePort())"],
            environment: ["WHATSAPP_APP_SECRET": "app-secret", "DISPATCHER_JWT_SECRET": "access_token_secret"])
        #expect(weak.status == 64)
        #expect(weak.stderr.contains("DISPATCHER_JWT_SECRET is 19 bytes; HS256 needs at least 32"), "\(weak.stderr)")
        let templates = try temporaryDirectory()
        try FileManager.default.createDirectory(at: templates.appendingPathComponent("whatsapp"), withIntermediateDirectories: true)
        try Data(
            #"{"name":"invoice","category":"UTILITY","body":[{"source":"tenant_name"}],"languages":{"es":{"body":"{{1}} {{2}}"}}}"#.utf8
        )
        .write(to: templates.appendingPathComponent("whatsapp/invoice.json"))
        let bad = try await DispatcherProcess.run(["preview", "samples/march-2026.csv", "--templates", templates.path])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("132000"))
    }

    @Test("the messaging-limit tier warns when the run reaches more numbers")
    func messagingLimit() async throws {
        let out = try temporaryDirectory()
        let result = try await DispatcherProcess.run(["preview", "samples/march-2026.csv", "--messaging-limit", "10", "--out", out.path])
        #expect(result.status == 0)
        #expect(result.stderr.contains("this run reaches 26 distinct numbers but the messaging limit is 10"))
    }
}

@Suite("dispatcher send and retry (the executable, with --sandbox)")
struct SendCommandTests {
    func workspace(_ csv: String) throws -> URL {
        let folder = try temporaryDirectory()
        try FileManager.default.copyItem(
            at: packageRoot.appendingPathComponent("templates"), to: folder.appendingPathComponent("templates"))
        try csv.write(to: folder.appendingPathComponent("month.csv"), atomically: true, encoding: .utf8)
        return folder
    }

    func messages(_ folder: URL) async throws -> [[String: String]] {
        let result = try await DispatcherProcess.run(["report", "month", "--json"], in: folder)
        #expect(result.status == 0)
        // messages.csv has no quoted cells here (no commas or quotes in these values).
        let lines = try String(contentsOf: folder.appendingPathComponent("reports/month/messages.csv"), encoding: .utf8)
            .components(separatedBy: "\r\n").filter { !$0.isEmpty }
        let header = lines[0].components(separatedBy: ",")
        return lines.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(header, $0.components(separatedBy: ","))) }
    }

    @Test("retry resends only what failed for a retryable reason; the --json object is the spec's")
    func retryOnlyRetryable() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550195,100.00,DOP,2026-03,https://docs.example.com/A.pdf
            B,Beto,+18095550107,200.00,DOP,2026-03,https://docs.example.com/B.pdf
            C,Cira,+18095550101,300.00,DOP,2026-03,https://docs.example.com/C.pdf

            """)
        // Every message ends final here, so the settle window ends as soon as their statuses are in
        // (30 s only bounds a machine too busy to deliver them sooner).
        let send = try await DispatcherProcess.run(["send", "month.csv", "--sandbox", "--settle", "30s", "--json"], in: folder)
        #expect(send.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(send.stdout.utf8)) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "run", "messages", "accepted", "sent", "delivered", "read", "failed", "pending", "unknown", "skipped", "report",
                "reached",
            ])
        #expect(object["failed"] as? Int == 2)
        // Delivered is final too: the window may end before the read receipt.
        #expect((object["delivered"] as? Int ?? 0) + (object["read"] as? Int ?? 0) == 1, "\(object)")
        // How far they got, as the summary line counts: the delivered one was accepted and sent too.
        let reached = try #require(object["reached"] as? [String: Int], "\(object)")
        #expect(reached["accepted"] == 1 && reached["sent"] == 1 && reached["delivered"] == 1, "\(reached)")
        #expect(send.stderr.contains("1 accepted by Meta, 1 sent, 1 delivered"), "\(send.stderr)")
        // 131049 is retryable, but not before 24 hours: retry says so and sends nothing…
        let early = try await DispatcherProcess.run(["retry", "month", "--sandbox", "--settle", "1s", "--json"], in: folder)
        #expect(early.status == 0)
        #expect(early.stderr.contains("0 messages to send again"), "\(early.stderr)")
        #expect(early.stderr.contains("1 held back by Meta's per-user limit (131049)"))
        #expect(early.stderr.contains("--now"))
        #expect(try await messages(folder).first { $0["invoice_id"] == "A" }?["attempts"] == "1")
        // …unless told --now.
        let retry = try await DispatcherProcess.run(["retry", "month", "--now", "--sandbox", "--settle", "2s", "--json"], in: folder)
        #expect(retry.status == 0)
        #expect(retry.stderr.contains("1 messages to send again"))
        let rows = try await messages(folder)
        func row(_ invoice: String) -> [String: String] { rows.first { $0["invoice_id"] == invoice }! }
        #expect(row("A")["attempts"] == "2")  // 131049 again: the sandbox refuses it again
        #expect(row("B")["attempts"] == "1")  // 131026: not on WhatsApp, final
        #expect(row("B")["retryable"] == "no")
        #expect(row("C")["attempts"] == "1")  // read: never touched
    }

    @Test("optout add/list/remove by number; preview counts opt-outs and earlier sends as send will skip them")
    func optOutsAndPreview() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550101,100.00,DOP,2026-03,https://docs.example.com/A.pdf
            B,Beto,+18095550102,200.00,DOP,2026-03,https://docs.example.com/B.pdf
            C,Cira,+18095550103,300.00,DOP,2026-03,https://docs.example.com/C.pdf

            """)
        let send = try await DispatcherProcess.run(["send", "month.csv", "--sandbox", "--settle", "2s"], in: folder)
        #expect(send.status == 0, "\(send.stderr)")
        // April's manifest: A and B again (new invoices), C's March invoice again, and D.
        try """
        invoice_id,tenant_name,phone,amount,currency,period,document_url
        A4,Ana,+18095550101,100.00,DOP,2026-04,https://docs.example.com/A4.pdf
        B4,Beto,809-555-0102,200.00,DOP,2026-04,https://docs.example.com/B4.pdf
        C,Cira,+18095550103,300.00,DOP,2026-03,https://docs.example.com/C.pdf
        D4,Dora,+18095550104,400.00,DOP,2026-04,https://docs.example.com/D4.pdf

        """.write(to: folder.appendingPathComponent("april.csv"), atomically: true, encoding: .utf8)

        let add = try await DispatcherProcess.run(
            ["optout", "add", "809 555 0102", "--default-country-code", "1", "--note", "asked by phone"], in: folder)
        #expect(add.status == 0, "\(add.stderr)")
        #expect(add.stdout.contains("opted out +18095550102"))
        let list = try await DispatcherProcess.run(["optout", "list", "--json"], in: folder)
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: [[String: Any]]])
        #expect(listed["opt_outs"]?.map { $0["id"] as? String } == ["18095550102"])
        #expect(listed["opt_outs"]?.first?["source"] as? String == "manual")

        let preview = try await DispatcherProcess.run(["preview", "april.csv", "--json", "--default-country-code", "1"], in: folder)
        #expect(preview.status == 0, "\(preview.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(preview.stdout.utf8)) as? [String: Any])
        #expect(object["messages"] as? Int == 4)
        #expect(object["opted_out"] as? Int == 1)
        #expect(object["already_sent"] as? Int == 1)
        #expect(object["to_send"] as? Int == 2)
        #expect(preview.stderr.contains("opted out    1"))

        // What send then does matches the preview.
        let april = try await DispatcherProcess.run(
            ["send", "april.csv", "--sandbox", "--settle", "1s", "--json", "--default-country-code", "1"], in: folder)
        #expect(april.status == 0, "\(april.stderr)")
        let sent = try #require(try JSONSerialization.jsonObject(with: Data(april.stdout.utf8)) as? [String: Any])
        #expect(sent["skipped"] as? Int == 2)
        #expect(sent["messages"] as? Int == 4)

        // Opted back in: the history keeps both changes; removing again is an error.
        #expect(try await DispatcherProcess.run(["optout", "remove", "+1 809 555 0102"], in: folder).status == 0)
        let again = try await DispatcherProcess.run(["optout", "remove", "+1 809 555 0102"], in: folder)
        #expect(again.status == 1)
        #expect(again.stderr.contains("is not opted out"))
        let history = try await DispatcherProcess.run(["optout", "list", "--history"], in: folder)
        #expect(history.stdout.contains("opted out  +18095550102  by hand — asked by phone"))
        #expect(history.stdout.contains("opted in   +18095550102"))
        #expect(try await DispatcherProcess.run(["optout", "add", "not a number"], in: folder).status == 64)
        // Text with a letter in it is a user id only in its shape; an address or a word is refused.
        for wrong in ["abc", "john@example.com", "US.", "us.123"] {
            let refused = try await DispatcherProcess.run(["optout", "add", wrong], in: folder)
            #expect(refused.status == 64, "\(wrong)")
            #expect(refused.stderr.contains("neither a phone number nor a WhatsApp user id"), "\(wrong): \(refused.stderr)")
        }
        let user = try await DispatcherProcess.run(["optout", "add", "US.13491208655302741918"], in: folder)
        #expect(user.status == 0, "\(user.stderr)")
    }

    @Test("a LOG_LEVEL that is not a level is said, not silently ignored")
    func unknownLogLevel() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period
            A,Ana,+18095550101,10.00,DOP,2026-03

            """)
        let send = try await DispatcherProcess.run(
            ["send", "month.csv", "--sandbox", "--settle", "1s"], in: folder, environment: ["LOG_LEVEL": "verbose"])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(send.stderr.contains("LOG_LEVEL is not a level: warning is used"), "\(send.stderr)")
    }

    @Test("a locale the template has no language for falls back, counted in the summary")
    func languageFallbackCounted() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,locale
            Z,Zed,+18095550177,10.00,DOP,2026-03,de-DE
            Y,Ynes,+18095550178,10.00,DOP,2026-03,es-DO

            """)
        let preview = try await DispatcherProcess.run(["preview", "month.csv", "--ignore-store"], in: folder)
        #expect(preview.status == 0, "\(preview.stderr)")
        #expect(preview.stdout.contains("language     1 messages in the default language"), "\(preview.stdout)")
    }

    @Test("preview warns of the run name send will refuse: month.xml after month.csv's run")
    func previewRunNameConflict() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period
            A,Ana,+18095550101,100.00,DOP,2026-03

            """)
        #expect(try await DispatcherProcess.run(["send", "month.csv", "--sandbox", "--settle", "1s"], in: folder).status == 0)
        try """
        <?xml version="1.0" encoding="UTF-8"?>
        <invoices><invoice><invoice_id>B</invoice_id><tenant_name>Beto</tenant_name><phone>+18095550102</phone>
        <amount>200.00</amount><currency>DOP</currency><period>2026-03</period></invoice></invoices>
        """.write(to: folder.appendingPathComponent("month.xml"), atomically: true, encoding: .utf8)
        let preview = try await DispatcherProcess.run(["preview", "month.xml"], in: folder)
        #expect(preview.status == 0, "\(preview.stderr)")
        let said = "send will refuse this manifest as it is: run 'month' was made from month.csv, not month.xml"
        #expect((preview.stdout + preview.stderr).contains(said), "\(preview.stdout)\(preview.stderr)")
        // And send does refuse it; with a name of its own, neither warns.
        let send = try await DispatcherProcess.run(["send", "month.xml", "--sandbox", "--settle", "1s"], in: folder)
        #expect(send.status == 1 && send.stderr.contains("run 'month' was made from month.csv"), "\(send.stderr)")
        let named = try await DispatcherProcess.run(["preview", "month.xml", "--run", "month-xml"], in: folder)
        #expect(named.status == 0 && !(named.stdout + named.stderr).contains("send will refuse"), "\(named.stderr)")
    }

    @Test("a --listen port already taken ends the run at once with the reason, and nothing is sent")
    func listenPortTaken() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550101,100.00,DOP,2026-03,https://docs.example.com/A.pdf

            """)
        let port = freePort()
        let holder = try #require(listeningSocket(port: port))
        var held = true
        defer { if held { close(holder) } }
        // Before, the run waited forever for a receiver that had already failed to start.
        let run = try Running(
            ["send", "month.csv", "--sandbox", "--listen", "127.0.0.1:\(port)", "--settle", "1s"], in: folder, environment: [:])
        let deadline = ContinuousClock.now + .seconds(30)
        while run.process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if run.process.isRunning { run.kill(SIGKILL) }
        #expect(await run.exit() == 1)
        let printed = run.text
        #expect(printed.contains("cannot receive webhooks on 127.0.0.1:\(port)"), "\(printed)")
        #expect(printed.contains("Address already in use"))
        close(holder)
        held = false
        let again = try await DispatcherProcess.run(["send", "month.csv", "--sandbox", "--settle", "30s", "--json"], in: folder)
        #expect(again.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
        // Delivered is final too: the window may end before the read receipt.
        #expect((object["delivered"] as? Int ?? 0) + (object["read"] as? Int ?? 0) == 1, "\(object)")
    }

    @Test("--skip-invalid skips invalid invoices, not a file cut short, refused (a DOCTYPE) or empty: 65, nothing sent, no run")
    func skipInvalidIsNotForBrokenFiles() async throws {
        let sample = try String(contentsOf: packageRoot.appendingPathComponent("samples/march-2026.xml"), encoding: .utf8)
        let lines = sample.split(separator: "\n", omittingEmptySubsequences: false)
        let cut = lines.prefix(lines.count / 2).joined(separator: "\n")  // two invoices in, mid-month
        for (name, text) in [
            ("cut.xml", cut), ("header.csv", "invoice_id,tenant_name,phone,amount,currency,period\n"),
            ("doctype.xml", try String(contentsOf: packageRoot.appendingPathComponent("samples/broken.xml"), encoding: .utf8)),
        ] {
            let folder = try temporaryDirectory()
            try FileManager.default.copyItem(
                at: packageRoot.appendingPathComponent("templates"), to: folder.appendingPathComponent("templates"))
            try text.write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
            let send = try await DispatcherProcess.run(["send", name, "--sandbox", "--skip-invalid", "--settle", "1s"], in: folder)
            #expect(send.status == 65, "\(name): \(send.stdout) \(send.stderr)")
            #expect(send.stdout.contains("nothing was sent; --skip-invalid skips invalid invoices"), "\(name): \(send.stdout)")
            #expect(!send.stdout.contains("accepted by Meta"), "\(name): \(send.stdout)")
            let runs = try await DispatcherProcess.run(["runs"], in: folder)
            #expect(!runs.stdout.contains(name.split(separator: ".")[0]), "\(name): \(runs.stdout)")
        }
    }

    @Test("a report folder that cannot be made: the run's summary first, then why in words, and how to write it later")
    func reportFolderInTheWay() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550101,100.00,DOP,2026-03,https://docs.example.com/A.pdf

            """)
        try "".write(to: folder.appendingPathComponent("reports"), atomically: true, encoding: .utf8)  // a file in the way
        let send = try await DispatcherProcess.run(["send", "month.csv", "--sandbox", "--settle", "1s"], in: folder)
        #expect(send.status == 1)
        #expect(send.stdout.contains("Run month: 1 messages: 1 accepted by Meta"), "\(send.stdout)")
        #expect(send.stdout.contains("`dispatcher report month --out DIR` writes it"), "\(send.stdout)")
        #expect(send.stderr.contains("cannot create the report folder reports/month: reports is a file, not a folder"), "\(send.stderr)")
        #expect(!send.stderr.contains("NSCocoaErrorDomain"))
        let report = try await DispatcherProcess.run(["report", "month", "--out", "elsewhere"], in: folder)
        #expect(report.status == 0, "\(report.stderr)")
        #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("elsewhere/index.html").path))
    }

    @Test("commands that read runs, in a folder without a database: say where they looked, and make none")
    func noDatabaseHere() async throws {
        let folder = try temporaryDirectory()
        for command in [["runs"], ["optout", "list"], ["status", "m-1"], ["report", "march"], ["retry", "march"]] {
            let result = try await DispatcherProcess.run(command, in: folder)
            #expect(result.status == 1, "\(command): \(result.stdout)")
            #expect(result.stderr.contains("no database at sqlite:dispatcher.sqlite"), "\(command): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("dispatcher.sqlite").path), "\(command)")
        }
    }

    @Test("--run is a folder under reports/: a name that leaves it, hides, or is empty is a usage error, nothing written")
    func runNames() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550101,100.00,DOP,2026-03,https://docs.example.com/A.pdf

            """)
        for name in ["../../escape", "", ".hidden", "a/b", "march@caribe", String(repeating: "x", count: 101)] {
            for command in [["preview", "month.csv", "--run", name], ["send", "month.csv", "--sandbox", "--run", name]] {
                let result = try await DispatcherProcess.run(command, in: folder)
                #expect(result.status == 64, "\(command): \(result.stderr)")
                #expect(result.stderr.contains("cannot name a run"), "\(command): \(result.stderr)")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: folder.deletingLastPathComponent().appendingPathComponent("escape").path))
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("reports").path))
        let fine = try await DispatcherProcess.run(["preview", "month.csv", "--run", "march-2026_v2.1"], in: folder)
        #expect(fine.status == 0, "\(fine.stderr)")
        // A folder named as the manifest: a usage error, nothing read or written.
        for command in [["preview", "templates"], ["send", "templates", "--sandbox"]] {
            let folderGiven = try await DispatcherProcess.run(command, in: folder)
            #expect(folderGiven.status == 64, "\(command)")
            #expect(folderGiven.stderr.contains("templates is a folder"), "\(folderGiven.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("reports/templates").path))
    }

    @Test("a run halted after some were accepted does not blame a missing webhook receiver for their statuses")
    func haltedAfterSome() async throws {
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550101,100.00,DOP,2026-03,https://docs.example.com/A.pdf
            B,Bo,+18095550102,100.00,DOP,2026-03,https://docs.example.com/B.pdf
            C,Cy,+18095550105,100.00,DOP,2026-03,https://docs.example.com/C.pdf

            """)
        try #"{"rules":[{"match":"suffix:05","outcome":"token_expired"},{"match":"suffix:","outcome":"delivered_read"}]}"#.write(
            to: folder.appendingPathComponent("expired.json"), atomically: true, encoding: .utf8)
        // A sandbox that posts no statuses at all (no webhook URL): before the halt, none came.
        let port = freePort()
        let sandbox = try Running(
            ["sandbox", "--listen", "127.0.0.1:\(port)", "--app-secret", "x", "--scenario", "expired.json"], in: folder,
            environment: [:])
        defer {
            sandbox.kill(SIGTERM)
            _ = sandbox.wait()
        }
        try await waitForHTTP("http://127.0.0.1:\(port)/_sandbox/counters")
        let halted = try await DispatcherProcess.run(
            ["send", "month.csv", "--listen", "127.0.0.1:\(port + 1)", "--settle", "1s"], in: folder,
            environment: [
                "WHATSAPP_API_BASE_URL": "http://127.0.0.1:\(port)", "WHATSAPP_ACCESS_TOKEN": "sandbox-token",
                "WHATSAPP_PHONE_NUMBER_ID": "SANDBOX", "WHATSAPP_APP_SECRET": "x",
            ])
        #expect(halted.status == 69, "\(halted.stdout)")
        #expect(halted.stdout.contains("2 accepted by Meta"), "\(halted.stdout)")
        #expect(!halted.stdout.contains("nothing was receiving Meta's webhooks"), "\(halted.stdout)")
    }

    @Test("preview checks the manifest's organizations as send does: unknown ones are named errors; --config knows them")
    func previewOrganizations() async throws {
        let folder = try workspace(
            """
            invoice_id,organization,tenant_name,phone,amount,currency,period
            A,caribe,Ana,+18095550101,100.00,DOP,2026-03
            B,norte,Bo,+18095550102,100.00,DOP,2026-03

            """)
        try
            #"{"organizations": [{"id": "caribe", "phone_number_id": "1", "token_env": "T"}, {"id": "norte", "phone_number_id": "2", "token_env": "T"}]}"#
            .write(to: folder.appendingPathComponent("orgs.json"), atomically: true, encoding: .utf8)
        let single = try await DispatcherProcess.run(
            ["preview", "month.csv", "--ignore-store"], in: folder, environment: ["DISPATCHER_CONFIG": ""])
        #expect(single.status == 65, "\(single.stdout)")
        #expect(
            single.stdout.contains("line 2, invoice A, field organization: 'caribe' is not a configured organization"), "\(single.stdout)")
        let configured = try await DispatcherProcess.run(
            ["preview", "month.csv", "--ignore-store", "--config", "orgs.json"], in: folder, environment: ["T": "x"])
        #expect(configured.status == 0, "\(configured.stdout)\(configured.stderr)")
        // preview sends nothing: the tokens need not be there (send's refusal names the variable).
        let tokenless = try await DispatcherProcess.run(["preview", "month.csv", "--ignore-store", "--config", "orgs.json"], in: folder)
        #expect(tokenless.status == 0, "\(tokenless.stdout)\(tokenless.stderr)")
        let sendTokenless = try await DispatcherProcess.run(
            ["send", "month.csv", "--config", "orgs.json", "--db", "sqlite:\(folder.path)/t.sqlite"], in: folder)
        #expect(sendTokenless.status == 64 && sendTokenless.stderr.contains("names T, which is not set"), "\(sendTokenless.stderr)")
        let unknown = try await DispatcherProcess.run(
            ["preview", "month.csv", "--config", "orgs.json", "--organization", "sur"], in: folder, environment: ["T": "x"])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.contains("--organization sur is not configured (configured: caribe, norte)"), "\(unknown.stderr)")
        // One organization's rows are read with its own country code and currency, as send reads them.
        try
            #"{"organizations": [{"id": "caribe", "phone_number_id": "1", "token_env": "T"}, {"id": "norte", "phone_number_id": "2", "token_env": "T", "default_country_code": "34", "currency": "EUR"}]}"#
            .write(to: folder.appendingPathComponent("orgs.json"), atomically: true, encoding: .utf8)
        try "invoice_id,organization,tenant_name,phone,amount,currency,period\nN,norte,Nuria,612 345 678,100.00,,2026-03\n".write(
            to: folder.appendingPathComponent("norte.csv"), atomically: true, encoding: .utf8)
        let norte = try await DispatcherProcess.run(
            ["preview", "norte.csv", "--ignore-store", "--config", "orgs.json", "--organization", "norte"], in: folder,
            environment: ["T": "x", "DISPATCHER_DEFAULT_COUNTRY_CODE": "1"])
        #expect(norte.status == 0, "\(norte.stdout)\(norte.stderr)")
        // Both organizations' rows at once: each row with its own organization's defaults.
        try """
        invoice_id,organization,tenant_name,phone,amount,currency,period
        C,caribe,Carla,809 555 0103,100.00,,2026-03
        N,norte,Nuria,612 345 678,100.00,,2026-03

        """.write(to: folder.appendingPathComponent("both.csv"), atomically: true, encoding: .utf8)
        let both = try await DispatcherProcess.run(
            ["preview", "both.csv", "--ignore-store", "--config", "orgs.json", "--json"], in: folder,
            environment: ["T": "x", "DISPATCHER_DEFAULT_COUNTRY_CODE": "1"])
        #expect(both.status == 0, "\(both.stdout)\(both.stderr)")
        // (Before, the environment's: caribe's and norte's currency missing, norte's number +1 612….)
        #expect(both.stdout.contains(#""errors":[]"#) && both.stdout.contains(#""messages":2,"recipients":2"#), "\(both.stdout)")
        #expect(both.stdout.contains(#""market":"Spain""#), "\(both.stdout)")
        // Each organization's rows with its own template and default language, as its run sends
        // them. (Before, every row with the environment's template and language: norte's with
        // `invoice` in Spanish, where send sends `rentcall` in French.)
        try
            #"{"organizations": [{"id": "caribe", "phone_number_id": "1", "token_env": "T"}, {"id": "norte", "phone_number_id": "2", "token_env": "T", "templates": {"invoice": "rentcall"}, "language": "fr"}]}"#
            .write(to: folder.appendingPathComponent("orgs.json"), atomically: true, encoding: .utf8)
        try """
        invoice_id,organization,tenant_name,phone,amount,currency,period,document_url
        C,caribe,Carla,+18095550103,100.00,DOP,2026-03,
        N,norte,Nuria,+18095550104,100.00,DOP,2026-03,https://docs.example.com/N.pdf

        """.write(to: folder.appendingPathComponent("own.csv"), atomically: true, encoding: .utf8)
        let own = try await DispatcherProcess.run(
            ["preview", "own.csv", "--ignore-store", "--config", "orgs.json"], in: folder, environment: ["T": "x"])
        #expect(own.status == 0, "\(own.stdout)\(own.stderr)")
        #expect(own.stdout.contains("template invoice (caribe), rentcall (norte)"), "\(own.stdout)")
        let rows = try String(contentsOf: folder.appendingPathComponent("reports/own/preview/messages.csv"), encoding: .utf8)
        #expect(rows.contains(",+18095550103,es,invoice,") && rows.contains(",+18095550104,fr,rentcall,"), "\(rows)")
        #expect(rows.contains("Bonjour Nuria, votre bailleur vous adresse l'avis d'échéance de mars 2026"), "\(rows)")
        // With --organization, only that organization's template is needed and named.
        let norteOnly = try await DispatcherProcess.run(
            ["preview", "own.csv", "--ignore-store", "--config", "orgs.json", "--organization", "norte"], in: folder,
            environment: ["T": "x"])
        #expect(norteOnly.status == 0, "\(norteOnly.stdout)\(norteOnly.stderr)")
        #expect(norteOnly.stdout.contains("template rentcall: nothing sent"), "\(norteOnly.stdout)")
        #expect(norteOnly.stdout.contains("invoices     1 (and 1 of other organizations, left for their own run"), "\(norteOnly.stdout)")
        // An organization's template without its language stops preview and send alike, naming it.
        try
            #"{"organizations": [{"id": "caribe", "phone_number_id": "1", "token_env": "T"}, {"id": "norte", "phone_number_id": "2", "token_env": "T", "language": "de"}]}"#
            .write(to: folder.appendingPathComponent("orgs.json"), atomically: true, encoding: .utf8)
        for command in ["preview", "send"] {
            let refused = try await DispatcherProcess.run(
                [command, "own.csv", "--config", "orgs.json", "--db", "sqlite:\(folder.path)/refused.sqlite"], in: folder,
                environment: ["T": "x"])
            #expect(refused.status == 1, "\(command): \(refused.stdout)\(refused.stderr)")
            #expect(
                (refused.stdout + refused.stderr).contains("organization norte: template 'invoice' has no language 'de'"),
                "\(command): \(refused.stdout)\(refused.stderr)")
        }
    }

    @Test("an invalid manifest sends nothing (65); no credentials (64); a halted run (69) says what to fix and continues after it")
    func exitCodes() async throws {
        let invalid = try await DispatcherProcess.run([
            "send", "samples/broken.csv", "--sandbox", "--db", "sqlite:\(try temporaryDirectory().path)/x.sqlite",
        ])
        #expect(invalid.status == 65)
        #expect(invalid.stdout.contains("nothing was sent"))
        let folder = try workspace(
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550101,100.00,DOP,2026-03,https://docs.example.com/A.pdf

            """)
        let noToken = try await DispatcherProcess.run(
            ["send", "month.csv"], in: folder, environment: ["WHATSAPP_ACCESS_TOKEN": "", "WHATSAPP_PHONE_NUMBER_ID": ""])
        #expect(noToken.status == 64)
        #expect(noToken.stderr.contains("WHATSAPP_ACCESS_TOKEN"))
        try #"{"rules":[{"match":"suffix:","outcome":"payment_issue"}]}"#.write(
            to: folder.appendingPathComponent("broke.json"), atomically: true, encoding: .utf8)
        let halted = try await DispatcherProcess.run(
            ["send", "month.csv", "--sandbox", "--sandbox-scenario", "broke.json", "--settle", "1s"], in: folder)
        #expect(halted.status == 69)
        #expect(halted.stdout.contains("HALTED: (#131042)"))
        #expect(halted.stdout.contains("fix the payment method"))
        let fixed = try await DispatcherProcess.run(["send", "month.csv", "--sandbox", "--settle", "30s", "--json"], in: folder)
        #expect(fixed.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(fixed.stdout.utf8)) as? [String: Any])
        // Delivered is final too: the window may end before the read receipt.
        #expect((object["delivered"] as? Int ?? 0) + (object["read"] as? Int ?? 0) == 1, "\(object)")
    }
}
