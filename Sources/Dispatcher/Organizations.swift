public import Foundation

/// One organization (a realm of the property system) as `serve` sends for it: its own WhatsApp
/// number, token, business account and templates, and the defaults its landlords' data needs.
public struct Organization: Sendable, Equatable {
    /// The property system's organization id (its `organizationId` header).
    public var id: String
    public var name: String
    public var phoneNumberID: String
    public var accessToken: String
    public var businessAccountID: String?
    /// Kind (`invoice`, `rentcall`, …) → template name.
    public var templateNames: [String: String]
    public var defaultCountryCode: String?
    /// For `/send-invoice` bodies without `currency`.
    public var currency: String
    /// Template language for rows or calls without a usable locale.
    public var language: String
    /// The property system's accounts (emails) that may reach this organization through `serve`'s
    /// API with their own tokens (`OrganizationAccess`).
    public var members: [String] = []
    /// The environment variable its token comes from (said when Meta refuses the token).
    public var tokenVariable = "WHATSAPP_ACCESS_TOKEN"

    public init(
        id: String, name: String, phoneNumberID: String, accessToken: String, businessAccountID: String? = nil,
        templateNames: [String: String] = [:], defaultCountryCode: String? = nil, currency: String = "DOP", language: String = "es"
    ) {
        self.id = id
        self.name = name
        self.phoneNumberID = phoneNumberID
        self.accessToken = accessToken
        self.businessAccountID = businessAccountID
        self.templateNames = templateNames
        self.defaultCountryCode = defaultCountryCode
        self.currency = currency
        self.language = language
    }

    /// The in-process sandbox's organization: the environment's number if set, its own token.
    public static func sandbox(_ settings: Settings) -> Organization {
        Organization(
            id: "default", name: "default", phoneNumberID: settings.phoneNumberID ?? "SANDBOX", accessToken: "sandbox-token",
            businessAccountID: settings.businessAccountID, templateNames: settings.templateNames,
            defaultCountryCode: settings.defaultCountryCode, currency: "DOP", language: settings.templateLanguage)
    }

    /// The single-number environment settings as a one-organization configuration (id `default`),
    /// or nil without a token and number id.
    public static func fromEnvironment(_ settings: Settings) -> Organization? {
        guard let token = settings.accessToken, let number = settings.phoneNumberID else { return nil }
        return Organization(
            id: "default", name: "default", phoneNumberID: number, accessToken: token, businessAccountID: settings.businessAccountID,
            templateNames: settings.templateNames, defaultCountryCode: settings.defaultCountryCode, currency: "DOP",
            language: settings.templateLanguage)
    }
}

/// A configuration file that cannot be used, naming the organization and the field.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// `dispatcher.json`: the organizations, secrets by reference to the environment (a token is
/// never written in the file). See docs/configuration.md.
public struct OrganizationsFile: Sendable {
    public var organizations: [Organization]

    struct Raw: Decodable {
        var organizations: [Entry]

        struct Entry: Decodable {
            var id: String?
            var name: String?
            var phoneNumberID: String?
            var tokenEnv: String?
            var token: String?
            var businessAccountID: String?
            var templates: [String: String]?
            var defaultCountryCode: String?
            var currency: String?
            var language: String?
            var members: [String]?

            enum CodingKeys: String, CodingKey {
                case id, name, token, templates, currency, language, members
                case phoneNumberID = "phone_number_id"
                case tokenEnv = "token_env"
                case businessAccountID = "business_account_id"
                case defaultCountryCode = "default_country_code"
            }
        }
    }

    /// Reads and checks the file; `environment` resolves `token_env`.
    /// `requireTokens: false` (a preview, which sends nothing): an unset `token_env` leaves the
    /// organization's token empty instead of refusing the file.
    public init(contentsOf path: String, environment: [String: String], requireTokens: Bool = true) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError("\(path): cannot be read (\(error.localizedDescription))")
        }
        try self.init(json: data, source: path, environment: environment, requireTokens: requireTokens)
    }

    public init(json: Data, source: String, environment: [String: String], requireTokens: Bool = true) throws {
        let raw: Raw
        do {
            raw = try JSONDecoder().decode(Raw.self, from: json)
        } catch let error as DecodingError {
            throw ConfigurationError("\(source): \(error.readable(in: json)) (docs/configuration.md)")
        }
        var seen = Set<String>(), numbers = Set<String>()
        var organizations: [Organization] = []
        for (index, entry) in raw.organizations.enumerated() {
            let label = entry.id.map { "organization '\($0)'" } ?? "organization #\(index + 1)"
            func fail(_ field: String, _ problem: String) -> ConfigurationError {
                ConfigurationError("\(source): \(label): \(field) \(problem)")
            }
            guard let id = entry.id?.trimmingASCIIWhitespace(), !id.isEmpty else { throw fail("id", "is required") }
            // It names runs (`march@caribe`) and report folders.
            guard id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
                throw fail("id", "'\(id)' may hold only letters, digits, '-', '_' and '.' (it names runs and report folders)")
            }
            guard id.first != "." else {
                throw fail("id", "'\(id)' may not begin with '.' (it names report folders, which would be hidden)")
            }
            guard seen.insert(id).inserted else { throw fail("id", "appears twice") }
            if entry.token != nil {
                throw fail("token", "must not be written in the file: put it in the environment and name the variable with token_env")
            }
            guard let number = entry.phoneNumberID?.trimmingASCIIWhitespace(), !number.isEmpty,
                number.allSatisfy({ $0.isASCII && ($0.isNumber || $0.isLetter || $0 == "-" || $0 == "_") })
            else { throw fail("phone_number_id", "is required (the sender number's id in WhatsApp Manager)") }
            guard numbers.insert(number).inserted else {
                throw fail("phone_number_id", "is another organization's too: each organization sends from its own number")
            }
            guard let variable = entry.tokenEnv, !variable.isEmpty else {
                throw fail("token_env", "is required (the environment variable holding its WhatsApp token)")
            }
            let token = environment[variable]?.trimmingASCIIWhitespace() ?? ""
            if token.isEmpty && requireTokens {
                throw fail("token_env", "names \(variable), which is not set in the environment")
            }
            if let code = entry.defaultCountryCode, !(1...3).contains(code.count) || !code.allSatisfy({ $0.isASCII && $0.isNumber }) {
                throw fail("default_country_code", "'\(code)' is not a calling code (1 to 3 digits)")
            }
            if let currency = entry.currency, Currency(code: currency) == nil {
                throw fail("currency", "'\(currency)' is not an ISO 4217 code")
            }
            for (kind, name) in entry.templates ?? [:] {
                guard ["invoice", "rentcall", "rentcall_reminder", "rentcall_last_reminder"].contains(kind) else {
                    throw fail(
                        "templates", "names kind '\(kind)'; the kinds are invoice, rentcall, rentcall_reminder, rentcall_last_reminder")
                }
                guard isTemplateName(name) else { throw fail("templates.\(kind)", "'\(name)' is not a template name") }
            }
            let members = (entry.members ?? []).map { $0.trimmingASCIIWhitespace() }
            for member in members where member.split(separator: "@").count != 2 || member.contains(" ") {
                throw fail("members", "'\(member)' is not an email address (the property system's account)")
            }
            var organization = Organization(
                id: id, name: entry.name ?? id, phoneNumberID: number, accessToken: token, businessAccountID: entry.businessAccountID,
                templateNames: entry.templates ?? [:], defaultCountryCode: entry.defaultCountryCode, currency: entry.currency ?? "DOP",
                language: entry.language ?? "es")
            organization.members = members
            organization.tokenVariable = variable
            organizations.append(organization)
        }
        if organizations.isEmpty { throw ConfigurationError("\(source): no organizations") }
        self.organizations = organizations
    }
}

