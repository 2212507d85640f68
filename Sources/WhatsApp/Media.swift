import AsyncHTTPClient
public import Dispatcher
import Foundation
import NIOCore
import NIOHTTP1

// Documents sent by media id: `POST /{PHONE_NUMBER_ID}/media` (multipart), and the stored
// request of a message rewritten from `"document":{"link":…}` to `"document":{"id":…}`.

extension GraphClient {
    /// Uploads a file for this sender number (Meta keeps it 30 days) and returns its media id.
    /// Throws `GraphError` with Meta's code when refused, or with status 0 when no answer came.
    public func uploadMedia(_ bytes: [UInt8], filename: String, mimeType: String = "application/pdf") async throws -> String {
        let boundary = "dispatcher-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        var body: [UInt8] = []
        body.reserveCapacity(bytes.count + 512)
        func field(_ name: String, _ value: String) {
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
        }
        field("messaging_product", "whatsapp")
        field("type", mimeType)
        let safeName = String(filename.unicodeScalars.filter { $0.isASCII && $0 != "\"" && $0 != "\r" && $0 != "\n" }.map(Character.init))
        body += Array(
            "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(safeName)\"\r\nContent-Type: \(mimeType)\r\n\r\n"
                .utf8)
        body += bytes
        body += Array("\r\n--\(boundary)--\r\n".utf8)

        var request = HTTPClientRequest(url: "\(configuration.root)/\(configuration.phoneNumberID)/media")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(configuration.accessToken)")
        request.headers.add(name: "Content-Type", value: "multipart/form-data; boundary=\(boundary)")
        request.body = .bytes(ByteBuffer(bytes: body))
        let status: Int
        let data: Data
        do {
            let response = try await http.execute(request, timeout: timeAmount(configuration.timeout + .seconds(60)))
            status = Int(response.status.code)
            data = Data((try await response.body.collect(upTo: configuration.maxResponseBytes)).readableBytesView)
        } catch {
            throw GraphError(code: nil, title: "no answer to the media upload: \(error)", httpStatus: 0)
        }
        if status == 200, let answer = try? JSONDecoder().decode(MediaAnswer.self, from: data) { return answer.id }
        if case .rejected(let error) = Self.outcome(status: status, retryAfter: nil, body: data) { throw error }
        throw GraphError(code: nil, title: "unexpected answer to the media upload", httpStatus: status)
    }
}

struct MediaAnswer: Decodable { var id: String }

extension TemplateMessageRequest {
    /// The document link of a stored request body (the header's `document.link`) and its file
    /// name, if any.
    public static func documentLink(inBody body: String) -> (link: String, filename: String?)? {
        guard body.contains(#""document":{"link":"#),
            let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let template = object["template"] as? [String: Any], let components = template["components"] as? [[String: Any]]
        else { return nil }
        for component in components where (component["type"] as? String) == "header" {
            for parameter in component["parameters"] as? [[String: Any]] ?? [] {
                if let document = parameter["document"] as? [String: Any], let link = document["link"] as? String {
                    return (link, document["filename"] as? String)
                }
            }
        }
        return nil
    }

    /// The stored request body with its document sent by media id instead of `link` (the file
    /// name kept): the exact bytes `jsonBody` wrote for the link are replaced, nothing else.
    /// Nil when the body does not carry that link.
    public static func body(_ body: String, sendingDocument link: String, asMedia mediaID: String) -> String? {
        var linkJSON: [UInt8] = Array(#""document":{"link":"#.utf8)
        appendJSONString(link, to: &linkJSON)
        var idJSON: [UInt8] = Array(#""document":{"id":"#.utf8)
        appendJSONString(mediaID, to: &idJSON)
        let from = String(decoding: linkJSON, as: UTF8.self), to = String(decoding: idJSON, as: UTF8.self)
        guard body.contains(from) else { return nil }
        return body.replacingOccurrences(of: from, with: to)
    }
}
