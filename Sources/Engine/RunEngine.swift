public import Dispatcher
import Foundation
public import Logging
import NIOCore
public import Store
import Synchronization
public import WhatsApp

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
    /// Seconds the sender waits on 131057 (Meta: a throughput upgrade takes "up to a minute").
    public var throughputUpgradePause: Double = 60
    /// How often the store is asked for account-level failures reported by webhook.
    public var accountWatchInterval: Duration = .seconds(1)
    /// Transient errors in a row, across messages, that open the circuit breaker (an outage).
    public var breakerThreshold = 5
    /// The same refusal of a request's shape or template (100, 132000, 132012, 132018) this many
    /// times in a row halts the run.
    public var haltAfterSameRequestErrors = 5
    /// The run's name was derived from the manifest's file name (no `--run`): an existing run of
    /// that name made from another manifest is then refused rather than silently merged.
    public var nameDerived = false

    public init(
        run: String, manifest: String, rate: Double = 80, skipInvalid: Bool = false, resend: Bool = false,
        maxTransientRetries: Int = 5, pairSpacing: Duration = .seconds(6), haltAfterUnknownCodes: Int = 10
    ) {
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

/// Invoices and their messages, written together while preparing.
struct PreparedBatch: Sendable {
    var invoices: [InvoiceRecord] = []
    var messages: [NewMessage] = []

    init() {
        invoices.reserveCapacity(RunEngine.preparationBatch)
        messages.reserveCapacity(RunEngine.preparationBatch * 11 / 10)
    }
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

    /// Invoices per batch written while preparing: a batch is one transaction, and at most
    /// `preparationDepth` of them wait between the reader and the store.
    static let preparationBatch = 2_000
    static let preparationDepth = 4

    /// Reads the manifest once, validating and rendering each invoice, and stores the run, its
    /// invoices and its messages in batches as it goes (memory stays bounded whatever the manifest's
    /// size; the reader and the store's writes run side by side). Messages already stored are left as
    /// they are: that is what makes a re-run send nothing twice.
    ///
    /// Nothing may stay stored for a manifest with invalid rows (unless they are to be skipped): a new
    /// run that turns out invalid is discarded at the end of the pass (it was never sent); a run already
    /// in the store is checked in a first pass before anything of it changes.
    public func prepare(_ options: RunOptions) async throws -> Preparation {
        let previewer = Previewer(options: validation, renderer: renderer, sampleLimit: 0)
        let existing = try await store.run(named: options.run)
        if let existing, options.nameDerived, existing.manifest.split(separator: "/").last != options.manifest.split(separator: "/").last {
            throw RunNameConflict(run: options.run, existingManifest: existing.manifest, manifest: options.manifest)
        }
        if existing != nil && !options.skipInvalid {
            let check = try previewer.run(path: options.manifest)
            if !check.isValid { return Preparation(preview: check) }
        }
        let now = wallClock()
        try await store.saveRun(
            RunRecord(
                name: options.run, manifest: options.manifest, template: renderer.template.name,
                sender: client.configuration.phoneNumberID, status: .sending,
                createdAt: existing?.createdAt ?? now))
        let interrupted = try await store.markInterrupted(run: options.run, at: now)
        let optedOut = try await OptOutList.load(from: store)

        let pipe = BatchPipe<PreparedBatch>(depth: Self.preparationDepth)
        let run = options.run
        let template = renderer.template.name
        let renderer = self.renderer
        async let read: PreviewResult = onOwnThread {
            defer { pipe.finish() }
            var batch = PreparedBatch()
            func handOver() throws {
                if batch.invoices.count >= Self.preparationBatch {
                    try pipe.put(batch)
                    batch = PreparedBatch()
                }
            }
            let preview = try previewer.run(path: options.manifest) { invoice, rendered in
                batch.invoices.append(InvoiceRecord(run: run, invoice: invoice))
                for message in rendered {
                    var new = NewMessage(
                        id: message.id, run: run, invoiceID: invoice.invoiceID, phone: message.phone,
                        template: message.key.template, language: message.language)
                    if optedOut.contains(message.phone) {
                        new.state = .skipped
                        new.skipReason = "opted out: the tenant asked to stop receiving messages"
                    } else {
                        new.requestBody = message.request.jsonBody
                    }
                    batch.messages.append(new)
                }
                try handOver()
            } onSkipped: { invoice, reason in
                batch.invoices.append(InvoiceRecord(run: run, invoice: invoice, skipReason: reason))
                for phone in invoice.phones {
                    let key = MessageKey(invoiceID: invoice.invoiceID, phone: phone, template: template)
                    batch.messages.append(
                        NewMessage(
                            id: "\(key.messageID)@\(run)", run: run, invoiceID: invoice.invoiceID, phone: phone,
                            template: template, language: renderer.language(for: invoice.locale).code,
                            state: .skipped, skipReason: reason))
                }
                try handOver()
            }
            if !batch.invoices.isEmpty { try pipe.put(batch) }
            return preview
        }
        var preparation = Preparation(preview: PreviewResult(manifest: options.manifest, format: .csv, templateName: template))
        preparation.interrupted = interrupted
        do {
            for await batch in pipe.batches {
                try await store(batch, into: &preparation, options: options)
                pipe.taken()
            }
            // The loop also ends when this task is cancelled, with the reader perhaps waiting for
            // room: closing the pipe lets it stop (it then throws, and so does this).
            pipe.close()
            try Task.checkCancellation()
        } catch {
            pipe.close()
            _ = try? await read
            if existing == nil { await discardEvenIfCancelled(options.run) }
            throw error
        }
        do {
            preparation.preview = try await read
        } catch {
            if existing == nil { await discardEvenIfCancelled(options.run) }
            throw error
        }
        if !preparation.preview.isValid && !options.skipInvalid {
            // Only a new run gets here (an existing one was checked first): it was never sent.
            _ = try await store.discardUnsentRun(options.run)
            return Preparation(preview: preparation.preview)
        }
        return preparation
    }

    /// Deletes a new run whose preparation failed or was cancelled (nothing of it was sent). In a
    /// task of its own: the store's calls stop at once in a cancelled task, and this must finish.
    private func discardEvenIfCancelled(_ run: String) async {
        let store = self.store
        let discarded = await Task.detached { try? await store.discardUnsentRun(run) }.value
        if discarded != true { logger.warning("a run whose preparation stopped could not be discarded", metadata: ["run": "\(run)"]) }
    }

    /// Writes one batch of the preparation and counts what became of its messages.
    private func store(_ batch: PreparedBatch, into preparation: inout Preparation, options: RunOptions) async throws {
        try await store.addInvoices(batch.invoices)
        for (message, outcome) in zip(batch.messages, try await store.addMessages(batch.messages)) {
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

    // MARK: - Sending

    /// Sends every queued message of the run, paced. Returns nil when the queue is empty, or why it stopped.
    ///
    /// One loop does the work in ticks (about 10 ms at 1,000/s, one message's interval at lower
    /// rates), with no task, actor or thread hop per message: at 1,000/s those hops, not the work,
    /// were most of the CPU. Each tick it
    /// - reads the answers that came back (they are read on the HTTP client's event loop and left
    ///   for the loop), and decides what each means;
    /// - starts the requests the rate budget allows now, from those whose attempt is already
    ///   committed to the ledger;
    /// - when fewer than about 75 ms of sends are committed ahead and no ledger write is under way,
    ///   takes the next messages from the queue (the pair rule holds back a tenant's second
    ///   invoice) and writes their attempts, together with the outcomes read so far, in one
    ///   transaction beside the loop. A slow commit therefore never holds the pace back, and never
    ///   releases a bunch of sends at once.
    ///
    /// A crash leaves at most those 100 ms of committed attempts unsent; like the requests in
    /// flight, they become `unknown` on the next run. A stop (SIGINT/SIGTERM, a halt) puts them
    /// back in the queue.
    public func dispatch(_ options: RunOptions, progress: (@Sendable (RunProgress) -> Void)? = nil) async throws -> StopReason? {
        let clock = ContinuousClock()
        var budget = RateBudget(rate: options.rate)
        var begun = false
        var answered = 0
        var sentAny = false
        var queue = SendQueue(pairSpacing: options.pairSpacing)
        let feed = Feed()
        let answers = Answers()
        let firstWritten = Flag()
        let maxInFlight = max(8, min(1024, Int(options.rate * 0.6)))
        let perTick = max(1, Int(options.rate / 100))
        // Attempts committed ahead of their requests: 100 ms of sends, written 25 ms at a time, so
        // that a commit may take 75 ms before the sends run dry (50 ms fsyncs were measured while
        // `serve` wrote the run's statuses to the same disk; with 25 ms of margin they cost 4 %).
        let ahead = max(4, Int(options.rate / 10))
        let refill = ahead * 3 / 4
        let longestSleep = Duration.milliseconds(20)
        /// When each recipient's last request left (the pair rule counts from there).
        var lastSent: [String: ContinuousClock.Instant] = [:]
        /// Committed as `sending`, to be started in this order as the budget allows.
        var ready: [(item: Outgoing, attempt: Int)] = []
        var readyIndex = 0
        /// Outcomes read but not yet written, and since when the oldest of them waits.
        var outcomes: [AttemptOutcome] = []
        var oldestOutcome: ContinuousClock.Instant? = nil
        /// The ledger write under way, and the messages it begins.
        var writing: (write: LedgerWrite, items: [Outgoing])? = nil
        var inFlight = 0
        let started = clock.now
        var lastProgress = started
        var lastForget = started
        var failure: (any Error)? = nil

        // The queue is read ahead by a feeder, so the loop never waits on a page of the database.
        let feeder = Task { await self.feed(feed, run: options.run) }
        defer { feeder.cancel() }
        // Account-level failures arrive by webhook too (a receiver writes them to the store): one
        // of them during this run halts it with the rest queued, as when answered at once.
        let watcher = Task {
            await self.watchAccountFailures(run: options.run, since: wallClock() - 1, every: options.accountWatchInterval)
        }
        defer { watcher.cancel() }

        while true {
            // A cancelled task's sleeps return at once: stop as for SIGINT rather than spin.
            if Task.isCancelled { control.stop(.interrupted) }
            // The answers that came back, and what each means.
            let arrived = answers.take()
            inFlight -= arrived.count
            answered += arrived.count
            if !arrived.isEmpty {
                let now = clock.now
                for answer in arrived {
                    let decision = decide(answer.outcome, item: answer.item, attempt: answer.attempt, options: options)
                    outcomes.append(decision.record)
                    if let delay = decision.requeueAfter {
                        if decision.releasePair && lastSent[answer.item.phone] == answer.sentAt {
                            // Refused before it reached the tenant: the pair rule does not count it
                            // (else a throttled message would wait 6 s to be sent again). Only if it
                            // was the last send to that number: a later one still counts.
                            queue.release(answer.item.phone)
                            lastSent[answer.item.phone] = nil
                        }
                        queue.hold(decision.item, for: delay, now: now)
                    }
                    if let pause = decision.pauseSender { budget.pause(seconds: pause, now: now, slowDown: !decision.outage) }
                }
            }
            // A ledger write that finished: its messages may go.
            if let current = writing, let result = current.write.result {
                writing = nil
                switch result {
                case .success(let numbers):
                    ready.append(contentsOf: current.items.map { ($0, numbers[$0.id] ?? 0) })
                case .failure(let error):
                    // Stop rather than send what we cannot record. Outcomes not yet committed are lost
                    // (on SQLite they share the transaction; PostgreSQL commits them first): their
                    // messages stay `sending`, and become `unknown` on the next run.
                    logger.error("the ledger could not be written; stopping", metadata: ["error": "\(error)"])
                    control.stop(.halted(GraphError(code: nil, title: "the database could not record a send: \(error)", httpStatus: 0)))
                }
            }
            if failure == nil, let error = feed.failure { failure = error }
            let stopping = control.stopReason != nil || failure != nil

            if stopping {
                // Committed but not started: back in the queue, for the next run.
                for (item, attempt) in ready[readyIndex...] {
                    outcomes.append(
                        .rejected(
                            messageID: item.id, attempt: attempt,
                            error: SendError(code: nil, title: "not sent: the run stopped before this request left"), final: false))
                }
                ready.removeAll()
                readyIndex = 0
            } else {
                // Start what the budget allows now.
                let now = clock.now
                if !begun && ready.count > readyIndex {
                    // The budget starts with the first send, empty: tokens saved up while the first
                    // attempts were committed would leave as a burst, on connections still opening.
                    budget = RateBudget(rate: options.rate, now: now)
                    begun = true
                }
                // The first request goes alone, and the rest wait until it has been written out:
                // it opens the connection (requests queued behind a connection being opened reach
                // Meta bunched, above the rate). They do not wait for its answer, which would cost
                // a round trip of sends (1 % of a 10-second run at 100 ms); a dead token or a
                // missing template then halts the run after one round trip of requests, each
                // refused and still queued.
                var allowed = answered > 0 || firstWritten.isSet ? Int.max : sentAny ? 0 : 1
                // While the circuit breaker is open, one probe at a time until one is accepted.
                if control.breakerIsOpen { allowed = inFlight == 0 ? 1 : 0 }
                let count = min(budget.available(now: now), ready.count - readyIndex, allowed)
                if count > 0 {
                    budget.take(count, now: now)
                    var sends: [(body: ByteBuffer, completion: @Sendable (SendOutcome) -> Void)] = []
                    sends.reserveCapacity(count)
                    for (item, attempt) in ready[readyIndex..<readyIndex + count] {
                        if control.isStopped(language: item.language) {
                            // Committed before its language was stopped: back in the queue, unsent.
                            inFlight -= 1
                            outcomes.append(
                                .rejected(
                                    messageID: item.id, attempt: attempt,
                                    error: SendError(
                                        code: nil, title: "not sent: the template is missing in language \(item.language) at Meta (132001)"),
                                    final: false))
                            continue
                        }
                        lastSent[item.phone] = now
                        sends.append(
                            (item.body, { outcome in answers.add(Answer(item: item, attempt: attempt, sentAt: now, outcome: outcome)) }))
                    }
                    inFlight += count
                    let written: (@Sendable () -> Void)? = sentAny ? nil : { @Sendable in firstWritten.set() }
                    client.start(sends, written: written)
                    sentAny = true
                    readyIndex += count
                    if readyIndex == ready.count {
                        ready.removeAll(keepingCapacity: true)
                        readyIndex = 0
                    }
                }
            }

            // The next ledger write: outcomes so far, and the attempts of the next sends. It waits
            // until a quarter of the sends committed ahead have left, so that each commit carries
            // about 25 ms of them (40 commits a second at 1,000/s rather than one per tick);
            // outcomes go with it, or alone when no attempts are coming. Outcomes never wait more
            // than 100 ms (during a throttling pause no attempts leave): after a crash, a message
            // whose answer was not written is `unknown` (until its webhook, if it was accepted),
            // and one that was refused is `unknown` instead of back in the queue.
            let pending = ready.count - readyIndex
            let checked = clock.now
            if !outcomes.isEmpty && oldestOutcome == nil { oldestOutcome = checked }
            let outcomesDue = oldestOutcome.map { checked - $0 >= .milliseconds(100) } ?? false
            if writing == nil && (pending <= refill || outcomes.count >= ahead * 4 || outcomesDue) {
                var batch: [Outgoing] = []
                if !stopping {
                    let stoppedLanguages = control.stoppedLanguages
                    queue.append(stoppedLanguages.isEmpty ? feed.take() : feed.take().filter { !stoppedLanguages.contains($0.language) })
                    let now = clock.now
                    var room = min(ahead - pending, maxInFlight - inFlight - pending)
                    while room > 0, let item = queue.pop(now: now, lastSent: { lastSent[$0] }) {
                        if stoppedLanguages.contains(item.language) { continue }  // stays queued in the store
                        batch.append(item)
                        room -= 1
                    }
                }
                if !batch.isEmpty || !outcomes.isEmpty {
                    let write = LedgerWrite()
                    let (store, written, ids) = (self.store, outcomes, batch.map(\.id))
                    outcomes.removeAll(keepingCapacity: true)
                    oldestOutcome = nil
                    writing = (write, batch)
                    Task {
                        do { write.finish(.success(try await store.recordLedger(outcomes: written, begin: ids, at: wallClock()))) } catch {
                            write.finish(.failure(error))
                        }
                    }
                }
            }

            let now = clock.now
            if now - lastForget >= .seconds(1) && lastSent.count + queue.remembered > 8192 {
                // Numbers last sent to more than a pair interval ago: nothing to remember.
                lastForget = now
                let horizon = now - options.pairSpacing - .seconds(1)
                lastSent = lastSent.filter { $0.value > horizon }
                queue.forgetPast(now)
            }
            if let progress, now - lastProgress >= .milliseconds(500) {
                lastProgress = now
                progress(control.progress(queued: queue.count + ready.count - readyIndex + inFlight, elapsed: now - started))
            }
            if inFlight == 0 && writing == nil && outcomes.isEmpty && ready.count == readyIndex && answers.isEmpty {
                if stopping || (queue.isEmpty && feed.exhausted) { break }
            }

            // Sleep until the next few sends are due, or a held message is; answers and writes
            // are picked up on the way.
            var wake = now + longestSleep
            if writing != nil { wake = min(wake, now + .milliseconds(5)) }
            if !stopping {
                if answered == 0 && sentAny && !firstWritten.isSet {
                    wake = min(wake, now + .milliseconds(1))  // the first request written
                } else if pending > 0 {
                    wake = min(wake, budget.due(min(perTick, pending), now: now))
                }
                // Room for more ahead: the next messages are due (or being read, or held back until
                // a time). Without room, a held message's time is no reason to wake: that would
                // spin while sends wait out a throttling pause.
                if writing == nil && pending <= refill && inFlight + pending < maxInFlight {
                    if !queue.isEmpty || !feed.exhausted { wake = min(wake, now + .milliseconds(5)) }
                    if let held = queue.nextWake { wake = min(wake, held) }
                }
            }
            try? await clock.sleep(until: max(wake, now + .milliseconds(1)))
        }
        control.noteMostInOneSecond(budget.mostInOneSecond)
        if let failure { throw failure }
        control.haltForStoppedLanguages(template: renderer.template.name)
        return control.stopReason
    }

    /// Polls the store for webhook-reported account failures of this run until cancelled or stopped.
    func watchAccountFailures(run: String, since: Double, every interval: Duration) async {
        while control.stopReason == nil && !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
                if let (code, title) = try await store.firstFailure(run: run, codes: ErrorClass.webhookHaltCodes, since: since) {
                    logger.error("account-level failure reported by webhook; halting", metadata: ["code": "\(code)"])
                    control.stop(
                        .halted(
                            GraphError(
                                code: code, title: (title ?? "account-level error") + " (reported by a status webhook during the run)",
                                httpStatus: 0)))
                    return
                }
            } catch is CancellationError {
                return
            } catch {
                // The database is the ledger's too: its failures stop the run there. Try again later.
                continue
            }
        }
    }

    /// Reads the run's queued messages a page at a time, staying a page ahead of the loop.
    func feed(_ feed: Feed, run: String) async {
        var last: Int64? = nil
        do {
            while control.stopReason == nil && !Task.isCancelled {
                if feed.count > 2000 {
                    try await Task.sleep(for: .milliseconds(100))
                    continue
                }
                let page = try await store.queuedMessages(run: run, after: last, limit: 2500)
                last = page.last?.sequence ?? last
                feed.add(
                    page.compactMap { m in
                        m.requestBody.map { Outgoing(id: m.id, phone: m.phone, body: ByteBuffer(string: $0), language: m.language) }
                    },
                    done: page.count < 2500)
                if page.count < 2500 { return }
            }
        } catch is CancellationError {
        } catch {
            feed.fail(error)
        }
    }

    /// What to do about one answer.
    struct Decision {
        var record: AttemptOutcome
        /// The message as it goes back in the queue (its retry counts updated).
        var item: Outgoing
        /// Back in the queue after this long; nil when this attempt was the last.
        var requeueAfter: Duration? = nil
        /// A refusal that never reached the tenant does not count for the pair rule.
        var releasePair = true
        /// Meta throttled the whole sender: no sends for this many seconds.
        var pauseSender: Double? = nil
        /// The pause is the circuit breaker's (an outage), not throttling: the pace is not lowered.
        var outage = false
    }

    /// One answer by Meta's error class: what the ledger records, whether the message goes back in
    /// the queue, whether the sender pauses or the run halts.
    func decide(_ outcome: SendOutcome, item: Outgoing, attempt: Int, options: RunOptions) -> Decision {
        var item = item
        func requeue(_ error: SendError, after delay: Duration, releasePair: Bool = true) -> Decision {
            Decision(
                record: .rejected(messageID: item.id, attempt: attempt, error: error, final: false), item: item, requeueAfter: delay,
                releasePair: releasePair)
        }
        func fail(_ error: SendError) -> Decision {
            control.count(failed: 1)
            return Decision(record: .rejected(messageID: item.id, attempt: attempt, error: error, final: true), item: item)
        }
        func transient(_ error: SendError) -> Decision {
            self.transient(error, item: item, attempt: attempt, options: options)
        }
        switch outcome {
        case .accepted(let wamid, let waID):
            control.count(accepted: 1)
            return Decision(
                record: .accepted(messageID: item.id, attempt: attempt, wamid: wamid, waID: waID == item.phone ? nil : waID), item: item)
        case .unknown(let reason):
            control.count(unknown: 1)
            return Decision(record: .unknown(messageID: item.id, attempt: attempt, reason: reason), item: item)
        case .notSent(let reason):
            return transient(SendError(code: nil, title: "not sent: \(reason)"))
        case .rejected(let e):
            let error = SendError(code: e.code, title: e.title, details: e.details)
            if e.code == 131057 {
                // Meta is upgrading the number's throughput, "up to a minute": the whole sender waits
                // and then probes; the message keeps its retries.
                var decision = requeue(error, after: .zero)
                let pause = control.openBreaker(pause: options.throughputUpgradePause, now: ContinuousClock.now)
                decision.pauseSender = pause > 0 ? pause : nil
                decision.outage = true
                return decision
            }
            switch e.errorClass {
            case .throttled:
                item.throttledRetries += 1
                var decision = requeue(error, after: .zero)
                decision.pauseSender = e.retryAfter ?? min(60, pow(2, Double(item.throttledRetries - 1)))
                return decision
            case .pairRate:
                // 4^x seconds for this recipient only; others go on.
                let delay = pow(4, Double(item.pairRetries))
                item.pairRetries += 1
                return requeue(error, after: .milliseconds(Int64(delay * 1000)), releasePair: false)
            case .transient:
                return transient(error)
            case .waitDay:
                let notBefore = iso8601(wallClock() + 86_400) ?? ""
                return fail(SendError(code: e.code, title: e.title, details: "Meta's per-user limit: retry not before \(notBefore)"))
            case .halt where e.code == 132001:
                // The template is missing in this language at Meta (132001 is per template and
                // language): that language's messages stay queued, the others go on. The run
                // ends halted, saying which languages to fix; the same command then sends them.
                control.stopLanguage(item.language, error: e)
                return Decision(record: .rejected(messageID: item.id, attempt: attempt, error: error, final: false), item: item)
            case .halt:
                // Left queued: once the cause is fixed, running the command again sends it.
                control.stop(.halted(e))
                return Decision(record: .rejected(messageID: item.id, attempt: attempt, error: error, final: false), item: item)
            case .final:
                control.knownCode()
                let decision = fail(error)
                if let code = e.code, ErrorClass.requestShapeCodes.contains(code) {
                    // The same refusal of the request's shape or template, message after message:
                    // the template or our request is wrong, not the tenants. Halt with the rest queued.
                    let streak = control.sameRequestError(code)
                    if streak >= options.haltAfterSameRequestErrors {
                        control.stop(
                            .halted(
                                GraphError(
                                    code: code,
                                    title: "\(streak) requests in a row refused with (#\(code)) \(e.title): "
                                        + "the template or the request does not match what Meta approved", details: e.details,
                                    httpStatus: e.httpStatus)))
                    }
                }
                return decision
            case .unknownCode:
                let decision = fail(error)
                if control.unknownCode() >= options.haltAfterUnknownCodes {
                    control.stop(
                        .halted(
                            GraphError(
                                code: e.code, title: "\(options.haltAfterUnknownCodes) unknown error codes in a row (last: \(e.title))",
                                httpStatus: e.httpStatus)))
                }
                return decision
            }
        }
    }

    /// A transient failure (Meta's 1, 2, 131000, 131016, 133004, a 5xx, a request that could not be
    /// sent). One message's bad luck is retried with back-off; a pile-up across messages is an
    /// outage: the circuit breaker pauses the whole sender (2, 4, 8… 60 s) and probes with one
    /// request at a time, and the messages refused meanwhile keep their retries, so an outage
    /// never burns the queue.
    func transient(_ error: SendError, item: Outgoing, attempt: Int, options: RunOptions) -> Decision {
        var item = item
        let now = ContinuousClock.now
        if let pause = control.transientFailure(threshold: options.breakerThreshold, now: now) {
            var decision = Decision(
                record: .rejected(messageID: item.id, attempt: attempt, error: error, final: false), item: item,
                requeueAfter: .zero)
            decision.pauseSender = pause > 0 ? pause : nil
            decision.outage = true
            return decision
        }
        item.transientRetries += 1
        if item.transientRetries > options.maxTransientRetries {
            control.count(failed: 1)
            return Decision(record: .rejected(messageID: item.id, attempt: attempt, error: error, final: true), item: item)
        }
        return Decision(
            record: .rejected(messageID: item.id, attempt: attempt, error: error, final: false), item: item,
            requeueAfter: backoff(item.transientRetries))
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
    private let state = Mutex<(items: [Outgoing], done: Bool, failure: (any Error)?)>(([], false, nil))

    func add(_ items: [Outgoing], done: Bool) {
        state.withLock {
            $0.items.append(contentsOf: items)
            if done { $0.done = true }
        }
    }

    /// Reading the queue failed: the loop stops sending and reports it.
    func fail(_ error: any Error) { state.withLock { $0.failure = error } }

    var failure: (any Error)? { state.withLock { $0.failure } }

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

/// One send's answer, as it came back on the HTTP client's event loop.
struct Answer: Sendable {
    var item: Outgoing
    var attempt: Int
    /// When its request was started (the pair rule's record of that send).
    var sentAt: ContinuousClock.Instant
    var outcome: SendOutcome
}

/// A ledger write running beside the dispatch loop, which looks for its result each tick.
final class LedgerWrite: Sendable {
    private let state = Mutex<Result<[String: Int], any Error>?>(nil)

    func finish(_ result: Result<[String: Int], any Error>) { state.withLock { $0 = result } }

    var result: Result<[String: Int], any Error>? { state.withLock { $0 } }
}

/// Answers waiting for the dispatch loop's next tick.
final class Answers: Sendable {
    private let state = Mutex<[Answer]>([])

    func add(_ answer: Answer) { state.withLock { $0.append(answer) } }

    func take() -> [Answer] {
        state.withLock { answers in
            defer { answers.removeAll(keepingCapacity: true) }
            return answers
        }
    }

    var isEmpty: Bool { state.withLock { $0.isEmpty } }
}

/// Set once, from any thread (the first request written, on the event loop), read by the loop.
final class Flag: Sendable {
    private let state = Atomic<Bool>(false)
    func set() { state.store(true, ordering: .releasing) }
    var isSet: Bool { state.load(ordering: .acquiring) }
}

/// Shared between the dispatch loop and the rest of the process: stop requests, counters.
/// A lock rather than an actor: the loop reads it for every message, and an actor hop each time
/// cost more than the rest of the loop.
final class RunControl: Sendable {
    private struct State {
        var stopReason: StopReason?
        var unknownCodesInARow = 0
        /// Transient failures in a row across messages (an accepted send resets it).
        var transientInARow = 0
        /// The circuit breaker: open while the sender is paused or probing after an outage.
        var breakerOpen = false
        var breakerPause: Double = 0
        var breakerPausedUntil: ContinuousClock.Instant? = nil
        /// The same request-shape error code in a row.
        var sameRequestError: (code: Int, count: Int)? = nil
        var accepted = 0, failed = 0, unknown = 0
        /// The most requests the gate released in any one second.
        var mostInOneSecond = 0
        /// Languages Meta answered 132001 for, with the first such error.
        var stoppedLanguages: [String: GraphError] = [:]
    }

    private let state = Mutex(State())

    var stopReason: StopReason? { state.withLock { $0.stopReason } }

    /// Meta has no such template in `language` (132001): its messages stay queued.
    func stopLanguage(_ language: String, error: GraphError) {
        state.withLock { state in
            if state.stoppedLanguages[language] == nil { state.stoppedLanguages[language] = error }
        }
    }

    var stoppedLanguages: Set<String> { state.withLock { Set($0.stoppedLanguages.keys) } }

    func isStopped(language: String) -> Bool { state.withLock { $0.stoppedLanguages[language] != nil } }

    /// At the end of a run that went on without some languages: halted, naming them (exit 69, the
    /// reason in the report), unless it stopped for another reason already.
    func haltForStoppedLanguages(template: String) {
        let stopped = state.withLock { $0.stoppedLanguages }
        guard let first = stopped.sorted(by: { $0.key < $1.key }).first else { return }
        let languages = stopped.keys.sorted().joined(separator: ", ")
        stop(
            .halted(
                GraphError(
                    code: 132001,
                    title:
                        "template '\(template)' does not exist at Meta in \(stopped.count == 1 ? "language" : "languages") \(languages): "
                        + "those messages are still queued, the other languages were sent", details: first.value.details,
                    httpStatus: first.value.httpStatus)))
    }

    /// The first reason wins, except that a halt replaces an interrupt: a database that failed
    /// while stopping must be reported, not hidden behind "interrupted".
    func stop(_ reason: StopReason) {
        state.withLock { state in
            switch (state.stopReason, reason) {
            case (nil, _), (.interrupted?, .halted): state.stopReason = reason
            default: break
            }
        }
    }

    func count(accepted: Int = 0, failed: Int = 0, unknown: Int = 0) {
        state.withLock {
            $0.accepted += accepted
            $0.failed += failed
            $0.unknown += unknown
            if accepted > 0 {
                $0.unknownCodesInARow = 0
                $0.transientInARow = 0
                $0.breakerOpen = false
                $0.breakerPause = 0
                $0.breakerPausedUntil = nil
                $0.sameRequestError = nil
            }
        }
    }

    var breakerIsOpen: Bool { state.withLock { $0.breakerOpen } }

    /// Counts a transient failure. Nil: the breaker stays closed (the message retries on its own).
    /// Otherwise the breaker is open: the seconds to pause the sender (0 while a pause already
    /// covers this failure, a request that was in flight when it began).
    func transientFailure(threshold: Int, now: ContinuousClock.Instant) -> Double? {
        state.withLock { s in
            s.transientInARow += 1
            if !s.breakerOpen {
                guard s.transientInARow >= threshold else { return nil }
                s.breakerOpen = true
                s.breakerPause = 2
                s.breakerPausedUntil = now + .seconds(2)
                return 2
            }
            // Open: a failure after the pause ended is a failed probe; the next pause is longer.
            if let until = s.breakerPausedUntil, now < until { return 0 }
            s.breakerPause = min(60, s.breakerPause * 2)
            s.breakerPausedUntil = now + .milliseconds(Int64(s.breakerPause * 1000))
            return s.breakerPause
        }
    }

    /// Opens the breaker for a pause Meta announced (131057); returns the pause to apply.
    func openBreaker(pause: Double, now: ContinuousClock.Instant) -> Double {
        state.withLock { s in
            let until = now + .milliseconds(Int64(pause * 1000))
            if s.breakerOpen, let current = s.breakerPausedUntil, current >= until { return 0 }
            s.breakerOpen = true
            s.breakerPause = max(s.breakerPause, min(60, pause))
            s.breakerPausedUntil = until
            return pause
        }
    }

    /// Counts a request-shape refusal with `code`; returns how many in a row had that code.
    func sameRequestError(_ code: Int) -> Int {
        state.withLock { s in
            let count = s.sameRequestError?.code == code ? s.sameRequestError!.count + 1 : 1
            s.sameRequestError = (code, count)
            return count
        }
    }

    func knownCode() { state.withLock { $0.unknownCodesInARow = 0 } }

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
            return RunProgress(
                accepted: s.accepted, failed: s.failed, unknown: s.unknown, remaining: queued, rate: rate,
                eta: rate > 0 ? Double(queued) / rate : nil)
        }
    }
}

func wallClock() -> Double { Date().timeIntervalSince1970 }

extension InvoiceRecord {
    init(run: String, invoice: Invoice, skipReason: String? = nil) {
        self.init(
            run: run, invoiceID: invoice.invoiceID, line: invoice.line, tenantName: invoice.tenantName, tenantID: invoice.tenantID,
            landlord: invoice.landlord, property: invoice.property, amountMinor: invoice.amount.minorUnits,
            currency: invoice.amount.currency.code, period: invoice.period.iso, dueDate: invoice.dueDate?.description,
            locale: invoice.locale, documentURL: invoice.documentURL, email: invoice.email, skipReason: skipReason)
    }
}

/// What to do about a halt, in words an operator can act on.
public func haltAdvice(_ error: GraphError) -> String {
    switch error.code ?? -1 {
    case 190:
        return
            "The access token is invalid or expired: create a new one (a System User token in Meta's Business Manager) and set WHATSAPP_ACCESS_TOKEN."
    case 0, 3, 10, 200...299:
        return "The token lacks a permission (whatsapp_business_messaging): grant it to the app's System User and set the new token."
    case 131042: return "Meta reports a payment problem on the WhatsApp Business Account: fix the payment method in Business Manager."
    case 131031, 368: return "The WhatsApp Business Account is restricted or locked: see Business Manager's Account Quality page."
    case 132001: return "The template does not exist in this language at Meta: check WHATSAPP_TEMPLATE_NAME and the approved languages."
    case 132015, 132016: return "The template is paused or disabled at Meta (quality): edit it or use another, then run again."
    case 133010, 131045:
        return "The sender phone number is not registered with the Cloud API: register it (and check WHATSAPP_PHONE_NUMBER_ID)."
    case 131048: return "Meta's spam rate limit was hit: wait, and review the template's quality."
    default: return "Fix the cause above, then run the same command again: what was not sent is still queued."
    }
}

/// Two manifests whose names derive the same run name (`march-2026.csv`, `march-2026.xml`): the
/// second is refused, never merged into the first one's run without a word.
public struct RunNameConflict: Error, CustomStringConvertible {
    public var run: String
    public var existingManifest: String
    public var manifest: String

    public var description: String {
        "run '\(run)' was made from \(existingManifest), not \(manifest): name this one's run with --run NAME "
            + "(or --run \(run) to add its invoices to that run on purpose)"
    }
}
