import Foundation
import Testing

@testable import Dispatcher

@Suite("CSV manifests")
struct CSVManifestReaderTests {
    @Test("a BOM, ';' and CRLF, as the property system exports them")
    func propertySystemExport() throws {
        let text =
            "\u{FEFF}invoice_id;name;whatsapp;grandTotal;currency;term\r\nA-1;María Pérez;+1 809 555 0101;12345.50;DOP;2026030100\r\n"
        let reader = CSVManifestReader(bytes: Array(text.utf8))
        let records = try readAll(reader)
        #expect(reader.delimiter == UInt8(ascii: ";"))
        #expect(records.count == 1)
        #expect(records[0].line == 2)
        #expect(records[0].fields["invoice_id"] == "A-1")
        #expect(records[0].fields["tenant_name"] == "María Pérez")
        #expect(records[0].fields["amount"] == "12345.50")
        #expect(records[0].fields["period"] == "2026030100")
        #expect(records[0].phones == ["+1 809 555 0101"])
    }

    @Test("header names are case-insensitive and every alias maps to its field")
    func aliases() throws {
        let text = "Invoice_ID,NAME,WhatsApp,Amount_Due,CURRENCY,Term,Reference\nA,B,+18095550101,1,DOP,2026-03,T-9\n"
        let records = try readAll(CSVManifestReader(bytes: Array(text.utf8)))
        #expect(records[0].fields["tenant_name"] == "B")
        #expect(records[0].fields["amount"] == "1")
        #expect(records[0].fields["period"] == "2026-03")
        #expect(records[0].fields["tenant_id"] == "T-9")
        #expect(records[0].phones == ["+18095550101"])
    }

    @Test("RFC 4180 quoting: delimiters, doubled quotes and line breaks inside quotes; lines counted from where a record starts")
    func quoting() throws {
        let text =
            "\(csvHeader),property\n"
            + "A,\"Pérez; Hermanos, SRL\",+18095550101,1,DOP,2026-03,\"Torre \"\"El Faro\"\"\nPiso 4\"\n"
            + "B,Ana,+18095550102,2,DOP,2026-03,\"\"\n"
        let records = try readAll(CSVManifestReader(bytes: Array(text.utf8)))
        #expect(records.count == 2)
        #expect(records[0].fields["tenant_name"] == "Pérez; Hermanos, SRL")
        #expect(records[0].fields["property"] == "Torre \"El Faro\"\nPiso 4")
        #expect(records[0].line == 2)
        #expect(records[1].line == 4)
        #expect(records[1].fields["property"] == "")
    }

    @Test("LF, CRLF and lone CR all end a record; blank lines are skipped")
    func lineEndings() throws {
        let text =
            "\(csvHeader)\r\nA,a,+18095550101,1,DOP,2026-03\n\nB,b,+18095550102,1,DOP,2026-03\rC,c,+18095550103,1,DOP,2026-03\r\n,,,,,\n"
        let records = try readAll(CSVManifestReader(bytes: Array(text.utf8)))
        #expect(records.map { $0.fields["invoice_id"] } == ["A", "B", "C"])
        #expect(records.map(\.line) == [2, 4, 5])
    }

    @Test("phone2, phone3… are extra numbers; unknown columns are kept and listed once as a warning")
    func extraColumns() throws {
        let text =
            "\(csvHeader),phone2,Phone3,unit_floor\nA,a,+18095550101,1,DOP,2026-03,+18095550102,,4\nB,b,+18095550103,1,DOP,2026-03,,,5\n"
        let reader = CSVManifestReader(bytes: Array(text.utf8))
        let records = try readAll(reader)
        #expect(records[0].phones == ["+18095550101", "+18095550102", ""])
        #expect(records[0].extras == ["unit_floor": "4"])
        #expect(reader.warnings == ["extra columns kept for templates: unit_floor"])
    }

    @Test("an unterminated quote is an error on the record where it starts, naming its field")
    func unterminatedQuote() throws {
        let text = "\(csvHeader)\nA,a,+18095550101,1,DOP,2026-03\nB,\"never closed,+18095550102,1,DOP,2026-03\nC,c,+1,1,DOP,2026-03\n"
        let (invoices, summary) = try importCSV(text)
        #expect(invoices.map(\.invoiceID) == ["A"])
        let issue = try #require(summary.issues.first { $0.field == "tenant_name" })
        #expect(issue.line == 3)
        #expect(issue.message.contains("unterminated quote"))
        #expect(!summary.isValid)
    }

