import Dispatcher
import Foundation
import StoreTesting
import Testing

@testable import Reports

@Suite("CSV writer")
struct CSVWriterTests {
    func write(_ dialect: CSVWriter.Dialect = .standard, _ rows: [[CSVWriter.Cell]]) throws -> (path: String, bytes: [UInt8]) {
        let folder = try scratchFolder("csvwriter")
        let path = folder.appendingPathComponent("out.csv").path
        let writer = try CSVWriter(path: path, dialect: dialect)
        for row in rows { try writer.row(row) }
        try writer.finish()
        return (path, Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    @Test("quotes, commas, line breaks and non-ASCII names survive a round trip through the manifest reader")
    func roundTrip() throws {
        let nasty = ["invoice_id", "tenant_name", "phone", "amount", "period", "currency"]
        let values = ["A-1", "Pérez, \"El Jefe\"\nSegunda línea", "+18095550101", "12.50", "2026-03", "DOP"]
        // The phone is written as our own formatted value (.plain): a leading + would otherwise be defused.
        let cells: [CSVWriter.Cell] = values.enumerated().map { $0.offset == 2 ? .plain($0.element) : .text($0.element) }
        let (path, _) = try write(.standard, [nasty.map { .plain($0) }, cells])
        var names: [String] = []
        _ = try ManifestImporter(options: .init()).importManifest(path: path) { names.append($0.tenantName) }
        #expect(names == ["Pérez, \"El Jefe\"\nSegunda línea"])
    }

    @Test(
        "a cell is quoted exactly when it holds a quote, the delimiter or a line break, wherever it is and however long the cell",
        arguments: [CSVWriter.Dialect.standard, .excel])
    func quotingAnywhere(dialect: CSVWriter.Dialect) {
        let delimiter: Character = dialect == .excel ? ";" : ","
        // The rule written plainly, character by character.
        func expected(_ cell: String) -> String {
            // By its first scalar: "\r\n" is one Character, and a cell starting with it is defused.
            let risky = cell.unicodeScalars.first.map { "=+-@\t\r".unicodeScalars.contains($0) } ?? false
            let special = cell.unicodeScalars.contains { $0 == "\"" || $0 == "\n" || $0 == "\r" || Character($0) == delimiter }
            guard risky || special else { return cell }
            return "\"" + (risky ? "'" : "") + cell.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        var generator = SystemRandomNumberGenerator()
        let plain = Array("abcXYZ 019ñé€.")
        let specials: [Character] = ["\"", ",", ";", "\n", "\r"]
        for _ in 0..<2_000 {
            // Up to 40 characters (the byte scan's eight-byte steps and the tail after them), with
            // at most two specials at random places.
            var cell = String((0..<Int.random(in: 0...40, using: &generator)).map { _ in plain.randomElement(using: &generator)! })
            for _ in 0..<Int.random(in: 0...2, using: &generator) where !cell.isEmpty {
                let at = cell.index(cell.startIndex, offsetBy: Int.random(in: 0..<cell.count, using: &generator))
                cell.insert(specials.randomElement(using: &generator)!, at: at)
            }
            var bytes: [UInt8] = []
            CSVWriter.append(cell, guardFormula: true, delimiter: UInt8(ascii: dialect == .excel ? ";" : ","), to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == expected(cell), "\(Array(cell.utf8))")
        }
    }

    @Test("times and numbers written as bytes read the same as the page's own formatting")
    func timesAndNumbers() throws {
        let folder = try scratchFolder("csvwriter")
        let path = folder.appendingPathComponent("out.csv").path
        let writer = try CSVWriter(path: path)
        let times: [Double?] = [nil, 0, 951_782_400 /* 2000-02-29 */, 1_772_000_000.75, 4_102_444_799, -86_401]
        try writer.row { line in
            for t in times { line.time(t) }
            for n in [nil, 0, 7, 131_026, -42] as [Int?] { line.int(n) }
            line.decimal(1_234_550, digits: 2)
            line.decimal(-5, digits: 2)
            line.decimal(1_500, digits: 0)
            line.decimal(7, digits: 3)
        }
        try writer.finish()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(
            text
                == ",1970-01-01T00:00:00Z,2000-02-29T00:00:00Z,2026-02-25T06:13:20Z,2099-12-31T23:59:59Z,1969-12-30T23:59:59Z,,0,7,131026,-42,12345.50,-0.05,1500,0.007\r\n"
        )
        #expect(
            times.compactMap { $0 }.map { iso($0) } == [
                "1970-01-01T00:00:00Z", "2000-02-29T00:00:00Z", "2026-02-25T06:13:20Z",
                "2099-12-31T23:59:59Z", "1969-12-30T23:59:59Z",
            ])
    }

    @Test("each way a cell is quoted, byte for byte: commas alone, quotes anywhere, a formula with quotes; dates as the records write them")
    func quotingExactly() throws {
        let cells: [String] = [
            "plain", "a, b", "\"", "\"\"", "say \"hi\", then go", "end\"", "\"start", "=1+\"x\"", "ñ,é\r\nü", "",
        ]
        let (_, bytes) = try write(.standard, [cells.map { .text($0) }])
        #expect(
            String(decoding: bytes, as: UTF8.self)
                == "plain,\"a, b\",\"\"\"\",\"\"\"\"\"\",\"say \"\"hi\"\", then go\",\"end\"\"\",\"\"\"start\",\"'=1+\"\"x\"\"\",\"ñ,é\r\nü\",\r\n"
        )
        let folder = try scratchFolder("csvwriter")
        let path = folder.appendingPathComponent("dates.csv").path
        let writer = try CSVWriter(path: path)
        let period = BillingPeriod(year: 2026, month: 3)
        let due = try #require(CalendarDate(year: 2026, month: 12, day: 5))
        try writer.row { line in
            line.date(year: period.year, month: period.month, day: nil)
            line.date(year: due.year, month: due.month, day: due.day)
        }
        try writer.finish()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "\(period.iso),\(due.description)\r\n")
    }

