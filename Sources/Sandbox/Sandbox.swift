import AsyncHTTPClient
public import Dispatcher
import Foundation
import Hummingbird
public import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import WhatsApp

/// How the sandbox behaves.
public struct SandboxConfiguration: Sendable {
    /// The bearer token it accepts (any other answers 190).
    public var accessToken: String
    /// Signs webhooks as Meta does with the app secret.
    public var appSecret: String
    /// Where statuses are posted; none: statuses are only counted.
    public var webhookURL: String?
    /// Messages per second per sender number (Meta: 80 by default, 1,000 after upgrade).
    public var throughput: Double
    /// Messages to one user before the 6-second rule applies (1: strict, to catch bad pacing; Meta allows bursts up to 45).
    public var pairBurst: Int
    public var pairInterval: Double
    /// Added to every answer.
    public var latency: Duration
    /// Seconds from acceptance to `sent`, then between statuses.
    public var statusSpacing: Double
    /// Statuses per webhook POST at most.
    public var batchSize: Int
    public var templates: TemplateCatalog
    public var scenario: Scenario

    public init(
        accessToken: String = "sandbox-token", appSecret: String, webhookURL: String? = nil, throughput: Double = 80,
        pairBurst: Int = 1, pairInterval: Double = 6, latency: Duration = .zero, statusSpacing: Double = 0.2,
        batchSize: Int = 100, templates: TemplateCatalog, scenario: Scenario = Scenario()
    ) {
        self.accessToken = accessToken
        self.appSecret = appSecret
        self.webhookURL = webhookURL
        self.throughput = throughput
        self.pairBurst = pairBurst
        self.pairInterval = pairInterval
        self.latency = latency
        self.statusSpacing = statusSpacing
        self.batchSize = batchSize
        self.templates = templates
        self.scenario = scenario
    }
}

/// A local stand-in for the WhatsApp Cloud API (see docs/sandbox.md).
public struct Sandbox: Sendable {
    public let configuration: SandboxConfiguration
    let state = SandboxState()
    /// Webhooks are signed by the same code that receivers verify with.
    let signer: WebhookSignature

    public init(configuration: SandboxConfiguration) {
        self.configuration = configuration
        signer = WebhookSignature(appSecret: configuration.appSecret)
    }

    /// Serves on `host:port` and delivers webhooks until cancelled. `onListening` gets the bound
    /// port (useful with port 0).
    public func run(
        host: String = "127.0.0.1", port: Int = 0, logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) async throws {
        let app = Application(
            router: router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "whatsapp-sandbox"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
        // Inside a ServiceGroup, a graceful shutdown stops both the server and the delivery loop cleanly.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run() }
            group.addTask { try await cancelWhenGracefulShutdown { try await self.deliverWebhooks(logger: logger) } }
            try await group.waitForAll()
        }
    }

    // MARK: - Routes

