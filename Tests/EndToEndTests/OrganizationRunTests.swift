import Foundation
import StoreTesting
import Testing
import WhatsApp

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One manifest for two organizations of the property system, each with its own sender number and
/// token, sent by one `send` against a sandbox process, with the statuses coming back to its
/// receiver: as a company billing for several landlords runs it.
@Suite("One run across organizations (real processes)", .serialized)
struct OrganizationRunTests {
    /// A workspace with `dispatcher.json` (caribe on number 111, norte on 222) and `name.csv`:
    /// `perOrganization` invoices of each, interleaved; invoice ids start at `first`.
    func workspace(_ name: String, perOrganization: Int, first: Int = 0, in folder: URL? = nil) throws -> URL {
        let folder = try folder ?? temporaryDirectory()
        try #"""
        {"organizations": [
          {"id": "caribe", "name": "Inmobiliaria Caribe", "phone_number_id": "111", "token_env": "TOKEN_CARIBE"},
          {"id": "norte", "name": "Norte Rentals", "phone_number_id": "222", "token_env": "TOKEN_NORTE", "currency": "USD",
           "default_country_code": "34"}
        ]}
        """#.write(to: folder.appendingPathComponent("dispatcher.json"), atomically: true, encoding: .utf8)
        var rows = ["invoice_id,organization,tenant_name,phone,amount,period,landlord,locale"]
        for i in first..<(first + perOrganization) {
            // No currency column: each organization's own (caribe DOP by default, norte USD).
            rows.append("C-\(i),caribe,Tenant C\(i),+1809555\(String(format: "%04d", 1000 + i)),100.00,2026-03,Caribe,es")
            rows.append("N-\(i),norte,Tenant N\(i),+1809556\(String(format: "%04d", 1000 + i)),50.00,2026-03,Norte,es")
        }
        try (rows.joined(separator: "\n") + "\n").write(to: folder.appendingPathComponent("\(name).csv"), atomically: true, encoding: .utf8)
        return folder
    }

    func environment(sandbox: Int, caribe: String = "sandbox-token", norte: String = "sandbox-token") -> [String: String] {
        [
            "DISPATCHER_DEFAULT_COUNTRY_CODE": "1",
            "WHATSAPP_API_BASE_URL": "http://127.0.0.1:\(sandbox)", "WHATSAPP_APP_SECRET": "x", "TOKEN_CARIBE": caribe,
            "TOKEN_NORTE": norte,
            "DISPATCHER_DATABASE_URL": "", "WHATSAPP_ACCESS_TOKEN": "", "WHATSAPP_PHONE_NUMBER_ID": "",
        ]
    }

    func json(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
    }

    @Test(
        "both numbers paced at once, statuses routed to each; a dead token halts only its organization; a status for an unknown number is kept apart"
    )
    func twoOrganizations() async throws {
        let folder = try workspace("march", perOrganization: 20)
        let (port, receiver) = (freePort(), freePort())
        let sandbox = try Running(
            [
                "sandbox", "--listen", "127.0.0.1:\(port)", "--app-secret", "x", "--throughput", "1000",
                "--webhook-url", "http://127.0.0.1:\(receiver)/webhook", "--templates",
                packageRoot.appendingPathComponent("templates").path,
            ], in: folder, environment: [:])
        defer {
            sandbox.kill(SIGTERM)
            _ = sandbox.wait()
        }
        try await waitForHTTP("http://127.0.0.1:\(port)/_sandbox/counters")
        let templates = packageRoot.appendingPathComponent("templates").path
        let common = [
            "--config", "dispatcher.json", "--templates", templates, "--listen", "127.0.0.1:\(receiver)", "--settle", "4s", "--json",
        ]

        // Both organizations at 10/s each: 20 messages each, sent side by side (about 2 s, not 4).
        let sent = try await DispatcherProcess.run(
            ["send", "march.csv", "--rate", "10"] + common, in: folder, environment: environment(sandbox: port))
        #expect(sent.status == 0, "\(sent.stdout)\(sent.stderr)")
        let result = try json(sent.stdout)
        let lanes = result["organizations"] as? [[String: Any]] ?? []
        #expect(lanes.map { $0["run"] as? String } == ["march@caribe", "march@norte"])
        for lane in lanes {
            #expect(lane["messages"] as? Int == 20)
            #expect(lane["pending"] as? Int == 0)
            // Statuses came back for each number and were applied to its own run.
            #expect((lane["read"] as? Int ?? 0) + (lane["delivered"] as? Int ?? 0) + (lane["sent"] as? Int ?? 0) > 10, "\(lane)")
        }
        #expect(sent.stderr.contains("[caribe] Run march@caribe: 20 invoices, 20 messages to send"), "\(sent.stderr)")
        let requests = try await getJSON("http://127.0.0.1:\(port)/_sandbox/requests") as? [[String: Any]] ?? []
        let byNumber = Dictionary(grouping: requests, by: { $0["phoneNumberID"] as? String ?? "" })
        #expect(byNumber["111"]?.count == 20)
        #expect(byNumber["222"]?.count == 20)
        let spans = ["111", "222"].map { number in
            let times = (byNumber[number] ?? []).compactMap { $0["at"] as? Double }
            return (times.min() ?? 0, times.max() ?? 0)
        }
        // Side by side: each number's first request before the other's last.
        #expect(spans[0].0 < spans[1].1 && spans[1].0 < spans[0].1, "\(spans)")
        // Each number within its own rate: 20 at 10/s take at least 1.8 s.
        for (first, last) in spans { #expect(last - first >= 1.8, "\(spans)") }
        // Each from its own organization's defaults (the currency of rows that give none).
        let runs = try await DispatcherProcess.run(["runs", "--json"], in: folder, environment: environment(sandbox: port))
        #expect((try json(runs.stdout)["statuses_for_other_numbers"] as? [String: Int]) == [:], "\(runs.stdout)")
        let statesBefore = (try json(runs.stdout)["runs"] as? [[String: Any]] ?? []).map { $0["states"] as? [String: Int] ?? [:] }

        // A status Meta sends for a number no run was sent from (about one of caribe's wamids): kept, applied to nothing.
        let wamid = byNumber["111"]?.compactMap { $0["wamid"] as? String }.first ?? ""
        let stray = Array(
            #"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"999"},"statuses":[{"id":"\#(wamid)","status":"failed","timestamp":"1767225700","recipient_id":"18095551000","errors":[{"code":131026,"title":"Message undeliverable"}]}]}}]}]}"#
                .utf8)
        let serve = try Running(
            ["serve", "--listen", "127.0.0.1:\(receiver)"], in: folder,
            environment: environment(sandbox: port).merging(["DISPATCHER_API_TOKEN": "t"]) { $1 })
        defer {
            serve.kill(SIGTERM)
            _ = serve.wait()
        }
        try await waitForHTTP("http://127.0.0.1:\(receiver)/health")
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(receiver)/webhook")!)
        request.httpMethod = "POST"
        request.httpBody = Data(stray)
        request.setValue(WebhookSignature(appSecret: "x").header(for: stray), forHTTPHeaderField: "X-Hub-Signature-256")
        let (_, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        let after = try await DispatcherProcess.run(["runs"], in: folder, environment: environment(sandbox: port))
        #expect(after.stdout.contains("1 statuses came for number 999 and were applied to no message"), "\(after.stdout)")
        let afterJSON = try await DispatcherProcess.run(["runs", "--json"], in: folder, environment: environment(sandbox: port))
        let statesAfter = (try json(afterJSON.stdout)["runs"] as? [[String: Any]] ?? []).map { $0["states"] as? [String: Int] ?? [:] }
        #expect(statesAfter == statesBefore, "the stray failure was applied")
        serve.kill(SIGTERM)
        _ = await serve.exit()

        // April, with norte's token dead: norte halts (exit 69), caribe's invoices all go.
        _ = try workspace("april", perOrganization: 5, first: 100, in: folder)
        let halted = try await DispatcherProcess.run(
            ["send", "april.csv", "--rate", "20"] + common, in: folder, environment: environment(sandbox: port, norte: "expired"))
        #expect(halted.status == 69, "\(halted.stdout)\(halted.stderr)")
        let split = (try json(halted.stdout)["organizations"] as? [[String: Any]]) ?? []
        #expect(split.first?["pending"] as? Int == 0, "\(split)")
        #expect(split.first?["halted"] == nil)
        #expect(split.last?["pending"] as? Int == 5, "\(split)")
        #expect((split.last?["halted"] as? String)?.contains("190") == true, "\(split)")
        #expect(halted.stderr.contains("[norte] HALTED"), "\(halted.stderr)")
        #expect(halted.stderr.contains("and set TOKEN_NORTE"), "the advice names the organization's token variable: \(halted.stderr)")

        // Fixed, the same command sends norte's five and nothing of caribe's again.
        let caribeBefore = (try await getJSON("http://127.0.0.1:\(port)/_sandbox/requests") as? [[String: Any]] ?? []).filter {
            $0["phoneNumberID"] as? String == "111"
        }.count
        let resumed = try await DispatcherProcess.run(
            ["send", "april.csv", "--rate", "20"] + common, in: folder, environment: environment(sandbox: port))
        #expect(resumed.status == 0, "\(resumed.stdout)\(resumed.stderr)")
        let everything = try await getJSON("http://127.0.0.1:\(port)/_sandbox/requests") as? [[String: Any]] ?? []
        #expect(everything.filter { $0["phoneNumberID"] as? String == "111" }.count == caribeBefore)
        let resumedLanes = (try json(resumed.stdout)["organizations"] as? [[String: Any]]) ?? []
        #expect(resumedLanes.map { $0["pending"] as? Int } == [0, 0], "\(resumedLanes)")
        let accepted = everything.filter { ($0["httpStatus"] as? Int) == 200 }.compactMap { $0["to"] as? String }
        #expect(accepted.count == Set(accepted).count, "a tenant got a message twice")
    }

    @Test("rows of no configured organization stop the run before any request, each named; --organization sends one organization's rows")
    func strays() async throws {
        let folder = try workspace("march", perOrganization: 2)
        // A national number in norte's row: norte's country code (34), not the environment's (1).
        try "N-8,norte,Tenant Y,612 345 678,10.00,2026-03,Norte,es\nC-9,nowhere,Tenant X,+18095559999,10.00,2026-03,X,es\n".data(
            using: .utf8
        ).map { data in
            let handle = try FileHandle(forWritingTo: folder.appendingPathComponent("march.csv"))
            handle.seekToEndOfFile()
            handle.write(data)
            try handle.close()
        }
        let templates = packageRoot.appendingPathComponent("templates").path
        let refused = try await DispatcherProcess.run(
            ["send", "march.csv", "--config", "dispatcher.json", "--sandbox", "--settle", "1s", "--templates", templates], in: folder,
            environment: environment(sandbox: 1))
        #expect(refused.status == 65, "\(refused.stdout)\(refused.stderr)")
        #expect(
            refused.stdout.contains(
                "line 7, invoice C-9, field organization: 'nowhere' is not a configured organization (configured: caribe, norte)"),
            "\(refused.stdout)")
        let one = try await DispatcherProcess.run(
            [
                "send", "march.csv", "--config", "dispatcher.json", "--sandbox", "--settle", "1s", "--organization", "norte",
                "--skip-invalid",
                "--templates", templates,
            ],
            in: folder, environment: environment(sandbox: 1))
        #expect(one.status == 0, "\(one.stdout)\(one.stderr)")
        #expect(one.stdout.contains("2 invoices of other organizations are not in this run"), "\(one.stdout)")
        #expect(one.stdout.contains("Run march@norte: 3 invoices, 3 messages to send"), "\(one.stdout)")
        let norteCSV = try String(contentsOf: folder.appendingPathComponent("reports/march/norte/messages.csv"), encoding: .utf8)
        #expect(norteCSV.contains("34612345678"), "norte's national number took another country code: \(norteCSV)")
        #expect(!one.stdout.contains("march@caribe"), "\(one.stdout)")
        // The summary counts as a reader does: each status includes those after it.
        #expect(one.stdout.contains("Run march@norte: 3 messages: "), "\(one.stdout)")
        #expect(one.stdout.contains(" accepted by Meta, "), "\(one.stdout)")

        // Again: nothing left to send, so no settle wait (it would be 1 s here, 120 s against Meta).
        let again = try await DispatcherProcess.run(
            [
                "send", "march.csv", "--config", "dispatcher.json", "--sandbox", "--settle", "30s", "--organization", "norte",
                "--skip-invalid", "--templates", templates,
            ],
            in: folder, environment: environment(sandbox: 1))
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("nothing was sent now: not waiting for statuses"), "\(again.stdout)")
        #expect(!again.stdout.contains("waiting up to"), "\(again.stdout)")

        // An invalid row in caribe's part: neither organization sends, and the reason is caribe's.
        var bad = try String(contentsOf: folder.appendingPathComponent("march.csv"), encoding: .utf8)
        bad = bad.replacingOccurrences(of: "C-0,caribe,Tenant C0,+18095551000,100.00", with: "C-0,caribe,Tenant C0,+18095551000,12,50")
        try bad.replacingOccurrences(of: "C-9,nowhere,Tenant X,+18095559999,10.00,2026-03,X,es\n", with: "").write(
            to: folder.appendingPathComponent("may.csv"), atomically: true, encoding: .utf8)
        let invalid = try await DispatcherProcess.run(
            ["send", "may.csv", "--config", "dispatcher.json", "--sandbox", "--settle", "1s", "--templates", templates], in: folder,
            environment: environment(sandbox: 1))
        #expect(invalid.status == 65, "\(invalid.stdout)\(invalid.stderr)")
        #expect(invalid.stdout.contains("[caribe] 1 invoices have problems: nothing was sent"), "\(invalid.stdout)")
        #expect(
            invalid.stdout.contains("[norte] nothing was sent: another organization's part of the run could not start"), "\(invalid.stdout)"
        )
        let runsAfter = try await DispatcherProcess.run(["runs"], in: folder, environment: environment(sandbox: 1))
        #expect(!runsAfter.stdout.contains("may@"), "a run of the refused manifest was kept: \(runsAfter.stdout)")

        // A landlord the run does not have: refused with the ones it has, instead of an empty report.
        let typo = try await DispatcherProcess.run(
            ["report", "march@norte", "--landlord", "Nort", "--templates", templates], in: folder, environment: environment(sandbox: 1))
        #expect(typo.status == 1)
        #expect(typo.stderr.contains("run march@norte has no landlord 'Nort'; its landlords: Norte"), "\(typo.stderr)")
        let pack = try await DispatcherProcess.run(
            ["report", "march@norte", "--landlord", "Norte", "--templates", templates], in: folder, environment: environment(sandbox: 1))
        #expect(pack.status == 0, "\(pack.stderr)")
        #expect(pack.stdout.contains("reports/march/norte/Norte/"), "\(pack.stdout)")

        // An operator's run named as the organization's month, with a landlord named as the
        // organization: its landlord pack gets a folder of its own, never norte's report (which
        // norte's callers are served).
        try "invoice_id,tenant_name,phone,amount,currency,period,landlord\nP-1,Operator Only,+18095557777,99.00,DOP,2026-03,norte\n".write(
            to: folder.appendingPathComponent("plain.csv"), atomically: true, encoding: .utf8)
        var single = environment(sandbox: 1)
        single["WHATSAPP_PHONE_NUMBER_ID"] = "333"
        let plain = try await DispatcherProcess.run(
            ["send", "plain.csv", "--run", "march", "--sandbox", "--settle", "1s", "--templates", templates], in: folder,
            environment: single)
        #expect(plain.status == 0, "\(plain.stdout)\(plain.stderr)")
        let landlords = try await DispatcherProcess.run(
            ["report", "march", "--per-landlord", "--templates", templates], in: folder, environment: single)
        #expect(landlords.status == 0, "\(landlords.stderr)")
        #expect(landlords.stdout.contains("norte: reports/march/norte-2/index.html"), "\(landlords.stdout)")
        let norteReport = try String(contentsOf: folder.appendingPathComponent("reports/march/norte/messages.csv"), encoding: .utf8)
        #expect(!norteReport.contains("Operator Only"), "norte's report was overwritten: \(norteReport)")
    }

    @Test("send says before sending whether statuses can arrive (a serve heard from, or nothing), and the report says when none came")
    func receiverHeardFrom() async throws {
        let folder = try workspace("march", perOrganization: 2)
        let port = freePort(), receiver = freePort()
        let templates = packageRoot.appendingPathComponent("templates").path
        let sandbox = try Running(
            [
                "sandbox", "--listen", "127.0.0.1:\(port)", "--app-secret", "x", "--throughput", "1000",
                "--webhook-url", "http://127.0.0.1:\(receiver)/webhook", "--templates", templates,
            ], in: folder, environment: [:])
        defer {
            sandbox.kill(SIGTERM)
            _ = sandbox.wait()
        }
        try await waitForHTTP("http://127.0.0.1:\(port)/_sandbox/counters")
        var env = environment(sandbox: port)
        env["WHATSAPP_ACCESS_TOKEN"] = "sandbox-token"
        env["WHATSAPP_PHONE_NUMBER_ID"] = "111"
        // Nothing listens where the sandbox posts its webhooks.
        let blind = try await DispatcherProcess.run(
            [
                "send", "march.csv", "--organization", "caribe", "--skip-invalid", "--default-currency", "DOP", "--settle", "2s",
                "--templates", templates,
            ], in: folder,
            environment: env)
        #expect(blind.status == 0, "\(blind.stdout)\(blind.stderr)")
        #expect(blind.stderr.contains("nothing is receiving Meta's webhooks for this database"), "\(blind.stderr)")
        #expect(blind.stdout.contains("no delivery status arrived for this run"), "\(blind.stdout)")
        let page = try String(contentsOf: folder.appendingPathComponent("reports/march/index.html"), encoding: .utf8)
        #expect(page.contains("No delivery status was received for this run"))

        // A serve on the same database: heard from, said, and the statuses come.
        let serve = try Running(["serve", "--listen", "127.0.0.1:\(receiver)", "--templates", templates], in: folder, environment: env)
        defer {
            serve.kill(SIGTERM)
            _ = serve.wait()
        }
        try await waitForHTTP("http://127.0.0.1:\(receiver)/health")
        _ = try workspace("april", perOrganization: 2, first: 50, in: folder)
        let heard = try await DispatcherProcess.run(
            [
                "send", "april.csv", "--organization", "caribe", "--skip-invalid", "--default-currency", "DOP", "--settle", "3s",
                "--templates", templates,
            ], in: folder,
            environment: env)
        #expect(heard.status == 0, "\(heard.stdout)\(heard.stderr)")
        #expect(heard.stdout.contains("statuses: received by `dispatcher serve` at 127.0.0.1:\(receiver)"), "\(heard.stdout)")
        #expect(!heard.stdout.contains("no delivery status arrived"), "\(heard.stdout)")
    }
}
