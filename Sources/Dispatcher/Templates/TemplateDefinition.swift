import Foundation

/// A WhatsApp message template as approved in Meta's WhatsApp Manager, and how manifest fields
/// fill its parameters. Loaded from `templates/whatsapp/NAME.json`.
public struct TemplateDefinition: Sendable, Codable {
    public var name: String
    public var category: String
    public var description: String?
    /// `POSITIONAL` (the default: `{{1}}`, `{{2}}`…) or `NAMED` (`{{tenant_name}}`: every
    /// parameter of a send then carries its `parameter_name`).
    public var parameterFormat: ParameterFormat?
    /// Another template, used instead of this one for rows that have a document link (the same
    /// message with the PDF as its header). This one then has no document header, so rows
    /// without a PDF are sent too. Either way the message keeps this template's name as its
    /// identity: a row that gains a PDF link later is not sent twice.
    public var withDocument: String?
    public var header: Header?
    /// Body parameters in order: the n-th fills `{{n}}` (or, in a NAMED template, `{{its name}}`).
    public var body: [Parameter]
    public var buttons: [Button]?
    /// Language code as Meta spells it (`es`, `en`, `pt_BR`) → the approved texts.
    public var languages: [String: LanguageText]
    /// What Meta said of this template when `dispatcher templates pull` last read it.
    public var meta: AccountRecord?

    enum CodingKeys: String, CodingKey {
        case name, category, description, header, body, buttons, languages, meta
        case parameterFormat = "parameter_format"
        case withDocument = "with_document"
    }

    public enum ParameterFormat: String, Sendable, Codable {
        case positional = "POSITIONAL"
        case named = "NAMED"
    }

    public var isNamed: Bool { parameterFormat == .named }

    /// The source `templates pull` gives a parameter it cannot map (`unmapped_1`, `unmapped_header`):
    /// a renderer refuses the template until someone names the manifest field.
    public static let unmappedPrefix = "unmapped_"

    /// The parameters still waiting for a manifest field (`unmapped_…`).
    public var unmappedSources: [String] {
        (body.map(\.source) + [header?.source].compactMap { $0 } + (buttons ?? []).map(\.source))
            .filter { $0.hasPrefix(Self.unmappedPrefix) }
    }

    /// What a body parameter's placeholder says: `1` for the first of a positional template, its
    /// name (`tenant_name`) in a named one.
    public func placeholder(ofBodyParameter index: Int) -> String {
        isNamed ? body[index].placeholderName : String(index + 1)
    }

    public struct Header: Sendable, Codable {
        /// `DOCUMENT` or `TEXT`.
        public var format: String
        /// For `DOCUMENT`: the field holding the https link to the PDF.
        public var link: String?
        /// For `DOCUMENT`: the file name the tenant sees; `{field}` is replaced (`{invoice_id}.pdf`).
        public var filename: String?
        /// For `TEXT` with a `{{1}}`: the field that fills it.
        public var source: String?
        /// For a `TEXT` header of a NAMED template: the placeholder's name (default: `source`).
        public var name: String?
    }

    public struct Parameter: Sendable, Codable {
        /// A manifest field (`tenant_name`, `period`, `amount`, `due_date`, …) or an extra column's name.
        public var source: String
        /// In a NAMED template: the placeholder this fills (default: `source`).
        public var name: String?
        /// `text` (default) or `currency` (only with `amount`).
        public var type: String?
        /// Text to use when the field is empty, by language (`es`, `en`…); without it an empty field is an error.
        public var ifEmpty: [String: String]?

        enum CodingKeys: String, CodingKey {
            case source, name, type
            case ifEmpty = "if_empty"
        }

        public init(source: String, name: String? = nil, type: String? = nil, ifEmpty: [String: String]? = nil) {
            self.source = source
            self.name = name
            self.type = type
            self.ifEmpty = ifEmpty
        }

        public var placeholderName: String { name ?? source }
    }

    public struct Button: Sendable, Codable {
        public var index: Int
        /// `url` (a dynamic URL suffix) is the only kind that takes a parameter.
        public var subType: String
        public var source: String

