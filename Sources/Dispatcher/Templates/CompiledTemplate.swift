/// A template worked out once for a renderer: its parameters' fields and placeholders, and each
/// language's body split into literal text and parameter slots. A million-row preview or run then
/// renders every message by appending pieces, with no search for `{{…}}`, no dictionary of values
/// and no string built for an error that did not happen.
final class CompiledTemplate: Sendable {
    let definition: TemplateDefinition
    let named: Bool
    let parameters: [Parameter]
    /// By Meta's language code (`es`, `pt_BR`).
    let texts: [String: Texts]
    /// The document header's file name (`{invoice_id}.pdf`) as literal text and fields.
    let filename: [FilenamePart]
    /// The field holding a DOCUMENT header's PDF link (`document_url` as a rule); nil without one.
    let documentLink: InvoiceField?

    struct Parameter: Sendable {
        let source: String
        let field: InvoiceField
        /// `1`, `2`… in a positional template, the name in a NAMED one.
        let placeholder: String
        let isCurrency: Bool
        let ifEmpty: [String: String]?
    }

    struct Texts: Sendable {
        let text: TemplateDefinition.LanguageText
        /// `es` for `es_DO`: the key an `if_empty` text may be given under.
        let base: String
        let body: [Segment]
    }

    enum Segment: Sendable {
        case literal(String)
        /// The value of `parameters[n]`.
        case parameter(Int)
    }

    enum FilenamePart: Sendable {
        case literal(String)
        case field(InvoiceField)
    }

    init(_ definition: TemplateDefinition) {
        self.definition = definition
        named = definition.isNamed
        parameters = definition.body.indices.map { index in
            let p = definition.body[index]
            return Parameter(
                source: p.source, field: InvoiceField(p.source), placeholder: definition.placeholder(ofBodyParameter: index),
                isCurrency: p.type == "currency", ifEmpty: p.ifEmpty)
        }
        // As the dictionary of shown values did: a placeholder names the last parameter that fills it.
        var slot: [String: Int] = [:]
        for (index, p) in parameters.enumerated() { slot[p.placeholder] = index }
        var texts: [String: Texts] = [:]
        for (code, text) in definition.languages {
            let body = compileSegments(text.body) { slot[String($0)] }
            texts[code] = Texts(text: text, base: String(code.prefix { $0 != "_" }), body: body)
        }
        self.texts = texts
        filename = compileBraces(definition.header?.filename ?? "{invoice_id}.pdf")
        documentLink = definition.header.flatMap { $0.format.uppercased() == "DOCUMENT" ? $0.link.map(InvoiceField.init) : nil }
    }

    /// The body with `values[n]` in each parameter's slot.
    ///
    /// Its length is added up first, then each piece copied as bytes into the string's own
    /// storage: appending the pieces to a `String` one by one cost twice as much.
    static func fill(_ segments: [Segment], values: [String]) -> String {
        var count = 0
        for segment in segments {
            switch segment {
            case .literal(let s): count += s.utf8.count
            case .parameter(let n): count += values[n].utf8.count
            }
        }
        return String(unsafeUninitializedCapacity: count) { out in
            var n = 0
            func put(_ s: String) {
                let copied = s.utf8.withContiguousStorageIfAvailable { bytes in
                    if let base = bytes.baseAddress, !bytes.isEmpty {
                        (out.baseAddress! + n).initialize(from: base, count: bytes.count)
                    }
                    return bytes.count
                }
                if let copied {
                    n += copied
                } else {
                    for byte in s.utf8 {
                        out[n] = byte
                        n += 1
                    }
                }
            }
            for segment in segments {
                switch segment {
                case .literal(let s): put(s)
                case .parameter(let i): put(values[i])
                }
            }
            return n
        }
    }
}

/// A text split at its `{{token}}` placeholders (as `fillPlaceholders` finds them): the tokens
/// `slot` knows become parameter slots, the others stay literal text.
private func compileSegments(_ text: String, slot: (Substring) -> Int?) -> [CompiledTemplate.Segment] {
    var segments: [CompiledTemplate.Segment] = []
    let bytes = text.utf8
    var literalStart = bytes.startIndex
    var i = bytes.startIndex
    while i != bytes.endIndex {
        if bytes[i] == UInt8(ascii: "{"), let (token, end) = placeholder(in: text, at: i), let n = slot(token) {
            if literalStart != i { segments.append(.literal(String(text[literalStart..<i]))) }
            segments.append(.parameter(n))
            i = end
            literalStart = end
            continue
        }
        i = bytes.index(after: i)
    }
    if literalStart != bytes.endIndex { segments.append(.literal(String(text[literalStart...]))) }
    return segments
}

/// `{invoice_id}.pdf` as literal text and fields: `{name}` is a field, a `{` without its `}` is text.
private func compileBraces(_ pattern: String) -> [CompiledTemplate.FilenamePart] {
    var parts: [CompiledTemplate.FilenamePart] = []
    var rest = Substring(pattern)
    while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
        if open != rest.startIndex { parts.append(.literal(String(rest[..<open]))) }
        parts.append(.field(InvoiceField(String(rest[rest.index(after: open)..<close]))))
        rest = rest[rest.index(after: close)...]
    }
    if !rest.isEmpty { parts.append(.literal(String(rest))) }
    return parts
}

/// A field a template can name: one of the manifest's, or an extra column by its name.
enum InvoiceField: Sendable, Equatable {
    case tenantName, invoiceID, period, amount, currency, dueDate, landlord, property, tenantID, email, documentURL
    case extra(String)

    init(_ source: String) {
        switch source {
        case "tenant_name": self = .tenantName
        case "invoice_id": self = .invoiceID
        case "period": self = .period
        case "amount": self = .amount
        case "currency": self = .currency
        case "due_date": self = .dueDate
        case "landlord": self = .landlord
        case "property": self = .property
        case "tenant_id": self = .tenantID
        case "email": self = .email
        case "document_url": self = .documentURL
        default: self = .extra(source)
        }
    }

    /// The field's value as the tenant reads it.
    func value(in invoice: Invoice, formatting: LocaleFormatting) -> String? {
        switch self {
        case .tenantName: invoice.tenantName
        case .invoiceID: invoice.invoiceID
        case .period: invoice.periodLabel ?? formatting.period(invoice.period)
        case .amount: formatting.money(invoice.amount)
        case .currency: invoice.amount.currency.code
        case .dueDate: invoice.dueDate.map(formatting.date)
        case .landlord: invoice.landlord
        case .property: invoice.property
        case .tenantID: invoice.tenantID
        case .email: invoice.email
        case .documentURL: invoice.documentURL
        case .extra(let name): invoice.extras[name]
        }
    }
}
