import CXMLReader

/// Streams an XML manifest through libxml2's SAX2 push parser (see `CXMLReader`): the file is
/// read in chunks and each `<invoice>` is handed on as soon as it ends, so memory does not grow
/// with the file. DTDs, entity declarations and custom entities are refused; the network is off.
///
/// ```xml
/// <invoices currency="DOP" locale="es-DO" landlord="Inmobiliaria Caribe">
///   <invoice><invoice_id>…</invoice_id><phone>…</phone><phone>…</phone>…</invoice>
/// </invoices>
/// ```
/// Root attributes `currency`, `locale` and `landlord` are defaults for every invoice.
public final class XMLManifestReader: ManifestReader {
    public let path: String
    public private(set) var warnings: [String] = []
    /// The root's `currency`, `locale` and `landlord`: known once the root element was read, which
    /// is before the first record reaches the caller.
    public var declaredDefaults: [ManifestField: String] { state?.defaults ?? finalDefaults }
    private var state: ParseState?
    private var finalDefaults: [ManifestField: String] = [:]
    private let bytes: [UInt8]?
    private let chunkSize: Int

    /// libxml2's words for a file that ends too soon (an export cut off, a partial download) do
    /// not say so: a truncated manifest reads as "Extra content at the end of the document".
    static func hint(_ message: String) -> String {
        if message.contains("Extra content at the end of the document") {
            return " (text after </invoices>, or the file cut short: export it again)"
        }
        if message.contains("Premature end") || message.contains("Couldn't find end") || message.contains("EndTag") {
            return " (the file may be cut short: export it again)"
        }
        return ""
    }

    /// libxml2's message in one line and, for the ones a person meets most, in plain words: a
    /// problem list has one line per problem, and "Input is not proper UTF-8, indicate encoding !"
    /// came with a line break and a byte dump.
    static func plain(_ message: String) -> String {
        let line = message.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
        if line.hasPrefix("Input is not proper UTF-8") {
            let bytes = line.firstRange(of: "Bytes: ").map { String(line[$0.upperBound...]) }
            return "the file is not UTF-8\(bytes.map { " (bytes \($0))" } ?? ""): save it as UTF-8, or declare its encoding "
                + "(ISO-8859-1, UTF-16) in <?xml … encoding=\"…\"?>"
        }
        if let range = line.firstRange(of: "xmlParseCharRef: invalid xmlChar value ") {
            return "a character reference (&#…;) names a character XML does not allow (\(line[range.upperBound...]))"
        }
        return line
    }

    public init(path: String, chunkSize: Int = 1 << 16) {
        self.path = path
        self.bytes = nil
        self.chunkSize = chunkSize
    }

    /// Reads a manifest held in memory, still fed to the parser in chunks.
    public init(bytes: [UInt8], name: String = "manifest.xml", chunkSize: Int = 1 << 16) {
        self.path = name
        self.bytes = bytes
        self.chunkSize = chunkSize
    }

    public func read(_ body: (inout RawRecord) throws -> Void) throws {
        try withoutActuallyEscaping(body) { body in
            let state = ParseState(body: body)
            self.state = state
            // The state holds the caller's closure: it must not outlive this block.
            defer {
                finalDefaults = state.defaults
                self.state = nil
            }
            let context = Unmanaged.passUnretained(state).toOpaque()
            let result: dx_xml_result
            if let bytes {
                result = bytes.withUnsafeBufferPointer { buffer in
                    buffer.withMemoryRebound(to: CChar.self) { chars in
                        dx_xml_parse_memory(chars.baseAddress, chars.count, chunkSize, onEvent, context)
                    }
                }
            } else {
                result = dx_xml_parse_file(path, chunkSize, onEvent, context)
            }
            // Whatever was read before a failure has already been delivered.
            if !state.unknownRootAttributes.isEmpty {
                warnings.append("ignored attributes on the root element: \(state.unknownRootAttributes.joined(separator: ", "))")
            }
            if !state.extraNames.isEmpty {
                warnings.append("extra elements kept for templates: \(state.extraNames.joined(separator: ", "))")
            }
            if let error = state.error { throw error }
            if let issue = state.rootIssue {
                throw ManifestError(path: path, issue: issue)
            }
            if result.ok == 0 {
                let message = Self.plain(
                    withUnsafeBytes(of: result.message) { raw in
                        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                    })
                throw ManifestError(
                    path: path,
                    issue: .init(
                        line: result.line > 0 ? result.line : nil,
                        invoiceID: nil, field: nil, message: "not a well-formed XML manifest: \(message)\(Self.hint(message))"))
            }
            if !state.sawRoot {
                throw ManifestError(path: path, issue: .init(line: 1, invoiceID: nil, field: nil, message: "the file has no root element"))
            }
        }
    }
}

