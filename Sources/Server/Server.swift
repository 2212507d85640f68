import Dispatcher
public import Engine
import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Reports
public import Store
import WhatsApp

#if canImport(Glibc)
    import Glibc
#endif

/// How `dispatcher serve` is set up. Secrets come from the environment; none is ever logged or served.
public struct ServerConfiguration: Sendable {
    /// Every route is mounted below it (`/api/v2/whatsapp` behind the property system's gateway).
    public var basePath: String
    /// `WHATSAPP_APP_SECRET`: the key of webhook signatures.
    public var appSecret: String
    /// `WHATSAPP_WEBHOOK_VERIFY_TOKEN`: Meta's handshake. Without it every handshake is refused.
    public var verifyToken: String?
    /// `DISPATCHER_API_TOKEN`.
    public var apiToken: String?
    /// `DISPATCHER_JWT_SECRET`: accept the property system's own HS256 access tokens.
    public var jwtSecret: String?
    /// A bit over Meta's 3 MB.
    public var maxWebhookBytes: Int
    /// Where runs' reports are written (`reports/RUN/`).
    public var reportsDirectory: String
    /// `/metrics` answers only with the bearer token.
    public var metricsNeedToken: Bool
    /// Which organizations a property-system token reaches (nil: every organization; the
    /// single-number setup). See `OrganizationAccess`.
    public var organizationAccess: OrganizationAccess?
    /// A connection that sends nothing for this long is closed (idle keep-alive, or a client
    /// that stops half-way through a request).
    public var idleTimeout: Duration = .seconds(30)
    /// Meta's webhook POSTs answered on the event loops (`WebhookFastPath`, `DISPATCHER_WEBHOOK_HTTP=fast`);
    /// false, the default: through the router like every other route. Opt-in: the unanswered POSTs
    /// that first made it so were the test client's (`docs/benchmarks.md`), but CI's crash test has
    /// twice ended with statuses undelivered after its settle window with the fast path on, and
    /// never with the router; until that is understood, the router is the default.
    public var webhookFastPath = ProcessInfo.processInfo.environment["DISPATCHER_WEBHOOK_HTTP"] == "fast"
    /// Webhook bodies held in memory at once, all connections together (`BodyBudget`): past it a
    /// webhook is answered 503 and Meta sends it again.
    public var webhookBodyBudget = 64 << 20
    /// The whole body of a webhook must arrive within this (from its request's head; through the
    /// router, from when its handler starts, later on a loaded machine): a client
    /// trickling a byte every few seconds never trips the idle timeout, and would hold its
    /// connection and its share of the budget for ever. Answered 408, the connection closed.
    public var webhookBodyDeadline: Duration = .seconds(30)
    /// Connections served at once; past it new ones wait in the kernel's backlog, so that open
    /// sockets can never exhaust the process's file limit (one client holding them all still keeps
    /// others, `/health` too, waiting: a limit per address belongs in the gateway).
    public var maxConnections: Int = 2_000

    /// `maxConnections`, but never so close to the process's file limit (`ulimit -n`, 1,024 on
    /// many machines) that accepting would fail with EMFILE: 128 descriptors stay for the
    /// database, logs and outgoing requests.
    public var effectiveMaxConnections: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return maxConnections }
        return max(16, min(maxConnections, Int(clamping: limit.rlim_cur) - 128))
    }

    public init(
        basePath: String = "", appSecret: String, verifyToken: String? = nil, apiToken: String? = nil, jwtSecret: String? = nil,
        maxWebhookBytes: Int = 3_500_000, reportsDirectory: String = "reports", metricsNeedToken: Bool = false,
        organizationAccess: OrganizationAccess? = nil
    ) {
        self.organizationAccess = organizationAccess
        self.basePath = basePath
        self.appSecret = appSecret
        self.verifyToken = verifyToken
        self.apiToken = apiToken
        self.jwtSecret = jwtSecret
        self.maxWebhookBytes = maxWebhookBytes
        self.reportsDirectory = reportsDirectory
        self.metricsNeedToken = metricsNeedToken
    }
}

