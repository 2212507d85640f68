import Foundation
public import Logging
import Synchronization
public import Tracking

/// How a billing run is done.
public struct RunOptions: Sendable {
    public var run: String
    public var manifest: String
    /// Messages per second from this sender number (Meta: 80 by default, up to 1,000).
    public var rate: Double
    public var skipInvalid: Bool
    /// Send again what an earlier run already sent.
    public var resend: Bool
    /// Transient errors are retried this many times, then the message fails (retryable).
    public var maxTransientRetries: Int
    /// Meta's pair rate: one message per 6 seconds to the same user.
    public var pairSpacing: Duration
    /// This many unknown error codes in a row halt the run.
    public var haltAfterUnknownCodes: Int

    public init(run: String, manifest: String, rate: Double = 80, skipInvalid: Bool = false, resend: Bool = false,
                maxTransientRetries: Int = 5, pairSpacing: Duration = .seconds(6), haltAfterUnknownCodes: Int = 10) {
        self.run = run
        self.manifest = manifest
        self.rate = rate
        self.skipInvalid = skipInvalid
        self.resend = resend
        self.maxTransientRetries = maxTransientRetries
        self.pairSpacing = pairSpacing
        self.haltAfterUnknownCodes = haltAfterUnknownCodes
    }
}

/// What preparing a run found.
public struct Preparation: Sendable {
    public var preview: PreviewResult
    /// Messages added to the queue now.
    public var queued = 0
    /// Already in this run (a re-run resumes them as they are).
    public var resumed = 0
    /// Already sent by an earlier run: skipped (unless `--resend`).
    public var alreadySent = 0
    public var optedOut = 0
    /// Left `sending` by a crash: now `unknown`, resolved by their webhooks or by `retry --include-unknown`.
    public var interrupted = 0
}

/// Why a run stopped before its queue was empty.
public enum StopReason: Sendable, Equatable {
    /// A systemic error: nothing else would succeed until it is fixed.
    case halted(GraphError)
    /// SIGINT or SIGTERM.
    case interrupted
}

/// The billing run: the ledger before every send, pacing per sender number, the pair rule per
/// tenant, back-off and retries by Meta's error classes, a halt on systemic errors, and the
/// settle window. Crash-safe: a message is marked `sending` (durably) before its request leaves.
public final class RunEngine: Sendable {
    public let store: any DispatchStore
    public let client: GraphClient
    public let renderer: MessageRenderer
    public let validation: ValidationOptions
    let logger: Logger
    let control = RunControl()

    public init(store: any DispatchStore, client: GraphClient, renderer: MessageRenderer, validation: ValidationOptions, logger: Logger) {
        self.store = store
        self.client = client
        self.renderer = renderer
        self.validation = validation
        self.logger = logger
    }

    /// The most requests released in any one second of this engine's last run (measured by the
    /// gate that releases them).
    public var mostSendsInOneSecond: Int { control.mostInOneSecond }

    /// Stops dispatching (SIGINT/SIGTERM): no new sends; those in flight are resolved.
    public func requestStop() async { control.stop(.interrupted) }

    /// Stops dispatching as a halt (for a reason outside Meta's answers, such as a lost sender lease).
    public func halt(_ reason: String) { control.stop(.halted(GraphError(code: nil, title: reason, httpStatus: 0))) }

    // MARK: - Preparing

