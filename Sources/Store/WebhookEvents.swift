import Foundation

// What a webhook told us, in the store's terms: the WhatsApp module maps Meta's JSON to these.

/// A status as Meta's webhook names it: the four the dispatcher acts on (`StatusRule`), or any
/// other (`played`, anything Meta adds later), kept in the message's history as it was spelt.
public enum WebhookStatus: Sendable, Hashable, RawRepresentable, ExpressibleByStringLiteral, CustomStringConvertible {
    case sent, delivered, read, failed
    case other(String)

    public init(rawValue: String) {
        switch rawValue {
        case "sent": self = .sent
        case "delivered": self = .delivered
        case "read": self = .read
        case "failed": self = .failed
        default: self = .other(rawValue)
        }
    }

    public init(stringLiteral value: String) { self.init(rawValue: value) }

    public var rawValue: String {
        switch self {
        case .sent: "sent"
        case .delivered: "delivered"
        case .read: "read"
        case .failed: "failed"
        case .other(let name): name
        }
    }

    public var description: String { rawValue }
}

/// A status update, flattened from a payload, as the store applies it.
public struct StatusUpdate: Sendable, Equatable {
    public var wamid: String
    public var status: WebhookStatus
    /// Meta's timestamp, Unix seconds.
    public var timestamp: Int64
    /// `recipient_id`: the WhatsApp id Meta delivered to (nil when Meta gave none or `""`).
    public var recipientID: String?
    /// `recipient_user_id`: the tenant's business-scoped user id, when Meta gave one (2026).
    public var recipientUserID: String?
    /// Our message id when Meta echoed `biz_opaque_callback_data`.
    public var callbackData: String?
    public var errorCode: Int?
    public var errorTitle: String?
    public var errorDetails: String?
    public var pricingCategory: String?
    /// `pricing.type`: `regular` (charged), `free_customer_service`, `free_entry_point`; from the
    /// deprecated `billable` when Meta gave no type (`regular` when true, `free` when false).
    public var pricingType: String?
    /// The sender number the status is about (`metadata.phone_number_id`): applied only to a
    /// message of a run sent from that number; nil (not given) matches any.
    public var phoneNumberID: String?

    public init(
        wamid: String, status: WebhookStatus, timestamp: Int64, recipientID: String? = nil, recipientUserID: String? = nil,
        callbackData: String? = nil, errorCode: Int? = nil, errorTitle: String? = nil, errorDetails: String? = nil,
        pricingCategory: String? = nil, pricingType: String? = nil, phoneNumberID: String? = nil
    ) {
        self.pricingType = pricingType
        self.phoneNumberID = phoneNumberID
        self.wamid = wamid
        self.status = status
        self.timestamp = timestamp
        self.recipientID = recipientID
        self.recipientUserID = recipientUserID
        self.callbackData = callbackData
        self.errorCode = errorCode
        self.errorTitle = errorTitle
        self.errorDetails = errorDetails
        self.pricingCategory = pricingCategory
    }
}

/// A message a tenant sent us (an answer to an invoice, or "STOP").
public struct InboundText: Sendable, Equatable {
    public var wamid: String
    /// The sender's WhatsApp id (digits), when Meta gave it: absent for some username users.
    public var from: String?
    /// The sender's business-scoped user id (`from_user_id`, or the contact's `user_id`), when given.
    public var fromUserID: String?
    public var timestamp: Int64
    public var type: String
    public var body: String?

    public init(wamid: String, from: String?, fromUserID: String? = nil, timestamp: Int64, type: String, body: String?) {
        self.wamid = wamid
        self.from = from
        self.fromUserID = fromUserID
        self.timestamp = timestamp
        self.type = type
        self.body = body
    }

    /// The ids an opt-out from this message is kept under: the WhatsApp id and the user id.
    public var senderIDs: [(id: String, kind: OptOutKind)] {
        var ids: [(String, OptOutKind)] = []
        if let from, !from.isEmpty { ids.append((from, .waID)) }
        if let fromUserID, !fromUserID.isEmpty { ids.append((fromUserID, .userID)) }
        return ids
    }

    /// Replies that ask to stop receiving messages, in the languages of our tenants.
    public static let optOutWords: Set<String> = ["STOP", "BAJA", "ARRET", "ARRÊT", "PARAR", "CANCELAR", "UNSUBSCRIBE", "DETENER", "SALIR"]

    /// True when the whole reply is an opt-out word (`stop`, `Baja.`, ` ARRÊT `).
    public var isOptOut: Bool {
        guard type == "text", let body else { return false }
        let word = body.trimmingCharacters(in: .whitespacesAndNewlines.union(.punctuationCharacters)).uppercased()
        return Self.optOutWords.contains(word)
    }
}

/// What one webhook POST carried, flattened.
public struct WebhookContents: Sendable {
    public var statuses: [StatusUpdate] = []
    public var inbound: [InboundText] = []
    /// System-level errors (`value.errors`), e.g. 130429 not tied to a message.
    public var systemErrors: [(code: Int?, title: String?)] = []
    /// `field` values other than `messages` (`message_template_status_update`…).
    public var otherFields: [String] = []

    public init() {}
}
