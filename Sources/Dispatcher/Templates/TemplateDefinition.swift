import Foundation

/// A WhatsApp message template as approved in Meta's WhatsApp Manager, and how manifest fields
/// fill its parameters. Loaded from `templates/whatsapp/NAME.json`.
public struct TemplateDefinition: Sendable, Decodable {
    public var name: String
    public var category: String
    public var description: String?
    public var header: Header?
    /// Body parameters in order: the n-th fills `{{n}}`.
    public var body: [Parameter]
    public var buttons: [Button]?
    /// Language code as Meta spells it (`es`, `en`, `pt_BR`) → the approved texts.
    public var languages: [String: LanguageText]

    public struct Header: Sendable, Decodable {
        /// `DOCUMENT` or `TEXT`.
        public var format: String
        /// For `DOCUMENT`: the field holding the https link to the PDF.
        public var link: String?
        /// For `DOCUMENT`: the file name the tenant sees; `{field}` is replaced (`{invoice_id}.pdf`).
        public var filename: String?
        /// For `TEXT` with a `{{1}}`: the field that fills it.
        public var source: String?
    }

    public struct Parameter: Sendable, Decodable {
        /// A manifest field (`tenant_name`, `period`, `amount`, `due_date`, …) or an extra column's name.
        public var source: String
        /// `text` (default) or `currency` (only with `amount`).
        public var type: String?
        /// Text to use when the field is empty, by language (`es`, `en`…); without it an empty field is an error.
        public var ifEmpty: [String: String]?

        enum CodingKeys: String, CodingKey {
            case source, type
            case ifEmpty = "if_empty"
        }
    }

    public struct Button: Sendable, Decodable {
        public var index: Int
        /// `url` (a dynamic URL suffix) is the only kind that takes a parameter.
        public var subType: String
        public var source: String

        enum CodingKeys: String, CodingKey {
            case index, source
            case subType = "sub_type"
        }
    }

    public struct LanguageText: Sendable, Decodable {
        public var header: String?
        public var body: String
        public var footer: String?
        public var buttons: [ButtonText]?
    }

    public struct ButtonText: Sendable, Decodable {
        public var text: String
        public var url: String?
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
            do {
                loaded.append(try JSONDecoder().decode(TemplateDefinition.self, from: Data(contentsOf: file)))
            } catch let error as DecodingError {
                throw TemplateError("\(file.path): \(describe(error))")
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

    /// Meta's own checks, made before anything is sent: the parameters mapped must match the
    /// placeholders of every language's text (else 132000), and each kind must fit its slot (132012).
    static func check(_ t: TemplateDefinition) throws {
        let where_ = "template '\(t.name)'"
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

/// The numbers of `{{n}}` placeholders, in order of appearance.
func placeholderNumbers(in text: String, where context: String) throws -> [Int] {
    var numbers: [Int] = []
    var rest = Substring(text)
    while let open = rest.range(of: "{{") {
        guard let close = rest[open.upperBound...].range(of: "}}") else {
            throw TemplateError("\(context): '{{' without '}}'")
        }
        let inside = rest[open.upperBound..<close.lowerBound]
        guard let n = Int(inside), n >= 1 else {
            throw TemplateError("\(context): placeholder '{{\(inside)}}' is not positional ({{1}}, {{2}}…)")
        }
        numbers.append(n)
        rest = rest[close.upperBound...]
    }
    return numbers
}

private func describe(_ error: DecodingError) -> String {
    switch error {
    case .keyNotFound(let key, let context):
        return "missing '\(key.stringValue)' at \(path(context.codingPath))"
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
        return "\(context.debugDescription) at \(path(context.codingPath))"
    @unknown default:
        return "\(error)"
    }
}

private func path(_ keys: [any CodingKey]) -> String {
    keys.isEmpty ? "the top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}