        enum CodingKeys: String, CodingKey {
            case index, source
            case subType = "sub_type"
        }
    }

    public struct LanguageText: Sendable, Codable, Equatable {
        public var header: String?
        public var body: String
        public var footer: String?
        public var buttons: [ButtonText]?

        public init(header: String? = nil, body: String, footer: String? = nil, buttons: [ButtonText]? = nil) {
            self.header = header
            self.body = body
            self.footer = footer
            self.buttons = buttons
        }
    }

    public struct ButtonText: Sendable, Codable, Equatable {
        public var text: String
        public var url: String?

        public init(text: String, url: String? = nil) {
            self.text = text
            self.url = url
        }
    }

    /// Meta's word on the template, as `templates pull` read it: its status per language.
    public struct AccountRecord: Sendable, Codable, Equatable {
        /// When it was read (ISO 8601, UTC).
        public var pulledAt: String
        public var category: String?
        public var parameterFormat: String?
        public var languages: [String: LanguageRecord]

        enum CodingKeys: String, CodingKey {
            case category, languages
            case pulledAt = "pulled_at"
            case parameterFormat = "parameter_format"
        }
    }

    public struct LanguageRecord: Sendable, Codable, Equatable {
        /// Meta's id of the template in this language.
        public var id: String?
        /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`…
        public var status: String
        /// Meta's quality score (`GREEN`, `YELLOW`, `RED`, `UNKNOWN`).
        public var quality: String?
    }
}

/// A template definition that does not match what Meta would accept.
public struct TemplateError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Every template in `templates/whatsapp/`, checked when loaded.
public struct TemplateCatalog: Sendable {
    public private(set) var templates: [String: TemplateDefinition]

    public init(templates: [TemplateDefinition]) throws {
        var map: [String: TemplateDefinition] = [:]
        for template in templates {
            try TemplateCatalog.check(template)
            map[template.name] = template
        }
        for template in templates {
            guard let variantName = template.withDocument else { continue }
            let where_ = "template '\(template.name)'"
            guard let variant = map[variantName] else {
                throw TemplateError("\(where_): with_document names '\(variantName)', which is not in the templates folder")
            }
            if variant.header?.format.uppercased() != "DOCUMENT" || variant.withDocument != nil {
                throw TemplateError(
                    "\(where_): with_document names '\(variantName)', which must have a DOCUMENT header (and no with_document of its own)")
            }
            if template.header?.format.uppercased() == "DOCUMENT" {
                throw TemplateError("\(where_) has a DOCUMENT header itself: with_document is for a template without one")
            }
        }
        self.templates = map
    }

    /// Loads `DIR/whatsapp/*.json` (the `templates/` folder of the project, or `--templates DIR`).
    public init(directory: String) throws {
        let folder = URL(fileURLWithPath: directory).appendingPathComponent("whatsapp")
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".json") }.sorted()
        } catch {
            throw TemplateError("no template definitions at \(folder.path): pass --templates DIR (the folder that holds whatsapp/*.json)")
        }
        var loaded: [TemplateDefinition] = []
        for name in names {
            let file = folder.appendingPathComponent(name)
            let data = try Data(contentsOf: file)
            do {
                loaded.append(try JSONDecoder().decode(TemplateDefinition.self, from: data))
            } catch let error as DecodingError {
                throw TemplateError("\(file.path): \(error.readable(in: data))")
            }
        }
        if loaded.isEmpty { throw TemplateError("no template definitions (*.json) in \(folder.path)") }
        do {
            try self.init(templates: loaded)
        } catch let error as TemplateError {
            throw TemplateError("\(folder.path): \(error.description)")
        }
    }

    public subscript(name: String) -> TemplateDefinition? { templates[name] }

    /// The checks one definition must pass to be loaded (without the ones across templates).
    public static func validate(_ template: TemplateDefinition) throws { try check(template) }

    /// Meta's own checks, made before anything is sent: the parameters mapped must match the
    /// placeholders of every language's text (else 132000), and each kind must fit its slot (132012).
    static func check(_ t: TemplateDefinition) throws {
        let where_ = "template '\(t.name)'"
        if !isTemplateName(t.name) {
            throw TemplateError("\(where_): a template name is lowercase letters, digits and _ (at most 512), as Meta names them")
        }
        if t.languages.isEmpty { throw TemplateError("\(where_) has no languages") }
        if !["UTILITY", "MARKETING", "AUTHENTICATION"].contains(t.category.uppercased()) {
            throw TemplateError("\(where_): category '\(t.category)' is not UTILITY, MARKETING or AUTHENTICATION")
        }
        for (index, parameter) in t.body.enumerated() {
            let type = parameter.type ?? "text"
            if type != "text" && type != "currency" {
                throw TemplateError("\(where_): body parameter {{\(index + 1)}} has type '\(type)'; use text or currency")
            }
            if type == "currency" && parameter.source != "amount" {
                throw TemplateError(
                    "\(where_): body parameter {{\(index + 1)}} is a currency but its source is '\(parameter.source)', not amount (Meta would answer 132012)"
                )
            }
        }
        if let header = t.header {
            switch header.format.uppercased() {
            case "DOCUMENT":
                if header.link == nil {
                    throw TemplateError("\(where_): a DOCUMENT header needs 'link' (the field with the PDF's https URL)")
                }
            case "TEXT":
                break
            default:
                throw TemplateError("\(where_): header format '\(header.format)' is not supported (DOCUMENT or TEXT)")
            }
        }
        for (language, text) in t.languages {
            let here = "\(where_) (\(language))"
            if t.isNamed {
                try checkNamed(t, text: text, where: here)
                continue
            }
            let placeholders = Set(try placeholderNumbers(in: text.body, where: here + " body"))
            if !placeholders.isEmpty && placeholders != Set(1...placeholders.count) {
                throw TemplateError(
                    "\(here): body placeholders must be {{1}}…{{n}} without gaps; found \(placeholders.sorted().map { "{{\($0)}}" }.joined(separator: " "))"
                )
            }
            if placeholders.count != t.body.count {
                throw TemplateError(
                    "\(here): the body has \(placeholders.count) placeholders but \(t.body.count) parameters are mapped (Meta would answer 132000)"
                )
            }
            if text.body.count > 1024 { throw TemplateError("\(here): the body is longer than Meta's 1,024 characters") }
            let headerPlaceholders = try placeholderNumbers(in: text.header ?? "", where: here + " header")
            switch t.header?.format.uppercased() {
            case "TEXT":
                if text.header == nil { throw TemplateError("\(here): a TEXT header needs its text") }
                if headerPlaceholders.count > 1 { throw TemplateError("\(here): a header takes at most one placeholder") }
                if (headerPlaceholders.count == 1) != (t.header?.source != nil) {
                    throw TemplateError(
                        "\(here): the header has \(headerPlaceholders.count) placeholders but \(t.header?.source == nil ? 0 : 1) parameters are mapped (Meta would answer 132000)"
                    )
                }
            default:
                if text.header != nil { throw TemplateError("\(here): header text given but the header is not TEXT") }
            }
            let buttons = t.buttons ?? []
            let texts = text.buttons ?? []
            if texts.count < (buttons.map(\.index).max().map { $0 + 1 } ?? 0) {
                throw TemplateError("\(here): \(buttons.count) button parameters mapped but only \(texts.count) buttons defined")
            }
            for (index, button) in texts.enumerated() {
                let count = try placeholderNumbers(in: button.url ?? "", where: here + " button \(index)").count
                let mapped = buttons.contains { $0.index == index }
                if count > 1 || (count == 1) != mapped {
                    throw TemplateError(
                        "\(here): button \(index)'s URL has \(count) placeholders but \(mapped ? 1 : 0) parameters are mapped (Meta would answer 132000)"
                    )
                }
            }
        }
    }
}

extension TemplateCatalog {
    /// A NAMED template's checks: each language's placeholders are exactly the parameters' names
    /// (Meta: lowercase letters, digits and underscores), the header's is its name, and buttons
    /// (whose URL variables stay `{{1}}` in named templates too) match as in positional ones.
    static func checkNamed(_ t: TemplateDefinition, text: TemplateDefinition.LanguageText, where here: String) throws {
        let names = t.body.map(\.placeholderName)
        if let bad = names.first(where: { !isPlaceholderName($0) }) {
            throw TemplateError("\(here): parameter name '\(bad)' is not a placeholder name Meta accepts (lowercase letters, digits, _)")
        }
        if Set(names).count != names.count {
            throw TemplateError("\(here): two body parameters have the same name")
        }
        let found = try placeholderTokens(in: text.body, where: here + " body")
        if let bad = found.first(where: { !isPlaceholderName($0) }) {
            throw TemplateError("\(here): placeholder '{{\(bad)}}' is not named (a NAMED template uses {{tenant_name}}, not {{1}})")
        }
        if Set(found) != Set(names) || found.count != names.count {
            let missing = Set(names).subtracting(found).sorted(), unmapped = Set(found).subtracting(names).sorted()
            var parts: [String] = []
            if !missing.isEmpty { parts.append("mapped but not in the text: \(missing.joined(separator: ", "))") }
            if !unmapped.isEmpty { parts.append("in the text but not mapped: \(unmapped.joined(separator: ", "))") }
            if parts.isEmpty { parts.append("a placeholder appears more than once") }
            throw TemplateError(
                "\(here): the body's placeholders do not match its parameters (\(parts.joined(separator: "; "))): Meta would answer 132000")
        }
        if text.body.count > 1024 { throw TemplateError("\(here): the body is longer than Meta's 1,024 characters") }
        let headerTokens = try placeholderTokens(in: text.header ?? "", where: here + " header")
        switch t.header?.format.uppercased() {
        case "TEXT":
            if text.header == nil { throw TemplateError("\(here): a TEXT header needs its text") }
            let expected = t.header?.source.map { [t.header?.name ?? $0] } ?? []
            if headerTokens != expected {
                throw TemplateError(
                    "\(here): the header's placeholders (\(headerTokens.joined(separator: ", "))) do not match its parameter (\(expected.joined(separator: ", "))): Meta would answer 132000"
                )
            }
        default:
            if text.header != nil { throw TemplateError("\(here): header text given but the header is not TEXT") }
        }
        let texts = text.buttons ?? []
        for button in t.buttons ?? [] where button.index >= texts.count {
            throw TemplateError("\(here): button \(button.index) has a parameter mapped but no such button is defined")
        }
    }
}

/// Meta's rule for a template name: lowercase letters, digits and underscores, at most 512. (Also
/// what keeps a name read from the Graph API from being a path: `templates pull` writes NAME.json.)
public func isTemplateName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.count <= 512
        && name.utf8.allSatisfy {
            $0 == UInt8(ascii: "_") || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z"))
                || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
        }
}

/// Meta's rule for a named placeholder: lowercase letters, digits and underscores, starting with
/// a letter or an underscore.
func isPlaceholderName(_ name: some StringProtocol) -> Bool {
    guard let first = name.utf8.first, first == UInt8(ascii: "_") || (first >= UInt8(ascii: "a") && first <= UInt8(ascii: "z")) else {
        return false
    }
    return name.utf8.allSatisfy {
        $0 == UInt8(ascii: "_") || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z"))
            || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
    }
}

/// What each `{{…}}` placeholder says, in order of appearance.
func placeholderTokens(in text: String, where context: String) throws -> [String] {
    var tokens: [String] = []
    var rest = Substring(text)
    while let open = rest.range(of: "{{") {
        guard let close = rest[open.upperBound...].range(of: "}}") else {
            throw TemplateError("\(context): '{{' without '}}'")
        }
        tokens.append(String(rest[open.upperBound..<close.lowerBound]))
        rest = rest[close.upperBound...]
    }
    return tokens
}

/// The numbers of `{{n}}` placeholders, in order of appearance.
func placeholderNumbers(in text: String, where context: String) throws -> [Int] {
    try placeholderTokens(in: text, where: context).map { inside in
        guard let n = Int(inside), n >= 1 else {
            throw TemplateError("\(context): placeholder '{{\(inside)}}' is not positional ({{1}}, {{2}}…)")
        }
        return n
    }
}
