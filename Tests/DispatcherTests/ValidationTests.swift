import Testing

@testable import Dispatcher

@Suite("Record validation")
struct ValidationTests {
    func issues(_ row: String, options: ValidationOptions = .init()) throws -> [ValidationIssue] {
        try importCSV("\(csvHeader),due_date,locale,document_url,email\n\(row)\n", options: options).summary.issues
    }

    @Test("a valid row becomes an invoice with money in minor units")
    func valid() throws {
        let (invoices, summary) = try importCSV(
            "\(csvHeader),due_date,landlord\nA, Ana ,+1 809 555 0101,12345.5,dop,2026030100,2026-03-10,Caribe\n")
        #expect(summary.isValid)
        let invoice = try #require(invoices.first)
        #expect(invoice.tenantName == "Ana")
        #expect(invoice.amount.minorUnits == 1_234_550)
        #expect(invoice.amount.currency.code == "DOP")
        #expect(invoice.amount.amount1000 == 12_345_500)
        #expect(invoice.period == BillingPeriod(year: 2026, month: 3, raw: "2026030100"))
        #expect(invoice.dueDate == CalendarDate(year: 2026, month: 3, day: 10))
        #expect(invoice.landlord == "Caribe")
    }

    @Test(
        "amount",
        arguments: [
            ("12,345.50", "use '.' for decimals and no thousands separator"),
            ("abc", "is not a number"),
            ("12.", "is not a number"),
            ("12.345", "has 3 decimals; this currency has 2"),
            ("1e5", "is not a number"),
            ("9999999999999999", "is too large"),
        ])
    func badAmount(amount: String, expected: String) throws {
        let found = try issues("A,a,+18095550101,\"\(amount)\",DOP,2026-03,,,,")
        #expect(found.count == 1)
        #expect(found[0].field == "amount")
        #expect(found[0].invoiceID == "A")
        #expect(found[0].line == 2)
        #expect(found[0].message.contains(expected))
    }

    @Test("decimals a currency has none of, in words: one decimal, and none")
    func decimalsOfYen() throws {
        let found = try issues("A,a,+18095550101,\"12.3\",JPY,2026-03,,,,")
        #expect(found.map(\.message) == ["'12.3' has 1 decimal; this currency has none"], "\(found)")
        // Sixteen digits: as long as the DOP one's, the reason says the limit.
        let large = try issues("A,a,+18095550101,\"1234567890123456\",JPY,2026-03,,,,")
        #expect(
            large.map(\.message) == ["'1234567890123456' is too large: at most 15 digits before the point in this currency"], "\(large)")
    }

    @Test("zeros beyond the currency's decimals are fine; JPY has none; BHD has three")
    func decimals() throws {
        let (invoices, summary) = try importCSV(
            "\(csvHeader)\nA,a,+18095550101,9800.000,DOP,2026-03\nB,b,+18095550102,1500,JPY,2026-03\nC,c,+18095550103,1.234,BHD,2026-03\n")
        #expect(summary.isValid)
        #expect(invoices.map(\.amount.minorUnits) == [980_000, 1500, 1234])
        #expect(invoices.map(\.amount.amount1000) == [9_800_000, 1_500_000, 1234])
    }

    @Test("amount <= 0 is skipped with its reason, not an error")
    func nothingDue() throws {
        let (invoices, summary) = try importCSV("\(csvHeader)\nA,a,+18095550101,0.00,DOP,2026-03\nB,b,+18095550102,-50,DOP,2026-03\n")
        #expect(invoices.isEmpty)
        #expect(summary.isValid)
        #expect(summary.skipped.map(\.reason) == ["nothing due (amount 0.00 DOP)", "nothing due (amount -50.00 DOP)"])
        #expect(summary.skipped.map(\.line) == [2, 3])
    }

    @Test("currency must be ISO 4217, or come from a default")
    func currency() throws {
        #expect(
            try issues("A,a,+18095550101,1,RDS,2026-03,,,,").map(\.message) == [
                "'RDS' is not an ISO 4217 currency code (e.g. DOP, USD, EUR)"
            ])
        #expect(try issues("A,a,+18095550101,1,,2026-03,,,,").map(\.message) == ["is missing and no default currency is set"])
        #expect(try issues("A,a,+18095550101,1,,2026-03,,,,", options: .init(defaultCurrency: "EUR")).isEmpty)
    }

    @Test("period forms", arguments: ["2026-03", "202603", "2026030100", " 2026-12 "])
    func goodPeriod(period: String) throws {
        #expect(try issues("A,a,+18095550101,1,DOP,\(period),,,,").isEmpty)
    }

    @Test("bad periods", arguments: ["March 2026", "2026-13", "2026-3", "2026023100", "2026030124", "26-03"])
    func badPeriod(period: String) throws {
        let found = try issues("A,a,+18095550101,1,DOP,\(period),,,,")
        #expect(found.map(\.field) == ["period"])
    }

    @Test("due dates must exist in the calendar")
    func dueDate() throws {
        #expect(try issues("A,a,+18095550101,1,DOP,2026-03,2028-02-29,,,").isEmpty)
        #expect(try issues("A,a,+18095550101,1,DOP,2026-03,2026-02-29,,,").map(\.field) == ["due_date"])
        #expect(try issues("A,a,+18095550101,1,DOP,2026-03,10/03/2026,,,").map(\.field) == ["due_date"])
    }

    @Test("every problem of a record is reported, and every record is checked")
    func allProblems() throws {
        let text = "\(csvHeader)\n,,,abc,XXX,soon\nB,b,+18095550102,1,DOP,2026-03\nC,,+1,,DOP,2026-03\n"
        let (invoices, summary) = try importCSV(text)
        #expect(invoices.map(\.invoiceID) == ["B"])
        #expect(
            summary.issues.filter { $0.line == 2 }.compactMap(\.field) == [
                "invoice_id", "tenant_name", "phone", "currency", "amount", "period",
            ])
        #expect(summary.issues.filter { $0.line == 4 }.compactMap(\.field) == ["tenant_name", "phone", "amount"])
        #expect(summary.invalidRecords == 2)
    }

    @Test("a duplicate invoice_id names the line that used it first")
    func duplicateID() throws {
        let (invoices, summary) = try importCSV(
            "\(csvHeader)\nA,a,+18095550101,1,DOP,2026-03\nB,b,+18095550102,1,DOP,2026-03\nA,c,+18095550103,1,DOP,2026-03\n")
        #expect(invoices.map(\.tenantName) == ["a", "b"])
        #expect(
            summary.issues == [
                ValidationIssue(
                    line: 4, invoiceID: "A", field: "invoice_id", message: "duplicate invoice_id: already used by the record on line 2")
            ])
    }

    @Test("locale, document_url and email")
    func optionalFields() throws {
        let (invoices, _) = try importCSV("\(csvHeader),locale\nA,a,+18095550101,1,DOP,2026-03,pt_br\n")
        #expect(invoices[0].locale == "pt-BR")
        #expect(try issues("A,a,+18095550101,1,DOP,2026-03,,spanish!,,").map(\.field) == ["locale"])
        #expect(try issues("A,a,+18095550101,1,DOP,2026-03,,,http://x.example.com/a.pdf,").map(\.field) == ["document_url"])
        #expect(try issues("A,a,+18095550101,1,DOP,2026-03,,,https://x.example.com/a.pdf,ana@example").map(\.field) == ["email"])
    }
}