    /// Imports and checks the whole manifest first; when it is valid (or invalid rows are to be
    /// skipped), stores the run, its invoices and its messages. Messages already stored are left
    /// as they are: that is what makes a re-run send nothing twice.
    public func prepare(_ options: RunOptions) async throws -> Preparation {
        let preview = try Previewer(options: validation, renderer: renderer, sampleLimit: 0).run(path: options.manifest)
        var preparation = Preparation(preview: preview)
        if !preview.isValid && !options.skipInvalid { return preparation }
        let now = wallClock()
        let existing = try await store.run(named: options.run)
        try await store.saveRun(RunRecord(name: options.run, manifest: options.manifest, template: renderer.template.name,
                                          sender: client.configuration.phoneNumberID, status: "sending",
                                          createdAt: existing?.createdAt ?? now))
        preparation.interrupted = try await store.markInterrupted(run: options.run, at: now)
        let optedOut = Set(try await store.optOuts().map(\.phone))

        var invoices: [InvoiceRecord] = []
        var messages: [NewMessage] = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        func flush() async throws {
            if !invoices.isEmpty { try await store.addInvoices(invoices) }
            invoices.removeAll(keepingCapacity: true)
            guard !messages.isEmpty else { return }
            let batch = messages
            messages.removeAll(keepingCapacity: true)
            for (message, outcome) in zip(batch, try await store.addMessages(batch)) {
                switch outcome {
                case .inserted:
                    if message.state == .queued { preparation.queued += 1 }
                    if message.skipReason?.hasPrefix("opted out") == true { preparation.optedOut += 1 }
                case .exists(_, let run, let state) where run == options.run:
                    if state == .queued { preparation.resumed += 1 }
                case .exists(let id, let run, let state):
                    // Sent (or tried) by an earlier run.
                    if options.resend {
                        var generation = 2
                        while try await store.message("\(id)-r\(generation)") != nil { generation += 1 }
                        var again = message
                        again.id = "\(id)-r\(generation)"
                        again.requestBody = again.requestBody?.replacingOccurrences(of: "\"\(id)\"", with: "\"\(again.id)\"")
                        _ = try await store.addMessages([again])
                        preparation.queued += 1
                    } else {
                        var skipped = message
                        skipped.id = "\(id)@\(options.run)"
                        skipped.state = .skipped
                        skipped.skipReason = "already sent in run \(run) (\(state.rawValue)); --resend sends it again"
                        skipped.requestBody = nil
                        _ = try await store.addMessages([skipped])
                        preparation.alreadySent += 1
                    }
                }
            }
        }
        let importer = ManifestImporter(options: validation)
        _ = try importer.importManifest(path: options.manifest) { invoice in
            guard case .success(let rendered) = renderer.render(invoice) else { return }  // counted by the preview
            invoices.append(InvoiceRecord(run: options.run, invoice: invoice))
            for message in rendered {
                var new = NewMessage(id: message.id, run: options.run, invoiceID: invoice.invoiceID, phone: message.phone,
                                     template: message.key.template, language: message.language)
                if optedOut.contains(message.phone) {
                    new.state = .skipped
                    new.skipReason = "opted out: the tenant asked to stop receiving messages"
                } else {
                    new.requestBody = String(decoding: try encoder.encode(message.request), as: UTF8.self)
                }
                messages.append(new)
            }
        } onSkipped: { invoice, reason in
            invoices.append(InvoiceRecord(run: options.run, invoice: invoice, skipReason: reason))
            for phone in invoice.phones {
                let key = MessageKey(invoiceID: invoice.invoiceID, phone: phone, template: renderer.template.name)
                messages.append(NewMessage(id: "\(key.messageID)@\(options.run)", run: options.run, invoiceID: invoice.invoiceID, phone: phone,
                                           template: renderer.template.name, language: renderer.language(for: invoice.locale).code,
                                           state: .skipped, skipReason: reason))
            }
        }
        // The callbacks above cannot await: store what they gathered.
        try await flush()
        return preparation
    }

    // MARK: - Sending

