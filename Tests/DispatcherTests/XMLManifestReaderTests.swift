import Foundation
import Testing

@testable import Dispatcher

@Suite("XML manifests")
struct XMLManifestReaderTests {
    let good = """
        <?xml version="1.0" encoding="UTF-8"?>
        <invoices currency="DOP" locale="es-DO" landlord="Inmobiliaria Caribe">
          <invoice>
            <invoice_id>INV-1</invoice_id>
            <tenant_name>María Pérez &amp; Hijos</tenant_name>
            <phone>+1 809 555 0101</phone>
            <phone>+1 829 555 0102</phone>
            <amount>12345.50</amount>
            <period>2026-03</period>
            <property><![CDATA[Torre <Norte>]]></property>
          </invoice>
          <invoice>
            <invoice_id>INV-2</invoice_id>
            <tenant_name>John Smith</tenant_name>
            <phone>+1 809 555 0103</phone>
            <amount>100</amount>
            <currency>USD</currency>
            <locale>en</locale>
            <landlord>Otro</landlord>
            <period>202603</period>
            <parking>B2</parking>
          </invoice>
        </invoices>
        """

    @Test("root attributes are defaults; repeated <phone>; entities, CDATA and line numbers")
    func readsInvoices() throws {
        let (invoices, summary) = try importXML(good)
        #expect(summary.isValid)
        #expect(invoices.count == 2)
        #expect(invoices[0].line == 3)
        #expect(invoices[0].tenantName == "María Pérez & Hijos")
        #expect(invoices[0].phones == ["18095550101", "18295550102"])
        #expect(invoices[0].amount == Money(minorUnits: 1_234_550, currency: Currency(code: "DOP")!))
        #expect(invoices[0].landlord == "Inmobiliaria Caribe")
        #expect(invoices[0].locale == "es-DO")
        #expect(invoices[0].property == "Torre <Norte>")
        #expect(invoices[1].line == 12)
        #expect(invoices[1].amount.currency.code == "USD")
        #expect(invoices[1].landlord == "Otro")
        #expect(invoices[1].locale == "en")
        #expect(invoices[1].extras == ["parking": "B2"])
        #expect(summary.warnings == ["extra elements kept for templates: parking"])
    }

    @Test("element names are matched record by record, whatever order, case or length they come in")
    func namesPerRecord() throws {
        // `phone` and `email` have the same length: swapped in place, each must still be itself.
        let (invoices, summary) = try importXML(
            """
            <invoices currency="DOP" locale="es-DO">
              <invoice><invoice_id>A</invoice_id><tenant_name>Ana</tenant_name><phone>+18095550101</phone><email>a@example.com</email><amount>1</amount><period>2026-03</period></invoice>
              <invoice><invoice_id>B</invoice_id><tenant_name>Beto</tenant_name><email>b@example.com</email><phone>+18095550102</phone><amount>2</amount><period>2026-03</period></invoice>
              <invoice><invoice_id>C</invoice_id><tenant_name>Ceci</tenant_name><PHONE>+18095550103</PHONE><amount>3</amount><period>2026-03</period><notes>n</notes></invoice>
              <invoice><invoice_id>D</invoice_id><tenant_name>Dani</tenant_name><phone>+18095550104</phone><amount>4</amount><amount>5</amount><period>2026-03</period></invoice>
              <invoice><invoice_id>E</invoice_id><tenant_name>Eva</tenant_name><phone>+18095550105</phone><amount>6</amount><period>2026-03</period></invoice>
            </invoices>
            """)
        #expect(invoices.map(\.invoiceID) == ["A", "B", "C", "E"])
        #expect(invoices.map(\.phones) == [["18095550101"], ["18095550102"], ["18095550103"], ["18095550105"]])
        #expect(invoices.map(\.email) == ["a@example.com", "b@example.com", nil, nil])
        #expect(invoices[2].extras == ["notes": "n"])
        #expect(invoices[3].extras.isEmpty)
        #expect(summary.issues.count == 1)
        #expect(summary.issues.first?.invoiceID == "D")
        #expect(summary.issues.first?.message.contains("<amount> appears twice in one invoice") == true)
    }

    @Test("read in tiny chunks gives the same invoices", arguments: [1, 7, 64])
    func chunked(chunkSize: Int) throws {
        var invoices: [Invoice] = []
        _ = try ManifestImporter(options: .init()).importManifest(
            from: XMLManifestReader(bytes: Array(good.utf8), chunkSize: chunkSize), format: .xml
        ) { invoices.append($0) }
        #expect(invoices.map(\.invoiceID) == ["INV-1", "INV-2"])
        #expect(invoices[0].property == "Torre <Norte>")
    }

    @Test("a billion-laughs DTD is refused before any entity is expanded")
    func billionLaughs() throws {
        let xml = """
            <?xml version="1.0"?>
            <!DOCTYPE invoices [
              <!ENTITY lol "lol">
              <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
              <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
            ]>
            <invoices><invoice><invoice_id>A</invoice_id><tenant_name>&lol3;</tenant_name></invoice></invoices>
            """
        let (invoices, summary) = try importXML(xml)
        #expect(invoices.isEmpty)
        #expect(summary.records == 0)
        #expect(summary.issues.count == 1)
        #expect(summary.issues[0].message.contains("DOCTYPE (DTD) is not allowed"))
        #expect(summary.issues[0].line == 2)
    }