/// What the C callback needs: the caller's closure and what was learnt so far.
private final class ParseState {
    let body: (inout RawRecord) throws -> Void
    /// The record handed to `body`, one for the whole file. Behind a pointer: as a stored property
    /// of this class, each change to it (a dozen a record) was checked for exclusive access at run
    /// time.
    private let record = UnsafeMutablePointer<RawRecord>.allocate(capacity: 1)
    var defaults: [ManifestField: String] = [:]
    var unknownRootAttributes: [String] = []
    var extraNames: [String] = []
    var extraSeen: Set<String> = []
    var sawRoot = false
    var rootIssue: ValidationIssue?
    var error: (any Error)?
    /// Element name → meaning; names repeat on every record, so they are looked up once.
    var columns: [String: ManifestField.Column] = [:]
    /// The previous record's element names in order, with their meaning: the records of a manifest
    /// repeat them, so a name equal byte for byte to the one in its place is neither made a
    /// `String` nor hashed.
    private var lastNames: [(bytes: [UInt8], name: String, column: ManifestField.Column)] = []

    init(body: @escaping (inout RawRecord) throws -> Void) {
        self.body = body
        record.initialize(to: RawRecord())
    }

    deinit {
        record.deinitialize(count: 1)
        record.deallocate()
    }

    func handle(_ event: dx_xml_event) -> Int32 {
        let elementBytes = UnsafeRawBufferPointer(start: event.element, count: event.element_length)
        let fields = UnsafeBufferPointer(start: event.fields, count: event.field_count)
        if event.kind == DX_XML_ROOT {
            let element = String(decoding: elementBytes, as: UTF8.self)
            sawRoot = true
            if element != "invoices" {
                rootIssue = .init(
                    line: event.line, invoiceID: nil, field: nil,
                    message: "the root element is <\(element)>; a manifest's root is <invoices>")
                return 1
            }
            for field in fields {
                let name = string(field.name, field.name_length)
                let value = string(field.value, field.value_length)
                switch name {
                case "currency": defaults[.currency] = value
                case "locale": defaults[.locale] = value
                case "landlord": defaults[.landlord] = value
                case "organization": defaults[.organization] = value
                default: unknownRootAttributes.append(name)
                }
            }
            return 0
        }
        record.pointee.reset(line: event.line)
        if !elementBytes.elementsEqual("invoice".utf8) {
            let element = String(decoding: elementBytes, as: UTF8.self)
            record.pointee.structuralIssues.append((nil, "unexpected element <\(element)> inside <invoices> (expected <invoice>)"))
        }
        var phoneCount = 0
        for i in fields.indices {
            let field = fields[i]
            let nameBytes = UnsafeRawBufferPointer(start: field.name, count: field.name_length)
            let bytes = UnsafeBufferPointer(
                start: UnsafeRawPointer(field.value).assumingMemoryBound(to: UInt8.self),
                count: field.value_length)
            let name: String
            let column: ManifestField.Column
            if i < lastNames.count, Self.same(lastNames[i].bytes, nameBytes) {
                (name, column) = (lastNames[i].name, lastNames[i].column)
            } else {
                name = String(decoding: nameBytes, as: UTF8.self)
                if let known = columns[name] {
                    column = known
                } else {
                    column = ManifestField.column(named: name)
                    columns[name] = column
                }
                let entry = (Array(nameBytes), name, column)
                if i < lastNames.count { lastNames[i] = entry } else { lastNames.append(entry) }
            }
            switch column {
            case .field(.phone), .extraPhone:
                phoneCount += 1
                record.pointee.phones.append((phoneCount == 1 ? "phone" : "phone\(phoneCount)", bytes))
            case .field(let f):
                if record.pointee.values[f.rawValue] != nil {
                    record.pointee.structuralIssues.append((f.name, "<\(name)> appears twice in one invoice"))
                }
                record.pointee.values[f.rawValue] = bytes
            case .extra(let extra):
                if extraSeen.insert(extra).inserted { extraNames.append(extra) }
                record.pointee.extras.append((extra, bytes))
            }
        }
        do {
            try body(&record.pointee)
            return 0
        } catch {
            self.error = error
            return 1
        }
    }

    /// Whether `bytes` are `known`, byte for byte.
    private static func same(_ known: [UInt8], _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard known.count == bytes.count else { return false }
        return known.withUnsafeBytes { known in
            for i in 0..<known.count where known[i] != bytes[i] { return false }
            return true
        }
    }

    private func string(_ pointer: UnsafePointer<CChar>?, _ count: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(start: pointer, count: count), as: UTF8.self)
    }
}

private let onEvent: dx_xml_callback = { event, context in
    guard let event, let context else { return 1 }
    let state = Unmanaged<ParseState>.fromOpaque(context).takeUnretainedValue()
    return state.handle(event.pointee)
}
