/// One record as a reader found it: raw UTF-8 bytes per field, not yet validated.
///
/// A reader reuses a single `RawRecord` for every record, and the byte buffers it points into are
/// only valid during the callback that receives it: validation copies what it keeps.
public struct RawRecord {
    /// The physical line where the record starts (CSV) or the line of its `<invoice>` tag (XML).
    public internal(set) var line: Int = 0
    /// For each `ManifestField` (by raw value): the bytes of its value, if the record has it.
    var values: [UnsafeBufferPointer<UInt8>?] = Array(repeating: nil, count: ManifestField.allCases.count)
    /// Every phone value in manifest order, with the field name to report (`phone`, `phone2`…).
    var phones: [(field: String, bytes: UnsafeBufferPointer<UInt8>)] = []
    /// Columns or elements that are not manifest fields, kept for templates.
    var extras: [(name: String, bytes: UnsafeBufferPointer<UInt8>)] = []
    /// Problems the reader found in this record's structure (too many cells, bad quoting…).
    var structuralIssues: [(field: String?, message: String)] = []

    mutating func reset(line: Int) {
        self.line = line
        for i in values.indices { values[i] = nil }
        phones.removeAll(keepingCapacity: true)
        extras.removeAll(keepingCapacity: true)
        structuralIssues.removeAll(keepingCapacity: true)
    }

    public subscript(field: ManifestField) -> UnsafeBufferPointer<UInt8>? {
        values[field.rawValue]
    }
}

/// A problem found while reading a manifest, named by line, invoice and field.
public struct ValidationIssue: Error, Hashable, Sendable, Codable, CustomStringConvertible {
    /// Line where the record starts (CSV) or of its `<invoice>` element (XML); nil for the file as a whole.
    public var line: Int?
    public var invoiceID: String?
    /// The field (`phone2`, `amount`…), or nil when the problem is the record or the file.
    public var field: String?
    public var message: String

    public init(line: Int?, invoiceID: String?, field: String?, message: String) {
        self.line = line
        self.invoiceID = invoiceID
        self.field = field
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case line
        case invoiceID = "invoice_id"
        case field
        case message
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(line, forKey: .line)
        try c.encode(invoiceID, forKey: .invoiceID)
        try c.encode(field, forKey: .field)
        try c.encode(message, forKey: .message)
    }

    public var description: String {
        var parts: [String] = []
        if let line { parts.append("line \(line)") }
        if let invoiceID { parts.append("invoice \(invoiceID)") }
        if let field { parts.append("field \(field)") }
        let prefix = parts.isEmpty ? "manifest" : parts.joined(separator: ", ")
        return "\(prefix): \(message)"
    }
}

/// A problem that stops reading the manifest itself (unreadable file, malformed XML, refused DTD).
public struct ManifestError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var issue: ValidationIssue
    public var description: String { "\(path): \(issue)" }
}

/// A source of raw records: the CSV and XML readers.
public protocol ManifestReader: AnyObject {
    /// Defaults the manifest itself declares (XML root attributes); empty for CSV.
    var declaredDefaults: [ManifestField: String] { get }
    /// Reads every record in order, calling `body` with each. File-level problems that stop the
    /// reading are thrown as `ManifestError` after the records before them were delivered.
    func read(_ body: (inout RawRecord) throws -> Void) throws
    /// Warnings about the file (unknown columns…), known once reading started.
    var warnings: [String] { get }
}
