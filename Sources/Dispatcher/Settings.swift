import Foundation

/// The settings the service this replaces took from its environment, with their defaults.
///
/// Secrets (`accessToken`, `appSecret`, `verifyToken`, `apiToken`, `jwtSecret`, `propertySystemToken`) are only ever
/// read from here: never printed, logged or served (see `masked`).
public struct Settings: Sendable {
    public var accessToken: String?
    public var phoneNumberID: String?
    /// The WhatsApp Business Account the number belongs to: its templates are read with it.
    public var businessAccountID: String?
    public var appSecret: String?
    public var verifyToken: String?
    public var templateName: String
    public var templateLanguage: String
    public var apiBaseURL: String
    public var apiVersion: String
    public var databaseURL: String
    public var apiToken: String?
    public var jwtSecret: String?
    public var defaultCountryCode: String?
    /// The property system's address (`DISPATCHER_PROPERTY_SYSTEM_URL`): document links on it, or
    /// relative to it, are fetched from it and uploaded to Meta.
    public var propertySystemURL: String?
    /// The service token batch runs fetch the property system's PDFs with (`Authorization: Bearer`).
    public var propertySystemToken: String?
    /// Sent as `organizationId` with those fetches (the property system wants its realm).
    public var propertySystemOrganization: String?
    /// Only links below this path are fetched (default `/api/v2/documents/`).
    public var propertySystemDocumentsPath: String?
    /// How long a sender number's lease lasts unless renewed (renewed every third of it): how long
    /// a crashed `send` keeps its number from the next one.
    public var senderLeaseSeconds: Double
    /// The template for each kind the landlord UI asks for (`invoice`, `rentcall`,
    /// `rentcall_reminder`, `rentcall_last_reminder`), from the old service's
    /// `WHATSAPP_INVOICE_TEMPLATE`, `WHATSAPP_PAYMENT_NOTICE_TEMPLATE`,
    /// `WHATSAPP_PAYMENT_REMINDER_TEMPLATE`, `WHATSAPP_FINAL_NOTICE_TEMPLATE`; a kind not set is
    /// sent with the template of its own name.
    public var templateNames: [String: String]
    /// `serve`'s port when `--listen` is not given (the old service's `WHATSAPP_PORT`).
    public var servePort: Int?
    /// The old service's settings read under their old names, said once by the commands that use them.
    public var notes: [String]
    /// Why `ACCESS_TOKEN_SECRET` (the old name) was not taken, when it was not: the landlord UI's
    /// tokens are then refused (`doctor` counts it as a problem).
    public var ignoredJWTSecret: String?

    public static let defaultDatabaseURL = "sqlite:dispatcher.sqlite"

