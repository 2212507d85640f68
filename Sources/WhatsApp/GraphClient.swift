import AsyncHTTPClient
public import Dispatcher
public import Foundation
package import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

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

    public init(
        baseURL: String, apiVersion: String, phoneNumberID: String, accessToken: String, timeout: Duration = .seconds(20),
        connectTimeout: Duration = .seconds(5), maxResponseBytes: Int = 256 * 1024, maxConnections: Int = 512
    ) {
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
    /// Meta took it: a wamid (and the `wa_id` it resolved the number to); `held` when its
    /// `message_status` says it holds the message (`held_for_quality_assessment`, `paused`).
    case accepted(wamid: String, waID: String?, held: Bool = false)
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
    let http: HTTPClient
    private let encoder: JSONEncoder
    private let messagesURL: URL
    private let headers: HTTPHeaders
    /// Every send runs on this one event loop: its connections, their answers and the outcome
    /// callbacks share a thread instead of waking each other across two. (The loop is the client's
    /// whole group rather than a per-request requirement: AsyncHTTPClient closes connections
    /// bound to a required loop as soon as they are idle, which cost a new TCP connection for
    /// nearly every send.)
    private let loop: any EventLoop
    /// The messages endpoint's own connections (nil: AsyncHTTPClient sends them too).
    private let connections: MessageConnections?

    public convenience init(configuration: GraphConfiguration) {
        self.init(configuration: configuration, messagesTLS: .makeClientConfiguration())
    }

    /// `messagesTLS`: how the messages endpoint's connections check the server (tests give their
    /// own root; in use, the system's); `messagesIdleLimit`: how long one of them may sit idle and
    /// still be used.
    init(configuration: GraphConfiguration, messagesTLS: TLSConfiguration, messagesIdleLimit: TimeAmount = .seconds(20)) {
        self.configuration = configuration
        var config = HTTPClient.Configuration()
        config.timeout.connect = .nanoseconds(
            Int64(configuration.connectTimeout.components.seconds) * 1_000_000_000
                + configuration.connectTimeout.components.attoseconds / 1_000_000_000)
        config.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = configuration.maxConnections
        config.decompression = .disabled
        // One event loop of the process's shared group, used as the client's whole group.
        loop = HTTPClient.defaultEventLoopGroup.next()
        http = HTTPClient(eventLoopGroup: loop, configuration: config)
        messagesURL =
            URL(string: "\(configuration.root)/\(configuration.phoneNumberID)/messages") ?? URL(fileURLWithPath: "/invalid-base-url")
        headers = ["Authorization": "Bearer \(configuration.accessToken)", "Content-Type": "application/json"]
        encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        // DISPATCHER_SEND_HTTP=asynchttpclient: the sends on AsyncHTTPClient as before (a way back,
        // without a new build, should the field find a fault in our connections). An address ours
        // cannot take (not http or https) is left to AsyncHTTPClient too, whose every send then
        // ends not sent, saying why.
        connections =
            ProcessInfo.processInfo.environment["DISPATCHER_SEND_HTTP"] == "asynchttpclient"
            ? nil
            : try? MessageConnections(
                url: messagesURL, headers: headers, configuration: configuration, loop: loop, tls: messagesTLS,
                idleLimit: messagesIdleLimit)
    }

    public func shutdown() async throws {
        try await connections?.shutdown().get()
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
        await withCheckedContinuation { continuation in
            start(body: ByteBuffer(bytes: body)) { continuation.resume(returning: $0) }
        }
    }

    /// Starts several sends and returns at once; each `completion` gets its outcome on the client's
    /// event loop. The billing run sends this way: one hop to the event loop for the whole batch
    /// (the requests then start where their connections live), no task per message, and each
    /// outcome is read where its answer arrived. `written`, when given, is called (on the event
    /// loop) once a request has been written out whole, which means its connection is open.
    package func start(_ sends: [(body: ByteBuffer, completion: @Sendable (SendOutcome) -> Void)], written: (@Sendable () -> Void)? = nil) {
        guard !sends.isEmpty else { return }
        loop.execute {
            for send in sends { self.start(body: send.body, written: written, completion: send.completion) }
        }
    }

    /// Starts one send; `completion` gets the outcome on the client's event loop.
    package func start(body: ByteBuffer, written: (@Sendable () -> Void)? = nil, completion: @escaping @Sendable (SendOutcome) -> Void) {
        if let connections {
            if loop.inEventLoop {
                connections.start(body: body, written: written, completion: completion)
            } else {
                loop.execute { connections.start(body: body, written: written, completion: completion) }
            }
            return
        }
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: messagesURL, method: .POST, headers: headers, body: .byteBuffer(body))
        } catch {
            return completion(.notSent("cannot build the request: \(error)"))
        }
        let answer = AnswerReader(maxBodySize: configuration.maxResponseBytes, written: written)
        http.execute(
            request: request, delegate: answer, eventLoop: .delegate(on: loop),
            deadline: .now() + timeAmount(configuration.timeout)
        )
        .futureResult.whenComplete { result in
            switch result {
            case .success(let response):
                completion(
                    Self.outcome(
                        status: Int(response.status.code), retryAfter: response.headers.first(name: "Retry-After"),
                        body: Data(response.body.readableBytesView)))
            case .failure(let error):
                completion(Self.transportOutcome(error))
            }
        }
    }

    /// Reads Meta's answer: a wamid, or its error envelope classified by code.
    static func outcome(status: Int, retryAfter: String?, body: Data) -> SendOutcome {
        let retry = retryAfter.flatMap(Double.init)
        if (200..<300).contains(status) {
            if let response = SendResponse.decode(body), let message = response.messages?.first {
                let held = message.messageStatus.map { $0 != "accepted" } ?? false
                return .accepted(wamid: message.id, waID: response.contacts?.first?.waID, held: held)
            }
            // A 200 we cannot read: Meta may well have taken it.
            return .unknown("HTTP \(status) with a body that is not Meta's answer")
        }
        if let envelope = try? JSONDecoder().decode(GraphErrorEnvelope.self, from: body) {
            let e = envelope.error
            return .rejected(
                GraphError(
                    code: e.code, title: e.errorUserTitle ?? e.message ?? "error", details: e.errorData?.details,
                    httpStatus: status, retryAfter: retry, fbtraceID: e.fbtraceID))
        }
        if status == 429 {
            return .rejected(GraphError(code: 130429, title: "Rate limit hit (HTTP 429)", httpStatus: status, retryAfter: retry))
        }
        return .rejected(GraphError(code: nil, title: "HTTP \(status) without an error body", httpStatus: status, retryAfter: retry))
    }

    /// A failure before any answer: certain non-delivery only when the connection never opened.
    static func transportOutcome(_ error: any Error) -> SendOutcome {
        neverConnected(error) ? .notSent("could not connect: \(error)") : .unknown("no answer read: \(error)")
    }

    /// Whether `error` says no connection was ever made (so the request cannot have reached Meta),
    /// by its type: AsyncHTTPClient's connect timeout, NIO's failed connection attempts (every
    /// address tried, name resolution included), or a refused `connect` (only a connection being
    /// opened can be refused). Anything else (a reset, an unreachable network, which Linux also
    /// reports on an open connection, a timeout waiting for the answer, a closed connection) may
    /// have come after Meta read the request: unknown. (On macOS AsyncHTTPClient uses Network.framework,
    /// whose errors are not classified here: a refused connection there is unknown. Linux is what
    /// we run.)
    static func neverConnected(_ error: any Error) -> Bool {
        switch error {
        case let error as HTTPClientError: return error == .connectTimeout
        case is NIOConnectionError: return true
        case let error as ChannelError:
            if case .connectTimeout = error { return true }
            return false
        case let error as IOError: return error.errnoCode == ECONNREFUSED
        default: return false
        }
    }

    /// `GET /{version}/{phone_number_id}`: checks the token and the number (for `doctor`).
    public func phoneNumberInfo() async -> Result<[String: String], GraphError> {
        do {
            let (status, data) = try await get(
                "\(configuration.root)/\(configuration.phoneNumberID)?fields=display_phone_number,verified_name,quality_rating,throughput")
            if status == 200 {
                let object = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
                return .success(object.mapValues { "\($0)" })
            }
            if case .rejected(let error) = Self.outcome(status: status, retryAfter: nil, body: data) {
                return .failure(error)
            }
            return .failure(GraphError(code: nil, title: "unexpected answer", httpStatus: status))
        } catch let error as GraphError {
            return .failure(error)
        } catch {
            return .failure(GraphError(code: nil, title: "no answer: \(error)", httpStatus: 0))
        }
    }

    /// A management `GET` with the token: the HTTP status and the body (at most `maxResponseBytes`,
    /// times 16 for the template lists). Throws `GraphError` (status 0) when no answer came.
    func get(_ url: String) async throws -> (status: Int, body: Data) {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer \(configuration.accessToken)")
        do {
            let response = try await http.execute(request, timeout: timeAmount(configuration.timeout))
            let body = try await response.body.collect(upTo: configuration.maxResponseBytes * 16)
            return (Int(response.status.code), Data(body.readableBytesView))
        } catch {
            throw GraphError(code: nil, title: "no answer from \(configuration.baseURL): \(error)", httpStatus: 0)
        }
    }
}

package func timeAmount(_ duration: Duration) -> TimeAmount {
    .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
}

/// Reads one send's answer (its head, and its body up to a cap) and says when the request has been
/// written. AsyncHTTPClient calls a delegate only on the event loop it was given, one call at a
/// time: its state needs no lock.
final class AnswerReader: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = (status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer)

    struct TooBig: Error, CustomStringConvertible {
        let limit: Int
        var description: String { "the answer is longer than \(limit) bytes" }
    }

    private let maxBodySize: Int
    private let written: (@Sendable () -> Void)?
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()

    init(maxBodySize: Int, written: (@Sendable () -> Void)?) {
        self.maxBodySize = maxBodySize
        self.written = written
    }

    func didSendRequest(task: HTTPClient.Task<Response>) { written?() }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.head = head
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ part: ByteBuffer) -> EventLoopFuture<Void> {
        guard body.readableBytes + part.readableBytes <= maxBodySize else {
            return task.eventLoop.makeFailedFuture(TooBig(limit: maxBodySize))
        }
        var part = part
        body.writeBuffer(&part)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        guard let head else { throw HTTPClientError.remoteConnectionClosed }
        return (head.status, head.headers, body)
    }
}