    /// Sends every queued message of the run, paced. Returns nil when the queue is empty, or why it stopped.
    public func dispatch(_ options: RunOptions, progress: (@Sendable (RunProgress) -> Void)? = nil) async throws -> StopReason? {
        // Two pacers at the same rate: the first spaces the sends the loop starts, the second the
        // requests themselves, right before they leave (after the ledger write, whose duration varies:
        // without it, sends held by a slow commit would leave together).
        let pacer = Pacer(rate: options.rate)
        let gate = Pacer(rate: options.rate)
        let ledger = LedgerWriter(store: store)
        var queue = SendQueue(pairSpacing: options.pairSpacing)
        let feed = Feed()
        let maxInFlight = max(8, min(1024, Int(options.rate * 0.6)))
        let started = ContinuousClock.now
        var lastProgress = started

        // Children say which they were: the feeder (true) or a send (false).
        try await withThrowingTaskGroup(of: Bool.self) { group in
            // The queue is read ahead by a feeder, so the loop never waits on the database (a
            // page of 5,000 messages took long enough to cost 1,000/s runs a tenth of a second).
            group.addTask {
                try await self.feed(feed, run: options.run)
                return true
            }
            var inFlight = 0
            func awaitOne() async throws {
                if try await group.next() == false { inFlight -= 1 }
            }
            while true {
                if control.stopReason != nil { break }
                let now = ContinuousClock.now
                for (item, delay, releasePair) in control.drainRequeued() {
                    if releasePair { queue.release(item.phone) }
                    queue.hold(item, for: delay, now: now)
                }
                queue.append(feed.take())
                let exhausted = feed.exhausted
                if let progress, now - lastProgress >= .milliseconds(500) {
                    lastProgress = now
                    progress(control.progress(queued: queue.count + inFlight, elapsed: now - started))
                }
                guard let item = queue.pop(now: now, lastSent: { self.control.lastSent(to: $0) }) else {
                    if queue.isEmpty && exhausted {
                        if inFlight == 0 {
                            if control.hasRequeued { continue }
                            break
                        }
                        try await awaitOne()
                        continue
                    }
                    // Held messages (the pair rule, back-offs), or the first page still being read.
                    let wake = min(queue.nextWake ?? now + .milliseconds(10), now + .milliseconds(100))
                    try await Task.sleep(until: wake, clock: .continuous)
                    continue
                }
                while inFlight >= maxInFlight { try await awaitOne() }
                try await pacer.slot()
                inFlight += 1
                group.addTask {
                    await self.send(item, ledger: ledger, pacers: [pacer, gate], options: options)
                    return false
                }
            }
            try await group.waitForAll()
        }
        control.noteMostInOneSecond(await gate.mostInOneSecond)
        return control.stopReason
    }

    /// Reads the run's queued messages a page at a time, staying a page ahead of the loop.
    func feed(_ feed: Feed, run: String) async throws {
        var last: Int64? = nil
        while control.stopReason == nil {
            if feed.count > 2000 {
                try await Task.sleep(for: .milliseconds(20))
                continue
            }
            let page = try await store.queuedMessages(run: run, after: last, limit: 2500)
            last = page.last?.sequence ?? last
            feed.add(page.compactMap { m in m.requestBody.map { Outgoing(id: m.id, phone: m.phone, body: Array($0.utf8)) } },
                     done: page.count < 2500)
            if page.count < 2500 { return }
        }
        feed.add([], done: true)
    }

    /// One message: the ledger entry, the request, the outcome by Meta's error class.
    func send(_ item: Outgoing, ledger: LedgerWriter, pacers: [Pacer], options: RunOptions) async {
        do {
            let attempt = try await ledger.begin(item.id)
            try await pacers[1].slot()
            control.recordSend(to: item.phone, at: .now)
            let outcome = await client.send(body: Data(item.body))
            try await handle(outcome, item: item, attempt: attempt, ledger: ledger, pacers: pacers, options: options)
        } catch {
            // The store failed: stop rather than send what we cannot record.
            logger.error("the ledger could not be written; stopping", metadata: ["error": "\(error)"])
            control.stop(.halted(GraphError(code: nil, title: "the database could not record a send: \(error)", httpStatus: 0)))
        }
    }