    func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.post(":version/:phoneNumberID/messages") { request, context in
            try await self.send(request, context: context)
        }
        router.post(":version/:phoneNumberID/media") { request, context in
            try await self.uploadMedia(request, context: context)
        }
        router.get(":version/:phoneNumberID") { request, context in
            try self.phoneNumber(request, context: context)
        }
        // The segment is the business account's id (the router wants one name per position).
        router.get(":version/:phoneNumberID/message_templates") { request, context in
            try await self.messageTemplates(request, context: context)
        }
        router.get("_sandbox/requests") { _, _ in try json(await self.state.requests) }
        router.get("_sandbox/webhooks") { _, _ in try json(await self.state.deliveries) }
        router.get("_sandbox/counters") { _, _ in try json(await self.state.counters()) }
        router.post("_sandbox/webhooks/pause") { _, _ in
            await self.state.setPaused(true)
            return try json(["paused": true])
        }
        router.post("_sandbox/webhooks/resume") { _, _ in
            await self.state.setPaused(false)
            return try json(["paused": false])
        }
        router.post("_sandbox/reset") { _, _ in
            await self.state.reset()
            return try json(["reset": true])
        }
        return router
    }

    func phoneNumber(_ request: Request, context: BasicRequestContext) throws -> Response {
        guard bearer(request) == configuration.accessToken else {
            return metaError(190, "Error validating access token: Session has expired", status: .unauthorized)
        }
        let id = context.parameters.get("phoneNumberID") ?? ""
        // Meta's shape: `throughput` is an object (`{"level": "STANDARD"}`, or `HIGH` once upgraded).
        let answer = MetaJSON.object([
            ("display_phone_number", .string("+1 809-555-0000")), ("id", .string(id)), ("quality_rating", .string("GREEN")),
            ("throughput", .object([("level", .string(configuration.throughput > 80 ? "HIGH" : "STANDARD"))])),
            ("verified_name", .string("Sandbox Inmobiliaria")),
        ])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: answer.bytes)))
    }

    /// `POST /{version}/{phone_number_id}/media`: a multipart upload (`messaging_product`, `type`,
    /// `file`) checked as Meta checks a document (a PDF, at most 100 MB), answered with a media id
    /// that sends may name until it expires (30 days).
    func uploadMedia(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard bearer(request) == configuration.accessToken else {
            return metaError(190, "Error validating access token: Session has expired", status: .unauthorized)
        }
        var request = request
        let contentType = request.headers[.contentType] ?? ""
        guard
            let boundary = contentType.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) })
                .first(where: { $0.hasPrefix("boundary=") })?.dropFirst("boundary=".count), !boundary.isEmpty
        else {
            return metaError(100, "Invalid parameter", details: "the upload must be multipart/form-data")
        }
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: 100 * 1024 * 1024 + 64 * 1024)
        } catch {
            return metaError(131052, "Media upload error", details: "documents may be at most 100 MB")
        }
        let parts = multipartParts(Array(body.readableBytesView), boundary: String(boundary))
        guard parts["messaging_product"].map({ String(decoding: $0, as: UTF8.self) }) == "whatsapp" else {
            return metaError(100, "Invalid parameter", details: "messaging_product must be whatsapp")
        }
        let type = parts["type"].map { String(decoding: $0, as: UTF8.self) } ?? ""
        guard let file = parts["file"], !file.isEmpty else { return metaError(100, "Invalid parameter", details: "file is required") }
        guard type == "application/pdf", file.starts(with: Array("%PDF-".utf8)) else {
            return metaError(131053, "Media upload error", details: "Unsupported document type: \(type); the file must be a PDF")
        }
        let id = String(UInt64.random(in: 1_000_000_000_000_000...9_999_999_999_999_999))
        await state.addMedia(id: id, at: Date().timeIntervalSince1970, bytes: file.count)
        return try json(["id": id])
    }

    /// A template's status now: the scenario's, or PAUSED once a scenario's pause rule is reached.
    func templateStatus(_ name: String, language: String) async -> String {
        configuration.scenario.status(template: name, language: language, acceptedSends: await state.acceptedPerTemplate[name] ?? 0)
    }

    /// `GET /{version}/{WABA_ID}/message_templates`: the templates folder as Meta's management API
    /// lists an account's templates (one entry per name and language, `limit` per page, `after`
    /// cursors), with the scenario's statuses; languages the scenario says Meta lacks are absent.
    func messageTemplates(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard bearer(request) == configuration.accessToken else {
            return metaError(190, "Error validating access token: Session has expired", status: .unauthorized)
        }
        var entries: [AccountTemplate] = []
        for (name, definition) in configuration.templates.templates.sorted(by: { $0.key < $1.key }) {
            for (language, text) in definition.languages.sorted(by: { $0.key < $1.key })
            where !configuration.scenario.lacks(template: name, language: language) {
                var buttons: [AccountTemplate.Button] = []
                for button in text.buttons ?? [] {
                    buttons.append(.init(type: button.url == nil ? "QUICK_REPLY" : "URL", text: button.text, url: button.url))
                }
                entries.append(
                    AccountTemplate(
                        id: String(UInt32(truncatingIfNeeded: "\(name):\(language)".utf8.reduce(5381) { ($0 &* 33) &+ UInt64($1) })),
                        name: name, language: language, status: await templateStatus(name, language: language),
                        category: definition.category.uppercased(), parameterFormat: (definition.parameterFormat ?? .positional).rawValue,
                        quality: "GREEN", headerFormat: definition.header?.format.uppercased(), headerText: text.header, body: text.body,
                        footer: text.footer, buttons: buttons))
            }
        }
        let limit = max(1, min(Int(request.uri.queryParameters.get("limit") ?? "") ?? 25, 100))
        let cursor = request.uri.queryParameters.get("after").flatMap { Data(base64Encoded: String($0)) }
        // A cursor is ours (an offset); anything else starts at the beginning, never traps.
        let start = min(entries.count, max(0, cursor.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0))
        let page = entries.dropFirst(start).prefix(limit)
        var paging: [(String, MetaJSON)] = []
        let end = start + page.count
        paging.append(
            (
                "cursors",
                .object([
                    ("before", .string(Data(String(start).utf8).base64EncodedString())),
                    ("after", .string(Data(String(end).utf8).base64EncodedString())),
                ])
            ))
        if end < entries.count {
            paging.append(("next", .string("\(request.uri.path)?limit=\(limit)&after=\(Data(String(end).utf8).base64EncodedString())")))
        }
        let answer = MetaJSON.object([("data", .array(page.map(\.metaJSON))), ("paging", .object(paging))])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: answer.bytes)))
    }

    /// `--latency-ms` is spent after the request is counted and answered, before the answer goes
    /// back: Meta counts a message against the throughput when it arrives. (Counted after a sleep,
    /// the sandbox's own timer lateness, up to 20 ms on a busy core, was taken for a burst from the
    /// sender and answered with 130429.)
    func send(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let response = try await answer(request, context: context)
        if configuration.latency > .zero { try await Task.sleep(for: configuration.latency) }
        return response
    }

    private func answer(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let now = Date().timeIntervalSince1970
        let phoneNumberID = context.parameters.get("phoneNumberID") ?? ""
        var request = request
        let body = try await request.collectBody(upTo: 1 << 20)
        var record = SandboxState.RequestRecord(at: now, phoneNumberID: phoneNumberID, httpStatus: 200)

        func refuse(_ code: Int, _ message: String, status: HTTPResponse.Status = .badRequest, details: String? = nil) async -> Response {
            record.httpStatus = Int(status.code)
            record.errorCode = code
            await state.record(record)
            return metaError(code, message, status: status, details: details)
        }

        guard bearer(request) == configuration.accessToken else {
            return await refuse(190, "Error validating access token: Session has expired on Sunday, 29-Nov-26.", status: .unauthorized)
        }
        if let outage = configuration.scenario.outage(at: await state.sinceFirstSend(now: now)) {
            switch outage.code {
            case 133004: return await refuse(133004, "Server temporarily unavailable", status: .serviceUnavailable)
            case 131057:
                return await refuse(
                    131057, "Account in maintenance mode", status: .serviceUnavailable,
                    details: "Business Account is in maintenance mode: it may be undergoing a throughput upgrade.")
            case 132000: return await refuse(132000, "Number of parameters does not match the expected number of params")
            case 132012: return await refuse(132012, "Parameter format does not match format in the created template")
            case 100: return await refuse(100, "Invalid parameter")
            case let code: return await refuse(code, "Something went wrong", status: .internalServerError)
            }
        }
        let message: IncomingMessage
        do {
            message = try JSONDecoder().decode(IncomingMessage.self, from: Data(body.readableBytesView))
        } catch {
            return await refuse(100, "Invalid parameter", details: "the body is not JSON Meta accepts: \(error)")
        }
        record.to = message.to
        record.template = message.template?.name
        record.callbackData = message.bizOpaqueCallbackData
        guard message.messagingProduct == "whatsapp" else {
            return await refuse(100, "Invalid parameter", details: "messaging_product must be whatsapp")
        }
        guard let to = message.to, let waID = normalizedNumber(to) else {
            return await refuse(100, "Invalid parameter", details: "to is not a phone number")
        }
        guard message.type == "template", let template = message.template else {
            return await refuse(100, "Invalid parameter", details: "the sandbox takes template messages only")
        }
        if let callback = message.bizOpaqueCallbackData, callback.count > 512 {
            return await refuse(100, "Invalid parameter", details: "biz_opaque_callback_data is longer than 512 characters")
        }
        if let problem = validate(template, media: await state.media) {
            return await refuse(problem.code, problem.title, details: problem.details)
        }
        if let name = template.name, let language = template.language?.code {
            switch await templateStatus(name, language: language) {
            case "APPROVED": break
            case "PAUSED":
                return await refuse(132015, "Template is Paused", details: "template (\(name)) is paused because of low quality")
            case "DISABLED":
                return await refuse(132016, "Template is disabled", details: "template (\(name)) was disabled because of low quality")
            case let status:
                return await refuse(
                    132001, "Template name does not exist in the translation",
                    details: "template name (\(name)) is \(status) in \(language), not approved")
            }
        }

        let outcome = configuration.scenario.outcome(for: waID)
        switch outcome {
        case .tokenExpired: return await refuse(190, "Error validating access token: Session has expired", status: .unauthorized)
        case .paymentIssue: return await refuse(131042, "Business eligibility payment issue")
        default: break
        }
        let attempt = await state.attempt(for: waID)
        switch outcome {
        case .transientOnce where attempt == 1: return await refuse(131000, "Something went wrong", status: .internalServerError)
        case .unavailableOnce where attempt == 1: return await refuse(133004, "Server temporarily unavailable", status: .serviceUnavailable)
        case .serverErrorOnce where attempt == 1:
            record.httpStatus = 500
            await state.record(record)
            return Response(status: .internalServerError, body: .init(byteBuffer: ByteBuffer(string: "Internal Server Error")))
        case .marketingLimit: return await refuse(131049, "This message was not delivered to maintain healthy ecosystem engagement.")
        default: break
        }
        // Meta's limits (a message refused above does not count towards them).
        guard await state.admitThroughput(phoneNumberID: phoneNumberID, limit: configuration.throughput, now: now) else {
            return await refuse(130429, "(#130429) Rate limit hit", details: "Cloud API message throughput has been reached.")
        }
        guard await state.admitPair(to: waID, burst: configuration.pairBurst, interval: configuration.pairInterval, now: now) else {
            return await refuse(
                131056, "(Business Account, Consumer Account) pair rate limit hit",
                details: "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time."
            )
        }
        let wamid =
            "wamid.HBgL"
            + Data((0..<18).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "+", with: "-")
        record.wamid = wamid
        await state.record(record)
        let version = context.parameters.get("version") ?? "v23.0"
        await state.schedule(
            events(
                for: outcome, phoneNumberID: phoneNumberID, wamid: wamid, recipient: Self.whatsAppID(for: waID),
                callback: message.bizOpaqueCallbackData,
                accepted: now, apiVersion: version))
        if outcome == .slow { try await Task.sleep(for: .seconds(3)) }
        if outcome == .timeoutOnce && attempt == 1 {
            // Taken, never answered: the client gives up and must not send it again. (A graceful
            // shutdown of the sandbox ends the wait.)
            try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(120)) }
        }
        let answer = MetaJSON.object([
            ("messaging_product", .string("whatsapp")),
            ("contacts", .array([.object([("input", .string(to)), ("wa_id", .string(Self.whatsAppID(for: waID)))])])),
            (
                "messages",
                .array([
                    .object([
                        ("id", .string(wamid)),
                        ("message_status", .string(outcome == .heldForQuality ? "held_for_quality_assessment" : "accepted")),
                    ])
                ])
            ),
        ])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: answer.bytes)))
    }

    /// Checks a template message against the definitions, as Meta checks it against the approved template.
    func validate(_ t: IncomingMessage.Template, media: [String: Double] = [:]) -> (code: Int, title: String, details: String)? {
        guard let name = t.name, let definition = configuration.templates[name] else {
            return (132001, "Template name does not exist in the translation", "template name (\(t.name ?? "none")) does not exist")
        }
        guard let language = t.language?.code, definition.languages[language] != nil,
            !configuration.scenario.lacks(template: name, language: language)
        else {
            return (
                132001, "Template name does not exist in the translation",
                "template name (\(name)) does not exist in \(t.language?.code ?? "no language")"
            )
        }
        let components = t.components ?? []
        let body = components.first { $0.type == "body" }?.parameters ?? []
        if body.count != definition.body.count {
            return (
                132000, "Number of parameters does not match the expected number of params",
                "body: number of localizable_params (\(body.count)) does not match the expected number of params (\(definition.body.count))"
            )
        }
        for (index, (given, expected)) in zip(body, definition.body).enumerated() {
            if definition.isNamed && given.parameterName != expected.placeholderName {
                return (
                    100, "Invalid parameter",
                    "body parameter \(index + 1): parameter_name '\(given.parameterName ?? "none")' is not '\(expected.placeholderName)' (the template has named parameters)"
                )
            }
            if !definition.isNamed && given.parameterName != nil {
                return (
                    100, "Invalid parameter",
                    "body parameter \(index + 1): parameter_name given, but the template's parameters are positional"
                )
            }
            let type = expected.type ?? "text"
            if given.type != type {
                return (
                    132012, "Parameter format does not match format in the created template",
                    "body parameter \(index + 1) should be \(type)"
                )
            }
            if type == "currency", given.currency?.code == nil || given.currency?.amount1000 == nil || given.currency?.fallbackValue == nil
            {
                return (
                    132012, "Parameter format does not match format in the created template",
                    "currency parameter \(index + 1) is incomplete"
                )
            }
            if type == "text" {
                guard let text = given.text, !text.isEmpty else {
                    return (131008, "Required parameter is missing", "body parameter \(index + 1) is empty")
                }
                if text.contains(where: { $0 == "\n" || $0 == "\t" }) || text.contains("     ") {
                    return (
                        132018, "There was an issue with the parameters in your template.",
                        "Param text cannot have new-line/tab characters or more than 4 consecutive spaces"
                    )
                }
            }
        }
        let header = components.first { $0.type == "header" }?.parameters ?? []
        if definition.header?.format.uppercased() == "DOCUMENT" {
            if header.count == 1, let id = header[0].document?.id {
                guard let uploaded = media[id], uploaded > Date().timeIntervalSince1970 - 30 * 24 * 3600 else {
                    return (131053, "Media upload error", "media id \(id) was not uploaded by this account or has expired")
                }
                return nil
            }
            guard header.count == 1, header[0].type == "document", let link = header[0].document?.link, link.hasPrefix("https://") else {
                return (
                    132012, "Parameter format does not match format in the created template",
                    "header: a document with an https link is expected"
                )
            }
        } else if !header.isEmpty && definition.header == nil {
            return (132000, "Number of parameters does not match the expected number of params", "the template has no header")
        }
        let buttons = components.filter { $0.type == "button" }
        if buttons.count != (definition.buttons?.count ?? 0) {
            return (
                132000, "Number of parameters does not match the expected number of params",
                "buttons: \(buttons.count) given, \(definition.buttons?.count ?? 0) expected"
            )
        }
        return nil
    }

    // MARK: - Statuses

    func events(
        for outcome: Outcome, phoneNumberID: String = "SANDBOX", wamid: String, recipient: String, callback: String?, accepted: Double,
        apiVersion: String
    ) -> [SandboxState.Event] {
        let step = configuration.statusSpacing
        let majorVersion = Int(apiVersion.dropFirst().prefix { $0 != "." }) ?? 23
        func status(_ s: String, _ n: Int, error: (Int, String)? = nil) -> SandboxState.Event {
            let at = accepted + step * Double(n)
            var fields: [(String, MetaJSON)] = [("id", .string(wamid)), ("status", .string(s)), ("timestamp", .string(String(Int64(at))))]
            if outcome == .replyStopUsername {
                fields += [("recipient_id", .string("")), ("recipient_user_id", .string(Self.userID(for: recipient)))]
            } else {
                fields.append(("recipient_id", .string(recipient)))
            }
            if let callback { fields.append(("biz_opaque_callback_data", .string(callback))) }
            if s == "sent" || s == "delivered" {
                if majorVersion < 24 && s == "sent" {
                    fields.append(
                        (
                            "conversation",
                            .object([("id", .string("CONV" + wamid.suffix(8))), ("origin", .object([("type", .string("utility"))]))])
                        ))
                }
                fields.append(
                    (
                        "pricing",
                        .object([
                            ("billable", .bool(true)), ("pricing_model", .string("PMP")),
                            ("category", .string("utility")), ("type", .string("regular")),
                        ])
                    ))
            }
            if let (code, title) = error {
                fields.append(
                    (
                        "errors",
                        .array([
                            .object([
                                ("code", .number(Int64(code))), ("title", .string(title)), ("message", .string(title)),
                                ("error_data", .object([("details", .string(title))])),
                                ("href", .string("https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/")),
                            ])
                        ])
                    ))
            }
            return SandboxState.Event(due: at, value: .object(fields), isStatus: true, phoneNumberID: phoneNumberID)
        }
        func reply(_ text: String, _ n: Int) -> SandboxState.Event {
            let at = accepted + step * Double(n)
            let sender: (String, MetaJSON) =
                outcome == .replyStopUsername
                ? ("from_user_id", .string(Self.userID(for: recipient))) : ("from", .string(recipient))
            let message = MetaJSON.object([
                sender, ("id", .string("wamid.IN" + wamid.suffix(12))), ("timestamp", .string(String(Int64(at)))),
                ("type", .string("text")), ("text", .object([("body", .string(text))])),
            ])
            return SandboxState.Event(due: at, value: message, isStatus: false, phoneNumberID: phoneNumberID)
        }
        switch outcome {
        case .delivered: return [status("sent", 1), status("delivered", 2)]
        case .heldForQuality: return [status("sent", 4), status("delivered", 5)]
        case .readWithoutDelivered: return [status("sent", 1), status("read", 3)]
        case .neverDelivered: return [status("sent", 1)]
        case .undeliverable: return [status("failed", 1, error: (131026, "Message undeliverable"))]
        case .paymentIssueByWebhook: return [status("failed", 1, error: (131042, "Business eligibility payment issue"))]
        case .spamLimitByWebhook: return [status("failed", 1, error: (131048, "Spam rate limit hit"))]
        case .optedOutOfMarketing:
            return [
                status(
                    "failed", 1,
                    error: (
                        131050,
                        "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business"
                    ))
            ]
        case .reorderedDuplicated:
            return [status("read", 1), status("sent", 2), status("delivered", 3), status("delivered", 3), status("read", 1)]
        case .lateFailure:
            return [status("sent", 1), status("failed", 2, error: (131026, "Message undeliverable")), status("delivered", 4)]
        case .replyStop, .replyStopUsername: return [status("sent", 1), status("delivered", 2), status("read", 3), reply("STOP", 4)]
        case .replyThanks: return [status("sent", 1), status("delivered", 2), status("read", 3), reply("¡Gracias! Recibí la factura 👍", 4)]
        default: return [status("sent", 1), status("delivered", 2), status("read", 3)]
        }
    }

    /// Posts due events in batches, signed; on a non-200 or no answer, tries again later with
    /// growing delays (1 s, 2 s, 4 s… up to 60 s), as Meta does.
    func deliverWebhooks(logger: Logger) async throws {
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        var failures = 0
        do {
            while !Task.isCancelled {
                let now = Date().timeIntervalSince1970
                let due = await state.takeDue(now: now, limit: configuration.batchSize)
                guard !due.isEmpty else {
                    try await Task.sleep(for: .milliseconds(50))
                    continue
                }
                guard let url = configuration.webhookURL else {
                    await state.recordDelivery(
                        .init(
                            at: now, statuses: due.filter(\.isStatus).count, inbound: due.count - due.filter(\.isStatus).count,
                            httpStatus: nil, error: "no webhook URL", attempt: 1), ok: true)
                    continue
                }
                let body = payload(due)
                var request = HTTPClientRequest(url: url)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.headers.add(name: "X-Hub-Signature-256", value: signer.header(for: body))
                request.body = .bytes(ByteBuffer(bytes: body))
                var status: Int? = nil
                var problem: String? = nil
                do {
                    let response = try await client.execute(request, timeout: .seconds(10))
                    status = Int(response.status.code)
                    _ = try await response.body.collect(upTo: 1 << 16)
                } catch {
                    problem = "\(error)"
                }
                let ok = status == 200
                let statuses = due.filter(\.isStatus).count
                await state.recordDelivery(
                    .init(
                        at: now, statuses: statuses, inbound: due.count - statuses, httpStatus: status, error: problem,
                        attempt: failures + 1), ok: ok)
                if ok {
                    failures = 0
                } else {
                    failures += 1
                    let delay = min(60, pow(2, Double(failures - 1)))
                    logger.warning(
                        "sandbox webhook not accepted; will retry",
                        metadata: ["status": "\(status.map(String.init) ?? "none")", "retry_in_s": "\(delay)"])
                    await state.putBack(due, retryAt: now + delay)
                }
            }
        } catch is CancellationError {}
        try? await client.shutdown()
    }

    /// Meta's envelope: statuses 50 to a change, two changes to an entry; replies in their own
    /// change; each change names the number it is about (`metadata.phone_number_id`).
    func payload(_ events: [SandboxState.Event]) -> [UInt8] {
        var numbers: [String] = []
        for event in events where !numbers.contains(event.phoneNumberID) { numbers.append(event.phoneNumberID) }
        let changes = numbers.flatMap { number in self.changes(events.filter { $0.phoneNumberID == number }, number: number) }
        var entries: [MetaJSON] = []
        for start in stride(from: 0, to: changes.count, by: 2) {
            entries.append(
                .object([("id", .string("SANDBOX-WABA")), ("changes", .array(Array(changes[start..<min(start + 2, changes.count)])))]))
        }
        return MetaJSON.object([("object", .string("whatsapp_business_account")), ("entry", .array(entries))]).bytes
    }

    /// One number's changes.
    func changes(_ events: [SandboxState.Event], number: String) -> [MetaJSON] {
        let metadata = MetaJSON.object([("display_phone_number", .string("18095550000")), ("phone_number_id", .string(number))])
        var changes: [MetaJSON] = []
        let statuses = events.filter(\.isStatus).map(\.value)
        for start in stride(from: 0, to: statuses.count, by: 50) {
            changes.append(
                .object([
                    ("field", .string("messages")),
                    (
                        "value",
                        .object([
                            ("messaging_product", .string("whatsapp")), ("metadata", metadata),
                            ("statuses", .array(Array(statuses[start..<min(start + 50, statuses.count)]))),
                        ])
                    ),
                ]))
        }
        let replies = events.filter { !$0.isStatus }.map(\.value)
        if !replies.isEmpty {
            let contacts = replies.compactMap { reply -> MetaJSON? in
                guard case .object(let fields) = reply else { return nil }
                if case .string(let from)? = fields.first(where: { $0.0 == "from" })?.1 {
                    return .object([("profile", .object([("name", .string("Inquilino"))])), ("wa_id", .string(from))])
                }
                // A username user: no number anywhere, the user id and the username instead.
                guard case .string(let user)? = fields.first(where: { $0.0 == "from_user_id" })?.1 else { return nil }
                return .object([
                    ("profile", .object([("name", .string("Inquilino")), ("username", .string("inquilino_" + user.suffix(4)))])),
                    ("user_id", .string(user)),
                ])
            }
            changes.append(
                .object([
                    ("field", .string("messages")),
                    (
                        "value",
                        .object([
                            ("messaging_product", .string("whatsapp")), ("metadata", metadata), ("contacts", .array(contacts)),
                            ("messages", .array(replies)),
                        ])
                    ),
                ]))
        }
        return changes
    }

    // MARK: - Helpers

    func bearer(_ request: Request) -> String? {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else { return nil }
        return String(header.dropFirst(7))
    }

    func metaError(_ code: Int, _ message: String, status: HTTPResponse.Status = .badRequest, details: String? = nil) -> Response {
        let body = MetaJSON.object([
            (
                "error",
                .object([
                    ("message", .string(message)), ("type", .string("OAuthException")), ("code", .number(Int64(code))),
                    ("error_data", .object([("messaging_product", .string("whatsapp")), ("details", .string(details ?? message))])),
                    ("fbtrace_id", .string("Sandbox" + String(Int.random(in: 100_000...999_999)))),
                ])
            )
        ])
        var headers: HTTPFields = [.contentType: "application/json"]
        if code == 130429 { headers[.retryAfter] = "1" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.bytes)))
    }

    /// The WhatsApp id Meta answers for a number, which is not always its digits: Mexican mobiles
    /// get a `1` after the country code (`52 55…` → `521 55…`) and Brazilian mobiles registered
    /// before the ninth digit lose it (`55 11 9 8765 4321` → `55 11 8765 4321`).
    static func whatsAppID(for digits: String) -> String {
        if digits.hasPrefix("52"), digits.count == 12 { return "521" + digits.dropFirst(2) }
        if digits.hasPrefix("55"), digits.count == 13, Array(digits)[4] == "9" { return String(digits.prefix(4)) + digits.dropFirst(5) }
        return digits
    }

    /// The business-scoped user id the sandbox gives a username user (stable per number).
    static func userID(for digits: String) -> String { "SB." + String(digits.reversed()) }

    func normalizedNumber(_ to: String) -> String? {
        let digits = to.filter(\.isNumber)
        guard digits.count >= 8, digits.count <= 15, to.allSatisfy({ $0.isNumber || "+ -().".contains($0) }) else { return nil }
        return digits
    }
}