    @Test("an external entity (XXE) is refused and the file it names is never read")
    func externalEntity() throws {
        let secret = try temporaryFile("secret.txt", "TOP-SECRET")
        let xml = """
            <?xml version="1.0"?>
            <!DOCTYPE invoices [<!ENTITY xxe SYSTEM "file://\(secret)">]>
            <invoices><invoice><invoice_id>A</invoice_id><tenant_name>&xxe;</tenant_name></invoice></invoices>
            """
        var names: [String] = []
        let summary = try ManifestImporter(options: .init()).importManifest(
            from: XMLManifestReader(bytes: Array(xml.utf8)), format: .xml
        ) { names.append($0.tenantName) }
        #expect(names.isEmpty)
        #expect(summary.issues.first?.message.contains("not allowed") == true)
        #expect(!summary.issues.contains { $0.message.contains("TOP-SECRET") })
    }

    @Test("an undeclared entity is refused with its name")
    func undeclaredEntity() throws {
        let (_, summary) = try importXML("<invoices><invoice><invoice_id>A&nbsp;</invoice_id></invoice></invoices>")
        #expect(summary.issues.first?.message.contains("nbsp") == true)
    }

    @Test("a truncated file reports the line where it broke, after the invoices before it")
    func truncated() throws {
        let cut = String(good.prefix(good.range(of: "<invoice_id>INV-2")!.upperBound.utf16Offset(in: good)))
        let (invoices, summary) = try importXML(cut)
        #expect(invoices.map(\.invoiceID) == ["INV-1"])
        #expect(summary.stoppedEarly)
        let issue = try #require(summary.issues.last)
        #expect(issue.message.hasPrefix("not a well-formed XML manifest"))
        #expect(issue.message.contains("cut short: export it again"), "\(issue.message)")
        #expect(issue.line != nil)
        // Cut at a line's end, between invoices: libxml2 speaks of "extra content"; we say both.
        let sample = try String(contentsOf: URL(fileURLWithPath: samplePath("march-2026.xml")), encoding: .utf8)
        let lines = sample.split(separator: "\n", omittingEmptySubsequences: false)
        let (_, cutAtLine) = try importXML(lines.prefix(30).joined(separator: "\n"))
        #expect(cutAtLine.issues.last?.message.contains("cut short") == true, "\(cutAtLine.issues)")
    }

    @Test("invalid UTF-8 is an error, not a crash")
    func invalidUTF8() throws {
        var bytes = Array("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<invoices><invoice><tenant_name>Mar".utf8)
        bytes += [0xED, 0x61]
        bytes += Array("</tenant_name></invoice></invoices>".utf8)
        var count = 0
        let summary = try ManifestImporter(options: .init()).importManifest(
            from: XMLManifestReader(bytes: bytes), format: .xml
        ) { _ in count += 1 }
        #expect(count == 0)
        #expect(summary.issues.last?.message.contains("UTF-8") == true)
        #expect(summary.issues.last?.line == 2)
    }

    @Test("a wrong root or a stray element is named")
    func structure() throws {
        let (_, wrongRoot) = try importXML("<bills><invoice/></bills>")
        #expect(wrongRoot.issues.first?.message == "the root element is <bills>; a manifest's root is <invoices>")
        let (_, stray) = try importXML("<invoices currency=\"DOP\">\n<bill><invoice_id>A</invoice_id></bill></invoices>")
        #expect(stray.issues.contains { $0.line == 2 && $0.message.contains("unexpected element <bill>") })
    }

    @Test("an element inside a field (mixed content, an invoice inside another) is refused at its line, never run together or lost")
    func elementInsideField() throws {
        let valid =
            "<invoice_id>A</invoice_id><tenant_name>Ana</tenant_name><phone>+18095550101</phone><currency>DOP</currency><period>2026-03</period>"
        let (_, mixed) = try importXML("<invoices>\n<invoice>\(valid)\n<amount>1<x/>00</amount></invoice></invoices>")
        #expect(!mixed.isValid)
        #expect(mixed.stoppedEarly)
        #expect(mixed.issues.contains { $0.line == 3 && $0.message.contains("element <x> inside the field <amount>") }, "\(mixed.issues)")
        let (invoices, nested) = try importXML(
            "<invoices>\n<invoice>\(valid)<amount>1</amount>\n<invoice><invoice_id>B</invoice_id></invoice></invoice></invoices>")
        #expect(!nested.isValid)
        #expect(invoices.isEmpty, "an invoice read with another inside it")
        #expect(
            nested.issues.contains { $0.line == 3 && $0.message.contains("element <invoice_id> inside the field <invoice>") },
            "\(nested.issues)")
    }

    @Test("the broken sample is refused")
    func brokenSample() throws {
        var count = 0
        let summary = try ManifestImporter(options: .init()).importManifest(path: samplePath("broken.xml")) { _ in count += 1 }
        #expect(count == 0)
        #expect(!summary.isValid)
    }
}
