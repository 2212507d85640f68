import Dispatcher
import Foundation
import StoreTesting
import Testing

@testable import Reports
@testable import Store
@testable import WhatsApp

let reportsRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func reportStore(_ engine: StoreEngine = .sqlite) async throws -> any DispatchStore {
    try await makeStore(engine)
}

/// A run: two landlords, DOP and USD, messages in every state.
func seedReport(
    _ store: any DispatchStore,
    states: [(invoice: String, landlord: String, amount: Int64, currency: String, state: MessageState, code: Int?)]
) async throws {
    try await store.saveRun(
        RunRecord(name: "march", manifest: "m.csv", template: "invoice", sender: "123", status: .done, createdAt: 1_772_000_000))
    try await store.addInvoices(
        states.map {
            InvoiceRecord(
                run: "march", invoiceID: $0.invoice, line: 2, tenantName: "Tenant \($0.invoice), \"quoted\"", landlord: $0.landlord,
                amountMinor: $0.amount, currency: $0.currency, period: "2026-03", locale: "es-DO", email: "=cmd|' /C calc'!A0")
        })
    _ = try await store.addMessages(
        states.enumerated().map { i, s in
            NewMessage(
                id: "m-\(i)", run: "march", invoiceID: s.invoice, phone: "1809555\(1000 + i)", template: "invoice", language: "es",
                state: s.state == .skipped ? .skipped : .queued, skipReason: s.state == .skipped ? "nothing due" : nil)
        })
    for (i, s) in states.enumerated() where s.state != .skipped && s.state != .queued {
        let id = "m-\(i)"
        let attempt = try await store.beginAttempt(messageID: id, at: 1_772_000_000)
        if s.state == .unknown {
            try await store.recordUnknown(messageID: id, attempt: attempt, reason: "timeout", at: 1_772_000_001)
            continue
        }
        try await store.recordAccepted(messageID: id, attempt: attempt, wamid: "wamid.\(i)", at: 1_772_000_001)
        var contents = WebhookContents()
        switch s.state {
        case .sent: contents.statuses = [StatusUpdate(wamid: "wamid.\(i)", status: "sent", timestamp: 1_772_000_002)]
        case .delivered: contents.statuses = [StatusUpdate(wamid: "wamid.\(i)", status: "delivered", timestamp: 1_772_000_003)]
        case .read: contents.statuses = [StatusUpdate(wamid: "wamid.\(i)", status: "read", timestamp: 1_772_000_004)]
        case .failed:
            contents.statuses = [
                StatusUpdate(
                    wamid: "wamid.\(i)", status: "failed", timestamp: 1_772_000_005, errorCode: s.code, errorTitle: "Message undeliverable")
            ]
        default: break
        }
        _ = try await store.ingestWebhook(body: [], signature: nil, contents: contents, parseError: nil, at: 1_772_000_010)
    }
}

func readCSV(_ path: String) throws -> [[String: String]] {
    var rows: [[String: String]] = []
    // The manifest reader is a full RFC 4180 reader: use it on the report as on any CSV.
    let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    var header: [String]? = nil
    var text = String(decoding: bytes, as: UTF8.self)
    if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
    var field = "", row: [String] = [], quoted = false, i = text.startIndex
    let delimiter: Character = text.prefix { $0 != "\r" && $0 != "\n" }.contains(";") ? ";" : ","
    while i < text.endIndex {
        let c = text[i]
        if quoted {
            if c == "\"" {
                let next = text.index(after: i)
                if next < text.endIndex && text[next] == "\"" { field.append("\""); i = next } else { quoted = false }
            } else {
                field.append(c)
            }
        } else if c == "\"" {
            quoted = true
        } else if c == delimiter {
            row.append(field); field = ""
        } else if c == "\r\n" || c == "\n" || c == "\r" {
            row.append(field); field = ""
            if let h = header { rows.append(Dictionary(uniqueKeysWithValues: zip(h, row))) } else { header = row }
            row = []
        } else {
            field.append(c)
        }
        i = text.index(after: i)
    }
    return rows
}

@Suite("Delivery report")
struct DeliveryReportTests {
    let mix: [(invoice: String, landlord: String, amount: Int64, currency: String, state: MessageState, code: Int?)] = [
        ("A", "Caribe", 1_000_00, "DOP", .read, nil), ("B", "Caribe", 2_000_00, "DOP", .delivered, nil),
        ("C", "Caribe", 3_000_00, "DOP", .failed, 131026),
        ("D", "Caribe", 50_00, "USD", .sent, nil), ("E", "Próceres", 4_000_00, "DOP", .failed, 131049),
        ("F", "Próceres", 5_000_00, "DOP", .unknown, nil),
        ("G", "Próceres", 0, "DOP", .skipped, nil), ("H", "Próceres", 6_000_00, "DOP", .read, nil),
    ]

