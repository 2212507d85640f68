import Foundation
import Testing

/// `dispatcher templates pull|list|check` and the check before `send`, as a user runs them,
/// against a sandbox process playing a business account whose templates have statuses.
@Suite("templates pull, check, and the approval check before sending")
struct TemplatesCommandTests {
    /// A workspace with a copy of the shipped templates (pull writes into it) and a manifest
    /// without PDF links: two rows in Spanish, one in French.
    func workspace() throws -> URL {
        let folder = try temporaryDirectory()
        try FileManager.default.copyItem(
            at: packageRoot.appendingPathComponent("templates"), to: folder.appendingPathComponent("templates"))
        try """
        invoice_id,tenant_name,phone,amount,currency,period,locale
        T-1,Ana Gómez,+18095550100,100.00,DOP,2026-03,es-DO
        T-2,Bea Ruiz,+18095550200,200.00,DOP,2026-03,es-DO
        T-3,Claire Roy,+18095550300,300.00,DOP,2026-03,fr-FR

        """.write(to: folder.appendingPathComponent("march.csv"), atomically: true, encoding: .utf8)
        return folder
    }

    /// A sandbox whose account has `invoice` PAUSED in French and `rentcall_reminder` deleted from the folder it serves.
    func sandbox(in folder: URL, port: Int) throws -> Running {
        try #"{"rules": [], "template_statuses": {"invoice:fr": "PAUSED"}}"#.write(
            to: folder.appendingPathComponent("scenario.json"), atomically: true, encoding: .utf8)
        return try Running(
            [
                "sandbox", "--listen", "127.0.0.1:\(port)", "--app-secret", "x", "--throughput", "1000", "--scenario", "scenario.json",
                "--templates", packageRoot.appendingPathComponent("templates").path,
            ], in: folder, environment: [:])
    }

    /// A workspace and the sandbox on a free port, for the length of `body`.
    func withSandbox(_ body: (_ folder: URL, _ port: Int, _ environment: [String: String]) async throws -> Void) async throws {
        let folder = try workspace()
        let port = freePort()
        let sandbox = try sandbox(in: folder, port: port)
        defer {
            sandbox.kill(SIGTERM)
            _ = sandbox.wait()
        }
        try await waitForHTTP("http://127.0.0.1:\(port)/_sandbox/counters")
        try await body(folder, port, environment(port: port))
    }

    func environment(port: Int) -> [String: String] {
        [
            "WHATSAPP_API_BASE_URL": "http://127.0.0.1:\(port)", "WHATSAPP_ACCESS_TOKEN": "sandbox-token",
            "WHATSAPP_PHONE_NUMBER_ID": "PN-1", "WHATSAPP_BUSINESS_ACCOUNT_ID": "WABA-1", "DISPATCHER_DATABASE_URL": "",
        ]
    }

    @Test("pull then send of a manifest without PDF links with the defaults; a paused language refuses the run before any request")
    func pullAndSend() async throws {
        try await withSandbox { folder, port, env in
            // What Meta has, into the folder; the local mapping stays.
            try FileManager.default.removeItem(at: folder.appendingPathComponent("templates/whatsapp/rentcall_reminder.json"))
            let pull = try await DispatcherProcess.run(["templates", "pull"], in: folder, environment: env)
            #expect(pull.status == 0, "\(pull.stdout)\(pull.stderr)")
            #expect(pull.stdout.contains("invoice: updated (en APPROVED, es APPROVED, fr PAUSED, pt_BR APPROVED)"), "\(pull.stdout)")
            #expect(pull.stdout.contains("rentcall_reminder: new"), "\(pull.stdout)")
            #expect(pull.stdout.contains("map unmapped_1, unmapped_2, unmapped_3 to manifest fields"), "\(pull.stdout)")
            let list = try await DispatcherProcess.run(["templates", "list"], in: folder, environment: env)
            #expect(list.stdout.contains("at Meta: en APPROVED, es APPROVED, fr PAUSED, pt_BR APPROVED (pulled 20"), "\(list.stdout)")
            let check = try await DispatcherProcess.run(["templates", "check"], in: folder, environment: env)
            #expect(check.status == 1)
            #expect(check.stdout.contains("language fr: status PAUSED at Meta"), "\(check.stdout)")

            // The French row needs a paused template: nothing is sent, the reason is named.
            let refused = try await DispatcherProcess.run(["send", "march.csv", "--settle", "1s"], in: folder, environment: env)
            #expect(refused.status == 69, "\(refused.stdout)\(refused.stderr)")
            #expect(refused.stdout.contains("NOT APPROVED: template 'invoice' (fr) is PAUSED"), "\(refused.stdout)")
            let none = try await getJSON("http://127.0.0.1:\(port)/_sandbox/requests") as? [[String: Any]] ?? []
            #expect(none.isEmpty, "requests reached Meta before the check")

            // Told to, the rest goes: text-only, with the defaults; the French invoice is skipped with its reason.
            let sent = try await DispatcherProcess.run(
                ["send", "march.csv", "--settle", "1s", "--skip-unapproved-languages"], in: folder, environment: env)
            #expect(sent.status == 0, "\(sent.stdout)\(sent.stderr)")
            #expect(sent.stdout.contains("skipped 1 messages: template 'invoice' (fr) is PAUSED"), "\(sent.stdout)")
            let requests = try await getJSON("http://127.0.0.1:\(port)/_sandbox/requests") as? [[String: Any]] ?? []
            #expect(requests.count == 2)
            #expect(requests.allSatisfy { $0["template"] as? String == "invoice" && $0["httpStatus"] as? Int == 200 }, "\(requests)")
            let report = try String(contentsOf: folder.appendingPathComponent("reports/march/messages.csv"), encoding: .utf8)
            #expect(report.contains("PAUSED"), "\(report)")
        }
    }

    @Test("without a business account id the run says the templates were not checked, and sends")
    func unchecked() async throws {
        try await withSandbox { folder, _, env in
            var env = env
            env["WHATSAPP_BUSINESS_ACCOUNT_ID"] = ""
            let sent = try await DispatcherProcess.run(["send", "march.csv", "--settle", "1s"], in: folder, environment: env)
            #expect(
                sent.stderr.contains("templates not checked against Meta before sending: set WHATSAPP_BUSINESS_ACCOUNT_ID"),
                "\(sent.stderr)")
            // Meta's own answer (132015 for the French row) halts that run instead.
            #expect(sent.status == 69, "\(sent.stdout)\(sent.stderr)")
            #expect(sent.stdout.contains("132015"), "\(sent.stdout)")
        }
    }
}
