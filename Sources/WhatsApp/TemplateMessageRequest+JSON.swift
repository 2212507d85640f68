public import Dispatcher

// Meta's JSON for a template message: field names as the Cloud API takes them
// (`messaging_product`, `biz_opaque_callback_data`, `amount_1000`…). Nowhere else writes them.

extension TemplateMessageRequest: Encodable {
    enum CodingKeys: String, CodingKey {
        case messagingProduct = "messaging_product"
        case recipientType = "recipient_type"
        case to, type
        case bizOpaqueCallbackData = "biz_opaque_callback_data"
        case template
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(messagingProduct, forKey: .messagingProduct)
        try c.encode(recipientType, forKey: .recipientType)
        try c.encode(to, forKey: .to)
        try c.encode(type, forKey: .type)
        try c.encode(bizOpaqueCallbackData, forKey: .bizOpaqueCallbackData)
        try c.encode(template, forKey: .template)
    }
}

extension TemplateMessageRequest.Template: Encodable {
    enum CodingKeys: String, CodingKey { case name, language, components }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(language, forKey: .language)
        try c.encode(components, forKey: .components)
    }
}

extension TemplateMessageRequest.Language: Encodable {
    enum CodingKeys: String, CodingKey { case code }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(code, forKey: .code)
    }
}

extension TemplateMessageRequest.Component: Encodable {
    enum CodingKeys: String, CodingKey {
        case type
        case subType = "sub_type"
        case index, parameters
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try c.encodeIfPresent(subType, forKey: .subType)
        try c.encodeIfPresent(index, forKey: .index)
        try c.encode(parameters, forKey: .parameters)
    }
}

extension TemplateMessageRequest.Parameter: Encodable {
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