func json(_ value: some Encodable) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return Response(
        status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
}

/// The request body as the sandbox reads it.
struct IncomingMessage: Decodable {
    var messagingProduct: String?
    var to: String?
    var type: String?
    var bizOpaqueCallbackData: String?
    var template: Template?

    enum CodingKeys: String, CodingKey {
        case messagingProduct = "messaging_product"
        case to, type, template
        case bizOpaqueCallbackData = "biz_opaque_callback_data"
    }

    struct Template: Decodable {
        var name: String?
        var language: Language?
        var components: [Component]?
    }

    struct Language: Decodable { var code: String? }

    struct Component: Decodable {
        var type: String?
        var parameters: [Parameter]?
    }

    struct Parameter: Decodable {
        var type: String?
        var parameterName: String?
        var text: String?
        var currency: CurrencyValue?
        var document: Document?

        enum CodingKeys: String, CodingKey {
            case type, text, currency, document
            case parameterName = "parameter_name"
        }
    }

    struct CurrencyValue: Decodable {
        var fallbackValue: String?
        var code: String?
        var amount1000: Int64?

        enum CodingKeys: String, CodingKey {
            case fallbackValue = "fallback_value"
            case code
            case amount1000 = "amount_1000"
        }
    }

    struct Document: Decodable {
        var link: String?
        var id: String?
        var filename: String?
    }
}

