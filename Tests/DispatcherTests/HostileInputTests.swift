import Foundation
import Testing

@testable import Dispatcher

/// Input a careless export or an attacker could hand us: it must be refused by record and field,
/// never crash the process, never be wrapped or zeroed, and never be dropped without a word.
@Suite("Hostile and broken input")
struct HostileInputTests {
    // MARK: - Money

    @Test(
        "an amount too large for its currency is an error naming the record, never a crash",
        arguments: [
            ("999999999999999.9999", "CLF"),  // 4 decimals: 19 digits of minor units would overflow
            ("99999999999999.99", "DOP"),  // 16 digits in all
            ("1000000000000000", "JPY"),
            ("000000000000000000000000001.50", "DOP"),  // leading zeros are not digits: this one is fine
        ])
    func tooLarge(amount: String, currency: String) throws {
        let (invoices, summary) = try importCSV("\(csvHeader)\nA,a,+18095550101,\(amount),\(currency),2026-03\n")
        if amount.hasPrefix("0000") {
            #expect(summary.isValid)
            #expect(invoices.first?.amount.minorUnits == 150)
            return
        }
        #expect(invoices.isEmpty)
        #expect(summary.issues.count == 1)
        #expect(summary.issues.first?.field == "amount")
        #expect(summary.issues.first?.invoiceID == "A")
        #expect(summary.issues.first?.line == 2)
        #expect(summary.issues.first?.message.contains("too large") == true)
    }

    @Test("the largest amount each currency takes has exact thousandths")
    func largestAmounts() throws {
        let (invoices, summary) = try importCSV(
            """
            \(csvHeader)
            A,a,+18095550101,9999999999999.99,DOP,2026-03
            B,b,+18095550102,99999999999.9999,CLF,2026-03
            C,c,+18095550103,999999999999999,JPY,2026-03

            """)
        #expect(summary.isValid)
        #expect(invoices.map(\.amount.minorUnits) == [999_999_999_999_999, 999_999_999_999_999, 999_999_999_999_999])
        #expect(invoices.map(\.amount.amount1000) == [9_999_999_999_999_990, 99_999_999_999_999, 999_999_999_999_999_000])
    }

    @Test("totals: checked, never wrapped")
    func totals() {
        let dop = Currency(code: "DOP")!
        let big = Money(minorUnits: Money.maximumMinorUnits, currency: dop)
        var total = Money(minorUnits: 0, currency: dop)
        for _ in 0..<1000 { total = total.adding(big)! }
        #expect(total.minorUnits == Money.maximumMinorUnits * 1000)
        #expect(total.adding(Money(minorUnits: 1, currency: dop)) == nil)
        #expect(Money(minorUnits: .max, currency: dop).adding(Money(minorUnits: 1, currency: dop)) == nil)
    }

    @Test("a manifest whose total would pass 18 digits: the invoice that passes it is refused, by line")
    func manifestTotal() throws {
        var text = "\(csvHeader),due_date,document_url\n"
        for i in 0..<1001 {
            text +=
                "I\(i),Tenant,+1809\(String(format: "%07d", i)),9999999999999.99,DOP,2026-03,2026-03-10,https://docs.example.com/\(i).pdf\n"
        }
        let path = try temporaryFile("huge.csv", text)
        let renderer = try MessageRenderer(
            catalog: try TemplateCatalog(directory: templatesPath), templateName: "invoice", defaultLanguage: "es")
        let result = try Previewer(options: ValidationOptions(), renderer: renderer).run(path: path)
        #expect(result.errorCount == 1)
        #expect(result.errors.first?.invoiceID == "I1000")
        #expect(result.errors.first?.field == "amount")
        #expect(result.errors.first?.line == 1002)
        #expect(result.billed["DOP"]?.minorUnits == Money.maximumMinorUnits * 1000)
    }

