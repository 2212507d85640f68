import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Prometheus
import WhatsApp

/// What `POST /webhook` answers: its status and body (the same bytes on both paths).
struct WebhookAnswer: Sendable {
    var status: HTTPResponse.Status
    var contentType: String
    var body: ByteBuffer
    /// Close the connection after this answer (a body past the cap, not read to its end).
    var close = false

    static let ok = WebhookAnswer(status: .ok, contentType: "text/plain", body: ByteBuffer(string: "OK"))

    /// `{"error": message}`, as `APIError` answers on every other route.
    static func error(_ error: APIError) -> WebhookAnswer {
        let data = (try? jsonBytes(["error": error.message])) ?? Data(#"{"error":"internal error"}"#.utf8)
        return WebhookAnswer(status: error.status, contentType: jsonContentType, body: ByteBuffer(bytes: data))
    }
}

/// Meta's webhook POSTs answered on the connection's own event loop, without Hummingbird's
/// router, request body stream and response writer around them. With one status per POST, the
/// way Meta delivers them, that plumbing was a tenth to a fifth of `serve`'s CPU
/// (`docs/benchmarks.md`, "Meta's webhook ahead of the router"). Everything else on the
/// connection goes to Hummingbird as before.
///
/// It sits between Hummingbird's connection-state handler (which so still sees every request and
/// answer, for its idle timeout and graceful shutdown) and the channel Hummingbird reads.
/// A request is taken here only when it is a `POST` to the webhook path with a well-formed
/// signature header, no `Connection: close`, no `Expect` and no declared length past the cap;
/// any other (a refusal Hummingbird words, the handshake, the API) is passed on untouched, so
/// both paths answer alike. Requests a client pipelines are answered in order: while one is
/// being answered (here or by Hummingbird) the next ones wait in this handler, and no more is
/// read from the socket. What the connection reports behind them (the client's end of input, a
/// protocol error) waits with them, so that Hummingbird, which ends the connection on either,
/// does so only after every request before it has its answer.
final class WebhookFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Verifies, stores and words the answer (`DispatcherServer.intake`).
    typealias Intake = @Sendable (_ signature: String?, _ body: [UInt8], _ since: ContinuousClock.Instant) async -> WebhookAnswer

    private enum State {
        /// Waiting for a request's head.
        case idle
        /// Reading a webhook's body.
        case receiving(signature: String?, body: ByteBuffer, since: ContinuousClock.Instant)
        /// The webhook is read; its answer is being made.
        case answering
        /// A request Hummingbird answers: `read` once its last part has been passed on,
        /// `answered` once Hummingbird's answer has ended (it may answer before reading all of
        /// the body, a refusal; the rest of the body is still passed on, for it to drain).
        case forwarding(read: Bool, answered: Bool)
        /// The answer said close: nothing more is read.
        case closing
    }

    private let path: String
    private let maxBytes: Int
    /// Webhook bodies in memory across connections, and the body being read (its share of it).
    private let bodies: BodyBudget
    private var admission: BodyAdmission? = nil
    /// A body must be whole within this of its head.
    private let deadline: Duration
    private let intake: Intake
    private let metrics: ServerMetrics
    private var state = State.idle
    /// What came while a request was being answered, in order.
    private var queued = CircularBuffer<Inbound>()
    /// A `read` held back while a request is being answered.
    private var readHeld = false
    /// Closes that wait for the webhook being answered (`close`).
    private var closesHeld: [(mode: CloseMode, promise: EventLoopPromise<Void>?)] = []
    private var date = (second: 0, text: "")
    private static let signatureName = HTTPField.Name("X-Hub-Signature-256")!

    init(
        path: String, maxBytes: Int, bodies: BodyBudget, deadline: Duration = .seconds(30), metrics: ServerMetrics,
        intake: @escaping Intake
    ) {
        self.path = path
        self.maxBytes = maxBytes
        self.bodies = bodies
        self.deadline = deadline
        self.metrics = metrics
        self.intake = intake
    }

    /// What the connection delivers: a request's part, or what Hummingbird is told after the
    /// parts before it (an error, or an event such as the end of the client's input).
    private enum Inbound {
        case part(HTTPRequestPart)
        case error(any Error)
        case event(Any)
    }

