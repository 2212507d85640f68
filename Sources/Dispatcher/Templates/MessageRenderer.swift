import Crypto
import Foundation

/// The idempotency key of a message: one invoice, to one number, with one template.
public struct MessageKey: Sendable, Hashable {
    public var invoiceID: String
    public var phone: String
    public var template: String

    public init(invoiceID: String, phone: String, template: String) {
        self.invoiceID = invoiceID
        self.phone = phone
        self.template = template
    }

    /// A stable id derived from the key (`m-` and 24 hex digits of SHA-256): the same in a preview,
    /// a first run and a re-run, and sent as `biz_opaque_callback_data`.
    public var messageID: String {
        // The three fields hashed in place, as the bytes of "invoiceID␟phone␟template".
        var hasher = SHA256()
        func add(_ field: String, separated: Bool) {
            var field = field
            field.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
            if separated { withUnsafeBytes(of: UInt8(0x1F)) { hasher.update(bufferPointer: $0) } }
        }
        add(invoiceID, separated: true)
        add(phone, separated: true)
        add(template, separated: false)
        return hasher.finalize().withUnsafeBytes { lowercaseHex($0.prefix(12), prefix: "m-") }
    }
}

/// One message as the tenant will read it, and the request that sends it.
public struct RenderedMessage: Sendable {
    public var id: String
    public var key: MessageKey
    public var invoice: Invoice
    /// E.164 digits.
    public var phone: String
    /// Template language code as Meta spells it (`es`, `pt_BR`).
    public var language: String
    /// True when the row's locale had no language of its own in the template.
    public var languageFallback: Bool
    public var headerText: String?
    public var document: (link: String, filename: String)?
    public var body: String
    public var footer: String?
    public var buttons: [(text: String, url: String?)]
    public var request: TemplateMessageRequest
}

/// Fills a template's parameters from invoices, with Meta's checks on each value.
public struct MessageRenderer: Sendable {
    public let catalog: TemplateCatalog
    /// The template asked for: its name is every message's identity (`MessageKey.template`).
    public let template: TemplateDefinition
    /// Its `with_document` variant, used for rows that have a document link.
    public let documentTemplate: TemplateDefinition?
    public let defaultLanguage: String
    /// Both, worked out once (`CompiledTemplate`).
    let compiled: CompiledTemplate
    let compiledDocument: CompiledTemplate?
    /// The document variant's link field (`document_url` as a rule).
    let documentLink: InvoiceField?

    /// - Parameters:
    ///   - templateName: `WHATSAPP_TEMPLATE_NAME` (default `invoice`).
    ///   - defaultLanguage: `WHATSAPP_TEMPLATE_LANGUAGE` (default `es`): used when a row's locale has no language in the template.
    public init(catalog: TemplateCatalog, templateName: String, defaultLanguage: String) throws {
        guard let template = catalog[templateName] else {
            let known = catalog.templates.keys.sorted().joined(separator: ", ")
            throw TemplateError("no template named '\(templateName)' in templates/whatsapp (known: \(known)); Meta would answer 132001")
        }
        let documentTemplate = template.withDocument.flatMap { catalog[$0] }
        for t in [template] + (documentTemplate.map { [$0] } ?? []) {
            guard t.languages[defaultLanguage] != nil else {
                let known = t.languages.keys.sorted().joined(separator: ", ")
                throw TemplateError(
                    "template '\(t.name)' has no language '\(defaultLanguage)' (it has: \(known)); Meta would answer 132001")
            }
            if let unmapped = t.unmappedSources.first {
                throw TemplateError(
                    "template '\(t.name)': '\(unmapped)' is not mapped to a manifest field yet (templates pull cannot guess it): set its source in templates/whatsapp/\(t.name).json"
                )
            }
        }
        self.catalog = catalog
        self.template = template
        self.documentTemplate = documentTemplate
        self.defaultLanguage = defaultLanguage
        compiled = CompiledTemplate(template)
        compiledDocument = documentTemplate.map(CompiledTemplate.init)
        documentLink = documentTemplate?.header?.link.map(InvoiceField.init)
    }

    /// The template language for a locale: `es-DO` → `es_DO`, else `es`, else another `es_*`, else the default.
    public func language(for locale: String) -> (code: String, fallback: Bool) {
        language(for: locale, in: template)
    }

