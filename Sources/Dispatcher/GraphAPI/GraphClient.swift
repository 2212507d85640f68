import AsyncHTTPClient
public import Foundation
import NIOCore
import NIOHTTP1

/// Where and how to reach the Graph API.
public struct GraphConfiguration: Sendable {
    /// `https://graph.facebook.com`, or the sandbox's address.
    public var baseURL: String
    public var apiVersion: String
    public var phoneNumberID: String
    public var accessToken: String
    /// The whole request, from sending to the last byte of the answer.
    public var timeout: Duration
    public var connectTimeout: Duration
    /// Answers larger than this are cut and treated as unreadable.
    public var maxResponseBytes: Int
    /// Connections to one host: enough to hold 1,000 sends/s at 300 ms each over HTTP/1.1.
    public var maxConnections: Int

    public init(baseURL: String, apiVersion: String, phoneNumberID: String, accessToken: String, timeout: Duration = .seconds(20),
                connectTimeout: Duration = .seconds(5), maxResponseBytes: Int = 256 * 1024, maxConnections: Int = 512) {
        self.baseURL = baseURL
        self.apiVersion = apiVersion
        self.phoneNumberID = phoneNumberID
        self.accessToken = accessToken
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.maxResponseBytes = maxResponseBytes
        self.maxConnections = maxConnections
    }

    var root: String {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        return "\(base)/\(apiVersion)"
    }
}

/// What became of one send.
public enum SendOutcome: Sendable, Equatable {
    /// Meta took it: a wamid (and the `wa_id` it resolved the number to).
    case accepted(wamid: String, waID: String?)
    case rejected(GraphError)
    /// The request may have reached Meta but no answer was read (timeout, connection lost after
    /// sending): the message must not be sent again blindly; its webhook will tell.
    case unknown(String)
    /// The request certainly never left (connection refused, name not resolved): safe to send again.
    case notSent(String)
}

/// The Graph API client: template sends, and the phone number check of `doctor`.
///
/// Owns its HTTP client (a connection pool sized for the send rate); call `shutdown()` when done.
public final class GraphClient: Sendable {
    public let configuration: GraphConfiguration
    private let http: HTTPClient
    private let encoder: JSONEncoder

    public init(configuration: GraphConfiguration) {
        self.configuration = configuration
        var config = HTTPClient.Configuration()
        config.timeout.connect = .nanoseconds(Int64(configuration.connectTimeout.components.seconds) * 1_000_000_000
                                              + configuration.connectTimeout.components.attoseconds / 1_000_000_000)
        config.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = configuration.maxConnections
        config.decompression = .disabled
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
    }

    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// `POST /{version}/{phone_number_id}/messages`.
    public func send(_ message: TemplateMessageRequest) async -> SendOutcome {
        let body: Data
        do { body = try encoder.encode(message) } catch { return .notSent("cannot encode the request: \(error)") }
        return await send(body: body)
    }

    /// Sends a request body as it was stored (a retry sends exactly the same message).
    public func send(body: Data) async -> SendOutcome {
        var request = HTTPClientRequest(url: "\(configuration.root)/\(configuration.phoneNumberID)/messages")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(configuration.accessToken)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        let status: Int
        let headers: HTTPHeaders
        let answer: ByteBuffer
        do {
            let response = try await http.execute(request, timeout: timeAmount(configuration.timeout))
            status = Int(response.status.code)
            headers = response.headers
            answer = try await response.body.collect(upTo: configuration.maxResponseBytes)
        } catch {
            return Self.transportOutcome(error)
        }
        return Self.outcome(status: status, retryAfter: headers.first(name: "Retry-After"), body: Data(answer.readableBytesView))
    }

    /// Reads Meta's answer: a wamid, or its error envelope classified by code.
    static func outcome(status: Int, retryAfter: String?, body: Data) -> SendOutcome {
        let retry = retryAfter.flatMap(Double.init)
        if (200..<300).contains(status) {
            if let response = try? JSONDecoder().decode(SendResponse.self, from: body), let message = response.messages?.first {
                return .accepted(wamid: message.id, waID: response.contacts?.first?.waID)
            }
            // A 200 we cannot read: Meta may well have taken it.
            return .unknown("HTTP \(status) with a body that is not Meta's answer")
        }
        if let envelope = try? JSONDecoder().decode(GraphErrorEnvelope.self, from: body) {
            let e = envelope.error
            return .rejected(GraphError(code: e.code, title: e.errorUserTitle ?? e.message ?? "error", details: e.errorData?.details,
                                        httpStatus: status, retryAfter: retry, fbtraceID: e.fbtraceID))
        }
        if status == 429 { return .rejected(GraphError(code: 130429, title: "Rate limit hit (HTTP 429)", httpStatus: status, retryAfter: retry)) }
        return .rejected(GraphError(code: nil, title: "HTTP \(status) without an error body", httpStatus: status, retryAfter: retry))
    }

    /// A failure before any answer: certain non-delivery only when the connection never opened.
    static func transportOutcome(_ error: any Error) -> SendOutcome {
        let text = String(describing: error)
        if let client = error as? HTTPClientError, client == .connectTimeout {
            return .notSent("could not connect (timeout)")
        }
        let lower = text.lowercased()
        if lower.contains("connection refused") || lower.contains("connectionrefused") || lower.contains("nameresolution")
            || lower.contains("name resolution") || lower.contains("connectTimeout".lowercased()) {
            return .notSent("could not connect: \(text)")
        }
        return .unknown("no answer read: \(text)")
    }

    /// `GET /{version}/{phone_number_id}`: checks the token and the number (for `doctor`).
    public func phoneNumberInfo() async -> Result<[String: String], GraphError> {
        var request = HTTPClientRequest(url: "\(configuration.root)/\(configuration.phoneNumberID)?fields=display_phone_number,verified_name,quality_rating,throughput")
        request.headers.add(name: "Authorization", value: "Bearer \(configuration.accessToken)")
        do {
            let response = try await http.execute(request, timeout: timeAmount(configuration.timeout))
            let body = try await response.body.collect(upTo: configuration.maxResponseBytes)
            let data = Data(body.readableBytesView)
            if response.status.code == 200 {
                let object = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
                return .success(object.mapValues { "\($0)" })
            }
            if case .rejected(let error) = Self.outcome(status: Int(response.status.code), retryAfter: nil, body: data) { return .failure(error) }
            return .failure(GraphError(code: nil, title: "unexpected answer", httpStatus: Int(response.status.code)))
        } catch {
            return .failure(GraphError(code: nil, title: "no answer: \(error)", httpStatus: 0))
        }
    }
}

func timeAmount(_ duration: Duration) -> TimeAmount {
    .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
}
