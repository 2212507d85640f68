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
    /// How long a sender number's lease lasts unless renewed (renewed every third of it): how long
    /// a crashed `send` keeps its number from the next one.
    public var senderLeaseSeconds: Double

    public static let defaultDatabaseURL = "sqlite:dispatcher.sqlite"

    /// Reads `WHATSAPP_*` and `DISPATCHER_*` from an environment (the process's by default).
    public init(environment: [String: String]) {
        func value(_ key: String) -> String? {
            guard let v = environment[key]?.trimmingASCIIWhitespace(), !v.isEmpty else { return nil }
            return v
        }
        accessToken = value("WHATSAPP_ACCESS_TOKEN")
        phoneNumberID = value("WHATSAPP_PHONE_NUMBER_ID")
        businessAccountID = value("WHATSAPP_BUSINESS_ACCOUNT_ID")
        appSecret = value("WHATSAPP_APP_SECRET")
        verifyToken = value("WHATSAPP_WEBHOOK_VERIFY_TOKEN")
        templateName = value("WHATSAPP_TEMPLATE_NAME") ?? "invoice"
        templateLanguage = value("WHATSAPP_TEMPLATE_LANGUAGE") ?? "es"
        apiBaseURL = value("WHATSAPP_API_BASE_URL") ?? "https://graph.facebook.com"
        apiVersion = value("WHATSAPP_API_VERSION") ?? "v23.0"
        databaseURL = value("DISPATCHER_DATABASE_URL") ?? Settings.defaultDatabaseURL
        apiToken = value("DISPATCHER_API_TOKEN")
        jwtSecret = value("DISPATCHER_JWT_SECRET")
        defaultCountryCode = value("DISPATCHER_DEFAULT_COUNTRY_CODE")
        propertySystemURL = value("DISPATCHER_PROPERTY_SYSTEM_URL")
        propertySystemToken = value("DISPATCHER_PROPERTY_SYSTEM_TOKEN")
        propertySystemOrganization = value("DISPATCHER_PROPERTY_SYSTEM_ORGANIZATION")
        senderLeaseSeconds = value("DISPATCHER_SENDER_LEASE_SECONDS").flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil } ?? 30
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

    /// The property system, or why `DISPATCHER_PROPERTY_SYSTEM_URL` is not usable.
    public func propertySystem() throws(SettingsError) -> PropertySystem? {
        guard let url = propertySystemURL else { return nil }
        guard let system = PropertySystem(url: url) else {
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