    private var busy: Bool {
        switch state {
        case .idle, .receiving: return false
        case .answering, .forwarding, .closing: return true
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Inbound.part(unwrapInboundIn(data))
        if mustWait(part) {
            queued.append(part)
            return
        }
        take(part, context: context)
    }

    /// An error or event (the client's end of input) waits behind the requests before it;
    /// Hummingbird ends the connection on it.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let error = Inbound.error(error)
        if mustWait(error) {
            queued.append(error)
            return
        }
        take(error, context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        let event = Inbound.event(event)
        if mustWait(event) {
            queued.append(event)
            return
        }
        take(event, context: context)
    }

    /// Whether `item` waits for the answer being made (and whatever waits already).
    private func mustWait(_ item: Inbound) -> Bool {
        !queued.isEmpty || (busy && !isRestOfForwarded(item))
    }

    /// What Hummingbird is to read now: the body or end of the request it is reading, or an
    /// error or event in the middle of it.
    private func isRestOfForwarded(_ item: Inbound) -> Bool {
        guard case .forwarding(read: false, _) = state else { return false }
        if case .part(.head) = item { return false }
        return true
    }

    /// Acts on one part, error or event; true when a part was passed on to Hummingbird.
    @discardableResult
    private func take(_ item: Inbound, context: ChannelHandlerContext) -> Bool {
        let part: HTTPRequestPart
        switch item {
        case .part(let p):
            part = p
        case .error(let error):
            context.fireErrorCaught(error)
            return false
        case .event(let event):
            context.fireUserInboundEventTriggered(event)
            return false
        }
        switch (state, part) {
        case (.idle, .head(let head)):
            if let signature = webhookSignature(head) {
                // The budget is taken as bytes arrive: a head that declares 3.4 MB and sends nothing
                // must not hold a share of it, nor memory (the buffer starts at 64 KB at most:
                // made to a declared 3.4 MB, 200 held connections took 273 MB, the budget 64).
                let declared = head.headerFields[.contentLength].flatMap { Int($0) } ?? 0
                let since = ContinuousClock.now
                admission = BodyAdmission(budget: bodies, maxBytes: maxBytes, deadline: deadline, since: since)
                state = .receiving(
                    signature: signature, body: context.channel.allocator.buffer(capacity: min(declared, 1 << 16)), since: since)
            } else {
                state = .forwarding(read: false, answered: false)
                context.fireChannelRead(wrapInboundOut(part))
                return true
            }
        case (.receiving(let signature, var body, let since), .body(var chunk)):
            state = .idle  // (the buffer held once, so that appending does not copy it)
            // The cap, the budget of bodies in memory (chunk by chunk, until answered) and the
            // deadline, as the router's handler checks them.
            if let refusal = admission?.admit(chunk.readableBytes) {
                refuse(refusal.reason, refusal.error, context: context)
                return false
            }
            body.writeBuffer(&chunk)
            state = .receiving(signature: signature, body: body, since: since)
        case (.receiving(let signature, let body, let since), .end):
            state = .answering
            let bytes = Array(body.readableBytesView)
            let intake = self.intake
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            Task {
                let answer = await intake(signature, bytes, since)
                bound.eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.respond(answer, context: context)
                }
            }
        case (.forwarding(read: false, let answered), .end):
            state = answered ? .idle : .forwarding(read: true, answered: false)
            context.fireChannelRead(wrapInboundOut(part))
            return true
        case (.forwarding(read: false, _), _):
            context.fireChannelRead(wrapInboundOut(part))
            return true
        case (.closing, _):
            break
        default:
            // A body or end with no head, or a head within a body: Hummingbird's loop words
            // the protocol error (and closes). A body being read is dropped, and its share freed.
            admission?.release()
            admission = nil
            state = .forwarding(read: true, answered: false)
            context.fireChannelRead(wrapInboundOut(part))
            return true
        }
        return false
    }

    /// The signature header when `head` is a webhook POST to take here; nil: Hummingbird's.
    private func webhookSignature(_ head: HTTPRequest) -> String?? {
        guard head.method == .post, let target = head.path else { return nil }
        let requestPath = target.firstIndex(of: "?").map { target[..<$0] } ?? target[...]
        guard requestPath == path else { return nil }
        let fields = head.headerFields
        let signature = fields[Self.signatureName]
        guard WebhookSignature.shape(of: signature) == .valid, fields[.expect] == nil else { return nil }
        if let connection = fields[.connection], connection.lowercased().contains("close") { return nil }
        if let length = fields[.contentLength], (Int(length) ?? .max) > maxBytes { return nil }
        return .some(signature)
    }

    /// A webhook refused while its body is read: counted under `reason`, answered with `error`,
    /// and the connection closed (the rest of the body is not read).
    private func refuse(_ reason: String, _ error: APIError, context: ChannelHandlerContext) {
        metrics.webhooksRejected[reason]?.increment()
        var answer = WebhookAnswer.error(error)
        answer.close = true
        state = .answering
        respond(answer, context: context)
    }

    private func respond(_ answer: WebhookAnswer, context: ChannelHandlerContext) {
        guard case .answering = state else { return }
        admission?.release()
        admission = nil
        guard context.channel.isActive else {
            // The client has gone: no one to answer (the payload is stored all the same).
            closed()
            return
        }
        var fields: HTTPFields = [
            .contentType: answer.contentType, .contentLength: String(answer.body.readableBytes), .date: httpDate(),
            .server: "dispatcher",
        ]
        if answer.close { fields[.connection] = "close" }
        if answer.status == .serviceUnavailable { fields[.retryAfter] = "1" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(answer.body)), promise: nil)
        if answer.close {
            state = .closing
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        state = .idle
        if !closesHeld.isEmpty {
            state = .closing
            let held = closesHeld
            closesHeld = []
            for (mode, promise) in held { context.close(mode: mode, promise: promise) }
            return
        }
        resume(context: context)
    }