    func language(for locale: String, in template: TemplateDefinition) -> (code: String, fallback: Bool) {
        let underscored = String(String.UnicodeScalarView(locale.unicodeScalars.map { $0 == "-" ? "_" : $0 }))
        if template.languages[underscored] != nil { return (underscored, false) }
        let base = String(underscored.prefix { $0 != "_" })
        if template.languages[base] != nil { return (base, false) }
        if let regional = template.languages.keys.sorted().first(where: { $0.hasPrefix(base + "_") }) { return (regional, false) }
        return (defaultLanguage, true)
    }

    /// The template a row is sent with: the `with_document` variant when it has a document link.
    public func sendingTemplate(for invoice: Invoice) -> TemplateDefinition {
        sendingVariant(for: invoice).definition
    }

    func sendingVariant(for invoice: Invoice) -> CompiledTemplate {
        // Asked of every row: the usual link field is read as it is, without building a formatter.
        if let compiledDocument, let documentLink,
            let value = documentLink == .documentURL
                ? invoice.documentURL : documentLink.value(in: invoice, formatting: LocaleFormatting(locale: invoice.locale)),
            !value.isEmpty
        {
            return compiledDocument
        }
        return compiled
    }

    /// What `render` works out from a row's locale and template (its language, texts and
    /// formatting), kept for the next rows with the same: a manifest has a few locales and a
    /// million rows. For one thread at a time.
    public final class Memo {
        /// The compiled template itself, not only whether it is the document variant: a memo handed
        /// to another renderer must not give it this one's slots.
        struct Key: Hashable { var template: ObjectIdentifier; var locale: String }
        /// A class: handed to each row by reference, not copied field by field.
        final class Entry {
            let language: String
            let fallback: Bool
            let formatting: LocaleFormatting
            let texts: CompiledTemplate.Texts
            /// The last period and due date written, and how: most rows of a month share them.
            private var period: (BillingPeriod, String)?
            private var dueDate: (CalendarDate, String)?

            init(language: String, fallback: Bool, formatting: LocaleFormatting, texts: CompiledTemplate.Texts) {
                self.language = language
                self.fallback = fallback
                self.formatting = formatting
                self.texts = texts
            }

            /// `field.value(in:formatting:)`, with the period and due date written once per change.
            func value(_ field: InvoiceField, in invoice: Invoice) -> String? {
                switch field {
                case .period where invoice.periodLabel == nil:
                    if let period, period.0 == invoice.period { return period.1 }
                    let text = formatting.period(invoice.period)
                    period = (invoice.period, text)
                    return text
                case .dueDate:
                    guard let due = invoice.dueDate else { return nil }
                    if let dueDate, dueDate.0 == due { return dueDate.1 }
                    let text = formatting.date(due)
                    dueDate = (due, text)
                    return text
                default:
                    return field.value(in: invoice, formatting: formatting)
                }
            }
        }
        var entries: [Key: Entry] = [:]
        public init() {}
    }

