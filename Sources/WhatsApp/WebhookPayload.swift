import Foundation
public import Store

/// Meta's webhook notification, as much of it as the dispatcher reads. Every field is optional and
/// unknown ones are ignored: Meta adds fields without notice, and a payload we cannot fully read
/// is still stored raw.
public struct WebhookPayload: Decodable, Sendable, Equatable {
    public var object: String?
    public var entry: [Entry]?

    public struct Entry: Decodable, Sendable, Equatable {
        public var id: String?
        public var changes: [Change]?
    }

    public struct Change: Decodable, Sendable, Equatable {
        public var field: String?
        public var value: Value?
    }

    public struct Value: Decodable, Sendable, Equatable {
        public var messagingProduct: String?
        public var metadata: Metadata?
        public var statuses: [Status]?
        public var messages: [InboundMessage]?
        public var contacts: [Contact]?
        public var errors: [ErrorDetail]?

        enum CodingKeys: String, CodingKey {
            case messagingProduct = "messaging_product"
            case metadata, statuses, messages, contacts, errors
        }
    }

    public struct Metadata: Decodable, Sendable, Equatable {
        public var displayPhoneNumber: String?
        public var phoneNumberID: String?

        enum CodingKeys: String, CodingKey {
            case displayPhoneNumber = "display_phone_number"
            case phoneNumberID = "phone_number_id"
        }
    }

    public struct Status: Decodable, Sendable, Equatable {
        /// The wamid.
        public var id: String?
        /// `sent`, `delivered`, `read`, `failed`, `played`…; unknown values are kept, not applied.
        public var status: String?
        /// Unix seconds: a string in Meta's documentation, a number in some payloads.
        public var timestamp: UnixSeconds?
        public var recipientID: String?
        public var recipientUserID: String?
        public var bizOpaqueCallbackData: String?
        public var errors: [ErrorDetail]?
        public var pricing: Pricing?

        enum CodingKeys: String, CodingKey {
            case id, status, timestamp, errors, pricing
            case recipientID = "recipient_id"
            case recipientUserID = "recipient_user_id"
            case bizOpaqueCallbackData = "biz_opaque_callback_data"
        }
    }

    public struct Pricing: Decodable, Sendable, Equatable {
        public var billable: Bool?
        public var pricingModel: String?
        public var category: String?
        public var type: String?

        enum CodingKeys: String, CodingKey {
            case billable, category, type
            case pricingModel = "pricing_model"
        }
    }

    public struct ErrorDetail: Decodable, Sendable, Equatable {
        public var code: Int?
        public var title: String?
        public var message: String?
        public var errorData: ErrorData?
        public var href: String?

        public struct ErrorData: Decodable, Sendable, Equatable {
            public var details: String?
        }

        enum CodingKeys: String, CodingKey {
            case code, title, message, href
            case errorData = "error_data"
        }
    }

    public struct InboundMessage: Decodable, Sendable, Equatable {
        /// The sender's WhatsApp id (their number's digits). Absent since 2026 for users who set a
        /// username: `from_user_id` then says who wrote.
        public var from: String?
        public var fromUserID: String?
        public var id: String?
        public var timestamp: UnixSeconds?
        public var type: String?
        public var text: Text?

        public struct Text: Decodable, Sendable, Equatable {
            public var body: String?
        }

        enum CodingKeys: String, CodingKey {
            case from, id, timestamp, type, text
            case fromUserID = "from_user_id"
        }
    }

    public struct Contact: Decodable, Sendable, Equatable {
        public var waID: String?
        /// The business-scoped user id (2026).
        public var userID: String?

        enum CodingKeys: String, CodingKey {
            case waID = "wa_id"
            case userID = "user_id"
        }
    }
}

/// Unix seconds written as a string (`"1767225600"`, as Meta documents) or as a number: a
/// payload whose timestamp is a number must not lose its statuses.
public struct UnixSeconds: Decodable, Sendable, Equatable {
    public var value: Int64

    public init(_ value: Int64) { self.value = value }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int64.self) {
            self.init(n)
        } else if let d = try? c.decode(Double.self), d.isFinite, abs(d) < 1e15 {
            self.init(Int64(d))
        } else {
            self.init(text: try c.decode(String.self))
        }
    }

    /// Seconds written as text; unreadable text gives 0 (the status still applies, at the time it
    /// was received).
    init(text: String) {
        let text = text.trimmingCharacters(in: .whitespaces)
        if let n = Int64(text) {
            value = n
        } else if let d = Double(text), d.isFinite, abs(d) < 1e15 {
            value = Int64(d)
        } else {
            value = 0
        }
    }
}

extension WebhookContents {
    /// The statuses, inbound texts and errors of one notification, flattened for the store.
    public init(_ payload: WebhookPayload) {
        self.init()
        for entry in payload.entry ?? [] {
            for change in entry.changes ?? [] {
                if let field = change.field, field != "messages" { otherFields.append(field) }
                guard let value = change.value else { continue }
                for s in value.statuses ?? [] {
                    guard let wamid = s.id, let status = s.status else { continue }
                    let error = s.errors?.first
                    statuses.append(
                        StatusUpdate(
                            wamid: wamid, status: WebhookStatus(rawValue: status), timestamp: s.timestamp?.value ?? 0,
                            recipientID: s.recipientID?.isEmpty == false ? s.recipientID : nil,
                            recipientUserID: s.recipientUserID?.isEmpty == false ? s.recipientUserID : nil,
                            callbackData: s.bizOpaqueCallbackData, errorCode: error?.code, errorTitle: error?.title ?? error?.message,
                            errorDetails: error?.errorData?.details, pricingCategory: s.pricing?.category,
                            pricingType: s.pricing.flatMap { $0.type ?? $0.billable.map { $0 ? "regular" : "free" } },
                            phoneNumberID: value.metadata?.phoneNumberID.flatMap { $0.isEmpty ? nil : $0 }))
                }
                let contacts = value.contacts ?? []
                for m in value.messages ?? [] {
                    // A message without `from` (a username user) is kept under its user id; the
                    // contact that carries that user id may also give the WhatsApp id.
                    let from = m.from?.isEmpty == false ? m.from : nil
                    var userID = m.fromUserID?.isEmpty == false ? m.fromUserID : nil
                    let contact =
                        contacts.first { c in (userID != nil && c.userID == userID) || (from != nil && c.waID == from) }
                        ?? (from == nil && userID == nil && contacts.count == 1 ? contacts[0] : nil)
                    if userID == nil, let id = contact?.userID, !id.isEmpty { userID = id }
                    let waID = from ?? (contact?.waID?.isEmpty == false ? contact?.waID : nil)
                    guard let wamid = m.id, waID != nil || userID != nil else { continue }
                    inbound.append(
                        InboundText(
                            wamid: wamid, from: waID, fromUserID: userID, timestamp: m.timestamp?.value ?? 0,
                            type: m.type ?? "unknown", body: m.text?.body))
                }
                for e in value.errors ?? [] { systemErrors.append((e.code, e.title ?? e.message)) }
            }
        }
    }
}
