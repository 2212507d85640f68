import Dispatcher
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS

/// The billing run's sends on plain NIO HTTP/1.1 connections: `POST …/messages` and nothing else.
///
/// AsyncHTTPClient is general (redirects, proxies, pools shared by hosts, a state machine per
/// request and per connection); per request that generality was about half of the sender's CPU at
/// 1,000/s. Here a request is three writes on a kept-alive connection and its answer three reads
/// through NIO's own HTTP/1.1 encoder and decoder, TLS by NIOSSL for `https`. Everything lives on
/// one event loop: the pool's state, every connection, every callback. Management calls (`doctor`,
/// templates, media) stay on AsyncHTTPClient.
///
/// The same outcomes as the AsyncHTTPClient path: `.notSent` only when the request was never
/// handed to a connection (none could be opened, its TLS handshake failed, or none came within the
/// deadline); `.unknown` when it was and no whole answer came back (timeout, connection lost).
final class MessageConnections: @unchecked Sendable {
    // All state is confined to `loop`.
    let loop: any EventLoop
    private let host: String
    private let port: Int
    private let tls: NIOSSLContext?
    private let head: HTTPRequestHead
    private let timeout: TimeAmount
    private let connectTimeout: TimeAmount
    private let maxConnections: Int
    private let maxResponseBytes: Int
    /// A connection idle longer is closed, not used: a server closes idle connections when it
    /// chooses, and a request written as it does is lost in between (unknown, not resent). Well
    /// under the minute servers commonly wait (AsyncHTTPClient's own default is 60 s).
    private let idleLimit: TimeAmount

    /// Free connections, the longest idle first.
    private var idle: [Connection] = []
    private var waiting = CircularBuffer<Pending>()
    /// Connections open or being opened.
    private var count = 0
    private var opening = 0
    private var isShutDown = false

    /// Fails for a URL that is not `http` or `https` with a host. `tls` is for tests (a server with
    /// its own root); in use, the system's trust roots.
    init(
        url: URL, headers: HTTPHeaders, configuration: GraphConfiguration, loop: any EventLoop,
        tls tlsConfiguration: TLSConfiguration = .makeClientConfiguration(), idleLimit: TimeAmount = .seconds(20)
    ) throws {
        self.idleLimit = idleLimit
        guard let components = URLComponents(url: url, resolvingAgainstBaseURL: false), let host = components.host,
            let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https"
        else { throw GraphError(code: nil, title: "the Graph API address is not an http(s) URL: \(url)", httpStatus: 0) }
        self.loop = loop
        self.host = host
        port = components.port ?? (scheme == "https" ? 443 : 80)
        tls = scheme == "https" ? try NIOSSLContext(configuration: tlsConfiguration) : nil
        var headers = headers
        let defaultPort = (scheme == "https" && port == 443) || (scheme == "http" && port == 80)
        let named = host.contains(":") ? "[\(host)]" : host  // an IPv6 address is bracketed
        headers.replaceOrAdd(name: "Host", value: defaultPort ? named : "\(named):\(port)")
        headers.replaceOrAdd(name: "User-Agent", value: "dispatcher")
        var path = components.percentEncodedPath
        if path.isEmpty { path = "/" }
        if let query = components.percentEncodedQuery { path += "?\(query)" }
        head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
        timeout = timeAmount(configuration.timeout)
        connectTimeout = timeAmount(configuration.connectTimeout)
        maxConnections = max(1, configuration.maxConnections)
        maxResponseBytes = configuration.maxResponseBytes
    }

    /// One request to send. Reference type: the deadline and the connection both hold it, and the
    /// first to finish it wins.
    final class Pending: @unchecked Sendable {
        let body: ByteBuffer
        let written: (@Sendable () -> Void)?
        let completion: @Sendable (SendOutcome) -> Void
        var deadline: Scheduled<Void>?
        var done = false
        /// Handed to a connection: from then on it may reach Meta, whatever becomes of the connection.
        var onWire = false
        /// Closes the connection carrying it (set once it is on one).
        var abandon: (() -> Void)?