    @Test("cells a spreadsheet would run as formulas are defused; our own numbers are not")
    func formulaInjection() throws {
        let (_, bytes) = try write(
            .standard, [[.text("=HYPERLINK(\"http://evil\")"), .text("+1"), .text("-2"), .text("@SUM(A1)"), .plain("-50.00"), .text("ok")]])
        #expect(
            String(decoding: bytes, as: UTF8.self) == "\"'=HYPERLINK(\"\"http://evil\"\")\",\"'+1\",\"'-2\",\"'@SUM(A1)\",-50.00,ok\r\n")
    }

    @Test("the Excel dialect has a BOM and ';'")
    func excel() throws {
        let (_, bytes) = try write(.excel, [[.text("a;b"), .text("c")]])
        #expect(Array(bytes.prefix(3)) == [0xEF, 0xBB, 0xBF])
        #expect(String(decoding: bytes.dropFirst(3), as: UTF8.self) == "\"a;b\";c\r\n")
    }

    @Test("phone numbers are shown the way people write them")
    func phones() {
        #expect(displayPhone("18095550101") == "+1 809 555 0101")
        #expect(displayPhone("34612345678") == "+34612345678")
    }
}

@Suite("Report formatting")
struct ReportFormattingTests {
    @Test("our ISO 8601 timestamps equal Foundation's, across leap years and centuries")
    func timestamps() {
        for seconds in [0.0, 951_782_400, 1_772_000_000.7, 4_107_542_399, 1_709_164_800, 1_583_020_799] {
            #expect(iso(seconds) == Date(timeIntervalSince1970: seconds.rounded(.down)).formatted(.iso8601), "\(seconds)")
        }
        #expect(iso(nil) == "")
    }

    @Test("a full disk is an error when the report is finished, never a silently cut file")
    func fullDisk() throws {
        // /dev/full takes the open and fails every write with ENOSPC, as a disk that filled up.
        let writer = try CSVWriter(path: "/dev/full")
        try writer.row([.text("a"), .plain("1")])
        #expect(throws: ReportError.self) { try writer.finish() }
    }
}
