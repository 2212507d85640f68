public import Foundation

/// One template of the WhatsApp Business Account in one language, as Meta's management API
/// describes it (`GET /{WABA_ID}/message_templates`: one entry per name and language). The
/// WhatsApp module reads Meta's JSON into it; the sandbox writes it.
public struct AccountTemplate: Sendable, Equatable {
    public var id: String?
    public var name: String
    public var language: String
    /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`, `IN_APPEAL`, `LIMIT_EXCEEDED`, `ARCHIVED`.
    public var status: String
    public var category: String?
    /// `POSITIONAL` or `NAMED` (Meta omits it for older, positional templates).
    public var parameterFormat: String?
    public var quality: String?
    /// `DOCUMENT`, `TEXT`, `IMAGE`, `VIDEO`, `LOCATION`, or nil without a header.
    public var headerFormat: String?
    public var headerText: String?
    public var body: String
    public var footer: String?
    public var buttons: [Button]

    public struct Button: Sendable, Equatable {
        /// `URL`, `QUICK_REPLY`, `PHONE_NUMBER`, `COPY_CODE`…
        public var type: String
        public var text: String
        public var url: String?

        public init(type: String, text: String, url: String? = nil) {
            self.type = type
            self.text = text
            self.url = url
        }
    }

    public init(
        id: String? = nil, name: String, language: String, status: String, category: String? = nil, parameterFormat: String? = nil,
        quality: String? = nil, headerFormat: String? = nil, headerText: String? = nil, body: String, footer: String? = nil,
        buttons: [Button] = []
    ) {
        self.id = id
        self.name = name
        self.language = language
        self.status = status
        self.category = category
        self.parameterFormat = parameterFormat
        self.quality = quality
        self.headerFormat = headerFormat
        self.headerText = headerText
        self.body = body
        self.footer = footer
        self.buttons = buttons
    }

    public var isApproved: Bool { status.uppercased() == "APPROVED" }

    /// The texts as a local definition keeps them.
    public var languageText: TemplateDefinition.LanguageText {
        TemplateDefinition.LanguageText(
            header: headerFormat?.uppercased() == "TEXT" ? headerText : nil, body: body, footer: footer,
            buttons: buttons.isEmpty ? nil : buttons.map { .init(text: $0.text, url: $0.url) })
    }
}

extension TemplateDefinition {
    /// This definition brought up to date with what Meta has under its name: Meta's texts per
    /// language, its category and parameter format, and its status per language in `meta`; the
    /// local mapping (which manifest field fills which parameter) is kept. Languages Meta does not
    /// have stay (and `templates check` names them).
    public func updated(from account: [AccountTemplate], at time: Date) -> TemplateDefinition {
        var result = self
        for entry in account where entry.name == name {
            result.languages[entry.language] = entry.languageText
            if let category = entry.category { result.category = category }
            if let format = entry.parameterFormat { result.parameterFormat = ParameterFormat(rawValue: format.uppercased()) }
        }
        result.meta = TemplateDefinition.accountRecord(of: account.filter { $0.name == name }, at: time)
        return result
    }

    /// A new definition for a template Meta has and the folder does not: Meta's texts, and a
    /// mapping guessed only where it can be (a named parameter whose name is a manifest field,
    /// a document header from `document_url`); the rest is `unmapped_…` until someone edits it.
    /// Nil (with the reason) for what cannot be sent from a manifest (image, video or location
    /// headers; authentication templates).
    public static func new(from entries: [AccountTemplate], at time: Date) -> Result<TemplateDefinition, TemplateError> {
        guard let first = entries.first else { return .failure(TemplateError("no entries")) }
        let name = first.name
        if first.category?.uppercased() == "AUTHENTICATION" {
            return .failure(TemplateError("'\(name)' is an authentication template (one-time codes), not something a manifest sends"))
        }
        if let format = entries.compactMap(\.headerFormat).first(where: { !["DOCUMENT", "TEXT"].contains($0.uppercased()) }) {
            return .failure(TemplateError("'\(name)' has a \(format) header; only DOCUMENT and TEXT headers are sent from a manifest"))
        }
        let named = first.parameterFormat?.uppercased() == "NAMED"
        // The placeholders of the first language with any decide the mapping.
        let tokens = (try? placeholderTokens(in: first.body, where: name)) ?? []
        let body: [Parameter] = tokens.enumerated().map { index, token in
            if named {
                return Parameter(source: isManifestField(token) ? token : "\(unmappedPrefix)\(token)", name: token)
            }
            return Parameter(source: "\(unmappedPrefix)\(index + 1)")
        }
        var header: Header? = nil
        switch first.headerFormat?.uppercased() {
        case "DOCUMENT": header = Header(format: "DOCUMENT", link: "document_url", filename: "{invoice_id}.pdf")
        case "TEXT":
            let headerTokens = (try? placeholderTokens(in: first.headerText ?? "", where: name)) ?? []
            if let token = headerTokens.first {
                let known = named && isManifestField(token)
                header = Header(format: "TEXT", source: known ? token : "\(unmappedPrefix)header", name: named ? token : nil)
            } else {
                header = Header(format: "TEXT")
            }
        default: break
        }
        var buttons: [Button] = []
        for (index, button) in first.buttons.enumerated() where button.url?.contains("{{") == true {
            buttons.append(Button(index: index, subType: "url", source: "\(unmappedPrefix)button_\(index)"))
        }
        var definition = TemplateDefinition(
            name: name, category: first.category ?? "UTILITY", description: "Read from Meta by `dispatcher templates pull`.",
            parameterFormat: named ? .named : nil, withDocument: nil, header: header, body: body, buttons: buttons.isEmpty ? nil : buttons,
            languages: [:], meta: nil)
        definition = definition.updated(from: entries, at: time)
        return .success(definition)
    }

    static func accountRecord(of entries: [AccountTemplate], at time: Date) -> AccountRecord {
        var languages: [String: LanguageRecord] = [:]
        for entry in entries { languages[entry.language] = LanguageRecord(id: entry.id, status: entry.status, quality: entry.quality) }
        return AccountRecord(
            pulledAt: isoUTC(time), category: entries.first?.category, parameterFormat: entries.first?.parameterFormat ?? "POSITIONAL",
            languages: languages)
    }

    /// Every way this definition differs from Meta's template of the same name, in words: what
    /// `templates check` prints. Empty when they agree.
    public func differences(from account: [AccountTemplate]) -> [String] {
        let entries = account.filter { $0.name == name }
        guard !entries.isEmpty else { return ["Meta has no template named '\(name)' in this business account (sends would answer 132001)"] }
        var notes: [String] = []
        if let category = entries.first?.category, category.uppercased() != self.category.uppercased() {
            notes.append("category: here \(self.category), at Meta \(category)")
        }
        let metaFormat = (entries.first?.parameterFormat ?? "POSITIONAL").uppercased()
        let localFormat = (parameterFormat ?? .positional).rawValue
        if metaFormat != localFormat {
            notes.append("parameter format: here \(localFormat), at Meta \(metaFormat) (every send would be refused)")
        }
        for language in languages.keys.sorted() where !entries.contains(where: { $0.language == language }) {
            notes.append("language \(language): defined here, not at Meta (sends in it would answer 132001)")
        }
        for entry in entries.sorted(by: { $0.language < $1.language }) {
            let here = "language \(entry.language)"
            guard let local = languages[entry.language] else {
                notes.append("\(here): at Meta (\(entry.status)), not defined here (rows in that locale fall back to another language)")
                continue
            }
            if !entry.isApproved { notes.append("\(here): status \(entry.status) at Meta (sends would be refused)") }
            let localHeader = header?.format.uppercased()
            if (entry.headerFormat?.uppercased()) != localHeader {
                notes.append("\(here): header here \(localHeader ?? "none"), at Meta \(entry.headerFormat ?? "none")")
            }
            if local.body != entry.body { notes.append("\(here): body differs\n    here:    \(local.body)\n    at Meta: \(entry.body)") }
            if localHeader == "TEXT", local.header != entry.headerText {
                notes.append("\(here): header text differs (here '\(local.header ?? "")', at Meta '\(entry.headerText ?? "")')")
            }
            if local.footer != entry.footer {
                notes.append("\(here): footer differs (here '\(local.footer ?? "")', at Meta '\(entry.footer ?? "")')")
            }
            if (local.buttons ?? []).map(\.text) != entry.buttons.map(\.text)
                || (local.buttons ?? []).map(\.url) != entry.buttons.map(\.url)
            {
                notes.append("\(here): buttons differ")
            }
        }
        return notes
    }
}

/// A (template, language) a run is about to send that Meta would refuse.
public struct UnapprovedTemplate: Sendable, Equatable, CustomStringConvertible {
    public var template: String
    public var language: String
    /// Meta's status, or nil when Meta has no such template in that language.
    public var status: String?

    public init(template: String, language: String, status: String?) {
        self.template = template
        self.language = language
        self.status = status
    }

    public var description: String {
        switch status?.uppercased() {
        case nil: "template '\(template)' does not exist at Meta in language \(language) (it would answer 132001)"
        case "PAUSED":
            "template '\(template)' (\(language)) is PAUSED at Meta for its quality: 3 hours the first time, 6 the second, then DISABLED (132015)"
        case "DISABLED": "template '\(template)' (\(language)) is DISABLED at Meta (132016): edit it and submit it again"
        case "PENDING", "IN_APPEAL": "template '\(template)' (\(language)) is \(status!) at Meta: not approved yet"
        default: "template '\(template)' (\(language)) is \(status!) at Meta, not APPROVED"
        }
    }

    /// What of `needed` Meta would not send: each (template, language) must be APPROVED.
    public static func find(needed: [(template: String, language: String)], account: [AccountTemplate]) -> [UnapprovedTemplate] {
        var seen = Set<String>()
        var problems: [UnapprovedTemplate] = []
        for (template, language) in needed where seen.insert("\(template)\u{1F}\(language)").inserted {
            let entry = account.first { $0.name == template && $0.language == language }
            if entry?.isApproved != true {
                problems.append(UnapprovedTemplate(template: template, language: language, status: entry?.status))
            }
        }
        return problems.sorted { ($0.template, $0.language) < ($1.template, $1.language) }
    }
}

/// `2026-03-10T12:00:00Z`.
func isoUTC(_ date: Date) -> String {
    iso8601(date.timeIntervalSince1970) ?? ""
}

/// A field a template parameter can name without an extra column (`MessageRenderer.value(of:)`).
func isManifestField(_ name: String) -> Bool {
    ManifestField.allCases.contains { $0.name == name } || name == "period"
}