    func handle(_ outcome: SendOutcome, item: Outgoing, attempt: Int, ledger: LedgerWriter, pacers: [Pacer], options: RunOptions) async throws {
        var item = item
        func requeue(_ error: SendError, after delay: Duration, releasePair: Bool = true) async throws {
            try await ledger.record(.rejected(messageID: item.id, attempt: attempt, error: error, final: false))
            control.requeue(item, after: delay, releasePair: releasePair)
        }
        func fail(_ error: SendError) async throws {
            try await ledger.record(.rejected(messageID: item.id, attempt: attempt, error: error, final: true))
            control.count(failed: 1)
        }
        switch outcome {
        case .accepted(let wamid, _):
            try await ledger.record(.accepted(messageID: item.id, attempt: attempt, wamid: wamid))
            control.count(accepted: 1)
        case .unknown(let reason):
            try await ledger.record(.unknown(messageID: item.id, attempt: attempt, reason: reason))
            control.count(unknown: 1)
        case .notSent(let reason):
            item.transientRetries += 1
            let error = SendError(code: nil, title: "not sent: \(reason)")
            if item.transientRetries > options.maxTransientRetries { try await fail(error) } else { try await requeue(error, after: backoff(item.transientRetries)) }
        case .rejected(let e):
            let error = SendError(code: e.code, title: e.title, details: e.details)
            switch e.errorClass {
            case .throttled:
                item.throttledRetries += 1
                let pause = e.retryAfter ?? min(60, pow(2, Double(item.throttledRetries - 1)))
                for pacer in pacers { await pacer.pause(seconds: pause) }
                try await requeue(error, after: .zero)
            case .pairRate:
                // 4^x seconds for this recipient only; others go on.
                let delay = pow(4, Double(item.pairRetries))
                item.pairRetries += 1
                try await requeue(error, after: .milliseconds(Int64(delay * 1000)), releasePair: false)
            case .transient:
                item.transientRetries += 1
                if item.transientRetries > options.maxTransientRetries { try await fail(error) } else { try await requeue(error, after: backoff(item.transientRetries)) }
            case .waitDay:
                let notBefore = Date().addingTimeInterval(86_400).formatted(.iso8601)
                try await fail(SendError(code: e.code, title: e.title, details: "Meta's per-user limit: retry not before \(notBefore)"))
            case .halt:
                // Back in the queue: once the cause is fixed, running the command again sends it.
                try await ledger.record(.rejected(messageID: item.id, attempt: attempt, error: error, final: false))
                control.stop(.halted(e))
            case .final:
                try await fail(error)
                control.knownCode()
            case .unknownCode:
                try await fail(error)
                if control.unknownCode() >= options.haltAfterUnknownCodes {
                    control.stop(.halted(GraphError(code: e.code, title: "\(options.haltAfterUnknownCodes) unknown error codes in a row (last: \(e.title))",
                                                          httpStatus: e.httpStatus)))
                }
            }
        }
    }

    /// 1, 2, 4, 8… seconds, ±25 % jitter, at most 60.
    func backoff(_ retry: Int) -> Duration {
        let base = min(60, pow(2, Double(retry - 1)))
        return .milliseconds(Int64(base * Double.random(in: 0.75...1.25) * 1000))
    }

    // MARK: - Settling

    /// Waits until every message of the run is final (delivered, read, failed, skipped) or the
    /// window closes. Statuses come from a receiver writing to the same store.
    public func settle(run: String, window: Duration, poll: Duration = .milliseconds(500)) async throws -> [MessageState: Int] {
        let deadline = ContinuousClock.now + window
        while true {
            let counts = try await store.stateCounts(run: run)
            let open = counts.filter { !$0.key.isFinal }.values.reduce(0, +)
            let stopped = control.stopReason != nil
            if open == 0 || ContinuousClock.now >= deadline || stopped { return counts }
            try await Task.sleep(for: min(poll, deadline - ContinuousClock.now))
        }
    }
}

/// What a run has done so far, for the progress line.
public struct RunProgress: Sendable {
    public var accepted: Int
    public var failed: Int
    public var unknown: Int
    public var remaining: Int
    public var rate: Double
    public var eta: Double?
}

/// Messages read ahead for the dispatch loop.
final class Feed: Sendable {
    private let state = Mutex<(items: [Outgoing], done: Bool)>(([], false))

    func add(_ items: [Outgoing], done: Bool) {
        state.withLock {
            $0.items.append(contentsOf: items)
            if done { $0.done = true }
        }
    }

    func take() -> [Outgoing] {
        state.withLock { state in
            defer { state.items.removeAll(keepingCapacity: true) }
            return state.items
        }
    }

    var count: Int { state.withLock { $0.items.count } }
    /// Everything queued has been read (and taken or waiting in `items`).
    var exhausted: Bool { state.withLock { $0.done && $0.items.isEmpty } }
}

/// Shared between the dispatch loop and its sends: stop requests, requeued messages, counters.
/// A lock rather than an actor: the loop reads it for every message, and an actor hop each time
/// cost more than the rest of the loop.
final class RunControl: Sendable {
    private struct State {
        var stopReason: StopReason?
        var requeued: [(Outgoing, Duration, Bool)] = []
        var unknownCodesInARow = 0
        var accepted = 0, failed = 0, unknown = 0
        /// When each recipient's last request left (the pair rule counts from there).
        var lastSent: [String: ContinuousClock.Instant] = [:]
        /// The most requests the gate released in any one second.
        var mostInOneSecond = 0
    }

