import Dispatcher
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes RFC 4180 CSV, row by row, through a buffer: a million rows never sit in memory.
///
/// Cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or
/// carriage return) get a leading `'` (OWASP's advice against CSV injection). Numbers we write
/// ourselves go through `plain`, which is not guarded, so amounts like `-50.00` stay numbers.
public final class CSVWriter {
    public enum Dialect: Sendable {
        /// `,`, no BOM: for tools and imports.
        case standard
        /// `;`, a decimal comma in amounts, and a UTF-8 BOM: what a spreadsheet in a Spanish, French
        /// or Portuguese locale reads without an import wizard.
        case excel
    }

    /// Nil once `finish()` has closed it.
    private var file: UnsafeMutablePointer<FILE>?
    private let delimiter: UInt8
    private var buffer: [UInt8] = []
    /// The previous line's storage, reused by the next.
    private var spare: [UInt8] = []
    public let path: String

    public init(path: String, dialect: Dialect = .standard) throws {
        guard let file = fopen(path, "wb") else {
            throw ReportError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        self.file = file
        self.path = path
        self.delimiter = dialect == .excel ? UInt8(ascii: ";") : UInt8(ascii: ",")
        buffer.reserveCapacity(1 << 16)
        spare.reserveCapacity(512)
        if dialect == .excel { buffer.append(contentsOf: [0xEF, 0xBB, 0xBF]) }
    }

    deinit { if let file { fclose(file) } }

    /// A plain decimal (`1234.50`) as this dialect writes amounts: `1234,50` in the Excel dialect.
    public func amount(_ plainDecimal: String) -> String {
        delimiter == UInt8(ascii: ";") ? String(plainDecimal.map { $0 == "." ? "," : $0 }) : plainDecimal
    }

    /// A cell: text is quoted when needed and guarded against formula injection.
    public enum Cell {
        case text(String?)
        /// Written as is (numbers and timestamps we produce): never guarded.
        case plain(String)
    }

    public func row(_ cells: [Cell]) throws {
        try row { line in
            for cell in cells {
                switch cell {
                case .plain(let s): line.plain(s)
                case .text(let s): line.text(s)
                }
            }
        }
    }

    /// One row, its cells written straight into the line by `build` (no array of cells, no
    /// intermediate strings for times and numbers): the form a million-row file uses.
    public func row(_ build: (inout Line) throws -> Void) throws {
        // Built in a buffer of its own and appended once: each access to the class's own buffer is
        // checked for exclusivity, which cost 6 % of a million-row report. The line's storage is
        // moved back and forth, never copied or reallocated.
        var line = Line(bytes: spare, delimiter: delimiter)
        spare = []
        line.bytes.removeAll(keepingCapacity: true)
        try build(&line)
        line.bytes.append(contentsOf: [0x0D, 0x0A])
        buffer.append(contentsOf: line.bytes)
        spare = line.bytes
        if buffer.count >= 1 << 16 { try flush() }
    }

    /// The cells of one row, in order.
    public struct Line {
        var bytes: [UInt8]
        let delimiter: UInt8
        var started = false

        init(bytes: [UInt8], delimiter: UInt8) {
            self.bytes = bytes
            self.delimiter = delimiter
        }

        private mutating func next() {
            if started { bytes.append(delimiter) } else { started = true }
        }

        /// Text: quoted when needed, guarded against formula injection.
        public mutating func text(_ s: String?) {
            next()
            CSVWriter.append(s ?? "", guardFormula: true, delimiter: delimiter, to: &bytes)
        }

        /// Written as is (numbers and codes we produce): never guarded.
        public mutating func plain(_ s: String) {
            next()
            CSVWriter.append(s, guardFormula: false, delimiter: delimiter, to: &bytes)
        }

        public mutating func int(_ n: Int?) {
            next()
            guard let n else { return }
            if n < 0 { bytes.append(UInt8(ascii: "-")) }
            appendDigits(UInt64(n.magnitude), minimum: 1)
        }

        /// Written as is after a prefix (a `+` before a phone number): never guarded.
        public mutating func plain(_ prefix: StaticString, _ s: String) {
            next()
            prefix.withUTF8Buffer { bytes.append(contentsOf: $0) }
            CSVWriter.append(s, guardFormula: false, delimiter: delimiter, to: &bytes)
        }

        /// An amount in minor units as a plain decimal with `digits` decimals (`-1234.50`; in the
        /// Excel dialect, whose cells are `;`-separated, `-1234,50`).
        public mutating func decimal(_ minorUnits: Int64, digits: Int) {
            next()
            if minorUnits < 0 { bytes.append(UInt8(ascii: "-")) }
            var scale: UInt64 = 1
            for _ in 0..<digits { scale *= 10 }
            appendDigits(minorUnits.magnitude / scale, minimum: 1)
            if digits > 0 {
                bytes.append(delimiter == UInt8(ascii: ";") ? UInt8(ascii: ",") : UInt8(ascii: "."))
                appendDigits(minorUnits.magnitude % scale, minimum: digits)
            }
        }

        private mutating func appendDigits(_ value: UInt64, minimum: Int) {
            var value = value, count = 0
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for any UInt64
            withUnsafeMutableBytes(of: &digits) { d in
                repeat {
                    d[count] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                    count += 1
                } while value > 0 || count < minimum
                for i in stride(from: count - 1, through: 0, by: -1) { bytes.append(d[i]) }
            }
        }

        /// `2026-03` (a billing period) or `2026-03-10`, as `BillingPeriod.iso` and `CalendarDate`
        /// write them (a year past 9999 in full).
        public mutating func date(year: Int, month: Int, day: Int?) {
            next()
            if year < 0 {
                bytes.append(UInt8(ascii: "-"))
                appendDigits(UInt64(year.magnitude), minimum: 1)
            } else {
                appendDigits(UInt64(year), minimum: 1)
            }
            bytes.append(UInt8(ascii: "-"))
            appendDigits(UInt64(month.magnitude), minimum: 2)
            if let day {
                bytes.append(UInt8(ascii: "-"))
                appendDigits(UInt64(day.magnitude), minimum: 2)
            }
        }

        /// `2026-03-10T14:05:09Z` (UTC), or nothing.
        public mutating func time(_ seconds: Double?) {
            next()
            guard let seconds else { return }
            let t = civilTime(seconds)
            func two(_ n: Int64) {
                bytes.append(UInt8(ascii: "0") + UInt8(n / 10))
                bytes.append(UInt8(ascii: "0") + UInt8(n % 10))
            }
            if t.year < 0 || t.year > 9999 {
                bytes.append(contentsOf: iso(seconds).utf8)
                return
            }
            two(t.year / 100)
            two(t.year % 100)
            bytes.append(UInt8(ascii: "-"))
            two(t.month)
            bytes.append(UInt8(ascii: "-"))
            two(t.day)
            bytes.append(UInt8(ascii: "T"))
            two(t.hour)
            bytes.append(UInt8(ascii: ":"))
            two(t.minute)
            bytes.append(UInt8(ascii: ":"))
            two(t.second)
            bytes.append(UInt8(ascii: "Z"))
        }
    }

    public func header(_ names: [String]) throws {
        try row(names.map { .plain($0) })
    }

    static func append(_ s: String, guardFormula: Bool, delimiter: UInt8, to buffer: inout [UInt8]) {
        var s = s
        // Native strings are contiguous UTF-8: scanning their bytes through a buffer pointer is
        // several times faster than through String's own index.
        s.withUTF8 { utf8 in
            let first = utf8.first
            let risky =
                guardFormula
                && (first == UInt8(ascii: "=") || first == UInt8(ascii: "+") || first == UInt8(ascii: "-")
                    || first == UInt8(ascii: "@") || first == 0x09 || first == 0x0D)
            // One pass finds both whether the cell needs quotes and whether it holds a quote, eight
            // bytes at a time while there are eight (a message body is a few hundred bytes).
            var special = false, quotes = false
            var i = 0
            if let base = UnsafeRawPointer(utf8.baseAddress) {
                while i + 8 <= utf8.count {
                    let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    if hasByte(word, UInt8(ascii: "\"")) {
                        quotes = true
                        break
                    }
                    if !special && (hasByte(word, delimiter) || hasByte(word, 0x0A) || hasByte(word, 0x0D)) { special = true }
                    i += 8
                }
            }
            while !quotes && i < utf8.count {
                let b = utf8[i]
                if b == UInt8(ascii: "\"") { quotes = true }
                if b == delimiter || b == 0x0A || b == 0x0D { special = true }
                i += 1
            }
            if !risky && !special && !quotes {
                buffer.append(contentsOf: utf8)
                return
            }
            buffer.append(UInt8(ascii: "\""))
            if risky { buffer.append(UInt8(ascii: "'")) }
            if quotes {
                // Each run up to and including a quote, then the quote again.
                var start = 0
                for i in utf8.indices where utf8[i] == UInt8(ascii: "\"") {
                    buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...i]))
                    buffer.append(UInt8(ascii: "\""))
                    start = i + 1
                }
                buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
            } else {
                // A message body has commas in it as a rule, and no quote: copied in one go.
                buffer.append(contentsOf: utf8)
            }
            buffer.append(UInt8(ascii: "\""))
        }
    }

    /// Whether any of the eight bytes of `word` is `byte` (exact: the classic test for a zero byte,
    /// on `word` with `byte` XORed out of each).
    @inline(__always)
    private static func hasByte(_ word: UInt64, _ byte: UInt8) -> Bool {
        let x = word ^ (0x0101_0101_0101_0101 &* UInt64(byte))
        return (x &- 0x0101_0101_0101_0101) & ~x & 0x8080_8080_8080_8080 != 0
    }

    public func flush() throws {
        guard let file else { throw ReportError("cannot write \(path): the file is already closed") }
        let written = buffer.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        if written != buffer.count { throw ReportError("cannot write \(path): \(String(cString: strerror(errno)))") }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes and closes; further rows are an error. A disk that fills up at the last moment
    /// (the C library's buffer, or the close itself) is an error, never a silently cut report.
    public func finish() throws {
        try flush()
        guard let file else { return }
        self.file = nil
        let flushed = fflush(file) == 0
        let flushError = errno
        let closed = fclose(file) == 0
        if !flushed || !closed {
            throw ReportError("cannot write \(path): \(String(cString: strerror(flushed ? errno : flushError)))")
        }
    }
}

/// A report could not be written or rendered.
public struct ReportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Creates the report's folder (and those above it), or says in words why it cannot: Foundation's
/// own error prints as `Error Domain=NSCocoaErrorDomain Code=512 "(null)" UserInfo={…}`.
func createReportDirectory(_ path: String) throws {
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        // The nearest part of the path that exists says why: a file where a folder should be, or a
        // folder we may not write in.
        var existing = (path as NSString).standardizingPath
        var isFolder: ObjCBool = false
        while !existing.isEmpty && existing != "/" && !FileManager.default.fileExists(atPath: existing, isDirectory: &isFolder) {
            existing = (existing as NSString).deletingLastPathComponent
        }
        if existing.isEmpty {
            existing = "."
            _ = FileManager.default.fileExists(atPath: existing, isDirectory: &isFolder)
        }
        let reason =
            !isFolder.boolValue
            ? "\(existing) is a file, not a folder"
            : !FileManager.default.isWritableFile(atPath: existing)
                ? "\(existing) is not writable" : (error as NSError).localizedDescription
        throw ReportError("cannot create the report folder \(path): \(reason)")
    }
}