/// The HTTP API of `dispatcher serve`: Meta's webhook, the status API, the drop-in send route,
/// health and metrics.
public struct DispatcherServer: Sendable {
    public let store: any DispatchStore
    public let configuration: ServerConfiguration
    public let metrics: ServerMetrics
    public let sender: (any InvoiceSendService)?
    let signature: WebhookSignature
    /// The property system's tokens, read again for who the caller is (`reach`).
    let verifier: HS256Verifier?
    /// Webhook bodies in memory, both paths (`ServerConfiguration.webhookBodyBudget`).
    let bodies: BodyBudget

    public init(
        store: any DispatchStore, configuration: ServerConfiguration, metrics: ServerMetrics = ServerMetrics(),
        sender: (any InvoiceSendService)? = nil
    ) {
        self.store = store
        self.configuration = configuration
        self.metrics = metrics
        self.sender = sender
        self.signature = WebhookSignature(appSecret: configuration.appSecret)
        self.verifier = configuration.jwtSecret.flatMap(HS256Verifier.init(secret:))
        self.bodies = BodyBudget(limit: configuration.webhookBodyBudget)
    }

    /// The router with every route, below the base path.
    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.middlewares.add(JSONErrorMiddleware())
        let base = configuration.basePath.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let root = base.isEmpty ? router.group() : router.group(RouterPath(base))

        root.get("health") { _, _ in try await self.health() }
        root.get("webhook") { request, context in try self.handshake(request, context: context) }
        root.post("webhook") { request, context in try await self.receiveWebhook(request, context: context) }

