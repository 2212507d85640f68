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
        case parameterName = "parameter_name"
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
        try encode(to: encoder, name: nil)
    }

    private func encode(to encoder: any Encoder, name: String?) throws {
        if case .named(let name, let inner) = self { return try inner.encode(to: encoder, name: name) }
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .named: break
        case .text(let text):
            try c.encode("text", forKey: .type)
            try c.encodeIfPresent(name, forKey: .parameterName)
            try c.encode(text, forKey: .text)
        case .currency(let fallback, let code, let amount1000):
            try c.encode("currency", forKey: .type)
            try c.encodeIfPresent(name, forKey: .parameterName)
            var n = c.nestedContainer(keyedBy: CurrencyKeys.self, forKey: .currency)
            try n.encode(fallback, forKey: .fallbackValue)
            try n.encode(code, forKey: .code)
            try n.encode(amount1000, forKey: .amount1000)
        case .document(let link, let filename):
            try c.encode("document", forKey: .type)
            try c.encodeIfPresent(name, forKey: .parameterName)
            var n = c.nestedContainer(keyedBy: DocumentKeys.self, forKey: .document)
            try n.encode(link, forKey: .link)
            try n.encode(filename, forKey: .filename)
        }
    }
}

extension TemplateMessageRequest {
    /// The request body as JSON text, written directly: the same JSON `JSONEncoder` makes from the
    /// `Encodable` conformance above (same keys, same order, `/` unescaped), at a fraction of its cost
    /// (preparing a million-invoice run encodes a million of them). `WhatsAppTests` checks the two agree.
    public var jsonBody: String {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        out.append(contentsOf: #"{"messaging_product":"#.utf8)
        appendJSONString(messagingProduct, to: &out)
        out.append(contentsOf: #","recipient_type":"#.utf8)
        appendJSONString(recipientType, to: &out)
        out.append(contentsOf: #","to":"#.utf8)
        appendJSONString(to, to: &out)
        out.append(contentsOf: #","type":"#.utf8)
        appendJSONString(type, to: &out)
        out.append(contentsOf: #","biz_opaque_callback_data":"#.utf8)
        appendJSONString(bizOpaqueCallbackData, to: &out)
        out.append(contentsOf: #","template":{"name":"#.utf8)
        appendJSONString(template.name, to: &out)
        out.append(contentsOf: #","language":{"code":"#.utf8)
        appendJSONString(template.language.code, to: &out)
        out.append(contentsOf: #"},"components":["#.utf8)
        for (n, component) in template.components.enumerated() {
            if n > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: #"{"type":"#.utf8)
            appendJSONString(component.type, to: &out)
            if let subType = component.subType {
                out.append(contentsOf: #","sub_type":"#.utf8)
                appendJSONString(subType, to: &out)
            }
            if let index = component.index {
                out.append(contentsOf: #","index":"#.utf8)
                appendJSONString(index, to: &out)
            }
            out.append(contentsOf: #","parameters":["#.utf8)
            for (p, parameter) in component.parameters.enumerated() {
                if p > 0 { out.append(UInt8(ascii: ",")) }
                appendParameter(parameter, name: nil, to: &out)
            }
            out.append(contentsOf: "]}".utf8)
        }
        out.append(contentsOf: "]}}".utf8)
        return String(decoding: out, as: UTF8.self)
    }
}

/// One parameter object; `name` (a NAMED template's `parameter_name`) goes right after its type.
private func appendParameter(_ parameter: TemplateMessageRequest.Parameter, name: String?, to out: inout [UInt8]) {
    func named() {
        if let name {
            out.append(contentsOf: #","parameter_name":"#.utf8)
            appendJSONString(name, to: &out)
        }
    }
    switch parameter {
    case .named(let name, let inner):
        appendParameter(inner, name: name, to: &out)
    case .text(let text):
        out.append(contentsOf: #"{"type":"text""#.utf8)
        named()
        out.append(contentsOf: #","text":"#.utf8)
        appendJSONString(text, to: &out)
        out.append(UInt8(ascii: "}"))
    case .currency(let fallback, let code, let amount1000):
        out.append(contentsOf: #"{"type":"currency""#.utf8)
        named()
        out.append(contentsOf: #","currency":{"fallback_value":"#.utf8)
        appendJSONString(fallback, to: &out)
        out.append(contentsOf: #","code":"#.utf8)
        appendJSONString(code, to: &out)
        out.append(contentsOf: #","amount_1000":"#.utf8)
        out.append(contentsOf: String(amount1000).utf8)
        out.append(contentsOf: "}}".utf8)
    case .document(let link, let filename):
        out.append(contentsOf: #"{"type":"document""#.utf8)
        named()
        out.append(contentsOf: #","document":{"link":"#.utf8)
        appendJSONString(link, to: &out)
        out.append(contentsOf: #","filename":"#.utf8)
        appendJSONString(filename, to: &out)
        out.append(contentsOf: "}}".utf8)
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped, the rest as UTF-8.
public func appendJSONString(_ text: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
        case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
        case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
        case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
        case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
        case 0x00..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            out.append(contentsOf: [
                UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)],
            ])
        default: out.append(byte)
        }
    }
    out.append(UInt8(ascii: "\""))
}