    func write(_ store: any DispatchStore, lang: String = "en", excel: Bool = false, landlord: String? = nil) async throws -> ReportFiles {
        let directory = try scratchFolder("report").path
        let writer = try await DeliveryReportWriter(
            templatesDirectory: reportsRoot.appendingPathComponent("templates").path, lang: lang, excel: excel)
        return try await writer.write(run: try await store.run(named: "march")!, store: store, to: directory, landlord: landlord)
    }

    @Test("messages.csv has one row per message with the store's states, round-trips quotes, and defuses formulas", arguments: engines)
    func messagesCSV(engine: StoreEngine) async throws {
        let store = try await reportStore(engine)
        try await seedReport(store, states: mix)
        let files = try await write(store)
        let rows = try readCSV(files.messagesCSV)
        #expect(rows.count == 8)
        var counted: [MessageState: Int] = [:]
        for row in rows { counted[MessageState(rawValue: row["state"]!)!, default: 0] += 1 }
        #expect(counted == (try await store.stateCounts(run: "march")))
        #expect(rows[0]["tenant_name"] == "Tenant A, \"quoted\"")
        #expect(rows[0]["email"] == "'=cmd|' /C calc'!A0")
        #expect(rows[0]["read_at"] == "2026-02-25T06:13:24Z")
        #expect(rows.first { $0["invoice_id"] == "C" }?["retryable"] == "no")
        #expect(rows.first { $0["invoice_id"] == "E" }?["retryable"] == "yes")
        #expect(rows.first { $0["invoice_id"] == "F" }?["retryable"] == "yes")
        #expect(rows.first { $0["invoice_id"] == "A" }?["amount"] == "1000.00")
    }

    @Test(
        """
        messages.csv of a run retried twice among another run's messages: its rows in order, none of the other's, \
        the gaps between read past
        """,
        arguments: engines)
    func messagesCSVAcrossGaps(engine: StoreEngine) async throws {
        let store = try await reportStore(engine)
        try await seedReport(store, states: mix)  // March: sequence numbers 1 to 8
        try await store.saveRun(RunRecord(name: "april", manifest: "a.csv", template: "invoice", sender: "123", createdAt: 2))
        var added = 0
        func april(_ count: Int) async throws {
            let range = added..<added + count
            added += count
            try await store.addInvoices(
                range.map {
                    InvoiceRecord(
                        run: "april", invoiceID: "A-\($0)", line: $0 + 2, tenantName: "April \($0)", amountMinor: 1, currency: "DOP",
                        period: "2026-04", locale: "es")
                })
            _ = try await store.addMessages(
                range.map {
                    NewMessage(
                        id: "a-\($0)", run: "april", invoiceID: "A-\($0)", phone: "1829\(String(format: "%07d", $0))", template: "invoice",
                        language: "es")
                })
        }
        func retry(_ invoice: String, _ n: Int) async throws {
            _ = try await store.addMessages([
                NewMessage(
                    id: "m-retry-\(n)", run: "march", invoiceID: invoice, phone: "1849555100\(n)", template: "invoice", language: "es")
            ])
        }
        // Pages of 10 sequence numbers, two read ahead: [1-10] March's, [11-20] none (the next of
        // March's, 26, lies in [21-30], asked for already: no page may start there again), [31-40]
        // none (the next, 327, lies far ahead: the pages between are stepped over).
        try await april(17)  // 9 to 25
        try await retry("A", 1)  // 26
        try await april(300)  // 27 to 326
        try await retry("C", 2)  // 327
        var writer = try await DeliveryReportWriter(templatesDirectory: reportsRoot.appendingPathComponent("templates").path)
        writer.pageSpan = 10
        let path = try scratchFolder("gaps").appendingPathComponent("messages.csv").path
        try await writer.writeMessagesCSV(run: try await store.run(named: "march")!, store: store, to: path)
        let rows = try readCSV(path)
        #expect(rows.map { $0["message_id"]! } == (0..<mix.count).map { "m-\($0)" } + ["m-retry-1", "m-retry-2"])
        #expect(rows.allSatisfy { $0["run"] == "march" })
        #expect(rows.suffix(2).map { $0["invoice_id"] } == ["A", "C"])
    }

