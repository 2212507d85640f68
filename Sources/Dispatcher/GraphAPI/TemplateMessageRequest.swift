/// The body of `POST /{version}/{phone_number_id}/messages` for a template message, exactly as
/// Meta's Cloud API takes it. The only place that knows the shape of that JSON.
public struct TemplateMessageRequest: Sendable, Encodable, Equatable {
    public var messagingProduct = "whatsapp"
    public var recipientType = "individual"
    /// E.164 digits without `+`.
    public var to: String
    public var type = "template"
    /// Echoed in every status webhook: names our message even when the send's response was lost.
    public var bizOpaqueCallbackData: String
    public var template: Template

    public init(to: String, callbackData: String, template: Template) {
        self.to = to
        self.bizOpaqueCallbackData = callbackData
        self.template = template
    }

    enum CodingKeys: String, CodingKey {
        case messagingProduct = "messaging_product"
        case recipientType = "recipient_type"
        case to, type
        case bizOpaqueCallbackData = "biz_opaque_callback_data"
        case template
    }

    public struct Template: Sendable, Encodable, Equatable {
        public var name: String
        public var language: Language
        public var components: [Component]

        public init(name: String, language: Language, components: [Component]) {
            self.name = name
            self.language = language
            self.components = components
        }
    }

    public struct Language: Sendable, Encodable, Equatable {
        public var code: String
        public init(code: String) { self.code = code }
    }

    public struct Component: Sendable, Encodable, Equatable {
        public var type: String
        public var subType: String?
        public var index: String?
        public var parameters: [Parameter]

        public init(type: String, subType: String? = nil, index: String? = nil, parameters: [Parameter]) {
            self.type = type
            self.subType = subType
            self.index = index
            self.parameters = parameters
        }

        enum CodingKeys: String, CodingKey {
            case type
            case subType = "sub_type"
            case index, parameters
        }
    }

    public enum Parameter: Sendable, Encodable, Equatable {
        case text(String)
        case currency(fallback: String, code: String, amount1000: Int64)
        case document(link: String, filename: String)

        enum Keys: String, CodingKey {
            case type, text, currency, document
        }
        enum CurrencyKeys: String, CodingKey {
            case fallbackValue = "fallback_value"
            case code
            case amount1000 = "amount_1000"
        }
        enum DocumentKeys: String, CodingKey {
            case link, filename
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Keys.self)
            switch self {
            case .text(let text):
                try c.encode("text", forKey: .type)
                try c.encode(text, forKey: .text)
            case .currency(let fallback, let code, let amount1000):
                try c.encode("currency", forKey: .type)
                var n = c.nestedContainer(keyedBy: CurrencyKeys.self, forKey: .currency)
                try n.encode(fallback, forKey: .fallbackValue)
                try n.encode(code, forKey: .code)
                try n.encode(amount1000, forKey: .amount1000)
            case .document(let link, let filename):
                try c.encode("document", forKey: .type)
                var n = c.nestedContainer(keyedBy: DocumentKeys.self, forKey: .document)
                try n.encode(link, forKey: .link)
                try n.encode(filename, forKey: .filename)
            }
        }
    }
}
