import Foundation
import Testing

/// The cost of a run before it starts and after it: `preview`, `send --max-cost`, the report,
/// `pricing import`. Figures are hand-computed from Meta's card effective 2026-10-01 (built in):
/// every number of the sample month is in the Dominican Republic, priced as "Rest of Latin
/// America", utility US$0.0113.
@Suite("Cost estimates and the cost of a run (the executable)")
struct PricingCommandTests {
    @Test("preview prints the estimate with its rate card's date: 26 messages × US$0.0113")
    func previewEstimate() async throws {
        let out = try temporaryDirectory()
        let result = try await DispatcherProcess.run([
            "preview", "samples/march-2026.csv", "--json", "--out", out.path, "--ignore-store",
        ])
        #expect(result.status == 0)
        #expect(result.stderr.contains("Estimated cost: US$0.2938 for 26 messages"), "\(result.stderr)")
        #expect(result.stderr.contains("rate card effective 2026-10-01"))
        #expect(result.stderr.contains("market Rest of Latin America, utility: 26 × US$0.0113 = US$0.2938"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let estimate = try #require(object["estimate"] as? [String: Any])
        #expect(estimate["total"] as? String == "0.293800")
        #expect(estimate["currency"] as? String == "USD")
        #expect(estimate["is_estimate"] as? Bool == true)
        #expect(estimate["rate_card_effective"] as? String == "2026-10-01")
        let lines = try #require(estimate["lines"] as? [[String: Any]])
        #expect(Set(lines.compactMap { $0["landlord"] as? String }) == ["Inmobiliaria Caribe", "Residencial Los Próceres"])
        #expect(lines.map { $0["messages"] as? Int ?? 0 }.reduce(0, +) == 26)
        let html = try String(contentsOfFile: out.appendingPathComponent("index.html").path, encoding: .utf8)
        #expect(html.contains("Estimated cost: US$0.2938 for 26 messages"))
    }

    @Test("send --max-cost refuses a run that would cost more, sending nothing; then the report shows what Meta charged")
    func maxCostAndReport() async throws {
        let folder = try temporaryDirectory()
        let db = "sqlite:" + folder.appendingPathComponent("d.sqlite").path
        let out = folder.appendingPathComponent("report").path
        let refused = try await DispatcherProcess.run([
            "send", "samples/march-2026.csv", "--sandbox", "--db", db, "--out", out, "--max-cost", "0.25", "--settle", "20s",
        ])
        #expect(refused.status == 69, "\(refused.stderr)")
        #expect(refused.stdout.contains("REFUSED: the estimated cost US$0.2938 is above --max-cost US$0.2500"), "\(refused.stdout)")
        let runs = try await DispatcherProcess.run(["runs", "--json", "--db", db])
        #expect(runs.stdout.contains("\"queued\":26") || runs.stdout.contains("\"queued\" : 26"), "\(runs.stdout)")

        let sent = try await DispatcherProcess.run([
            "send", "samples/march-2026.csv", "--sandbox", "--db", db, "--out", out, "--max-cost", "0.30", "--settle", "10s",
        ])
        #expect(sent.status == 0, "\(sent.stderr)")
        // The sandbox delivers 21 of the 26 messages, each status priced `utility`/`regular`:
        // 21 × 0.0113 = 0.2373.
        let landlords = try String(contentsOfFile: out + "/landlords.csv", encoding: .utf8)
        let rows = landlords.split(whereSeparator: \.isNewline).map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        #expect(rows.first?.last == "whatsapp_cost_usd")
        let total = rows.dropFirst().compactMap { Double($0.last ?? "") }.reduce(0, +)
        #expect(abs(total - 0.2373) < 1e-9, "\(landlords)")
        let html = try String(contentsOfFile: out + "/index.html", encoding: .utf8)
        #expect(html.contains("US$0.2373 for 21 delivered messages (Meta&#39;s rates effective 2026-10-01"), "\(html)")

        // The same month again under a new run (a copy of the file): every message was sent by the
        // run above, so nothing is queued and nothing refused, whatever the limit.
        let copy = folder.appendingPathComponent("march-copy.csv")
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("samples/march-2026.csv"), to: copy)
        let again = try await DispatcherProcess.run([
            "send", copy.path, "--sandbox", "--db", db, "--out", folder.appendingPathComponent("copy").path, "--max-cost", "0.01",
            "--settle", "1s",
        ])
        #expect(again.status == 0, "\(again.stdout)")
        #expect(again.stdout.contains("0 messages to send, 26 already sent by an earlier run"), "\(again.stdout)")
        #expect(!again.stdout.contains("REFUSED"), "\(again.stdout)")