    /// The messages for an invoice (one per distinct phone), or the issues that stop it being sent.
    public func render(_ invoice: Invoice, memo: Memo? = nil) -> Result<[RenderedMessage], InvoiceProblems> {
        var issues: [ValidationIssue] = []
        func fail(_ field: String?, _ message: String) {
            issues.append(ValidationIssue(line: invoice.line, invoiceID: invoice.invoiceID, field: field, message: message))
        }
        let variant = sendingVariant(for: invoice)
        let memoKey = Memo.Key(template: ObjectIdentifier(variant), locale: invoice.locale)
        let entry: Memo.Entry
        if let known = memo?.entries[memoKey] {
            entry = known
        } else {
            let chosen = self.language(for: invoice.locale, in: variant.definition)
            // Formatting follows the row's locale, unless the text itself fell back to another language.
            let formatting = LocaleFormatting(
                locale: chosen.fallback ? chosen.code.replacingOccurrences(of: "_", with: "-") : invoice.locale)
            entry = Memo.Entry(
                language: chosen.code, fallback: chosen.fallback, formatting: formatting, texts: variant.texts[chosen.code]!)
            memo?.entries[memoKey] = entry
        }
        // The entry's formatting and texts are read where they are: copies of them were a retain for
        // each of their strings, for every row.
        let (language, fallback) = (entry.language, entry.fallback)
        let named = variant.named
        let templateName = variant.definition.name

        // Body parameters: each one's value in the request, and the text the tenant reads in its slot.
        var parameters: [TemplateMessageRequest.Parameter] = []
        parameters.reserveCapacity(variant.parameters.count)
        var shown: [String] = []
        shown.reserveCapacity(variant.parameters.count)
        for p in variant.parameters.indices {
            func add(_ value: TemplateMessageRequest.Parameter, shown text: String) {
                parameters.append(named ? .named(variant.parameters[p].placeholder, value) : value)
                shown.append(text)
            }
            if variant.parameters[p].isCurrency {
                let fallbackText = entry.formatting.money(invoice.amount)
                if let amount1000 = invoice.amount.metaAmount1000 {
                    add(
                        .currency(fallback: fallbackText, code: invoice.amount.currency.code, amount1000: Int64(amount1000)),
                        shown: fallbackText)
                } else {
                    // Meta's amount_1000 is a 32-bit integer: a larger amount goes as the text the tenant reads.
                    add(.text(fallbackText), shown: fallbackText)
                }
                continue
            }
            var value = entry.value(variant.parameters[p].field, in: invoice)
            if value == nil || value!.isEmpty {
                value = variant.parameters[p].ifEmpty?[language] ?? variant.parameters[p].ifEmpty?[entry.texts.base]
            }
            guard let text = value, !text.isEmpty else {
                fail(
                    variant.parameters[p].source,
                    "is empty, but template '\(templateName)' needs it for body parameter {{\(variant.parameters[p].placeholder)}} (Meta would answer 131008)"
                )
                shown.append("")
                continue
            }
            if let problem = checkTextParameter(text) {
                fail(
                    variant.parameters[p].source,
                    "\(problem), which Meta refuses in body parameter {{\(variant.parameters[p].placeholder)}} (132018)")
            }
            add(.text(text), shown: text)
        }
        let body = CompiledTemplate.fill(entry.texts.body, values: shown)
        if body.utf8.count > 1024 && body.count > 1024 {
            fail(nil, "the message body would be \(body.count) characters; Meta allows 1,024 (132005)")
        }
        var components: [TemplateMessageRequest.Component] = []
        components.reserveCapacity(2 + (variant.definition.buttons?.count ?? 0))

        // Header.
        var document: (link: String, filename: String)? = nil
        var headerText = entry.texts.text.header
        if let header = variant.definition.header {
            if let linkField = header.link, let linkValue = variant.documentLink {
                if let link = entry.value(linkValue, in: invoice), !link.isEmpty {
                    var filename = ""
                    for part in variant.filename {
                        switch part {
                        case .literal(let s): filename.append(s)
                        case .field(let field): filename.append(entry.value(field, in: invoice) ?? "")
                        }
                    }
                    document = (link, filename)
                    components.append(.init(type: "header", parameters: [.document(link: link, filename: filename)]))
                } else {
                    fail(linkField, "is missing, but template '\(templateName)' has a document header that needs the invoice's PDF link")
                }
            } else if let source = header.source {
                let value = self.value(of: source, in: invoice, formatting: entry.formatting) ?? ""
                if value.isEmpty {
                    fail(source, "is empty, but template '\(templateName)' needs it for the header (131008)")
                } else if let problem = checkTextParameter(value) {
                    fail(source, "\(problem), which Meta refuses in the header (132018)")
                }
                headerText = headerText.map { fillPlaceholders($0) { _ in value } }
                let name = header.name ?? source
                components.append(.init(type: "header", parameters: [named ? .named(name, .text(value)) : .text(value)]))
            }
        }
        components.append(.init(type: "body", parameters: parameters))

        // Buttons.
        var buttons: [(text: String, url: String?)] = (entry.texts.text.buttons ?? []).map { ($0.text, $0.url) }
        for button in variant.definition.buttons ?? [] {
            let value = self.value(of: button.source, in: invoice, formatting: entry.formatting) ?? ""
            if value.isEmpty {
                fail(button.source, "is empty, but template '\(templateName)' needs it for button \(button.index) (131008)")
            }
            if button.index < buttons.count {
                buttons[button.index].url = buttons[button.index].url.map { fillPlaceholders($0, [value]) }
            }
            components.append(.init(type: "button", subType: button.subType, index: String(button.index), parameters: [.text(value)]))
        }
        if !issues.isEmpty { return .failure(InvoiceProblems(issues: issues)) }

        let request = TemplateMessageRequest.Template(name: templateName, language: .init(code: language), components: components)
        let messages = invoice.phones.map { phone in
            // The identity is the template asked for, whichever variant carries it.
            let key = MessageKey(invoiceID: invoice.invoiceID, phone: phone, template: self.template.name)
            let id = key.messageID
            return RenderedMessage(
                id: id, key: key, invoice: invoice, phone: phone, language: language, languageFallback: fallback,
                headerText: headerText, document: document, body: body, footer: entry.texts.text.footer, buttons: buttons,
                request: TemplateMessageRequest(to: phone, callbackData: id, template: request))
        }
        return .success(messages)
    }