    @Test("landlords.csv: invoices, billed and delivered per landlord and currency, as the store says", arguments: engines)
    func landlordsCSV(engine: StoreEngine) async throws {
        let store = try await reportStore(engine)
        try await seedReport(store, states: mix)
        let rows = try readCSV(try await write(store).landlordsCSV)
        let caribeDOP = try #require(rows.first { $0["landlord"] == "Caribe" && $0["currency"] == "DOP" })
        #expect(caribeDOP["invoices"] == "3")
        #expect(caribeDOP["amount_billed"] == "6000.00")
        #expect(caribeDOP["amount_delivered"] == "3000.00")  // A read + B delivered
        #expect(caribeDOP["amount_read"] == "1000.00")  // A
        #expect(caribeDOP["unreachable"] == "1" && caribeDOP["amount_unreachable"] == "3000.00")  // C, not on WhatsApp
        #expect(caribeDOP["failed"] == "0" && caribeDOP["amount_failed"] == "0.00")
        #expect(caribeDOP["delivered"] == "2" && caribeDOP["read"] == "1")
        #expect(caribeDOP["pending"] == "0" && caribeDOP["amount_pending"] == "0.00")
        let caribeUSD = try #require(rows.first { $0["landlord"] == "Caribe" && $0["currency"] == "USD" })
        #expect(caribeUSD["pending"] == "1")
        #expect(caribeUSD["amount_pending"] == "50.00")  // D, sent and not delivered yet
        #expect(caribeUSD["amount_delivered"] == "0.00")
        let proceres = try #require(rows.first { $0["landlord"] == "Próceres" })
        #expect(proceres["invoices"] == "4")
        #expect(proceres["pending"] == "1")  // the unknown one
        #expect(proceres["amount_pending"] == "5000.00")  // F, unknown
        #expect(proceres["failed"] == "1" && proceres["amount_failed"] == "4000.00")  // E, held back 24 h (131049)
        #expect(proceres["amount_delivered"] == "6000.00")
        #expect(proceres["not_sent"] == "1" && proceres["amount_not_sent"] == "0.00")  // G, nothing due
        // Each invoice once: the outcomes add up to the invoices and the amount billed.
        for row in rows {
            let counts = ["delivered", "pending", "failed", "unreachable", "not_sent"].map { Int(row[$0]!)! }
            #expect(counts.reduce(0, +) == Int(row["invoices"]!)!)
            let amounts = ["delivered", "pending", "failed", "unreachable", "not_sent"].map { Decimal(string: row["amount_\($0)"]!)! }
            #expect(amounts.reduce(0, +) == Decimal(string: row["amount_billed"]!)!)
        }
    }

    @Test("the page: the funnel's figures, failures with their reason and action, the retry command; Spanish labels", arguments: engines)
    func page(engine: StoreEngine) async throws {
        let store = try await reportStore(engine)
        try await seedReport(store, states: mix)
        let html = try String(contentsOfFile: try await write(store).html, encoding: .utf8)
        #expect(html.contains("This number is not on WhatsApp"))
        #expect(html.contains("Send the invoice by email"))
        #expect(html.contains("dispatcher retry march --include-unknown"))
        #expect(html.contains("<svg"))
        #expect(!html.contains("{{"))
        #expect(!html.contains("<script"))
        #expect(!html.contains("http://") && !html.contains("src=\"https"))  // self-contained
        let spanish = try String(contentsOfFile: try await write(store, lang: "es").html, encoding: .utf8)
        #expect(spanish.contains("Informe de entrega"))
        #expect(spanish.contains("Enviar la factura por correo electrónico"))
        // Every word ours in Spanish: the skip reason, the run's status; Meta's own details said to be Meta's, in English.
        #expect(spanish.contains("<td>nada que cobrar</td>") && !spanish.contains("nothing due"))
        #expect(spanish.contains("Detalle (el de Meta, en inglés)") && spanish.contains("<td class=\"muted\" lang=\"en\">"))
        #expect(spanish.contains("No enviadas") && spanish.contains("Sin WhatsApp"))
        // French and Portuguese, Meta's codes included, through our own words.
        let french = try String(contentsOfFile: try await write(store, lang: "fr").html, encoding: .utf8)
        #expect(french.contains("Rapport de distribution"))
        #expect(french.contains("Ce numéro n&#39;est pas sur WhatsApp"))
        #expect(french.contains("<html lang=\"fr\">"))
        #expect(!french.contains("Delivery report") && !french.contains("Not on WhatsApp"))
        let portuguese = try String(contentsOfFile: try await write(store, lang: "pt").html, encoding: .utf8)
        #expect(portuguese.contains("Relatório de entrega"))
        #expect(portuguese.contains("Enviar a fatura por e-mail"))
        #expect(!portuguese.contains("Not on WhatsApp"))
    }

