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
        let digest = SHA256.hash(data: Array("\(invoiceID)\u{1F}\(phone)\u{1F}\(template)".utf8))
        return "m-" + lowercaseHex(digest.prefix(12))
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
        // Asked of every row: the usual link field is read as it is, without building a formatter.
        if let documentTemplate, let link = documentTemplate.header?.link,
            let value = link == "document_url"
                ? invoice.documentURL : value(of: link, in: invoice, formatting: LocaleFormatting(locale: invoice.locale)),
            !value.isEmpty
        {
            return documentTemplate
        }
        return template
    }

    /// What `render` works out from a row's locale and template (its language and formatting), kept
    /// for the next rows with the same: a manifest has a few locales and a million rows. For one
    /// thread at a time.
    public final class Memo {
        struct Entry { var language: String; var fallback: Bool; var formatting: LocaleFormatting }
        var entries: [String: Entry] = [:]
        public init() {}
    }

    /// The messages for an invoice (one per distinct phone), or the issues that stop it being sent.
    public func render(_ invoice: Invoice, memo: Memo? = nil) -> Result<[RenderedMessage], InvoiceProblems> {
        var issues: [ValidationIssue] = []
        func fail(_ field: String?, _ message: String) {
            issues.append(ValidationIssue(line: invoice.line, invoiceID: invoice.invoiceID, field: field, message: message))
        }
        let template = sendingTemplate(for: invoice)
        let memoKey = template.name + "\u{1F}" + invoice.locale
        let entry: Memo.Entry
        if let known = memo?.entries[memoKey] {
            entry = known
        } else {
            let chosen = self.language(for: invoice.locale, in: template)
            // Formatting follows the row's locale, unless the text itself fell back to another language.
            let formatting = LocaleFormatting(
                locale: chosen.fallback ? chosen.code.replacingOccurrences(of: "_", with: "-") : invoice.locale)
            entry = Memo.Entry(language: chosen.code, fallback: chosen.fallback, formatting: formatting)
            memo?.entries[memoKey] = entry
        }
        let (language, fallback, formatting) = (entry.language, entry.fallback, entry.formatting)
        let texts = template.languages[language]!
        let languageBase = String(language.prefix { $0 != "_" })
        let named = template.isNamed

        // Body parameters.
        var parameters: [TemplateMessageRequest.Parameter] = []
        var shown: [String: String] = [:]
        for (index, parameter) in template.body.enumerated() {
            let placeholder = template.placeholder(ofBodyParameter: index)
            let slot = "body parameter {{\(placeholder)}}"
            func add(_ value: TemplateMessageRequest.Parameter, shown text: String) {
                parameters.append(named ? .named(placeholder, value) : value)
                shown[placeholder] = text
            }
            if parameter.type == "currency" {
                let fallbackText = formatting.money(invoice.amount)
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
            var value = self.value(of: parameter.source, in: invoice, formatting: formatting)
            if value == nil || value!.isEmpty {
                value = parameter.ifEmpty?[language] ?? parameter.ifEmpty?[languageBase]
            }
            guard let text = value, !text.isEmpty else {
                fail(parameter.source, "is empty, but template '\(template.name)' needs it for \(slot) (Meta would answer 131008)")
                shown[placeholder] = ""
                continue
            }
            if let problem = checkTextParameter(text) { fail(parameter.source, "\(problem), which Meta refuses in \(slot) (132018)") }
            add(.text(text), shown: text)
        }
        let body = fillPlaceholders(texts.body) { shown[String($0)] }
        if body.utf8.count > 1024 && body.count > 1024 {
            fail(nil, "the message body would be \(body.count) characters; Meta allows 1,024 (132005)")
        }
        var components: [TemplateMessageRequest.Component] = []

        // Header.
        var document: (link: String, filename: String)? = nil
        var headerText = texts.header
        if let header = template.header {
            if header.format.uppercased() == "DOCUMENT", let linkField = header.link {
                if let link = self.value(of: linkField, in: invoice, formatting: formatting), !link.isEmpty {
                    let filename = fillBraces(header.filename ?? "{invoice_id}.pdf", invoice: invoice, formatting: formatting)
                    document = (link, filename)
                    components.append(.init(type: "header", parameters: [.document(link: link, filename: filename)]))
                } else {
                    fail(linkField, "is missing, but template '\(template.name)' has a document header that needs the invoice's PDF link")
                }
            } else if let source = header.source {
                let value = self.value(of: source, in: invoice, formatting: formatting) ?? ""
                if value.isEmpty {
                    fail(source, "is empty, but template '\(template.name)' needs it for the header (131008)")
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
        var buttons: [(text: String, url: String?)] = (texts.buttons ?? []).map { ($0.text, $0.url) }
        for button in template.buttons ?? [] {
            let value = self.value(of: button.source, in: invoice, formatting: formatting) ?? ""
            if value.isEmpty {
                fail(button.source, "is empty, but template '\(template.name)' needs it for button \(button.index) (131008)")
            }
            if button.index < buttons.count {
                buttons[button.index].url = buttons[button.index].url.map { fillPlaceholders($0, [value]) }
            }
            components.append(.init(type: "button", subType: button.subType, index: String(button.index), parameters: [.text(value)]))
        }
        if !issues.isEmpty { return .failure(InvoiceProblems(issues: issues)) }

        let messages = invoice.phones.map { phone in
            // The identity is the template asked for, whichever variant carries it.
            let key = MessageKey(invoiceID: invoice.invoiceID, phone: phone, template: self.template.name)
            let id = key.messageID
            let request = TemplateMessageRequest(
                to: phone, callbackData: id,
                template: .init(name: template.name, language: .init(code: language), components: components))
            return RenderedMessage(
                id: id, key: key, invoice: invoice, phone: phone, language: language, languageFallback: fallback,
                headerText: headerText, document: document, body: body, footer: texts.footer, buttons: buttons,
                request: request)
        }
        return .success(messages)
    }

    /// A manifest field's value as the tenant reads it, or an extra column's.
    func value(of source: String, in invoice: Invoice, formatting: LocaleFormatting) -> String? {
        switch source {
        case "tenant_name": invoice.tenantName
        case "invoice_id": invoice.invoiceID
        case "period": invoice.periodLabel ?? formatting.period(invoice.period)
        case "amount": formatting.money(invoice.amount)
        case "currency": invoice.amount.currency.code
        case "due_date": invoice.dueDate.map(formatting.date)
        case "landlord": invoice.landlord
        case "property": invoice.property
        case "tenant_id": invoice.tenantID
        case "email": invoice.email
        case "document_url": invoice.documentURL
        default: invoice.extras[source]
        }
    }

    private func fillBraces(_ pattern: String, invoice: Invoice, formatting: LocaleFormatting) -> String {
        var result = ""
        var rest = Substring(pattern)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            result += rest[..<open]
            let name = String(rest[rest.index(after: open)..<close])
            result += value(of: name, in: invoice, formatting: formatting) ?? ""
            rest = rest[rest.index(after: close)...]
        }
        return result + rest
    }
}

/// Meta refuses parameters with line breaks, tabs or more than four consecutive spaces.
///
/// Checked on Unicode scalars, never on `Character`: `"\r\n"` is one Character, equal to neither
/// `"\n"` nor `"\r"`.
func checkTextParameter(_ text: String) -> String? {
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
private func placeholder(in text: String, at start: String.Index) -> (Substring, String.Index)? {
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