    /// Closes asked for while a webhook is being answered (Hummingbird's side of the connection
    /// ending, when the server is cancelled) wait for the answer: the payload is being stored
    /// whatever happens, and Meta should hear so rather than send it again.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if case .answering = state {
            closesHeld.append((mode, promise))
            return
        }
        context.close(mode: mode, promise: promise)
    }

    /// After an answer: the parts that waited, then whatever read was held back.
    private func resume(context: ChannelHandlerContext) {
        var forwarded = false
        while let part = queued.first, !busy || isRestOfForwarded(part) {
            queued.removeFirst()
            forwarded = take(part, context: context) || forwarded
        }
        if forwarded { context.fireChannelReadComplete() }
        releaseHeldRead(context: context)
    }

    func read(context: ChannelHandlerContext) {
        if holdsReads(context) {
            readHeld = true
            return
        }
        context.read()
    }

    /// The read held back, once nothing holds it any more.
    private func releaseHeldRead(context: ChannelHandlerContext) {
        if readHeld, !holdsReads(context) {
            readHeld = false
            context.read()
        }
    }

    /// Answers the client does not read fill the socket, then NIO's buffer: past its high-water
    /// mark nothing more is read from the client until it takes them, as Hummingbird's own writer
    /// waits (a client pipelining requests without reading would otherwise have us keep every
    /// answer in memory).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        releaseHeldRead(context: context)
        context.fireChannelWritabilityChanged()
    }

    /// No more is read from the socket while a request is being answered (unless Hummingbird is
    /// still reading the body of the one it answers), while parts wait, or while answers wait
    /// for the client to take them (`channelWritabilityChanged`): the client's pipelined
    /// requests stay in its socket, not in our memory.
    private func holdsReads(_ context: ChannelHandlerContext) -> Bool {
        busy && !isForwardingBody || !queued.isEmpty || !context.channel.isWritable
    }

    /// Hummingbird is still reading the body of the request it answers.
    private var isForwardingBody: Bool {
        if case .forwarding(read: false, _) = state { return true }
        return false
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        guard case .end = unwrapOutboundIn(data), case .forwarding(let read, _) = state else { return }
        guard read else {
            // Answered before its body was all read: the rest still goes to Hummingbird.
            state = .forwarding(read: false, answered: true)
            return
        }
        // Hummingbird's answer is out: the next request is ours to look at (after this write
        // has returned to Hummingbird).
        state = .idle
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            handler.resume(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed()
        context.fireChannelInactive()
    }

    /// Hummingbird's connection-state handler, ahead of this one, does not pass `channelInactive`
    /// on: the channel's end is seen here when the pipeline is taken down.
    func handlerRemoved(context: ChannelHandlerContext) {
        closed()
    }

    /// The connection is gone: nothing more is answered, and closes held for an answer are done.
    private func closed() {
        state = .closing
        admission?.release()
        admission = nil
        queued.removeAll()
        let held = closesHeld
        closesHeld = []
        for (_, promise) in held { promise?.succeed() }
    }

    /// RFC 9110's date, formatted once a second.
    private func httpDate() -> String {
        let now = Date()
        let second = Int(now.timeIntervalSince1970)
        if second != date.second { date = (second, Self.format(now)) }
        return date.text
    }

    private static func format(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "GMT")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int?) -> String { let n = n ?? 0; return n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[(c.weekday ?? 1) - 1]), \(two(c.day)) \(months[(c.month ?? 1) - 1]) \(c.year ?? 1970) "
            + "\(two(c.hour)):\(two(c.minute)):\(two(c.second)) GMT"
    }
}

/// Closes the connection once an answer saying `Connection: close` is written. Hummingbird closes
/// only when the request said so, and otherwise reads what is left of a request it has answered,
/// however slowly it comes: a route refusing a body (a 408 to a client trickling it, a 503 past
/// the budget of bodies in memory) could not end the connection.
final class CloseAfterAnswer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart
    private var closing = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            closing = head.headerFields[.connection]?.lowercased().contains("close") == true
        case .end where closing:
            let written = promise ?? context.eventLoop.makePromise()
            context.write(data, promise: written)
            let channel = context.channel
            written.futureResult.whenComplete { _ in channel.close(promise: nil) }
            return
        default:
            break
        }
        context.write(data, promise: promise)
    }
}

/// Hummingbird's HTTP/1.1 child channel, the same pipeline `HTTP1Channel` builds, with the
/// webhook's fast path (when given) just before the channel Hummingbird reads.
struct DispatcherHTTP1Channel: HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let idleTimeout: Duration?
    let fastPath: (@Sendable () -> WebhookFastPath)?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Hummingbird's limits on headers (tighter than NIO's on their count).
            let hummingbird = HTTP1Channel.Configuration().httpDecoder
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = hummingbird.maxHeaderFieldSize
            limits.maxHeaderListSize = hummingbird.maxHeaderListSize
            limits.maxHeaderFieldCount = hummingbird.maxHeaderFieldCount
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
            try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try channel.pipeline.syncOperations.addHandler(CloseAfterAnswer())
            try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: idleTimeout, logger: logger))
            if let fastPath { try channel.pipeline.syncOperations.addHandler(fastPath()) }
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}