    @Test("a number with 100 invoices or more is said before sending, with the time its invoices alone take; 99 is not")
    func crowdedNumbers() throws {
        var text = "\(csvHeader),due_date,document_url\n"
        // 130 invoices to one placeholder, 100 to a company's number, 99 to another, and 300 tenants of their own.
        let phones =
            Array(repeating: "+1 809 555 0000", count: 130) + Array(repeating: "+1 829 555 1234", count: 100)
            + Array(repeating: "+1 849 555 9999", count: 99) + (0..<300).map { "+1809\(String(format: "%07d", 1_000 + $0))" }
        for (i, phone) in phones.shuffled().enumerated() {
            text += "I\(i),Tenant,\(phone),100,DOP,2026-03,2026-03-10,https://docs.example.com/\(i).pdf\n"
        }
        let path = try temporaryFile("crowded.csv", text)
        let renderer = try MessageRenderer(
            catalog: try TemplateCatalog(directory: templatesPath), templateName: "invoice", defaultLanguage: "es")
        let result = try Previewer(options: ValidationOptions(), renderer: renderer).run(path: path)
        #expect(result.recipients == 303)
        #expect(
            result.crowded == [CrowdedNumber(phone: "18095550000", messages: 130), CrowdedNumber(phone: "18295551234", messages: 100)])
        // 130 × 6.25 s = 13.5 minutes, said as 14; 100 × 6.25 s = 10.4, said as 11.
        #expect(result.warnings.count == 2)
        #expect(result.warnings.first?.hasPrefix("130 invoices of this manifest go to one number (ending 0000)") == true)
        #expect(result.warnings.first?.contains("for 14 minutes") == true)
        #expect(result.warnings.last?.contains("100 invoices") == true && result.warnings.last?.contains("for 11 minutes") == true)
    }

    @Test(
        "reading runs ahead on its own thread: everything arrives in manifest order, and a caller that stops stops the reader",
        .timeLimit(.minutes(1)))
    func readAhead() throws {
        // More rows than the reader may keep waiting (8 batches of 256): it must block, and wake when stopped.
        var text = "\(csvHeader),due_date,document_url\n"
        for i in 0..<6000 {
            text +=
                "I\(i),Tenant,+1809\(String(format: "%07d", i)),\(i % 10 == 0 ? "0" : "100"),DOP,2026-03,2026-03-10,https://docs.example.com/\(i).pdf\n"
        }
        let path = try temporaryFile("ahead.csv", text)
        let renderer = try MessageRenderer(
            catalog: try TemplateCatalog(directory: templatesPath), templateName: "invoice", defaultLanguage: "es")
        var seen: [String] = []
        let result = try Previewer(options: ValidationOptions(), renderer: renderer).run(path: path) { invoice, _ in
            seen.append(invoice.invoiceID)
        } onSkipped: { invoice, _ in
            seen.append(invoice.invoiceID)  // nothing due: in its place among the others
        }
        #expect(seen == (0..<6000).map { "I\($0)" })
        #expect(result.messages == 5400 && result.skipped.count == 600)

        struct Enough: Error {}
        var handed = 0
        #expect(throws: Enough.self) {
            try Previewer(options: ValidationOptions(), renderer: renderer).run(path: path) { _, _ in
                handed += 1
                if handed == 1000 { throw Enough() }
            }
        }
        #expect(handed == 1000)
    }

    @Test(
        "rendering on the caller's thread (a billing run's check pass), or on whichever is free, finds what rendering on the reader's finds, in the same order"
    )
    func rendersOnCaller() throws {
        // Every seventh tenant's name has six spaces in a row: valid to import, refused when rendered (132018).
        var text = "\(csvHeader),due_date,document_url\n"
        for i in 0..<3000 {
            let name = i % 7 == 0 ? "Ana      Paula" : "Tenant \(i)"
            text +=
                "I\(i),\(name),+1809\(String(format: "%07d", i)),\(i % 10 == 0 ? "0" : "100"),DOP,2026-03,2026-03-10,https://docs.example.com/\(i).pdf\n"
        }
        let path = try temporaryFile("caller.csv", text)
        let renderer = try MessageRenderer(
            catalog: try TemplateCatalog(directory: templatesPath), templateName: "invoice", defaultLanguage: "es")
        func preview(_ rendering: Previewer.Rendering, slowCaller: Bool = false) throws -> (PreviewResult, [String]) {
            var previewer = Previewer(options: ValidationOptions(), renderer: renderer)
            previewer.rendering = rendering
            var bodies: [String] = []
            let result = try previewer.run(path: path) { _, messages in
                // A caller held up at its first invoice: the reader runs ahead and, once more than
                // half its queue waits, renders; the caller renders the first batches, queued before.
                // (2 s: CI, loaded, once gave the reader no turn in 0.3 s, and nothing was rendered
                // ahead. The reader's queue is bounded, so a longer hold cannot render it all.)
                if slowCaller && bodies.isEmpty { usleep(2_000_000) }
                bodies += messages.map { "\($0.id) \($0.language) \($0.request.template.components.count) \($0.body)" }
            }
            return (result, bodies)
        }
        let (ahead, aheadBodies) = try preview(.reader)
        #expect(ahead.errorCount > 300 && ahead.errors.allSatisfy { $0.field == "tenant_name" })
        #expect(ahead.renderedAhead == 2_700)  // every invoice with something due
        let caller = try preview(.caller), balanced = try preview(.balanced, slowCaller: true)
        #expect(caller.0.renderedAhead == 0)
        #expect(balanced.0.renderedAhead > 0 && balanced.0.renderedAhead < 2_700, "\(balanced.0.renderedAhead) rendered ahead")
        for (here, hereBodies) in [caller, try preview(.balanced), balanced] {
            #expect(here.errorCount == ahead.errorCount)
            #expect(here.invalidInvoices == ahead.invalidInvoices)
            #expect(here.errors.map(\.line) == ahead.errors.map(\.line))
            #expect(here.messages == ahead.messages && here.recipients == ahead.recipients)
            #expect(here.billed["DOP"]?.minorUnits == ahead.billed["DOP"]?.minorUnits)
            #expect(hereBodies.count == ahead.messages && hereBodies == aheadBodies)
        }
    }

    @Test("amount_1000 past a 32-bit integer goes as the text the tenant reads; below it, as Meta's currency")
    func amount1000() throws {
        let catalog = try TemplateCatalog(directory: templatesPath)
        let renderer = try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es")
        func parameter(_ minor: Int64) throws -> TemplateMessageRequest.Parameter {
            let invoice = Invoice(
                line: 2, invoiceID: "I", tenantName: "Ana", phones: ["18095550101"],
                amount: Money(minorUnits: minor, currency: Currency(code: "DOP")!), period: BillingPeriod(year: 2026, month: 3),
                locale: "es-DO", documentURL: "https://docs.example.com/i.pdf")
            let message = try renderer.render(invoice).get()[0]
            return try #require(message.request.template.components.first { $0.type == "body" }).parameters[2]
        }
        #expect(try parameter(214_748_364) == .currency(fallback: "RD$2,147,483.64", code: "DOP", amount1000: 2_147_483_640))
        #expect(try parameter(214_748_365) == .text("RD$2,147,483.65"))
        #expect(try parameter(999_999_999_999_999) == .text("RD$9,999,999,999,999.99"))
    }

    // MARK: - Control characters

    @Test("control characters are refused per field; a CRLF inside a quoted name is a line break Meta refuses")
    func controlCharacters() throws {
        let (_, summary) = try importCSV(
            "\(csvHeader),landlord\nA,Ana\u{1B}[31m,+18095550101,1,DOP,2026-03,Caribe\nB,Bo,+18095550102,1,DOP,2026-03,Ca\u{0}ribe\nC,Cy,+18095550103,1,DOP,2026-03,Ca\u{85}ribe\n"
        )
        #expect(summary.issues.map(\.field) == ["tenant_name", "landlord", "landlord"])
        #expect(summary.issues.map(\.invoiceID) == ["A", "B", "C"])
        #expect(summary.issues[0].message.contains("U+001B"))
        #expect(summary.issues[1].message.contains("U+0000"))
        #expect(summary.issues[2].message.contains("U+0085"))
        // A right-to-left override makes "Ana" read otherwise in a report: refused; the marks
        // right-to-left names need are not.
        let (_, bidi) = try importCSV(
            "\(csvHeader)\nA,Ana\u{202E}fdp.exe,+18095550101,1,DOP,2026-03\nB,\u{2067}Bo\u{2069},+18095550102,1,DOP,2026-03\nC,\u{200F}سارة,+18095550103,1,DOP,2026-03\n"
        )
        #expect(bidi.issues.map(\.invoiceID) == ["A", "B"], "\(bidi.issues)")
        #expect(bidi.issues.first?.message.contains("bidirectional control U+202E") == true, "\(bidi.issues)")
        // A link with what no URI may hold (it would break out of the report's attributes).
        let (_, link) = try importCSV(
            "\(csvHeader),document_url\nA,Ana,+18095550101,1,DOP,2026-03,https://docs.example.com/a.pdf\"><script>x</script>\n")
        #expect(link.issues.map(\.field) == ["document_url"], "\(link.issues)")

        // "\r\n" is one Character in Swift: it must still be seen as a line break.
        let catalog = try TemplateCatalog(directory: templatesPath)
        let renderer = try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es")
        let (invoices, imported) = try importCSV(
            "\(csvHeader),document_url\r\nA,\"Ana\r\nMaría\",+18095550101,1,DOP,2026-03,https://docs.example.com/a.pdf\r\n")
        #expect(imported.isValid)
        guard case .failure(let problems) = renderer.render(try #require(invoices.first)) else {
            Issue.record("a name with CRLF was rendered")
            return
        }
        #expect(problems.issues.map(\.field) == ["tenant_name"])
        #expect(problems.issues[0].message.contains("line break"))
        #expect(problems.issues[0].message.contains("132018"))
    }

    // MARK: - Empty manifests

    @Test(
        "a manifest with no invoice is an error, not a month with nothing due",
        arguments: [
            ("header.csv", "\(csvHeader)\n"),
            ("empty-root.xml", "<?xml version=\"1.0\"?><invoices currency=\"DOP\"></invoices>"),
        ])
    func empty(name: String, text: String) throws {
        let path = try temporaryFile(name, text)
        let summary = try ManifestImporter(options: .init()).importManifest(path: path) { _ in }
        #expect(!summary.isValid)
        #expect(summary.issues.map(\.message) == ["the manifest has no invoice: nothing to preview or send (was the export empty?)"])
    }

    // MARK: - XML

    /// An XML manifest of `count` invoices, with `bad` bytes in the tenant name of invoice `at`.
    func xmlBytes(count: Int, bad: [UInt8], at: Int, encoding: String = "UTF-8") -> [UInt8] {
        var bytes = Array("<?xml version=\"1.0\" encoding=\"\(encoding)\"?>\n<invoices currency=\"DOP\">\n".utf8)
        for i in 1...count {
            bytes += Array("<invoice><invoice_id>I\(i)</invoice_id><tenant_name>T".utf8)
            if i == at { bytes += bad }
            bytes += Array(
                "</tenant_name><phone>+1809555\(String(format: "%04d", i))</phone><amount>10</amount><period>2026-03</period></invoice>\n"
                    .utf8)
        }
        return bytes + Array("</invoices>\n".utf8)
    }

    @Test("a byte that is not UTF-8 after invoice 2 of 1,999 stops the import with its line, not silently")
    func badByteInXML() throws {
        let path = try temporaryFile("bad.xml", xmlBytes(count: 1999, bad: [0x92], at: 3))  // windows-1252's right quote
        var invoices = 0
        let summary = try ManifestImporter(options: .init()).importManifest(path: path) { _ in invoices += 1 }
        #expect(!summary.isValid)
        #expect(summary.stoppedEarly)
        let issue = try #require(summary.issues.last)
        #expect(issue.line == 5)
        // One line, in words: libxml2's "Input is not proper UTF-8, indicate encoding !" came with
        // a line break and its byte dump.
        #expect(issue.message.contains("the file is not UTF-8 (bytes 0x92"), "\(issue.message)")
        #expect(!issue.message.contains("\n"), "\(issue.message)")
        #expect(invoices <= 2)
    }

    @Test("an unpaired UTF-16 surrogate stops the import with an error")
    func badUTF16() throws {
        var text = xmlBytes(count: 50, bad: Array("X".utf8), at: 3, encoding: "UTF-16")
        // Re-encode as UTF-16LE with a BOM, then plant a lone high surrogate in place of "X".
        var utf16: [UInt8] = [0xFF, 0xFE]
        for unit in String(decoding: text, as: UTF8.self).utf16 {
            if unit == 0x58 { utf16 += [0x00, 0xD8]; continue }  // "X"
            utf16 += [UInt8(unit & 0xFF), UInt8(unit >> 8)]
        }
        text = utf16
        let summary = try ManifestImporter(options: .init()).importManifest(path: try temporaryFile("bad16.xml", text)) { _ in }
        #expect(!summary.isValid)
        #expect(summary.stoppedEarly)
    }

    @Test("encodings: UTF-8, UTF-16 and ISO-8859-1 are read; windows-1252 is refused before any record")
    func encodings() throws {
        let latin1 = xmlBytes(count: 3, bad: [0xE9], at: 2, encoding: "ISO-8859-1")  // é
        var names: [String] = []
        let ok = try ManifestImporter(options: .init()).importManifest(path: try temporaryFile("latin1.xml", latin1)) {
            names.append($0.tenantName)
        }
        #expect(ok.isValid)
        #expect(names == ["T", "Té", "T"])

        var count = 0
        let refused = try ManifestImporter(options: .init()).importManifest(
            path: try temporaryFile("cp1252.xml", xmlBytes(count: 3, bad: [0x92], at: 2, encoding: "windows-1252"))
        ) { _ in count += 1 }
        #expect(!refused.isValid)
        #expect(count == 0)
        #expect(refused.issues.last?.message.contains("'windows-1252' is not accepted") == true)
        // On line 1, where the declaration is (it was the root's line, 2).
        #expect(refused.issues.last?.line == 1)
        // A character reference to a character XML does not allow, in words.
        let reference = try ManifestImporter(options: .init()).importManifest(
            path: try temporaryFile("charref.xml", xmlBytes(count: 3, bad: Array("&#1;".utf8), at: 2))
        ) { _ in }
        #expect(!reference.isValid)
        #expect(
            reference.issues.last?.message.contains("a character reference (&#…;) names a character XML does not allow (1)") == true,
            "\(reference.issues)")
    }

    // MARK: - Settings

    @Test("a WHATSAPP_API_BASE_URL that cannot work is named when the command starts")
    func baseURL() {
        #expect(Settings(environment: [:]).apiBaseURLProblem == nil)
        #expect(Settings(environment: ["WHATSAPP_API_BASE_URL": "http://127.0.0.1:8080/"]).apiBaseURLProblem == nil)
        for bad in ["graph.facebook.com", "ftp://graph.facebook.com", "https://", "https://graph.facebook.com/v23.0", "https://x?y=1"] {
            #expect(Settings(environment: ["WHATSAPP_API_BASE_URL": bad]).apiBaseURLProblem?.contains("is not usable") == true, "\(bad)")
        }
    }
}