        // One JSON convention: `status --json` in snake_case with ISO 8601 times.
        let firstID = try #require(
            String(landlords.split(whereSeparator: \.isNewline).first ?? "").isEmpty ? nil : try messageID(in: out + "/messages.csv"))
        let status = try await DispatcherProcess.run(["status", firstID, "--json", "--db", db])
        #expect(status.status == 0, "\(status.stderr)")
        let statusObject = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
        let message = try #require(statusObject["message"] as? [String: Any])
        #expect(message["invoice_id"] != nil && message["invoiceID"] == nil)
        #expect((message["created_at"] as? String)?.hasSuffix("Z") == true)
        let attempts = try #require(statusObject["attempts"] as? [[String: Any]])
        #expect((attempts.first?["started_at"] as? String)?.hasSuffix("Z") == true)

        // A pack per landlord, ready to send: each folder has only that landlord's invoices.
        let templates = packageRoot.appendingPathComponent("templates").path
        let badZone = try await DispatcherProcess.run(
            ["report", "march-2026", "--per-landlord", "--db", db, "--templates", templates, "--timezone", "Mars/Olympus"], in: folder)
        #expect(badZone.status == 64)
        #expect(badZone.stderr.contains("not a time zone"), "\(badZone.stderr)")
        let pack = try await DispatcherProcess.run(
            [
                "report", "march-2026", "--per-landlord", "--db", db, "--templates", templates, "--json", "--timezone",
                "America/Santo_Domingo",
            ],
            in: folder)
        #expect(pack.status == 0, "\(pack.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(pack.stdout.utf8)) as? [String: Any])
        let folders = try #require(object["landlords"] as? [String: String])
        #expect(Set(folders.keys) == ["Inmobiliaria Caribe", "Residencial Los Próceres"])
        for (landlord, path) in folders {
            let rows = try String(contentsOfFile: folder.appendingPathComponent(path + "/messages.csv").path, encoding: .utf8)
                .split(whereSeparator: \.isNewline).dropFirst()
            #expect(rows.count >= 12, "\(landlord): \(rows.count)")
            #expect(rows.allSatisfy { $0.contains(landlord) }, "\(landlord)")
            let page = try String(contentsOfFile: folder.appendingPathComponent(path + "/index.html").path, encoding: .utf8)
            #expect(page.contains("America/Santo_Domingo (UTC-04:00)"))
        }
    }

    @Test("pricing import keeps Meta's CSV in the database; show uses it from its date; a bad file names its line")
    func importCard() async throws {
        let folder = try temporaryDirectory()
        let db = "sqlite:" + folder.appendingPathComponent("d.sqlite").path
        let card = folder.appendingPathComponent("usd.csv")
        try """
        "Cost per message in USD on the WhatsApp Business Platform, effective January 1, 2027",,,,,,
        Market,Currency,Marketing,Utility,Authentication,"Authentication-
        International",Service
        Rest of Latin America,USD,0.0750,0.0120,0.0120,n/a,0.0120
        Other,USD,0.0604,0.0077,0.0077,n/a,0.0077
        """.write(to: card, atomically: true, encoding: .utf8)
        let imported = try await DispatcherProcess.run(["pricing", "import", card.path, "--db", db])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("USD card effective 2027-01-01, 2 markets"))
        // The same file again changes nothing, and the card is listed once.
        let again = try await DispatcherProcess.run(["pricing", "import", card.path, "--db", db])
        #expect(again.status == 0 && again.stdout.contains("is imported already (USD card effective 2027-01-01): nothing changed"))
        let listed = try await DispatcherProcess.run(["pricing", "show", "--on", "2027-02-01", "--db", db])
        #expect(listed.stdout.components(separatedBy: "2027-01-01 (imported from").count == 2, "\(listed.stdout)")
        let show = try await DispatcherProcess.run(["pricing", "show", "--on", "2027-02-01", "--json", "--db", db])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any])
        #expect(object["effective"] as? String == "2027-01-01")
        let rates = try #require(object["rates"] as? [String: [String: String]])
        #expect(rates["Rest of Latin America"]?["utility"] == "0.012000")
        // Before its date, the built-in card still holds.
        let before = try await DispatcherProcess.run(["pricing", "show", "--on", "2026-12-31", "--db", db])
        #expect(before.stdout.contains("card effective 2026-10-01"))
        // Before any card: said so, not passed off as the card in force.
        let early = try await DispatcherProcess.run(["pricing", "show", "--on", "2025-01-01", "--db", db])
        #expect(early.stdout.contains("No card known was in force on 2025-01-01; the earliest is"), "\(early.stdout)")
        // Not a day: a usage error naming the option.
        for wrong in ["2026-13-45", "tomorrow", "2026-1-1"] {
            let refused = try await DispatcherProcess.run(["pricing", "show", "--on", wrong, "--db", db])
            #expect(refused.status == 64, "\(wrong): \(refused.stdout)")
            #expect(refused.stderr.contains("--on '\(wrong)' is not a day"), "\(wrong): \(refused.stderr)")
        }

        try "Market,Currency,Marketing,Utility\nSpain,USD,0.07,0.02\nChile,USD,cheap,0.02\n".write(
            to: card, atomically: true, encoding: .utf8)
        let bad = try await DispatcherProcess.run(["pricing", "import", card.path, "--effective", "2027-04-01", "--db", db])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("line 3: 'cheap' is not a rate"), "\(bad.stderr)")
    }
}

/// The first message id of a report's messages.csv (its last column).
func messageID(in path: String) throws -> String {
    let lines = try String(contentsOfFile: path, encoding: .utf8).split(whereSeparator: \.isNewline)
    return String(lines.dropFirst().first?.split(separator: ",").last ?? "")
}