@Suite("Phone numbers")
struct PhoneNumberTests {
    @Test(
        "normalised to E.164 digits",
        arguments: [
            ("+1 809 555 0101", nil, "18095550101"),
            ("+1 (829) 555-0102", nil, "18295550102"),
            ("001-849-555-0103", nil, "18495550103"),
            ("+1.809.555.0104", nil, "18095550104"),
            ("809 555 0105", "1", "18095550105"),
            ("1-809-555-0106", "1", "18095550106"),
            ("06 12 34 56 78", "33", "33612345678"),
            ("0034 612 345 678", "1", "34612345678"),
            ("+34\u{A0}612\u{A0}345\u{A0}678", nil, "34612345678"),
        ] as [(String, String?, String)])
    func normalises(input: String, country: String?, expected: String) {
        #expect(PhoneNormalizer(defaultCountryCode: country).normalize(input) == .success(expected))
    }

    @Test(
        "refused, with a reason a person can act on",
        arguments: [
            ("809-555", nil, "has no country code"),
            ("809-555", "1", "too short"),
            ("+1 809 555 ABCD", nil, "contains 'A'"),
            ("+1 809 555 01011", nil, "numbers with country code 1 have 11"),
            ("+12345678901234567", nil, "too long"),
            ("+0 809 555 0101", nil, "starting with 0"),
            ("+1 809 +555 0101", nil, "contains '+'"),
            ("---", nil, "has no digits"),
        ] as [(String, String?, String)])
    func refuses(input: String, country: String?, expected: String) throws {
        guard case .failure(let error) = PhoneNormalizer(defaultCountryCode: country).normalize(input) else {
            Issue.record("\(input) was accepted")
            return
        }
        #expect(error.message.contains(expected))
    }

    @Test("the same number written twice in one invoice collapses to one message")
    func duplicatesCollapse() throws {
        let (invoices, summary) = try importCSV(
            "\(csvHeader),phone2,phone3\nA,a,+1.809.555.0104,1,DOP,2026-03,+1 (809) 555-0104,+18295550105\n")
        #expect(summary.isValid)
        #expect(invoices[0].phones == ["18095550104", "18295550105"])
    }

    @Test("a bad second number names its column")
    func namesColumn() throws {
        let (_, summary) = try importCSV("\(csvHeader),phone2\nA,a,+18095550101,1,DOP,2026-03,12\n")
        #expect(summary.issues.map(\.field) == ["phone2"])
    }
}

@Suite("Building blocks")
struct BuildingBlockTests {
    func valid(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBufferPointer(isValidUTF8) }

    @Test("UTF-8 validation agrees with the standard library on good and bad sequences")
    func utf8() {
        #expect(valid(Array("María Pérez · 日本 · 🏠".utf8)))
        for bad: [UInt8] in [[0xE1], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF0, 0x9F, 0x98], [0x80], [0xFF]] {
            #expect(!valid(bad), "\(bad)")
            #expect(String(validating: bad, as: UTF8.self) == nil)
        }
    }

    @Test("a duplicate is found among 200,000 ids, across every growth of the table")
    func seenIDs() {
        var seen = SeenIDs(capacity: 16)
        for i in 0..<200_000 {
            var id = "INV-\(i)"
            let earlier = id.withUTF8 { seen.insert($0, line: i + 2) }
            #expect(earlier == nil)
        }
        var again = "INV-123456"
        #expect(again.withUTF8 { seen.insert($0, line: 999_999) } == 123_458)
    }
}
