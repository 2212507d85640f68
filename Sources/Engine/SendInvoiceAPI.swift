import Dispatcher
public import Foundation

/// The body the property system's landlord UI posts to `/send-invoice` (the old service's, unchanged).
public struct SendInvoiceRequest: Decodable, Sendable {
    public var phoneNumbers: [String]
    public var tenantName: String
    public var invoicePeriod: String?
    /// A number or a string in the old UI.
    public var totalAmount: Decimal
    /// An ISO code, or `RD$` from older setups (meaning DOP).
    public var currency: String?
    public var organizationName: String?
    public var invoiceURL: String?
    public var locale: String?
    public var templateName: String?
    public var dueDate: String?
    public var daysOverdue: Int?
    /// Ours, optional: makes the call idempotent.
    public var invoiceID: String?

    enum CodingKeys: String, CodingKey {
        case phoneNumbers, tenantName, invoicePeriod, totalAmount, currency, organizationName, locale, templateName, dueDate, daysOverdue
        case invoiceURL = "invoiceUrl"
        case invoiceID = "invoiceId"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let many = try? c.decode([String].self, forKey: .phoneNumbers) {
            phoneNumbers = many
        } else {
            phoneNumbers = [try c.decode(String.self, forKey: .phoneNumbers)]
        }
        tenantName = try c.decode(String.self, forKey: .tenantName)
        invoicePeriod = try c.decodeIfPresent(String.self, forKey: .invoicePeriod)
        if let number = try? c.decode(Decimal.self, forKey: .totalAmount) {
            totalAmount = number
        } else {
            let text = try c.decode(String.self, forKey: .totalAmount).trimmingCharacters(in: .whitespaces)
            guard let number = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")),
                text.allSatisfy({ $0.isNumber || $0 == "." || $0 == "-" })
            else {
                throw DecodingError.dataCorruptedError(
                    forKey: .totalAmount, in: c, debugDescription: "totalAmount '\(text)' is not a number")
            }
            totalAmount = number
        }
        currency = try c.decodeIfPresent(String.self, forKey: .currency)
        organizationName = try c.decodeIfPresent(String.self, forKey: .organizationName)
        invoiceURL = try c.decodeIfPresent(String.self, forKey: .invoiceURL)
        locale = try c.decodeIfPresent(String.self, forKey: .locale)
        templateName = try c.decodeIfPresent(String.self, forKey: .templateName)
        dueDate = try c.decodeIfPresent(String.self, forKey: .dueDate)
        daysOverdue = try c.decodeIfPresent(Int.self, forKey: .daysOverdue)
        invoiceID = try c.decodeIfPresent(String.self, forKey: .invoiceID)
    }

    /// `RD$` → `DOP`; other symbols the old UI used; ISO codes as they are.
    public var currencyCode: String? {
        guard let currency = currency?.trimmingCharacters(in: .whitespaces), !currency.isEmpty else { return nil }
        switch currency.uppercased() {
        case "RD$": return "DOP"
        case "US$": return "USD"
        case "€": return "EUR"
        default: return currency.uppercased()
        }
    }
}

/// The answer the landlord UI reads, with our fields added.
public struct SendInvoiceResponse: Encodable, Sendable {
    public var success: Bool
    public var results: [Result]
    public var summary: Summary
    /// What happened, in a sentence the landlord UI shows (the old service's field).
    public var message: String?
    /// The template sent (the old service's field): the organization's name for the kind asked.
    public var templateName: String?

    public struct Result: Encodable, Sendable {
        public var phoneNumber: String
        public var success: Bool
        public var method = "api"
        /// The wamid when Meta accepted it (the old field), else our id.
        public var messageId: String?
        public var id: String?
        public var wamid: String?
        public var state: String
        public var error: String?

        public init(phoneNumber: String, success: Bool, id: String?, wamid: String?, state: String, error: String?) {
            self.phoneNumber = phoneNumber
            self.success = success
            self.messageId = wamid ?? id
            self.id = id
            self.wamid = wamid
            self.state = state
            self.error = error
        }

        enum CodingKeys: String, CodingKey { case phoneNumber, success, method, messageId, id, wamid, state, error }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(phoneNumber, forKey: .phoneNumber)
            try c.encode(success, forKey: .success)
            try c.encode(method, forKey: .method)
            try c.encode(messageId, forKey: .messageId)
            try c.encode(id, forKey: .id)
            try c.encode(wamid, forKey: .wamid)
            try c.encode(state, forKey: .state)
            try c.encode(error, forKey: .error)
        }
    }

    public struct Summary: Encodable, Sendable {
        public var total: Int
        public var apiSuccess: Int
        /// Messages the old service could only offer as a wa.me link: never here (always 0; the
        /// UI reads the field).
        public var urlFallback = 0
        public var failed: Int
    }

    /// `nothingDue`: why nothing was sent, when nothing was to be (amount `<= 0`).
    public init(results: [Result], nothingDue: String? = nil, templateName: String? = nil) {
        self.results = results
        self.templateName = templateName
        let ok = results.filter(\.success).count
        self.success = nothingDue != nil || (ok == results.count && !results.isEmpty)
        self.summary = Summary(total: results.count, apiSuccess: ok, failed: results.count - ok)
        if let nothingDue {
            message = nothingDue
        } else if ok == results.count {
            message = "WhatsApp took the invoice for \(ok) of \(results.count) number\(results.count == 1 ? "" : "s")"
        } else {
            let reasons = Array(Set(results.compactMap(\.error))).sorted().prefix(3).joined(separator: "; ")
            message = "WhatsApp took the invoice for \(ok) of \(results.count) number\(results.count == 1 ? "" : "s"): \(reasons)"
        }
    }
}

/// Sends one invoice for the HTTP API, through the same engine, pacing and idempotency as a run.
public protocol InvoiceSendService: Sendable {
    /// Answers once each send has an outcome. Throws `APIError` for a request that cannot be sent.
    func sendInvoice(_ request: SendInvoiceRequest, caller: InvoiceCaller) async throws -> SendInvoiceResponse
}

/// Who called `/send-invoice`, as far as the property system's PDFs are concerned.
public struct InvoiceCaller: Sendable {
    /// The `organizationId` header.
    public var organizationID: String?
    /// The caller's `Authorization` header, only when it is the property system's own token (it
    /// is sent back to the property system to fetch the invoice PDF); never our static API token.
    public var propertySystemAuthorization: String?

    public init(organizationID: String? = nil, propertySystemAuthorization: String? = nil) {
        self.organizationID = organizationID
        self.propertySystemAuthorization = propertySystemAuthorization
    }
}

/// Why a `/send-invoice` request cannot be taken, by kind, so that the server answers by type
/// (an `.invalid` request is a 400), not by reading text.
public struct InvoiceRequestError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The request names a field wrongly: the message says which and why.
        case invalid
        /// The same `invoiceId` was sent before with another amount or currency (a 409).
        case conflict
        /// The `organizationId` is not one this process sends for (a 403).
        case unknownOrganization
    }
    public var code: Code
    public var message: String

    public static func invalid(_ message: String) -> InvoiceRequestError { InvoiceRequestError(code: .invalid, message: message) }
    public static func conflict(_ message: String) -> InvoiceRequestError { InvoiceRequestError(code: .conflict, message: message) }
    public static func unknownOrganization(_ message: String) -> InvoiceRequestError {
        InvoiceRequestError(code: .unknownOrganization, message: message)
    }

    public var description: String { message }
}
