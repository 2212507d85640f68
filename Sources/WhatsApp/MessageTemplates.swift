import AsyncHTTPClient
public import Dispatcher
import Foundation

// Meta's template management API (`whatsapp_business_management`): the account's templates with
// their statuses, read page by page. Meta's JSON for them is read only here (and written by the sandbox).

/// One page of `GET /{WABA_ID}/message_templates`.
struct TemplatePage: Decodable {
    var data: [Entry]
    var paging: Paging?

    struct Paging: Decodable {
        var cursors: Cursors?
        var next: String?
        struct Cursors: Decodable { var after: String? }
    }

    struct Entry: Decodable {
        var id: String?
        var name: String
        var language: String
        var status: String
        var category: String?
        var parameterFormat: String?
        var qualityScore: Quality?
        var components: [Component]?

        enum CodingKeys: String, CodingKey {
            case id, name, language, status, category, components
            case parameterFormat = "parameter_format"
            case qualityScore = "quality_score"
        }
    }

    struct Quality: Decodable { var score: String? }

    struct Component: Decodable {
        var type: String
        var format: String?
        var text: String?
        var buttons: [Button]?
    }

    struct Button: Decodable {
        var type: String
        var text: String?
        var url: String?
    }
}

extension TemplatePage.Entry {
    var accountTemplate: AccountTemplate {
        let components = components ?? []
        func component(_ type: String) -> TemplatePage.Component? { components.first { $0.type.uppercased() == type } }
        let header = component("HEADER")
        return AccountTemplate(
            id: id, name: name, language: language, status: status, category: category, parameterFormat: parameterFormat,
            quality: qualityScore?.score, headerFormat: header?.format?.uppercased(), headerText: header?.text,
            body: component("BODY")?.text ?? "", footer: component("FOOTER")?.text,
            buttons: (component("BUTTONS")?.buttons ?? []).map { AccountTemplate.Button(type: $0.type, text: $0.text ?? "", url: $0.url) })
    }
}

extension GraphClient {
    /// Every template of the business account, in every language, following Meta's pages (at most
    /// `maxPages` of `pageSize`). Throws `GraphError` with Meta's code when it refuses (a token without
    /// `whatsapp_business_management` answers 200 or 10; a wrong account id 100).
    public func messageTemplates(businessAccountID: String, pageSize: Int = 100, maxPages: Int = 100) async throws -> [AccountTemplate] {
        var templates: [AccountTemplate] = []
        var after: String? = nil
        let fields = "name,status,category,language,components,parameter_format,quality_score"
        for _ in 0..<maxPages {
            var url = "\(configuration.root)/\(businessAccountID)/message_templates?fields=\(fields)&limit=\(pageSize)"
            if let after, let escaped = after.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(["&", "=", "+"])) {
                url += "&after=\(escaped)"
            }
            let (status, body) = try await get(url)
            guard status == 200 else {
                if case .rejected(let error) = Self.outcome(status: status, retryAfter: nil, body: body) { throw error }
                throw GraphError(code: nil, title: "unexpected answer to the template list", httpStatus: status)
            }
            let page: TemplatePage
            do {
                page = try JSONDecoder().decode(TemplatePage.self, from: body)
            } catch {
                throw GraphError(code: nil, title: "the template list is not Meta's JSON: \(error)", httpStatus: status)
            }
            templates += page.data.map(\.accountTemplate)
            guard page.paging?.next != nil, let cursor = page.paging?.cursors?.after, !page.data.isEmpty else { return templates }
            after = cursor
        }
        throw GraphError(code: nil, title: "the template list has more than \(maxPages) pages", httpStatus: 200)
    }
}
