/// An invoice that is valid but has nothing to send, and why.
public struct SkippedInvoice: Sendable, Hashable, Codable {
    public var invoiceID: String
    public var reason: String
    public var line: Int

    public init(invoiceID: String, reason: String, line: Int) {
        self.invoiceID = invoiceID
        self.reason = reason
        self.line = line
    }

    enum CodingKeys: String, CodingKey {
        case invoiceID = "invoice_id"
        case reason
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        invoiceID = try c.decode(String.self, forKey: .invoiceID)
        reason = try c.decode(String.self, forKey: .reason)
        line = 0
    }
}

/// What an import found, beyond the invoices themselves.
public struct ImportSummary: Sendable {
    /// Records read (valid, skipped and invalid).
    public var records = 0
    public var valid = 0
    public var skipped: [SkippedInvoice] = []
    /// The issues found, in manifest order, up to `ManifestImporter.issueLimit`.
    public var issues: [ValidationIssue] = []
    /// All issues, including those beyond the limit.
    public var issueCount = 0
    /// Records with at least one issue.
    public var invalidRecords = 0
    /// Records of other organizations (`OrganizationScope`): neither sent nor reported by this run.
    public var elsewhere = 0
    /// True when the file itself could not be read to its end (its issue is the last in `issues`).
    public var stoppedEarly = false
    public var warnings: [String] = []
    public var format: ManifestFormat = .csv

    public var isValid: Bool { issueCount == 0 }
}

public enum ManifestFormat: String, Sendable {
    case csv, xml

    /// By extension (`.csv`, `.txt`, `.xml`), else by the first character that is not a BOM or space.
    public static func detect(path: String) -> ManifestFormat {
        let lower = path.lowercased()
        if lower.hasSuffix(".xml") { return .xml }
        if lower.hasSuffix(".csv") || lower.hasSuffix(".txt") { return .csv }
        guard let prefix = readPrefix(path: path, count: 64) else { return .csv }
        let first = prefix.drop { $0 == 0xEF || $0 == 0xBB || $0 == 0xBF || isASCIISpace($0) }.first
        return first == UInt8(ascii: "<") ? .xml : .csv
    }
}

/// Reads a manifest from start to end, validating every record.
public struct ManifestImporter {
    /// Issues kept for reports beyond which only the count grows.
    public static let issueLimit = 10_000
    public var options: ValidationOptions

    public init(options: ValidationOptions) {
        self.options = options
    }

    /// The reader for a file, by its format.
    public static func reader(for path: String, format: ManifestFormat? = nil) -> any ManifestReader {
        switch format ?? ManifestFormat.detect(path: path) {
        case .csv: CSVManifestReader(path: path)
        case .xml: XMLManifestReader(path: path)
        }
    }

    /// Imports the manifest at `path`, calling `onInvoice` for each valid invoice and `onSkipped`
    /// for each one with nothing due. A file that cannot be read to its end is reported as an
    /// issue (never thrown); errors thrown by the callbacks are rethrown.
    public func importManifest(
        path: String,
        format: ManifestFormat? = nil,
        onInvoice: (Invoice) throws -> Void,
        onSkipped: (Invoice, String) throws -> Void = { _, _ in }
    ) throws -> ImportSummary {
        let format = format ?? ManifestFormat.detect(path: path)
        return try importManifest(
            from: Self.reader(for: path, format: format), format: format,
            onInvoice: onInvoice, onSkipped: onSkipped)
    }

    public func importManifest(
        from reader: any ManifestReader,
        format: ManifestFormat,
        onInvoice: (Invoice) throws -> Void,
        onSkipped: (Invoice, String) throws -> Void = { _, _ in }
    ) throws -> ImportSummary {
        var summary = ImportSummary()
        summary.format = format
        var validator: InvoiceValidator? = nil
        do {
            try reader.read { record in
                // XML declares its defaults on the root, which is read before the first record.
                if validator == nil {
                    validator = InvoiceValidator(options: options, manifestDefaults: reader.declaredDefaults)
                }
                summary.records += 1
                switch validator!.validate(record) {
                case .valid(let invoice):
                    summary.valid += 1
                    try onInvoice(invoice)
                case .skipped(let invoice, let reason):
                    summary.skipped.append(SkippedInvoice(invoiceID: invoice.invoiceID, reason: reason, line: invoice.line))
                    try onSkipped(invoice, reason)
                case .elsewhere:
                    summary.elsewhere += 1
                case .invalid(let issues):
                    summary.invalidRecords += 1
                    summary.issueCount += issues.count
                    let room = Self.issueLimit - summary.issues.count
                    if room > 0 { summary.issues.append(contentsOf: issues.prefix(room)) }
                }
            }
        } catch let error as ManifestError {
            summary.stoppedEarly = true
            summary.issueCount += 1
            summary.issues.append(error.issue)
        }
        if summary.records == 0 && !summary.stoppedEarly {
            // An export that went wrong (a header row alone, an empty root) must not look like a month with nothing due.
            summary.issueCount += 1
            summary.issues.append(
                ValidationIssue(
                    line: nil, invoiceID: nil, field: nil,
                    message: "the manifest has no invoice: nothing to preview or send (was the export empty?)"))
        }
        summary.warnings = reader.warnings
        return summary
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

func readPrefix(path: String, count: Int) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = fread(&bytes, 1, count, file)
    return Array(bytes.prefix(n))
}