    @Test("text after a closing quote, and more cells than the header, are errors of that record only")
    func malformedRecords() throws {
        let text =
            "\(csvHeader)\nA,\"a\"x,+18095550101,1,DOP,2026-03\nB,b,+18095550102,1,DOP,2026-03,extra\nC,c,+18095550103,1,DOP,2026-03\n"
        let (invoices, summary) = try importCSV(text)
        #expect(invoices.map(\.invoiceID) == ["C"])
        #expect(summary.issues.contains { $0.line == 2 && $0.field == "tenant_name" && $0.message.contains("after the closing quote") })
        #expect(summary.issues.contains { $0.line == 3 && $0.field == nil && $0.message.contains("7 cells but the header has 6") })
    }

    @Test("a missing required column is one clear error naming it")
    func missingColumn() throws {
        let (_, summary) = try importCSV("invoice_id,tenant_name,amount,currency,period\nA,a,1,DOP,2026-03\n")
        #expect(
            summary.issues == [
                ValidationIssue(
                    line: 1, invoiceID: nil, field: "phone",
                    message: "required column missing from the header: phone (found: 5 columns, delimiter ',')")
            ])
        #expect(summary.stoppedEarly)
    }

    @Test("an empty file and a header-only file")
    func emptyFiles() throws {
        let (_, empty) = try importCSV("")
        #expect(empty.issues.first?.message == "the file is empty")
        let (invoices, headerOnly) = try importCSV("\u{FEFF}\(csvHeader)\r\n")
        #expect(invoices.isEmpty)
        // A header row alone is an export that went wrong, not a month with nothing due.
        #expect(!headerOnly.isValid)
        #expect(headerOnly.records == 0)
        #expect(headerOnly.issues.map(\.message) == ["the manifest has no invoice: nothing to preview or send (was the export empty?)"])
    }

    @Test("invalid UTF-8 is an error naming the record and field, not a crash or a silent repair")
    func invalidUTF8() throws {
        var bytes = Array("\(csvHeader)\nA,".utf8)
        bytes += [0x4D, 0xE1, 0x72, 0xED, 0x61]  // "María" in Latin-1
        bytes += Array(",+18095550101,1,DOP,2026-03\nB,b,+18095550102,1,DOP,2026-03\n".utf8)
        var invoices: [Invoice] = []
        let summary = try ManifestImporter(options: .init()).importManifest(
            from: CSVManifestReader(bytes: bytes), format: .csv
        ) { invoices.append($0) }
        #expect(
            summary.issues == [
                ValidationIssue(line: 2, invoiceID: "A", field: "tenant_name", message: "is not valid UTF-8 (save the file as UTF-8)")
            ])
        #expect(invoices.map(\.invoiceID) == ["B"])
    }

    @Test("records cut by the reading window are read whole, however small the window", arguments: [64, 67, 100, 4096])
    func smallWindows(chunkSize: Int) throws {
        var text = "\u{FEFF}invoice_id;tenant_name;phone;amount;currency;period;property\r\n"
        for i in 1...200 {
            text +=
                "ID-\(i);\"Name \"\"\(i)\"\"\";+1809555\(String(format: "%04d", i));\(i).50;DOP;2026-03;\"Line one\nline two; with \"\"quotes\"\"\"\r\n"
        }
        let path = try temporaryFile("window.csv", text)
        let records = try readAll(CSVManifestReader(path: path, chunkSize: chunkSize))
        #expect(records.count == 200)
        #expect(records[199].fields["tenant_name"] == "Name \"200\"")
        #expect(records[199].fields["property"] == "Line one\nline two; with \"quotes\"")
        #expect(records.map(\.line) == (0..<200).map { 2 + $0 * 2 })
    }

    @Test("a file that does not exist is a clear error")
    func missingFile() throws {
        let (_, summary) = try { () throws -> ([Invoice], ImportSummary) in
            var invoices: [Invoice] = []
            let s = try ManifestImporter(options: .init()).importManifest(path: "/nonexistent/m.csv") { invoices.append($0) }
            return (invoices, s)
        }()
        #expect(summary.issues.first?.message.hasPrefix("cannot open the file") == true)
    }
}