    private let state = Mutex(State())

    var stopReason: StopReason? { state.withLock { $0.stopReason } }

    func stop(_ reason: StopReason) {
        state.withLock { if $0.stopReason == nil { $0.stopReason = reason } }
    }

    func requeue(_ item: Outgoing, after delay: Duration, releasePair: Bool) {
        state.withLock { $0.requeued.append((item, delay, releasePair)) }
    }

    var hasRequeued: Bool { state.withLock { !$0.requeued.isEmpty } }

    func drainRequeued() -> [(Outgoing, Duration, Bool)] {
        state.withLock { state in
            defer { state.requeued.removeAll() }
            return state.requeued
        }
    }

    func count(accepted: Int = 0, failed: Int = 0, unknown: Int = 0) {
        state.withLock {
            $0.accepted += accepted
            $0.failed += failed
            $0.unknown += unknown
            if accepted > 0 { $0.unknownCodesInARow = 0 }
        }
    }

    func knownCode() { state.withLock { $0.unknownCodesInARow = 0 } }

    /// A request is leaving now: the pair rule counts from here.
    func recordSend(to phone: String, at now: ContinuousClock.Instant) {
        state.withLock { $0.lastSent[phone] = now }
    }

    func lastSent(to phone: String) -> ContinuousClock.Instant? { state.withLock { $0.lastSent[phone] } }

    var mostInOneSecond: Int { state.withLock { $0.mostInOneSecond } }

    func noteMostInOneSecond(_ n: Int) { state.withLock { $0.mostInOneSecond = n } }

    func unknownCode() -> Int {
        state.withLock {
            $0.unknownCodesInARow += 1
            return $0.unknownCodesInARow
        }
    }

    func progress(queued: Int, elapsed: Duration) -> RunProgress {
        state.withLock { s in
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let done = s.accepted + s.failed + s.unknown
            let rate = seconds > 0 ? Double(done) / seconds : 0
            return RunProgress(accepted: s.accepted, failed: s.failed, unknown: s.unknown, remaining: queued, rate: rate,
                               eta: rate > 0 ? Double(queued) / rate : nil)
        }
    }
}

func wallClock() -> Double { Date().timeIntervalSince1970 }

extension InvoiceRecord {
    init(run: String, invoice: Invoice, skipReason: String? = nil) {
        self.init(run: run, invoiceID: invoice.invoiceID, line: invoice.line, tenantName: invoice.tenantName, tenantID: invoice.tenantID,
                  landlord: invoice.landlord, property: invoice.property, amountMinor: invoice.amount.minorUnits,
                  currency: invoice.amount.currency.code, period: invoice.period.iso, dueDate: invoice.dueDate?.description,
                  locale: invoice.locale, documentURL: invoice.documentURL, email: invoice.email, skipReason: skipReason)
    }
}

/// What to do about a halt, in words an operator can act on.
public func haltAdvice(_ error: GraphError) -> String {
    switch error.code ?? -1 {
    case 190: return "The access token is invalid or expired: create a new one (a System User token in Meta's Business Manager) and set WHATSAPP_ACCESS_TOKEN."
    case 0, 3, 10, 200...299: return "The token lacks a permission (whatsapp_business_messaging): grant it to the app's System User and set the new token."
    case 131042: return "Meta reports a payment problem on the WhatsApp Business Account: fix the payment method in Business Manager."
    case 131031, 368: return "The WhatsApp Business Account is restricted or locked: see Business Manager's Account Quality page."
    case 132001: return "The template does not exist in this language at Meta: check WHATSAPP_TEMPLATE_NAME and the approved languages."
    case 132015, 132016: return "The template is paused or disabled at Meta (quality): edit it or use another, then run again."
    case 133010, 131045: return "The sender phone number is not registered with the Cloud API: register it (and check WHATSAPP_PHONE_NUMBER_ID)."
    case 131048: return "Meta's spam rate limit was hit: wait, and review the template's quality."
    default: return "Fix the cause above, then run the same command again: what was not sent is still queued."
    }
}