    /// A manifest field's value as the tenant reads it, or an extra column's.
    func value(of source: String, in invoice: Invoice, formatting: LocaleFormatting) -> String? {
        InvoiceField(source).value(in: invoice, formatting: formatting)
    }
}

/// Meta refuses parameters with line breaks, tabs or more than four consecutive spaces.
///
/// Checked on Unicode scalars, never on `Character`: `"\r\n"` is one Character, equal to neither
/// `"\n"` nor `"\r"`.
func checkTextParameter(_ text: String) -> String? {
    // Most values are plain printable text, which their bytes settle in one pass: no control byte,
    // no lead byte of U+0080-U+00BF (C2, the C1 controls among them) or U+2000-U+2FFF (E2, the
    // line and paragraph separators among them), at most four spaces in a row, and no more bytes
    // than characters allowed. Anything else takes the scalar walk below.
    let plain = text.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
        guard bytes.count <= 1024 else { return false }
        var spaces = 0
        for byte in bytes {
            if byte == 0x20 {
                spaces += 1
                if spaces > 4 { return false }
                continue
            }
            spaces = 0
            if byte < 0x20 || byte == 0x7F || byte == 0xC2 || byte == 0xE2 { return false }
        }
        return true
    }
    if plain == true { return nil }
    var spaces = 0
    var tooManySpaces = false
    for scalar in text.unicodeScalars {
        switch scalar.value {
        case 0x0A, 0x0D, 0x09, 0x0B, 0x0C, 0x85, 0x2028, 0x2029: return "contains a line break or tab"
        case 0x00...0x1F, 0x7F...0x9F: return "contains a control character (U+\(hex4(scalar.value)))"
        case 0x20:
            spaces += 1
            if spaces > 4 { tooManySpaces = true }
        default: spaces = 0
        }
    }
    if tooManySpaces { return "contains more than four consecutive spaces" }
    // Counting characters walks grapheme clusters: only when the bytes allow more than 1,024.
    if text.utf8.count > 1024 && text.count > 1024 { return "is longer than 1,024 characters" }
    return nil
}

/// A template text with `{{1}}`, `{{2}}`… replaced by the values, in one pass: a value that itself
/// contains `{{2}}` stays as it is (as Meta fills it). A placeholder with no value stays too.
func fillPlaceholders(_ text: String, _ values: [String]) -> String {
    fillPlaceholders(text) { token in
        guard let n = Int(token), n >= 1, n <= values.count else { return nil }
        return values[n - 1]
    }
}

/// A template text with each `{{token}}` (digits, or a named placeholder's letters, digits and `_`)
/// replaced by `value(token)`, in one pass; a placeholder `value` has nothing for stays as it is.
func fillPlaceholders(_ text: String, _ value: (Substring) -> String?) -> String {
    let bytes = text.utf8
    guard bytes.contains(UInt8(ascii: "{")) else { return text }
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count + 64)
    var i = bytes.startIndex
    while i != bytes.endIndex {
        let byte = bytes[i]
        if byte == UInt8(ascii: "{"), let (token, end) = placeholder(in: text, at: i), let replacement = value(token) {
            out.append(contentsOf: replacement.utf8)
            i = end
            continue
        }
        out.append(byte)
        i = bytes.index(after: i)
    }
    return String(decoding: out, as: UTF8.self)
}

/// `{{token}}` at `start` (a token of up to 64 ASCII letters, digits and `_`): the token and the
/// index just past the closing braces.
func placeholder(in text: String, at start: String.Index) -> (Substring, String.Index)? {
    let bytes = text.utf8
    var i = bytes.index(after: start)
    guard i != bytes.endIndex, bytes[i] == UInt8(ascii: "{") else { return nil }
    i = bytes.index(after: i)
    let tokenStart = i
    var length = 0
    while i != bytes.endIndex, length <= 64 {
        let b = bytes[i]
        let isToken =
            b == UInt8(ascii: "_") || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
            || (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z"))
            || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
        if !isToken { break }
        length += 1
        i = bytes.index(after: i)
    }
    guard length > 0, length <= 64, i != bytes.endIndex, bytes[i] == UInt8(ascii: "}") else { return nil }
    let tokenEnd = i
    i = bytes.index(after: i)
    guard i != bytes.endIndex, bytes[i] == UInt8(ascii: "}") else { return nil }
    return (text[tokenStart..<tokenEnd], bytes.index(after: i))
}

/// The problems that keep an invoice from being sent.
public struct InvoiceProblems: Error, Sendable {
    public var issues: [ValidationIssue]
}

/// `001B` for U+001B.
func hex4(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}