    @Test(
        "the page names the tenants whose outcome is not known yet, with amount and state; times in the zone asked for; the CSVs linked",
        arguments: engines)
    func pendingAndTimes(engine: StoreEngine) async throws {
        let store = try await reportStore(engine)
        try await seedReport(store, states: mix)
        let directory = try scratchFolder("report").path
        let writer = try await DeliveryReportWriter(
            templatesDirectory: reportsRoot.appendingPathComponent("templates").path,
            timeZone: try #require(TimeZone(identifier: "America/Santo_Domingo")))
        let files = try await writer.write(run: try await store.run(named: "march")!, store: store, to: directory)
        let html = try String(contentsOfFile: files.html, encoding: .utf8)
        // D was sent, never delivered: named, with its amount and state.
        #expect(html.contains("Not yet known (1)"))
        #expect(
            html.contains(
                "<td>Tenant D, &quot;quoted&quot;</td><td>+1 809 555 1003</td><td>D</td><td class=\"n\">$50.00</td><td>Sent</td>"),
            "\(html)")
        // 1,772,000,000 is 2026-02-25 06:13:20 UTC: 02:13 in Santo Domingo (UTC-04:00), said on the page.
        #expect(html.contains("2026-02-25 02:13"))
        #expect(html.contains("America/Santo_Domingo (UTC-04:00)"))
        #expect(html.contains("<a href=\"messages.csv\">messages.csv</a>"))
        #expect(try readCSV(files.messagesCSV).first { $0["invoice_id"] == "A" }?["read_at"] == "2026-02-25T06:13:24Z")  // CSVs stay UTC
    }

    @Test("a run with no messages, and one where every message failed, still render", arguments: engines)
    func edgeRuns(engine: StoreEngine) async throws {
        let empty = try await reportStore(engine)
        try await seedReport(empty, states: [])
        let files = try await write(empty)
        #expect(try readCSV(files.messagesCSV).isEmpty)
        #expect(try String(contentsOfFile: files.html, encoding: .utf8).contains("Delivery report"))
        let failed = try await reportStore(engine)
        try await seedReport(failed, states: (0..<5).map { ("I\($0)", "Caribe", 100, "DOP", MessageState.failed, 131026) })
        let html = try String(contentsOfFile: try await write(failed).html, encoding: .utf8)
        #expect(html.contains("(5 · 131026)"))
    }