        let auth = BearerAuthMiddleware<BasicRequestContext>(
            apiToken: configuration.apiToken,
            // A secret too short to verify with is refused by `serve` before we get here; should a
            // caller pass one anyway, no token is accepted by it (fail closed).
            jwt: configuration.jwtSecret.flatMap(HS256Verifier.init(secret:)))
        if configuration.metricsNeedToken {
            root.group().add(middleware: auth).get("metrics") { _, _ in self.metricsResponse() }
        } else {
            root.get("metrics") { _, _ in self.metricsResponse() }
        }
        let api = root.group().add(middleware: auth)
        api.get("message-status/:id") { request, context in
            try await self.messageStatus(Self.pathParameter(context, "id"), reach: await self.reach(request))
        }
        api.get("message-statuses") { request, _ in try await self.messageStatuses(request, reach: await self.reach(request)) }
        api.get("runs") { request, _ in try await self.runs(reach: await self.reach(request)) }
        api.get("runs/:run") { request, context in try await self.run(Self.pathParameter(context, "run"), reach: await self.reach(request))
        }
        api.get("runs/:run/report.html") { request, context in
            try await self.reportFile(
                Self.pathParameter(context, "run"), "index.html", "text/html; charset=utf-8", reach: await self.reach(request))
        }
        api.get("runs/:run/report.csv") { request, context in
            try await self.reportFile(
                Self.pathParameter(context, "run"), "messages.csv", "text/csv; charset=utf-8", reach: await self.reach(request))
        }
        api.post("send-invoice") { request, context in try await self.sendInvoice(request, context: context) }
        return router
    }

    /// Serves on `host:port` until cancelled (for a run's settle window, in-process); `onListening`
    /// gets the bound port (useful with port 0).
    public func run(host: String, port: Int, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(
            router: router(), server: httpServer(logger: logger),
            configuration: applicationConfiguration(host: host, port: port, logger: logger),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) }, logger: logger)
        try await app.run()
    }

    /// An application listening on `host:port`, ready for `runService()` (graceful on SIGTERM).
    public func application(host: String, port: Int, logger: Logger) -> some ApplicationProtocol {
        Application(
            router: router(), server: httpServer(logger: logger),
            configuration: applicationConfiguration(host: host, port: port, logger: logger), logger: logger)
    }

    /// Hummingbird's HTTP/1.1 server, with Meta's webhook POSTs taken on the event loops
    /// (`WebhookFastPath`) when `DISPATCHER_WEBHOOK_HTTP=fast`; through the router otherwise.
    /// Idle connections are closed (Hummingbird's HTTP/1 server keeps them forever by default).
    public func httpServer(logger: Logger) -> HTTPServerBuilder {
        let idleTimeout = configuration.idleTimeout
        guard configuration.webhookFastPath else {
            return HTTPServerBuilder { DispatcherHTTP1Channel(responder: $0, idleTimeout: idleTimeout, fastPath: nil) }
        }
        let base = configuration.basePath.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let path = base.isEmpty ? "/webhook" : "/\(base)/webhook"
        let (maxBytes, metrics, bodies, deadline) = (
            configuration.maxWebhookBytes, self.metrics, self.bodies, configuration.webhookBodyDeadline
        )
        let intake: WebhookFastPath.Intake = { signature, body, since in
            await self.intake(signature: signature, body: body, since: since, logger: logger)
        }
        return HTTPServerBuilder { responder in
            DispatcherHTTP1Channel(
                responder: responder, idleTimeout: idleTimeout,
                fastPath: {
                    WebhookFastPath(path: path, maxBytes: maxBytes, bodies: bodies, deadline: deadline, metrics: metrics, intake: intake)
                })
        }
    }

    func applicationConfiguration(host: String, port: Int, logger: Logger) -> ApplicationConfiguration {
        ApplicationConfiguration(
            address: .hostname(host, port: port), serverName: "dispatcher",
            availableConnectionsDelegate: MaximumAvailableConnections(configuration.effectiveMaxConnections, logger: logger))
    }

    // MARK: - Webhook

    func handshake(_ request: Request, context: BasicRequestContext) throws -> Response {
        let query = request.uri.queryParameters
        guard let verifyToken = configuration.verifyToken else {
            context.logger.error("webhook handshake refused: WHATSAPP_WEBHOOK_VERIFY_TOKEN is not set")
            throw APIError(.forbidden, "the webhook verify token is not configured")
        }
        guard query.get("hub.mode") == "subscribe", let token = query.get("hub.verify_token"), constantTimeEquals(token, verifyToken),
            let challenge = query.get("hub.challenge")
        else {
            context.logger.warning("webhook handshake refused: wrong mode or verify token (check the token in Meta's app settings)")
            throw APIError(.forbidden, "verification failed")
        }
        return Response(
            status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: challenge)))
    }

    /// Counts, logs and throws the refusal a signature verdict calls for; returns on `.valid`.
    func refuseUnlessValid(_ verdict: WebhookSignature.Verdict, logger: Logger) throws {
        switch verdict {
        case .valid:
            return
        case .missing:
            metrics.webhooksRejected["missing_signature"]?.increment()
            logger.warning("webhook refused: no X-Hub-Signature-256")
            throw APIError(.unauthorized, "missing X-Hub-Signature-256")
        case .malformed:
            metrics.webhooksRejected["malformed_signature"]?.increment()
            logger.warning("webhook refused: malformed X-Hub-Signature-256")
            throw APIError(.forbidden, "malformed X-Hub-Signature-256")
        case .mismatch:
            metrics.webhooksRejected["bad_signature"]?.increment()
            logger.warning("webhook refused: signature does not match (is WHATSAPP_APP_SECRET the app's secret?)")
            throw APIError(.forbidden, "signature does not match")
        }
    }

    /// `POST /webhook` through the router: what `WebhookFastPath` does not take (a refusal
    /// before the body, `Connection: close`), and every webhook unless `DISPATCHER_WEBHOOK_HTTP=fast`.
    func receiveWebhook(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        let header = request.headers[HTTPField.Name("X-Hub-Signature-256")!]
        // Refused before a byte of the body is read: no signature, a malformed one, or a declared
        // length past the cap cost the sender nothing of ours.
        try refuseUnlessValid(WebhookSignature.shape(of: header), logger: context.logger)
        if let length = request.headers[.contentLength].flatMap(Int.init), length > configuration.maxWebhookBytes {
            metrics.webhooksRejected["too_large"]?.increment()
            throw APIError(.contentTooLarge, "the body is larger than \(configuration.maxWebhookBytes) bytes")
        }
        // Counted against the budget of bodies in memory as bytes arrive, until stored
        // (`BodyBudget`): a head that declares 3.4 MB and sends nothing holds no share of it, nor
        // memory (the buffer starts at 64 KB at most).
        let declared = request.headers[.contentLength].flatMap(Int.init) ?? 0
        var admission = BodyAdmission(
            budget: bodies, maxBytes: configuration.maxWebhookBytes, deadline: configuration.webhookBodyDeadline, since: started)
        defer { admission.release() }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(min(declared, 1 << 16))
        do {
            for try await chunk in request.body {
                // The cap, the budget and the deadline, as `WebhookFastPath` checks them.
                if let refusal = admission.admit(chunk.readableBytes) {
                    metrics.webhooksRejected[refusal.reason]?.increment()
                    if refusal.reason == "busy" {
                        context.logger.warning("webhook refused: webhook bodies in memory are at their budget")
                    }
                    throw refusal.error
                }
                buffer.writeImmutableBuffer(chunk)
            }
        } catch let error as HTTPParserError {
            metrics.webhooksRejected["malformed_request"]?.increment()
            throw APIError(.badRequest, "the request is malformed: \(error)")
        }
        try await store(webhook: Array(buffer.readableBytesView), signature: header, since: started, logger: context.logger)
        return Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "OK")))
    }

    /// A webhook's body, read in full: verified on its bytes, parsed, stored durably (then
    /// acknowledged by the caller); throws the `APIError` to answer with.
    func store(webhook body: [UInt8], signature header: String?, since started: ContinuousClock.Instant, logger: Logger) async throws {
        try refuseUnlessValid(signature.verify(header: header, body: body), logger: logger)
        var contents: WebhookContents? = nil
        var parseError: String? = nil
        do {
            contents = WebhookContents(try WebhookPayload.decode(body))
        } catch {
            // Signed by Meta but unreadable to us: kept for replay, and acknowledged, or Meta
            // would send it again for seven days.
            parseError = "\(error)"
            logger.error("webhook stored but not parsed", metadata: ["error": "\(error)"])
        }
        let result: IngestResult
        do {
            result = try await store.ingestWebhook(
                body: body, signature: header, contents: contents, parseError: parseError,
                at: Date().timeIntervalSince1970)
        } catch {
            // Nothing is acknowledged that is not stored: Meta retries a 503.
            metrics.webhooksUnavailable.increment()
            logger.error("webhook not stored: database unavailable", metadata: ["error": "\(error)"])
            throw APIError(.serviceUnavailable, "the database is unavailable; retry later")
        }
        metrics.record(result)
        metrics.intakeLatency.record(ContinuousClock.now - started)
        if let contents, !contents.systemErrors.isEmpty {
            logger.warning(
                "Meta reported system errors",
                metadata: [
                    "codes": "\(contents.systemErrors.map { $0.code.map(String.init) ?? "?" }.joined(separator: ","))"
                ])
        }
    }

    /// A refusal that ends the connection and tells Meta when to try again.
    static let closeAndRetry: HTTPFields = [.connection: "close", .retryAfter: "1"]

    /// The webhook's answer on the fast path: the same as the router's.
    /// (`since`: when its head arrived, as the router's handler counts the intake latency.)
    func intake(signature: String?, body: [UInt8], since: ContinuousClock.Instant, logger: Logger) async -> WebhookAnswer {
        do {
            try await store(webhook: body, signature: signature, since: since, logger: logger)
            return .ok
        } catch let error as APIError {
            return .error(error)
        } catch {
            logger.error("request failed", metadata: ["http.path": "/webhook", "error": "\(error)"])
            return .error(APIError(.internalServerError, "internal error"))
        }
    }

    // MARK: - Status API

    /// The organizations the request's (already authenticated) caller reaches; nil: all.
    func reach(_ request: Request) async -> Set<String>? {
        guard let access = configuration.organizationAccess else { return nil }
        guard let header = request.headers[.authorization], header.count > 7 else { return [] }
        let token = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        if let apiToken = configuration.apiToken, constantTimeEquals(token, apiToken) { return nil }
        guard let verifier else { return [] }
        return access.organizations(of: await verifier.claims(token, now: Date().timeIntervalSince1970).claims?.account?.email)
    }

    func messageStatus(_ id: String, reach: Set<String>?) async throws -> Response {
        guard let message = try await store.message(id), OrganizationAccess.reaches(reach, run: message.run) else {
            throw APIError(.notFound, "no message \(id)")
        }
        let events = try await store.events(messageID: message.id)
        return try jsonResponse(MessageStatusView(message, events: events, oldFields: true))
    }

    func messageStatuses(_ request: Request, reach: Set<String>?) async throws -> Response {
        let query = request.uri.queryParameters
        var filter = MessageFilter()
        filter.run = query.get("run")
        if reach != nil {
            // An organization's caller lists one of its runs at a time.
            guard let run = filter.run else { throw APIError(.forbidden, "name one of your organization's runs: ?run=RUN@ORGANIZATION") }
            guard OrganizationAccess.reaches(reach, run: run) else { throw APIError(.notFound, "no run \(run)") }
        }
        filter.landlord = query.get("landlord")
        if let state = query.get("state") {
            guard let parsed = MessageState(rawValue: state) else {
                throw APIError(
                    .badRequest, "state '\(state)' is not one of \(MessageState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter.state = parsed
        }
        if let limit = query.get("limit") {
            guard let n = Int(limit), (1...1000).contains(n) else { throw APIError(.badRequest, "limit must be 1 to 1000") }
            filter.limit = n
        }
        if let after = query.get("after") {
            guard let n = Int64(after) else { throw APIError(.badRequest, "after must be the 'next' of a previous page") }
            filter.after = n
        }
        let page = try await store.messages(filter)
        return try jsonResponse(
            MessageListView(messages: page.messages.map { MessageStatusView($0, events: nil, oldFields: false) }, next: page.next))
    }

    func runs(reach: Set<String>?) async throws -> Response {
        // Only the caller's runs are counted (each count reads a run's every message).
        try jsonResponse(["runs": try await store.runs(including: { OrganizationAccess.reaches(reach, run: $0) }).map(RunView.init)])
    }

    /// A path parameter as its caller meant it: percent-decoded, as a browser's
    /// `encodeURIComponent` writes `march@caribe` (`march%40caribe`). A malformed escape, or a
    /// control character once decoded, is a 400.
    static func pathParameter(_ context: BasicRequestContext, _ name: String) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding,
            !decoded.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else {
            throw APIError(.badRequest, "the \(name) in the path is not well-formed")
        }
        return decoded
    }

    func run(_ name: String, reach: Set<String>?) async throws -> Response {
        guard OrganizationAccess.reaches(reach, run: name), let summary = try await store.runSummary(named: name) else {
            throw APIError(.notFound, "no run \(name)")
        }
        var view = RunView(summary)
        view.cost = try await CostEstimate.charged(run: summary.run, store: store).map(RunCostView.init)
        return try jsonResponse(view)
    }

    func reportFile(_ run: String, _ file: String, _ type: String, reach: Set<String>?) async throws -> Response {
        // `march@caribe` is reports/march/caribe/ (as `send` writes it): a run's own folder only,
        // one `@` at most, no part that leaves the folder, and a run that exists.
        let parts = run.split(separator: "@", omittingEmptySubsequences: false)
        guard !run.contains("/"), parts.count <= 2, parts.allSatisfy({ !$0.isEmpty && !$0.hasPrefix(".") }) else {
            throw APIError(.badRequest, "not a run name")
        }
        // An organization's caller: only its own runs' folders, and runs that exist (not a folder
        // that happens to be there).
        if reach != nil {
            guard OrganizationAccess.reaches(reach, run: run), try await store.run(named: run) != nil else {
                throw APIError(.notFound, "no report for run \(run)")
            }
        }
        let path = (configuration.reportsDirectory as NSString).appendingPathComponent("\(parts.joined(separator: "/"))/\(file)")
        // Read on NIO's thread pool: `serve` runs its tasks on the event loops (DispatcherCommand),
        // and a million-message report is 100+ MB that webhooks on the same loop would wait for.
        guard let data = try await NIOThreadPool.singleton.runIfActive({ FileManager.default.contents(atPath: path) }) else {
            throw APIError(.notFound, "no report for run \(run) yet: run `dispatcher report \(run)`")
        }
        // Reports hold tenants' text: never sniffed as something else, no script, no outside fetch.
        var headers: HTTPFields = [.contentType: type]
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    func health() async throws -> Response {
        do {
            try await store.ping()
            return try jsonResponse(["status": "ok", "database": "ok"])
        } catch {
            return try jsonResponse(["status": "unavailable", "database": "unreachable"], status: .serviceUnavailable)
        }
    }

    func metricsResponse() -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
    }

    // MARK: - Drop-in send

    func sendInvoice(_ request: Request, context: BasicRequestContext) async throws -> Response {
        do {
            return try await sendInvoiceAnswer(request, context: context)
        } catch var error as APIError {
            error.oldServiceShape = true
            throw error
        }
    }

    func sendInvoiceAnswer(_ request: Request, context: BasicRequestContext) async throws -> Response {
        // An organization's caller sends only for the organizations its account belongs to.
        if let reach = await reach(request) {
            guard let organization = request.headers[HTTPField.Name("organizationId")!], reach.contains(organization) else {
                throw APIError(
                    .forbidden,
                    request.headers[HTTPField.Name("organizationId")!].map {
                        "this account is not a member of organization '\($0)' here: nothing was sent"
                    } ?? "the organizationId header is required")
            }
        }
        guard let sender else {
            throw APIError(.serviceUnavailable, "sending is not configured: set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID")
        }
        var request = request
        let body = try await request.collectBody(upTo: 64 * 1024)
        let payload: SendInvoiceRequest
        do {
            payload = try JSONDecoder().decode(SendInvoiceRequest.self, from: Data(body.readableBytesView))
        } catch let DecodingError.keyNotFound(key, _) {
            throw APIError(.badRequest, "\(key.stringValue) is required")
        } catch let DecodingError.dataCorrupted(context) {
            throw APIError(.badRequest, context.debugDescription)
        } catch let DecodingError.typeMismatch(_, context) {
            throw APIError(.badRequest, "\(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch {
            throw APIError(.badRequest, "the body is not the JSON /send-invoice takes")
        }
        let organization = request.headers[HTTPField.Name("organizationId")!]
        // The caller's token goes back to the property system (for the PDF) only if it is the
        // property system's own, never our static API token.
        let authorization = request.headers[.authorization]
        let isAPIToken =
            configuration.apiToken.map { token in
                authorization.map { constantTimeEquals(String($0.dropFirst(7)).trimmingCharacters(in: .whitespaces), token) } ?? false
            } ?? false
        let caller = InvoiceCaller(organizationID: organization, propertySystemAuthorization: isAPIToken ? nil : authorization)
        do {
            return try jsonResponse(try await sender.sendInvoice(payload, caller: caller))
        } catch let error as InvoiceRequestError {
            switch error.code {
            case .invalid: throw APIError(.badRequest, error.message)
            case .conflict: throw APIError(.conflict, error.message)
            case .unknownOrganization: throw APIError(.forbidden, error.message)
            }
        }
    }
}

// MARK: - Views

/// One message as the status API shows it (snake_case, ISO 8601 times). `GET /message-status/{id}`,
/// the old service's route, adds the old service's fields beside ours (`success`, `messageId`,
/// `status`, `timestamp`, `recipientId`, `lastUpdated`: what its callers read); the list,
/// `GET /message-statuses`, is ours alone and gives each field once.
struct MessageStatusView: Encodable {
    var message: MessageRecord
    var events: [StatusEventRecord]?
    var oldFields: Bool

    init(_ message: MessageRecord, events: [StatusEventRecord]?, oldFields: Bool) {
        self.message = message
        self.events = events
        self.oldFields = oldFields
    }

    enum Keys: String, CodingKey {
        case id, wamid, run, state, error, events, phone, landlord, attempts
        case invoiceID = "invoice_id"
        case updatedAt = "updated_at"
        case success, messageId, status, timestamp, recipientId, lastUpdated
    }

    struct ErrorView: Encodable {
        var code: Int?
        var title: String?
        var details: String?
    }

    struct EventView: Encodable {
        var status: String
        var timestamp: String?
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        let m = message
        try c.encode(m.id, forKey: .id)
        try c.encode(m.wamid, forKey: .wamid)
        try c.encode(m.run, forKey: .run)
        try c.encode(m.invoiceID, forKey: .invoiceID)
        try c.encode("+" + m.phone, forKey: .phone)
        try c.encode(m.state.rawValue, forKey: .state)
        try c.encode(m.landlord, forKey: .landlord)
        try c.encode(m.attempts, forKey: .attempts)
        let error =
            (m.errorCode != nil || m.errorTitle != nil) ? ErrorView(code: m.errorCode, title: m.errorTitle, details: m.errorDetails) : nil
        try c.encode(error, forKey: .error)
        if let events {
            try c.encode(events.map { EventView(status: $0.status, timestamp: iso8601($0.timestamp)) }, forKey: .events)
        }
        try c.encode(iso8601(m.updatedAt), forKey: .updatedAt)
        guard oldFields else { return }
        try c.encode(m.state != .failed, forKey: .success)
        try c.encode(m.wamid ?? m.id, forKey: .messageId)
        try c.encode(m.state.rawValue, forKey: .status)
        let latest = [m.readAt, m.deliveredAt, m.sentAt, m.failedAt, m.acceptedAt].compactMap { $0 }.max()
        try c.encode(iso8601(latest ?? m.createdAt), forKey: .timestamp)
        try c.encode(m.phone, forKey: .recipientId)
        try c.encode(iso8601(m.updatedAt), forKey: .lastUpdated)
    }
}

struct MessageListView: Encodable {
    var messages: [MessageStatusView]
    var next: Int64?

    enum Keys: String, CodingKey { case messages, next }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(messages, forKey: .messages)
        try c.encode(next.map(String.init), forKey: .next)
    }
}