        init(body: ByteBuffer, written: (@Sendable () -> Void)?, completion: @escaping @Sendable (SendOutcome) -> Void) {
            self.body = body
            self.written = written
            self.completion = completion
        }

        func finish(_ outcome: SendOutcome) {
            guard !done else { return }
            done = true
            deadline?.cancel()
            deadline = nil
            completion(outcome)
        }
    }

    /// Starts one send; on the loop.
    func start(body: ByteBuffer, written: (@Sendable () -> Void)?, completion: @escaping @Sendable (SendOutcome) -> Void) {
        loop.preconditionInEventLoop()
        let pending = Pending(body: body, written: written, completion: completion)
        guard !isShutDown else { return pending.finish(.notSent("the client is shut down")) }
        pending.deadline = loop.scheduleTask(in: timeout) { [self] in expire(pending) }
        dropStale(now: .now())
        if let connection = idle.popLast() {
            connection.send(pending, head: head)
        } else {
            waiting.append(pending)
            openIfNeeded()
        }
    }

    /// Closes the connections idle past `idleLimit` (the front of `idle`).
    private func dropStale(now: NIODeadline) {
        var stale = 0
        while stale < idle.count, now - idle[stale].idleSince > idleLimit { stale += 1 }
        guard stale > 0 else { return }
        let closing = idle[..<stale]
        idle.removeFirst(stale)
        for connection in closing { connection.close() }
    }

    private func expire(_ pending: Pending) {
        guard !pending.done else { return }
        pending.deadline = nil
        if pending.onWire {
            // Its connection is out of step from now on: closed.
            pending.finish(.unknown("no answer within \(timeout.nanoseconds / 1_000_000) ms"))
            pending.abandon?()
            pending.abandon = nil
        } else {
            if let index = waiting.firstIndex(where: { $0 === pending }) { waiting.remove(at: index) }
            pending.finish(.notSent("no connection to \(host) within \(timeout.nanoseconds / 1_000_000) ms"))
        }
    }

    /// Opens connections while requests wait for one more than are being opened, up to the limit.
    private func openIfNeeded() {
        while !isShutDown && waiting.count > opening && count < maxConnections {
            count += 1
            opening += 1
            open()
        }
    }

    private func open() {
        let tls = tls
        let host = host
        // SNI names a host, never an address (NIOSSL refuses one): `https://10.0.0.5` goes without.
        let serverName = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
        let limit = maxResponseBytes
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName)) }
                    try pipeline.addHandler(HTTPRequestEncoder())
                    try pipeline.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
                    try pipeline.addHandler(Connection(channel: channel, pool: self, tls: tls != nil, maxResponseBytes: limit))
                }
            }
        bootstrap.connect(host: host, port: port).whenFailure { [self] error in
            // Never active, so its handler never says it closed: counted here.
            opening -= 1
            count -= 1
            failOneWaiting(error)
        }
    }

    /// A connection could not be opened: the request it was opened for never left.
    private func failOneWaiting(_ error: any Error) {
        while let pending = waiting.popFirst() {
            if pending.done { continue }
            return pending.finish(.notSent("could not connect to \(host):\(port): \(error)"))
        }
    }

    /// A connection is open (its TLS handshake done): it takes a waiting request.
    fileprivate func opened(_ connection: Connection) {
        opening -= 1
        if isShutDown { return connection.close() }
        release(connection)
    }

    /// A connection is free: the next waiting request takes it, or it waits idle.
    fileprivate func release(_ connection: Connection) {
        while let pending = waiting.popFirst() {
            if pending.done { continue }
            return connection.send(pending, head: head)
        }
        if isShutDown { return connection.close() }
        let now = NIODeadline.now()
        connection.idleSince = now
        idle.append(connection)
        dropStale(now: now)
    }

    /// A connection closed (by either side, or after an error). One that never opened (a refused
    /// TLS handshake) costs the request it was opened for, as a refused connection does.
    fileprivate func closed(_ connection: Connection, opened: Bool, error: (any Error)?) {
        count -= 1
        if opened {
            if let index = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: index) }
        } else {
            opening -= 1
            failOneWaiting(error ?? ChannelError.eof)
        }
        openIfNeeded()
    }

    /// Closes every connection; waiting requests end as not sent.
    func shutdown() -> EventLoopFuture<Void> {
        loop.submit { [self] in
            isShutDown = true
            while let pending = waiting.popFirst() { pending.finish(.notSent("the client is shut down")) }
            let connections = idle
            idle = []
            for connection in connections { connection.close() }
        }
    }
}