    @Test("one landlord's own report has only their invoices; --excel writes ';', decimal commas and a BOM", arguments: engines)
    func landlordAndExcel(engine: StoreEngine) async throws {
        let store = try await reportStore(engine)
        try await seedReport(store, states: mix)
        let files = try await write(store, excel: true, landlord: "Próceres")
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: files.messagesCSV)))
        #expect(Array(bytes.prefix(3)) == [0xEF, 0xBB, 0xBF])
        let rows = try readCSV(files.messagesCSV)
        #expect(Set(rows.map { $0["invoice_id"]! }) == ["E", "F", "G", "H"])
        // A decimal comma where cells are `;`-separated: a Spanish or French spreadsheet reads numbers.
        let text = String(decoding: bytes.dropFirst(3), as: UTF8.self)
        #expect(text.contains(";4000,00;"), "\(text.prefix(400))")
        #expect(!text.contains(";4000.00;"))
        let landlords = String(decoding: Array(try Data(contentsOf: URL(fileURLWithPath: files.landlordsCSV))).dropFirst(3), as: UTF8.self)
        #expect(landlords.contains(",00;") && !landlords.contains(".00"), "\(landlords)")
    }

    @Test(
        "a landlord's report, read through their own index, is the whole report's rows and figures of that landlord, page after page, with another run's in between",
        arguments: engines)
    func landlordThroughIndex(engine: StoreEngine) async throws {
        let store = try await reportStore(engine)
        // Another run's message of the same landlord before and after the run's, and a second message
        // for one of its invoices stored after that (a resend).
        try await store.saveRun(RunRecord(name: "april", manifest: "a.csv", template: "invoice", sender: "123", createdAt: 1_772_000_000))
        let other = InvoiceRecord(
            run: "april", invoiceID: "E", line: 2, tenantName: "April", landlord: "Próceres", amountMinor: 1, currency: "DOP",
            period: "2026-04", locale: "es-DO")
        try await store.addInvoices([other])
        _ = try await store.addMessages([
            NewMessage(id: "a-1", run: "april", invoiceID: "E", phone: "18095550001", template: "invoice", language: "es")
        ])
        try await seedReport(store, states: mix)
        _ = try await store.addMessages([
            NewMessage(id: "a-2", run: "april", invoiceID: "E", phone: "18095550001", template: "invoice", language: "es"),
            NewMessage(id: "m-again", run: "march", invoiceID: "E", phone: "18095551004", template: "invoice", language: "es"),
        ])
        let directory = try scratchFolder("report").path
        var writer = try await DeliveryReportWriter(templatesDirectory: reportsRoot.appendingPathComponent("templates").path, lang: "en")
        writer.pageSpan = 2
        let run = try #require(try await store.run(named: "march"))
        let whole = try readCSV(try await writer.write(run: run, store: store, to: directory + "/all").messagesCSV)
        let own = try readCSV(try await writer.write(run: run, store: store, to: directory + "/own", landlord: "Próceres").messagesCSV)
        #expect(own == whole.filter { $0["landlord"] == "Próceres" })
        #expect(own.map { $0["message_id"]! } == ["m-4", "m-5", "m-6", "m-7", "m-again"])
        // The page's figures: the whole run's, of that landlord.
        let all = try await store.reportSummary(run: "march", landlord: nil, samples: 10)
        let theirs = try await store.reportSummary(run: "march", landlord: "Próceres", samples: 10)
        #expect(theirs.landlords == all.landlords.filter { $0.landlord == "Próceres" })
        #expect(theirs.charges == all.charges?.filter { $0.landlord == "Próceres" })
        #expect(theirs.charges?.map(\.messages) == [1], "H, read")
        #expect(theirs.states == [.failed: 1, .unknown: 1, .skipped: 1, .read: 1, .queued: 1])
        #expect(theirs.problems.map(\.count) == [1, 1])
        #expect(theirs.problems.flatMap { $0.samples.map(\.invoiceID) }.sorted() == ["E", "F"])
        #expect(
            try await store.reportRows(run: "march", landlord: "Caribe", after: nil, limit: 10).map(\.message.id) == [
                "m-0", "m-1", "m-2", "m-3",
            ])
        #expect(try await store.reportRows(run: "march", landlord: "Nobody", after: nil, limit: 10).isEmpty)
    }

    @Test("skip reasons and run statuses in the page's language; an unknown reason as kept")
    func skipReasonsTranslated() {
        #expect(skipReason("nothing due (amount 0.00 DOP)", lang: "es") == "nada que cobrar (importe 0.00 DOP)")
        #expect(skipReason("nothing due (totalAmount 0): nothing was sent", lang: "fr") == "rien à payer (montant 0)")
        #expect(skipReason("nothing due", lang: "pt") == "nada a cobrar")
        #expect(
            skipReason("already sent in run feb-2026 (delivered); --resend sends it again", lang: "es")
                == "ya enviada en la ejecución feb-2026 (entregado); --resend la envía de nuevo")
        #expect(skipReason("opted out: the tenant asked to stop receiving messages", lang: "pt").hasPrefix("descadastrado"))
        #expect(skipReason("opted out", lang: "en") == "opted out: the tenant asked to stop receiving messages")
        #expect(skipReason("something new", lang: "es") == "something new")
        #expect(DeliveryPage.statusWord(.done, lang: "es") == "terminada" && DeliveryPage.statusWord(.halted, lang: "fr") == "arrêté")
        // Details we wrote (Meta's per-user limit) are ours to translate, in local time; Meta's own are not.
        let utc = LocalClock(zone: TimeZone(identifier: "UTC")!)
        #expect(
            DeliveryPage.detail("Meta's per-user limit: retry not before 2026-12-03T05:18:53Z", lang: "es", clock: utc)
                == "Límite de Meta por inquilino: reintentar no antes de 2026-12-03 05:18")
        #expect(DeliveryPage.detail("Message failed to send because more than 24 hours have passed", lang: "es", clock: utc) == nil)
    }
}
