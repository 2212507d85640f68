#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Streams a CSV manifest: UTF-8 with or without BOM, `,` or `;` (detected from the header),
/// RFC 4180 quoting (doubled quotes, line breaks inside quotes), CRLF or LF.
///
/// Hand-written rather than taken from a package: the CSV packages on this machine read the whole
/// file into memory or build a `String` per cell, and the import target (500,000 validated rows/s
/// in under 150 MB) needs a byte-level scanner over a fixed window of the file. Cells are handed on
/// as byte ranges into that window; doubled quotes are undone in place.
public final class CSVManifestReader: ManifestReader {
    public let path: String
    public private(set) var warnings: [String] = []
    public var declaredDefaults: [ManifestField: String] { [:] }
    /// The delimiter found in the header, once reading started.
    public private(set) var delimiter: UInt8 = UInt8(ascii: ",")

    private var fd: Int32 = -1
    private var buffer: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    private var start = 0  // first byte not yet consumed
    private var end = 0  // one past the last byte read
    private var eof = false
    private var line = 1

    /// Reads the file at `path` through a window of `chunkSize` bytes (it grows for longer records).
    public init(path: String, chunkSize: Int = 1 << 20) {
        self.path = path
        self.capacity = max(chunkSize, 64)
        self.buffer = .allocate(capacity: capacity)
    }