/// One kept-alive connection: at most one request on it at a time.
private final class Connection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let channel: any Channel
    private let pool: MessageConnections
    private let tls: Bool
    private let maxResponseBytes: Int
    /// Connected, and its TLS handshake done: it has been handed to the pool.
    private var opened = false
    private var isClosed = false
    private var error: (any Error)?
    private var current: MessageConnections.Pending?
    private var status = 0
    private var retryAfter: String?
    private var keepAlive = true
    private var body = ByteBuffer()
    /// When it last went back to the pool.
    var idleSince = NIODeadline.uptimeNanoseconds(0)

    init(channel: any Channel, pool: MessageConnections, tls: Bool, maxResponseBytes: Int) {
        self.channel = channel
        self.pool = pool
        self.tls = tls
        self.maxResponseBytes = maxResponseBytes
    }

    func send(_ pending: MessageConnections.Pending, head: HTTPRequestHead) {
        current = pending
        status = 0
        retryAfter = nil
        keepAlive = true
        body.clear()
        var head = head
        head.headers.add(name: "Content-Length", value: String(pending.body.readableBytes))
        channel.write(OutboundOut.head(head), promise: nil)
        channel.write(OutboundOut.body(.byteBuffer(pending.body)), promise: nil)
        if let written = pending.written {
            // Only the run's first request asks when it is out: no promise for the others.
            let promise = channel.eventLoop.makePromise(of: Void.self)
            channel.writeAndFlush(OutboundOut.end(nil), promise: promise)
            promise.futureResult.whenSuccess { written() }
        } else {
            channel.writeAndFlush(OutboundOut.end(nil), promise: nil)
        }
        // Once `write` was called the request may have left, whatever the write's promise says
        // later (it can fail after bytes went out): from here a lost connection is unknown.
        pending.onWire = true
        pending.abandon = { [self] in close() }
    }

    func close() {
        guard !isClosed else { return }
        channel.close(promise: nil)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if !tls { becameOpen() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event { becameOpen() }
        context.fireUserInboundEventTriggered(event)
    }

    private func becameOpen() {
        guard !opened, !isClosed else { return }
        opened = true
        pool.opened(self)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let pending = current else {
            // An answer nobody asked for: the connection is out of step; close it.
            return context.close(promise: nil)
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            retryAfter = head.headers.first(name: "Retry-After")
            keepAlive = head.isKeepAlive
        case .body(var part):
            guard body.readableBytes + part.readableBytes <= maxResponseBytes else {
                current = nil
                pending.finish(.unknown("no answer read: the answer is longer than \(maxResponseBytes) bytes"))
                return context.close(promise: nil)
            }
            body.writeBuffer(&part)
        case .end:
            current = nil
            pending.abandon = nil
            if pending.done {
                // Its deadline passed as the answer came: the outcome was given, the connection is
                // being closed.
                return
            }
            pending.finish(GraphClient.outcome(status: status, retryAfter: retryAfter, body: Data(body.readableBytesView)))
            if keepAlive { pool.release(self) } else { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        if let pending = current {
            current = nil
            pending.abandon = nil
            pending.finish(.unknown("no answer read: the connection closed" + (error.map { " (\($0))" } ?? "")))
        }
        pool.closed(self, opened: opened, error: error)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.error == nil { self.error = error }
        context.close(promise: nil)
    }
}