/// Which rows of a manifest one run sends, by the manifest's `organization` column: each
/// organization's rows go in its own run, from its own number. A row naming no organization goes
/// to `fallback` (the only organization configured, or `--organization`); a row naming one not
/// configured, or none when there is no fallback, is an error that exactly one run reports
/// (`reportsStrays`), so that no row is sent from the wrong number or dropped without a word.
public struct OrganizationScope: Sendable, Equatable {
    /// The organization whose rows are this run's; nil: every configured one's (a check of the
    /// whole manifest before the runs start).
    public var organization: String?
    /// Every organization configured, in the configuration's order.
    public var known: [String]
    /// The organization of rows that name none; nil: such rows are errors.
    public var fallback: String?
    /// This run reports the rows that belong to no configured organization.
    public var reportsStrays: Bool
    /// Said after a row's unknown organization (how this setup takes another one).
    public var strayHint: String?

    public init(organization: String?, known: [String], fallback: String?, reportsStrays: Bool, strayHint: String? = nil) {
        self.organization = organization
        self.known = known
        self.fallback = fallback
        self.reportsStrays = reportsStrays
        self.strayHint = strayHint
    }

    public enum Owner: Sendable, Equatable {
        /// This run's row, for the organization with this id.
        case this(String)
        /// A configured organization's, sent by its own run.
        case other
        /// Nobody's: why (the row's error).
        case nobody(String)
    }

    public func owner(of value: String?) -> Owner {
        let id: String
        if let value, !value.isEmpty {
            id = value
        } else if let fallback {
            id = fallback
        } else {
            return .nobody(
                "is missing: several organizations are configured (\(known.joined(separator: ", "))); name one per row, or send with --organization"
            )
        }
        guard known.contains(id) else {
            return .nobody(
                "'\(id)' is not a configured organization (configured: \(known.joined(separator: ", "))): \(strayHint ?? "see docs/configuration.md")"
            )
        }
        if let organization, organization != id { return .other }
        return .this(id)
    }
}

/// A manifest's rows by organization, read in one pass before the organizations' runs start:
/// which runs to start, and the rows no configured organization owns (each named).
public struct OrganizationCensus: Sendable {
    /// Rows per organization id.
    public var rows: [String: Int] = [:]
    /// Rows that belong to no configured organization, up to `ManifestImporter.issueLimit`.
    public var strays: [ValidationIssue] = []
    public var strayCount = 0

    /// Reads `path` (its `organization` column or element, and the XML root's default) against
    /// `scope` (its `organization` is ignored: every configured one is counted). A manifest that
    /// cannot be read is left to the runs, which report it with the line.
    public init(path: String, scope: OrganizationScope) {
        var scope = scope
        scope.organization = nil
        let reader = ManifestImporter.reader(for: path)
        var census = (rows: [String: Int](), strays: [ValidationIssue](), strayCount: 0)
        try? reader.read { record in
            let value = record[.organization].map { String(decoding: $0, as: UTF8.self).trimmingASCIIWhitespace() }
            switch scope.owner(of: value?.isEmpty == false ? value : reader.declaredDefaults[.organization]) {
            case .this(let id): census.rows[id, default: 0] += 1
            case .other: break
            case .nobody(let problem):
                census.strayCount += 1
                if census.strays.count < ManifestImporter.issueLimit {
                    let id = record[.invoiceID].map { String(decoding: $0, as: UTF8.self).trimmingASCIIWhitespace() }
                    census.strays.append(ValidationIssue(line: record.line, invoiceID: id, field: "organization", message: problem))
                }
            }
        }
        (rows, strays, strayCount) = census
    }
}