/// The parts of a multipart/form-data body by name (enough for Meta's upload form).
func multipartParts(_ body: [UInt8], boundary: String) -> [String: [UInt8]] {
    let delimiter = Array("--\(boundary)".utf8)
    var parts: [String: [UInt8]] = [:]
    var starts: [Int] = []
    var i = 0
    while i + delimiter.count <= body.count {
        if body[i] == delimiter[0] && Array(body[i..<i + delimiter.count]) == delimiter {
            starts.append(i)
            i += delimiter.count
        } else {
            i += 1
        }
    }
    for (n, start) in starts.enumerated() where n + 1 < starts.count {
        var part = Array(body[(start + delimiter.count)..<starts[n + 1]])
        if part.starts(with: [13, 10]) { part.removeFirst(2) }
        if part.suffix(2) == [13, 10] { part.removeLast(2) }
        guard let split = (0..<max(0, part.count - 3)).first(where: { part[$0..<$0 + 4] == [13, 10, 13, 10] }) else { continue }
        let headers = String(decoding: part[..<split], as: UTF8.self)
        guard let nameRange = headers.range(of: "name=\"") else { continue }
        let name = headers[nameRange.upperBound...].prefix { $0 != "\"" }
        parts[String(name)] = Array(part[(split + 4)...])
    }
    return parts
}