    /// Reads a manifest held in memory (tests, the HTTP API).
    public init(bytes: [UInt8], name: String = "manifest.csv") {
        self.path = name
        self.capacity = max(bytes.count, 64)
        self.buffer = .allocate(capacity: capacity)
        bytes.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { buffer.update(from: base, count: source.count) }
        }
        self.end = bytes.count
        self.eof = true
    }

    deinit {
        buffer.deallocate()
        if fd >= 0 { close(fd) }
    }

    // MARK: - Reading

    public func read(_ body: (inout RawRecord) throws -> Void) throws {
        if !eof && fd < 0 {
            fd = open(path, O_RDONLY)
            if fd < 0 {
                throw ManifestError(
                    path: path,
                    issue: .init(
                        line: nil, invoiceID: nil, field: nil,
                        message: "cannot open the file (\(String(cString: strerror(errno))))"))
            }
            try fill()
        }
        // A byte order mark is allowed and ignored.
        if end - start >= 3 && buffer[start] == 0xEF && buffer[start + 1] == 0xBB && buffer[start + 2] == 0xBF {
            start += 3
        }
        if end == start && eof {
            throw ManifestError(path: path, issue: .init(line: 1, invoiceID: nil, field: nil, message: "the file is empty"))
        }
        delimiter = try detectDelimiter()

        var cells: [Cell] = []
        cells.reserveCapacity(32)
        // The header: the first record that is not blank.
        var headerLine = line
        repeat {
            headerLine = line
            guard try nextRecord(into: &cells) else {
                throw ManifestError(path: path, issue: .init(line: 1, invoiceID: nil, field: nil, message: "the file has no header row"))
            }
        } while isBlank(cells)
        let columns = try header(from: cells, line: headerLine)

        var record = RawRecord()
        while true {
            let recordLine = line
            guard try nextRecord(into: &cells) else { break }
            if isBlank(cells) { continue }
            record.reset(line: recordLine)
            fill(&record, from: cells, columns: columns)
            try body(&record)
        }
    }

    // MARK: - Header

    private struct Column {
        var meaning: ManifestField.Column
        var phoneName: String
    }

    private func header(from cells: [Cell], line: Int) throws -> [Column] {
        var columns: [Column] = []
        var seen: [ManifestField: Int] = [:]
        var unknown: [String] = []
        for (index, cell) in cells.enumerated() {
            let bytes = UnsafeBufferPointer(start: buffer + cell.start, count: cell.end - cell.start)
            guard let name = validatedString(bytes) else {
                throw ManifestError(
                    path: path,
                    issue: .init(
                        line: line, invoiceID: nil, field: nil,
                        message: "header cell \(index + 1) is not valid UTF-8 (save the file as UTF-8)"))
            }
            let meaning = ManifestField.column(named: name)
            switch meaning {
            case .field(let field) where field != .phone:
                if let first = seen[field] {
                    throw ManifestError(
                        path: path,
                        issue: .init(
                            line: line, invoiceID: nil, field: field.name,
                            message: "the header names this field twice (columns \(first + 1) and \(index + 1))"))
                }
                seen[field] = index
                columns.append(Column(meaning: meaning, phoneName: ""))
            case .field:
                seen[.phone] = seen[.phone] ?? index
                columns.append(Column(meaning: meaning, phoneName: "phone"))
            case .extraPhone(let n):
                columns.append(Column(meaning: meaning, phoneName: "phone\(n)"))
            case .extra(let original):
                if original.isEmpty {
                    throw ManifestError(
                        path: path,
                        issue: .init(
                            line: line, invoiceID: nil, field: nil,
                            message: "header cell \(index + 1) is empty: every column needs a name"))
                }
                unknown.append(original)
                columns.append(Column(meaning: meaning, phoneName: ""))
            }
        }
        if !unknown.isEmpty {
            warnings.append("extra columns kept for templates: \(unknown.joined(separator: ", "))")
        }
        let hasPhone = columns.contains { if case .extraPhone = $0.meaning { return true } else { return $0.phoneName == "phone" } }
        var missing: [ManifestField] = [.invoiceID, .tenantName, .amount, .period].filter { seen[$0] == nil }
        if !hasPhone { missing.insert(.phone, at: min(2, missing.count)) }
        if let first = missing.first {
            let names = missing.map(\.name).joined(separator: ", ")
            throw ManifestError(
                path: path,
                issue: .init(
                    line: line, invoiceID: nil, field: first.name,
                    message:
                        "required column missing from the header: \(names) (found: \(cells.count) columns, delimiter '\(Character(Unicode.Scalar(delimiter)))')"
                ))
        }
        return columns
    }

    private func fill(_ record: inout RawRecord, from cells: [Cell], columns: [Column]) {
        if cells.count > columns.count {
            record.structuralIssues.append((nil, "the record has \(cells.count) cells but the header has \(columns.count)"))
        }
        for (index, cell) in cells.prefix(columns.count).enumerated() {
            if let issue = cell.issue {
                let column = columns[index]
                record.structuralIssues.append((name(of: column), issue))
            }
            let bytes = UnsafeBufferPointer(start: buffer + cell.start, count: cell.end - cell.start)
            switch columns[index].meaning {
            case .field(.phone), .extraPhone:
                record.phones.append((columns[index].phoneName, bytes))
            case .field(let field):
                record.values[field.rawValue] = bytes
            case .extra(let name):
                record.extras.append((name, bytes))
            }
        }
    }

    private func name(of column: Column) -> String {
        switch column.meaning {
        case .field(let f): f.name
        case .extraPhone: column.phoneName
        case .extra(let name): name
        }
    }

    private func isBlank(_ cells: [Cell]) -> Bool {
        for cell in cells {
            var i = cell.start
            while i < cell.end {
                if !isASCIISpace(buffer[i]) { return false }
                i += 1
            }
        }
        return true
    }

    // MARK: - Records

    /// A cell's bytes are `buffer[start..<end]` once `nextRecord` returned.
    private struct Cell {
        var start: Int
        var end: Int
        var quoted: Bool
        var issue: String?
    }

    /// Scans the first line for the delimiter: whichever of `;` and `,` occurs more outside quotes.
    private func detectDelimiter() throws -> UInt8 {
        while true {
            var commas = 0, semicolons = 0, quoted = false, i = start
            while i < end {
                let b = buffer[i]
                if b == UInt8(ascii: "\"") {
                    quoted.toggle()
                } else if !quoted && (b == UInt8(ascii: "\n") || b == UInt8(ascii: "\r")) {
                    return semicolons > commas ? UInt8(ascii: ";") : UInt8(ascii: ",")
                } else if !quoted && b == UInt8(ascii: ",") {
                    commas += 1
                } else if !quoted && b == UInt8(ascii: ";") {
                    semicolons += 1
                }
                i += 1
            }
            if eof { return semicolons > commas ? UInt8(ascii: ";") : UInt8(ascii: ",") }
            try refill()
        }
    }

    /// Reads the next record's cells; false at the end of the file.
    private func nextRecord(into cells: inout [Cell]) throws -> Bool {
        while true {
            if start >= end {
                if eof { return false }
                try refill()
                continue
            }
            if let consumed = scanRecord(into: &cells) {
                start = consumed
                return true
            }
            // The record runs past the window: keep its start, read more, scan it again.
            if eof {
                // Unreachable: at eof scanRecord always completes.
                return false
            }
            try refill()
        }
    }

    /// Scans one record from `start`. Returns the index after it, or nil when the window ends
    /// before the record does (and more of the file can be read). Counts lines as it goes.
    private func scanRecord(into cells: inout [Cell]) -> Int? {
        cells.removeAll(keepingCapacity: true)
        let quote = UInt8(ascii: "\""), cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
        let delimiter = self.delimiter
        var i = start
        var newlines = 0
        while true {
            // One cell.
            if i < end && buffer[i] == quote {
                i += 1
                let contentStart = i
                var closed = false
                var issue: String?
                while i < end {
                    let b = buffer[i]
                    if b == quote {
                        if i + 1 < end && buffer[i + 1] == quote {
                            i += 2
                            continue
                        }
                        if i + 1 >= end && !eof { return nil }  // cannot tell "" from " yet
                        closed = true
                        i += 1
                        break
                    }
                    if b == lf { newlines += 1 }
                    i += 1
                }
                if !closed {
                    if !eof { return nil }
                    issue = "quoted field is never closed (unterminated quote)"
                }
                let contentEnd = closed ? i - 1 : i
                // Text between the closing quote and the delimiter is not RFC 4180.
                var trailing = false
                while i < end && buffer[i] != delimiter && buffer[i] != lf && buffer[i] != cr {
                    if !isASCIISpace(buffer[i]) { trailing = true }
                    i += 1
                }
                if i >= end && !eof { return nil }
                if trailing && issue == nil { issue = "unexpected text after the closing quote" }
                cells.append(Cell(start: contentStart, end: contentEnd, quoted: true, issue: issue))
            } else {
                let cellStart = i
                while i < end {
                    let b = buffer[i]
                    if b == delimiter || b == lf || b == cr { break }
                    i += 1
                }
                if i >= end && !eof { return nil }
                cells.append(Cell(start: cellStart, end: i, quoted: false, issue: nil))
            }
            // What ends the cell.
            if i >= end {
                line += newlines
                unescapeQuotedCells(&cells)
                return i
            }
            let b = buffer[i]
            if b == delimiter {
                i += 1
                continue
            }
            // CRLF, LF or a lone CR ends the record.
            if b == cr {
                if i + 1 >= end && !eof { return nil }
                i += (i + 1 < end && buffer[i + 1] == lf) ? 2 : 1
            } else {
                i += 1
            }
            line += newlines + 1
            unescapeQuotedCells(&cells)
            return i
        }
    }

    /// Undoes the doubling of quotes in quoted cells, in place, once the record is complete (a
    /// record cut by the end of the window is scanned again from its start after a refill).
    private func unescapeQuotedCells(_ cells: inout [Cell]) {
        let quote = UInt8(ascii: "\"")
        for index in cells.indices where cells[index].quoted {
            var read = cells[index].start, write = read
            let contentEnd = cells[index].end
            while read < contentEnd {
                let b = buffer[read]
                buffer[write] = b
                write += 1
                read += (b == quote && read + 1 < contentEnd && buffer[read + 1] == quote) ? 2 : 1
            }
            cells[index].end = write
        }
    }

    // MARK: - Buffer

    private func fill() throws {
        while end < capacity && !eof {
            let n = systemRead(fd, buffer + end, capacity - end)
            if n < 0 {
                if errno == EINTR { continue }
                throw ManifestError(
                    path: path,
                    issue: .init(
                        line: line, invoiceID: nil, field: nil,
                        message: "error while reading the file (\(String(cString: strerror(errno))))"))
            }
            if n == 0 { eof = true } else { end += n }
        }
    }

    /// Moves the unconsumed bytes to the front (growing the window if they fill it) and reads more.
    private func refill() throws {
        let pending = end - start
        if start > 0 {
            (buffer).update(from: buffer + start, count: pending)
            start = 0
            end = pending
        }
        if end == capacity {
            let grown = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
            grown.update(from: buffer, count: end)
            buffer.deallocate()
            buffer = grown
            capacity *= 2
        }
        try fill()
    }
}

#if canImport(Glibc)
    private let systemRead = Glibc.read
#elseif canImport(Darwin)
    private let systemRead = Darwin.read
#endif