/// A run's cost in `GET /api/runs/:run` (snake_case, amounts as decimal strings in `currency`).
struct RunCostView: Encodable {
    struct Landlord: Encodable {
        var landlord: String?
        var messages: Int
        var cost: String
    }
    var currency: String
    var total: String
    var charged_messages: Int
    var not_charged: [String: Int]
    var without_pricing: Int
    var rate_card_effective: String
    var landlords: [Landlord]

    init(_ e: CostEstimate) {
        currency = e.card.currency
        total = CostEstimate.decimal(e.total)
        charged_messages = e.messages
        not_charged = e.notCharged
        without_pricing = e.unpriced
        rate_card_effective = e.card.effective
        landlords = e.totals(by: { $0.landlord }).map {
            Landlord(landlord: $0.0, messages: $0.messages, cost: CostEstimate.decimal($0.cost))
        }
    }
}

struct RunView: Encodable {
    var cost: RunCostView?
    var run: String
    var manifest: String
    var template: String
    var sender: String
    var status: String
    var createdAt: String?
    var finishedAt: String?
    var haltReason: String?
    var invoices: Int
    var messages: Int
    var states: [String: Int]

    init(_ s: RunSummary) {
        run = s.run.name
        manifest = s.run.manifest
        template = s.run.template
        sender = s.run.sender
        status = s.run.status.rawValue
        createdAt = iso8601(s.run.createdAt)
        finishedAt = iso8601(s.run.finishedAt)
        haltReason = s.run.haltReason
        invoices = s.invoices
        messages = s.messages
        states = Dictionary(uniqueKeysWithValues: MessageState.allCases.map { ($0.rawValue, s.counts[$0] ?? 0) })
    }

    enum CodingKeys: String, CodingKey {
        case run, manifest, template, sender, status, invoices, messages, states, cost
        case createdAt = "created_at"
        case finishedAt = "finished_at"
        case haltReason = "halt_reason"
    }
}