    /// Reads `WHATSAPP_*` and `DISPATCHER_*` from an environment (the process's by default).
    public init(environment: [String: String]) {
        func value(_ key: String) -> String? {
            guard let v = environment[key]?.trimmingASCIIWhitespace(), !v.isEmpty else { return nil }
            return v
        }
        var notes: [String] = []
        ignoredJWTSecret = nil
        accessToken = value("WHATSAPP_ACCESS_TOKEN")
        phoneNumberID = value("WHATSAPP_PHONE_NUMBER_ID")
        businessAccountID = value("WHATSAPP_BUSINESS_ACCOUNT_ID")
        appSecret = value("WHATSAPP_APP_SECRET")
        verifyToken = value("WHATSAPP_WEBHOOK_VERIFY_TOKEN")
        templateNames = [:]
        for (kind, key) in Settings.kindTemplateKeys {
            if let name = value(key) { templateNames[kind] = name }
        }
        templateName = value("WHATSAPP_TEMPLATE_NAME") ?? templateNames["invoice"] ?? "invoice"
        templateLanguage = value("WHATSAPP_TEMPLATE_LANGUAGE") ?? "es"
        apiBaseURL = value("WHATSAPP_API_BASE_URL") ?? "https://graph.facebook.com"
        apiVersion = value("WHATSAPP_API_VERSION") ?? "v23.0"
        // The old service's WHATSAPP_API_URL carried the version: https://graph.facebook.com/v18.0.
        if value("WHATSAPP_API_BASE_URL") == nil, let old = value("WHATSAPP_API_URL") {
            let (base, version) = Settings.splitVersion(old)
            apiBaseURL = base
            if let version, value("WHATSAPP_API_VERSION") == nil { apiVersion = version }
            notes.append(
                "WHATSAPP_API_URL is read as WHATSAPP_API_BASE_URL=\(base)\(version.map { " and WHATSAPP_API_VERSION=\($0)" } ?? "") (the new names)"
            )
        }
        databaseURL = value("DISPATCHER_DATABASE_URL") ?? Settings.defaultDatabaseURL
        apiToken = value("DISPATCHER_API_TOKEN")
        jwtSecret = value("DISPATCHER_JWT_SECRET")
        if jwtSecret == nil, let old = value("ACCESS_TOKEN_SECRET") {
            if old.utf8.count >= 32 {
                jwtSecret = old
                notes.append("ACCESS_TOKEN_SECRET (the property system's name) is read as DISPATCHER_JWT_SECRET")
            } else {
                // Taken, it would stop serve (jwt-kit refuses short HMAC keys): said instead, as
                // the old service's deployments start with it.
                ignoredJWTSecret =
                    "ACCESS_TOKEN_SECRET is shorter than 32 bytes: the property system's tokens are not accepted until it is lengthened (there and here) or DISPATCHER_JWT_SECRET is set"
                notes.append(ignoredJWTSecret!)
            }
        }
        defaultCountryCode = value("DISPATCHER_DEFAULT_COUNTRY_CODE")
        propertySystemURL = value("DISPATCHER_PROPERTY_SYSTEM_URL")
        propertySystemToken = value("DISPATCHER_PROPERTY_SYSTEM_TOKEN")
        propertySystemOrganization = value("DISPATCHER_PROPERTY_SYSTEM_ORGANIZATION")
        propertySystemDocumentsPath = value("DISPATCHER_PROPERTY_SYSTEM_DOCUMENTS_PATH")
        senderLeaseSeconds = value("DISPATCHER_SENDER_LEASE_SECONDS").flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil } ?? 30
        servePort = value("WHATSAPP_PORT").flatMap(Int.init).flatMap { (1...65535).contains($0) ? $0 : nil }
        if let port = value("WHATSAPP_PORT") {
            notes.append(
                servePort == nil
                    ? "WHATSAPP_PORT '\(port)' is not a port: ignored"
                    : "WHATSAPP_PORT is read as serve's port (the new way: --listen HOST:PORT)")
        }
        self.notes = notes
    }

    /// Why `WHATSAPP_API_BASE_URL` cannot be used, or nil when it can: checked when a command
    /// starts, so that a typo stops it before the first request instead of failing every message.
    public var apiBaseURLProblem: String? {
        Self.baseURLProblem(apiBaseURL)
    }

    static func baseURLProblem(_ text: String) -> String? {
        let problem = "WHATSAPP_API_BASE_URL '\(text)' is not usable: "
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased() else {
            return problem + "it is not a URL (e.g. https://graph.facebook.com)"
        }
        guard scheme == "https" || scheme == "http" else { return problem + "it must start with https://" }
        guard let host = url.host, !host.isEmpty else { return problem + "it has no host name" }
        if url.query != nil || url.fragment != nil { return problem + "it must not have a query or fragment" }
        if !url.path.isEmpty && url.path != "/" { return problem + "give the host only; the version is WHATSAPP_API_VERSION" }
        return nil
    }

    /// The old service's per-kind template settings.
    public static let kindTemplateKeys: [(kind: String, key: String)] = [
        ("invoice", "WHATSAPP_INVOICE_TEMPLATE"), ("rentcall", "WHATSAPP_PAYMENT_NOTICE_TEMPLATE"),
        ("rentcall_reminder", "WHATSAPP_PAYMENT_REMINDER_TEMPLATE"), ("rentcall_last_reminder", "WHATSAPP_FINAL_NOTICE_TEMPLATE"),
    ]

    /// `https://graph.facebook.com/v18.0` → (`https://graph.facebook.com`, `v18.0`); a URL without a
    /// version as it is.
    static func splitVersion(_ url: String) -> (base: String, version: String?) {
        var text = url
        while text.hasSuffix("/") { text.removeLast() }
        guard let slash = text.lastIndex(of: "/") else { return (text, nil) }
        let last = text[text.index(after: slash)...]
        let isVersion =
            last.first == "v" && last.count > 1 && last.dropFirst().allSatisfy { $0.isASCII && ($0.isNumber || $0 == ".") }
        return isVersion ? (String(text[..<slash]), String(last)) : (text, nil)
    }

    /// The property system, or why `DISPATCHER_PROPERTY_SYSTEM_URL` is not usable.
    public func propertySystem() throws(SettingsError) -> PropertySystem? {
        guard let url = propertySystemURL else { return nil }
        let documents = propertySystemDocumentsPath ?? "/api/v2/documents/"
        guard let system = PropertySystem(url: url, documentsPath: documents) else {
            throw SettingsError("DISPATCHER_PROPERTY_SYSTEM_URL '\(url)' is not an http(s) address (e.g. https://pm.example.com)")
        }
        return system
    }

    /// What batch runs send with each PDF fetch: the service token and the organization.
    public var propertySystemHeaders: [(String, String)] {
        var headers: [(String, String)] = []
        if let token = propertySystemToken { headers.append(("Authorization", "Bearer \(token)")) }
        if let organization = propertySystemOrganization { headers.append(("organizationId", organization)) }
        return headers
    }

    /// The send endpoint, `{base}/{version}/{phone_number_id}/messages`.
    public var messagesEndpoint: String {
        var base = apiBaseURL
        while base.hasSuffix("/") { base.removeLast() }
        return "\(base)/\(apiVersion)/\(phoneNumberID ?? "{phone_number_id}")/messages"
    }

    /// A secret shown as its length and last two characters at most (`••••••••3f`), or `(not set)`.
    public static func masked(_ secret: String?) -> String {
        guard let secret, !secret.isEmpty else { return "(not set)" }
        if secret.count < 20 { return "set (\(secret.count) characters)" }
        return String(repeating: "•", count: 8) + secret.suffix(2) + " (\(secret.count) characters)"
    }
}

/// A setting that cannot be used, named with what is wrong.
public struct SettingsError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
