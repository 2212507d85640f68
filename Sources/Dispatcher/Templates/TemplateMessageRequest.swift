/// A template message to one number, as the renderer fills it: what `POST /{phone_number_id}/messages`
/// carries. Its JSON (Meta's field names) is written only by the WhatsApp module
/// (`TemplateMessageRequest+JSON.swift`).
public struct TemplateMessageRequest: Sendable, Equatable {
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

    public struct Template: Sendable, Equatable {
        public var name: String
        public var language: Language
        public var components: [Component]

        public init(name: String, language: Language, components: [Component]) {
            self.name = name
            self.language = language
            self.components = components
        }
    }

    public struct Language: Sendable, Equatable {
        public var code: String
        public init(code: String) { self.code = code }
    }

    public struct Component: Sendable, Equatable {
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
    }

    public enum Parameter: Sendable, Equatable {
        case text(String)
        /// A parameter of a NAMED template: its `parameter_name` and value (the one case boxed on
        /// the heap: a positional template's parameters are not).
        indirect case named(String, Parameter)
        case currency(fallback: String, code: String, amount1000: Int64)
        case document(link: String, filename: String)
    }
}
