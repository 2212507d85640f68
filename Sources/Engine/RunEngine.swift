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
    /// Put back in the queue the messages an earlier pass skipped because their template was not
    /// approved (`--skip-unapproved-languages` again): checked again, sent once approved. Without
    /// it they stay skipped, and the run's other messages are not held up by them.
    public var requeueTemplateSkips = false

    /// Whether the run may not go on with this check of its manifest: it has problems, and they
    /// are not invalid invoices `skipInvalid` skips (the file could not be read to its end).
    public func refuses(_ preview: PreviewResult) -> Bool { !preview.isValid && (!skipInvalid || preview.fileUnreadable) }
    /// Send again what an earlier run already sent.
    public var resend: Bool
    /// How soon and how often a refused message goes again within the run.
    public var retry = RetryPolicy.billingRun
    /// Transient errors are retried this many times, then the message fails (retryable).
    public var maxTransientRetries: Int {
        get { retry.maxTransientRetries }
        set { retry.maxTransientRetries = newValue }
    }
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
    /// A new run starts sending once its manifest is checked, while its messages are still being
    /// stored (`prepare`, "Sending while storing"). Off, everything is stored before the first send.
    public var sendWhileStoring = false

    public init(
        run: String, manifest: String, rate: Double = 80, skipInvalid: Bool = false, resend: Bool = false,
        maxTransientRetries: Int = 5, pairSpacing: Duration = CrowdedNumber.pairInterval, haltAfterUnknownCodes: Int = 10
    ) {
        self.run = run
        self.manifest = manifest
        self.rate = rate
        self.skipInvalid = skipInvalid
        self.resend = resend
        self.pairSpacing = pairSpacing
        self.haltAfterUnknownCodes = haltAfterUnknownCodes
        self.maxTransientRetries = maxTransientRetries
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
    /// The messages are stored while the run sends (`RunOptions.sendWhileStoring`): `queued` and
    /// `optedOut` are the check pass's count; what an earlier run already sent is known once stored
    /// (`RunEngine.stored`).
    public var storing = false
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
    /// A run checked and waiting to be stored while it sends (`prepare` with `sendWhileStoring`).
    let pending = Mutex<PendingStore?>(nil)
    /// How storing the last such run ended.
    let storedPreparation = Mutex<Preparation?>(nil)

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

    /// Requests of this engine's runs that got an answer (accepted, refused for good, or unknown).
    public var requestsAnswered: Int { control.answered }

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
    ///
    /// With `sendWhileStoring`, a new run is only checked here (the first pass, nothing stored but
    /// the run's record); `dispatch` stores it while it sends (see `prepareToSendWhileStoring`).
    public func prepare(_ options: RunOptions) async throws -> Preparation {
        let existing = try await store.run(named: options.run)
        if options.nameDerived, let conflict = RunNameConflict(existing: existing, manifest: options.manifest) { throw conflict }
        if existing == nil && options.sendWhileStoring { return try await prepareToSendWhileStoring(options) }
        if existing != nil {
            let check = try storingPreviewer.run(path: options.manifest)
            if options.refuses(check) { return Preparation(preview: check) }
        }
        let now = wallClock()
        try await store.saveRun(
            RunRecord(
                name: options.run, manifest: options.manifest, template: renderer.template.name,
                sender: client.configuration.phoneNumberID, status: .sending,
                createdAt: existing?.createdAt ?? now))
        let interrupted = try await store.markInterrupted(run: options.run, at: now)
        // Skipped before because their template was not approved: tried again (checked again
        // before the first send, and skipped again with the reason if it still is not).
        if existing != nil && options.requeueTemplateSkips {
            _ = try await store.requeueSkipped(run: options.run, reasonPrefix: SkipReason.templateNotApproved, at: now)
        }
        let optedOut = try await OptOutList.load(from: store)
        var preparation = try await storePass(options, optedOut: optedOut, discardOnFailure: existing == nil)
        preparation.interrupted = interrupted
        if options.refuses(preparation.preview) {
            // Only a new run gets here (an existing one was checked first): it was never sent.
            _ = try await store.discardUnsentRun(options.run)
            return Preparation(preview: preparation.preview)
        }
        return preparation
    }

    /// The reader of a pass beside the store's writes (and of a re-run's check before them): it does
    /// not read ahead, so that the writes have the other core (see `Previewer.readAhead`).
    var storingPreviewer: Previewer {
        var previewer = Previewer(options: validation, renderer: renderer, sampleLimit: 0)
        previewer.readAhead = false
        return previewer
    }

    /// One pass over the manifest, validating and rendering each invoice on a thread of its own,
    /// its invoices and messages stored in batches beside it. Messages in `skip` (a template not
    /// approved in a language) are stored skipped with the reason. On failure, a new run
    /// (`discardOnFailure`) is deleted: nothing of it was sent.
    func storePass(
        _ options: RunOptions, optedOut: OptOutList, skip: [TemplateLanguage: String] = [:],
        unchanged stamp: ManifestStamp? = nil, pace: (@Sendable (_ queued: Int) async -> Void)? = nil, discardOnFailure: Bool
    ) async throws -> Preparation {
        var storing = storingPreviewer
        storing.countsRecipients = false  // the preview's count, not the store's (memory: 16 MB a million)
        let previewer = storing
        let pipe = BatchPipe<PreparedBatch>(depth: Self.preparationDepth)
        let run = options.run
        let template = renderer.template.name
        let renderer = self.renderer
        async let read: PreviewResult = onOwnThread {
            defer { pipe.finish() }
            var batch = PreparedBatch()
            // Checked before each batch is stored: nothing read after the file changed is stored.
            func checkUnchanged() throws {
                if let stamp, ManifestStamp(path: options.manifest) != stamp { throw ManifestChanged(path: options.manifest) }
            }
            try checkUnchanged()
            func handOver() throws {
                if batch.invoices.count >= Self.preparationBatch {
                    try checkUnchanged()
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
                        new.skipReason = SkipReason.optedOutByTenant
                    } else {
                        new.requestBody = message.request.jsonBody
                        if !skip.isEmpty,
                            let reason = skip[TemplateLanguage(template: message.request.template.name, language: message.language)]
                        {
                            new.state = .skipped
                            new.skipReason = reason
                        }
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
            try checkUnchanged()
            if !batch.invoices.isEmpty { try pipe.put(batch) }
            return preview
        }
        var preparation = Preparation(preview: PreviewResult(manifest: options.manifest, format: .csv, templateName: template))
        do {
            for await batch in pipe.batches {
                if let pace { await pace(preparation.queued) }
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
            if discardOnFailure { await discardEvenIfCancelled(options.run) }
            throw error
        }
        do {
            preparation.preview = try await read
        } catch {
            if discardOnFailure { await discardEvenIfCancelled(options.run) }
            throw error
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
        // Messages an earlier run sent: this run's records of them (skipped, or copies to resend),
        // stored in one write after the batch's rather than one transaction each (a month's manifest
        // run again under another name stored 10,000 of them in 4 s, a million in minutes).
        var copies: [NewMessage] = []
        for (message, outcome) in zip(batch.messages, try await store.addMessages(batch.messages)) {
            switch outcome {
            case .inserted:
                if message.state == .queued { preparation.queued += 1 }
                if message.skipReason?.hasPrefix(SkipReason.optedOut) == true { preparation.optedOut += 1 }
            case .exists(_, let run, let state) where run == options.run:
                if state == .queued { preparation.resumed += 1 }
            case .exists(let id, let run, let state):
                // Sent (or tried) by an earlier run.
                if options.resend {
                    // This run's own copy, from before a stop or a crash: resumed, not made again.
                    var generation = 2
                    var own: MessageRecord? = nil
                    while let found = try await store.message("\(id)-r\(generation)") {
                        if found.run == options.run {
                            own = found
                            break
                        }
                        generation += 1
                    }
                    if let own {
                        if own.state == .queued { preparation.resumed += 1 }
                        continue
                    }
                    var again = message
                    again.id = "\(id)-r\(generation)"
                    again.requestBody = again.requestBody?.replacingOccurrences(of: "\"\(id)\"", with: "\"\(again.id)\"")
                    copies.append(again)
                    preparation.queued += 1
                } else {
                    var skipped = message
                    skipped.id = "\(id)@\(options.run)"
                    skipped.state = .skipped
                    skipped.skipReason = SkipReason.alreadySent(run: run, state: state.rawValue)
                    skipped.requestBody = nil
                    copies.append(skipped)
                    preparation.alreadySent += 1
                }
            }
        }
        if !copies.isEmpty { _ = try await store.addMessages(copies) }
    }

    // MARK: - Sending

    /// Sends every queued message of the run, paced. Returns nil when the queue is empty, or why it stopped.
    ///
    /// The decisions are `DispatchMachine`'s (see there); this loop does its I/O, on the real clock,
    /// with no task, actor or thread hop per message: at 1,000/s those hops, not the work, were
    /// most of the CPU. Each tick (about 10 ms at 1,000/s, one message's interval at lower rates) it
    /// hands the machine the answers that came back (read on the HTTP client's event loop and left
    /// here), a finished ledger write and the messages read ahead; starts the requests it says; and
    /// hands the ledger write it asks for to the writer beside the loop.
    public func dispatch(_ options: RunOptions, progress: (@Sendable (RunProgress) -> Void)? = nil) async throws -> StopReason? {
        let clock = ContinuousClock()
        let started = clock.now
        var machine = DispatchMachine(options: options, control: control, now: started)
        let feed = Feed()
        let answers = Answers()
        let firstWritten = Flag()
        var writing: LedgerWrite? = nil
        var lastProgress = started

        // Beside the loop, as child tasks that end with it: a feeder reads the queue ahead (the loop
        // never waits on a page of the database); a watcher looks for account-level failures that
        // arrive by webhook (a receiver writes them to the store: one of them during this run halts
        // it with the rest queued, as when answered at once); a writer commits the ledger writes the
        // loop asks for, one at a time.
        let (writes, requestWrite) = AsyncStream.makeStream(of: (box: LedgerWrite, outcomes: [AttemptOutcome], begin: [String]).self)
        let store = self.store
        // A run checked but not stored yet is stored beside the loop (`SendWhileStoring.swift`);
        // the feeder reads what is committed and ends after the last batch.
        let storing = takePending(run: options.run)
        let stored = Flag()
        if storing == nil { stored.set() }
        return try await withThrowingTaskGroup(of: Void.self) { children in
            if let storing { children.addTask { await self.storeWhileSending(storing, feed: feed, done: stored) } }
            children.addTask { await self.feed(feed, run: options.run, complete: stored) }
            children.addTask {
                await self.watchAccountFailures(run: options.run, since: wallClock() - 1, every: options.accountWatchInterval)
            }
            children.addTask {
                for await write in writes {
                    do {
                        write.box.finish(
                            .success(try await store.recordLedger(outcomes: write.outcomes, begin: write.begin, at: wallClock())))
                    } catch {
                        write.box.finish(.failure(error))
                    }
                }
            }
            defer {
                requestWrite.finish()
                children.cancelAll()
            }

            var lastActivity = clock.now
            while true {
                // Cancelled (not a signal: those stop the loop gracefully, through `requestStop`):
                // its sleeps would return at once and its child writer is gone, so it ends now, as
                // a crash would: what was committed and not answered becomes `unknown` on the next run.
                if Task.isCancelled {
                    control.stop(.interrupted)
                    break
                }
                let arrived = answers.take()
                if !arrived.isEmpty { lastActivity = clock.now }
                machine.receive(arrived, now: clock.now)
                if let write = writing, let result = write.result {
                    writing = nil
                    if case .failure(let error) = result, !(error is CancellationError) {
                        logger.error("the ledger could not be written; stopping", metadata: ["error": "\(error)"])
                    }
                    machine.ledgerWritten(result, now: clock.now)
                }
                if firstWritten.isSet {
                    if !machine.firstWritten { logger.debug("run: first request written") }
                    machine.firstRequestWritten()
                }
                if let error = feed.failure { machine.fail(error) }

                let now = clock.now
                let step = machine.step(now: now, incoming: { feed.take() }, exhausted: feed.exhausted)
                for crowded in machine.takeCrowded() {
                    // Not silent: the run goes on for as long as one number's invoices take.
                    logger.warning(
                        "\(crowded.held) or more invoices of this run go to one number (ending \(crowded.phone.suffix(4))): Meta takes one message to a number every 6 seconds, so they alone keep the run sending for \(crowded.minutes) minutes or more (stopped before, the rest stay queued and the report lists them)",
                        metadata: ["run": "\(options.run)"])
                }
                if !step.sends.isEmpty {
                    lastActivity = now
                    let sends = step.sends.map { item, attempt in
                        (
                            body: item.body,
                            completion: { @Sendable (outcome: SendOutcome) in
                                answers.add(Answer(item: item, attempt: attempt, sentAt: now, outcome: outcome))
                            }
                        )
                    }
                    client.start(sends, written: firstWritten.isSet ? nil : { @Sendable in firstWritten.set() })
                }
                if let (outcomes, begin) = step.write {
                    let write = LedgerWrite()
                    writing = write
                    if case .terminated = requestWrite.yield((write, outcomes, begin.map(\.id))) {
                        write.finish(.failure(CancellationError()))  // the writer is gone: cancelled
                    }
                }
                if let progress, now - lastProgress >= .milliseconds(500) {
                    lastProgress = now
                    var report = control.progress(queued: machine.remaining, elapsed: now - started)
                    // Requests out and nothing heard for a while: said, not an "ETA 0s".
                    report.inFlight = machine.inFlight
                    report.quietFor = seconds(now - lastActivity)
                    progress(report)
                }
                if step.finished && answers.isEmpty { break }
                try? await clock.sleep(until: step.wake)
            }
            // Stopped early (a halt, an interrupt) while storing: storing finishes first, so that
            // every invoice is in the store and the report, queued with why.
            if !stored.isSet && !Task.isCancelled {
                logger.notice("sending stopped; storing the rest of the manifest so that the report lists every invoice")
                while !stored.isSet && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(50)) }
                // Storing failed after the stop: part of the manifest is not in the store; said, not hidden.
                if let error = feed.failure { throw error }
            }
            control.noteMostInOneSecond(machine.mostInOneSecond)
            if machine.notQueued > 0 {
                logger.warning(
                    "messages were no longer queued when their turn came, and were not sent: a status of an earlier attempt moved them, or another process began them (this run's sender lease lapsed?)",
                    metadata: ["messages": "\(machine.notQueued)", "run": "\(options.run)"])
            }
            if let failure = machine.failure { throw failure }
            control.haltForStoppedLanguages(template: renderer.template.name)
            return control.stopReason
        }
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

    /// Reads the run's queued messages a page at a time, staying a page ahead of the loop. While
    /// the run is being stored (`complete` not set), a short page is not the end: it reads on as
    /// batches commit (in sequence order: one writer stores them, one batch after another).
    func feed(_ feed: Feed, run: String, complete: Flag) async {
        var last: Int64? = nil
        do {
            while control.stopReason == nil && !Task.isCancelled {
                if feed.count > 2000 {
                    try await Task.sleep(for: .milliseconds(100))
                    continue
                }
                // Read before the page: once set, the page holds everything stored.
                let stored = complete.isSet
                let page = try await store.queuedMessages(run: run, after: last, limit: 2500)
                last = page.last?.sequence ?? last
                feed.add(
                    page.compactMap { m in
                        m.requestBody.map { Outgoing(id: m.id, phone: m.phone, body: ByteBuffer(string: $0), language: m.language) }
                    },
                    done: page.count < 2500 && stored)
                if page.count < 2500 {
                    if stored { return }
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
        } catch is CancellationError {
        } catch {
            feed.fail(error)
        }
    }

    // MARK: - Settling

    /// Waits until every message of the run is final (delivered, read, failed, skipped) or the
    /// window closes. Statuses come from a receiver writing to the same store.
    /// `observe`: the counts and the time left, at every look at the store (the live line).
    public func settle(
        run: String, window: Duration, poll: Duration = .milliseconds(500),
        observe: ([MessageState: Int], Duration) -> Void = { _, _ in }
    ) async throws -> [MessageState: Int] {
        try await settleWindow(
            store: store, run: run, window: window, poll: poll, clock: ContinuousClock(),
            stopped: { [control] in control.stopReason != nil },
            observe: observe)
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
    /// Requests sent and not answered yet.
    public var inFlight = 0
    /// Seconds since the last request left or answer came.
    public var quietFor: Double = 0

    /// Requests are out and nothing has moved for 3 s: a request hangs (Meta, the network).
    public var isWaiting: Bool { inFlight > 0 && quietFor >= 3 }
}

/// Messages read ahead for the dispatch loop.
final class Feed: Sendable {
    private let state = Mutex<(items: [Outgoing], done: Bool, failure: (any Error)?, read: Int)>(([], false, nil, 0))

    func add(_ items: [Outgoing], done: Bool) {
        state.withLock {
            $0.items.append(contentsOf: items)
            $0.read += items.count
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
    /// Messages read from the store so far.
    var read: Int { state.withLock { $0.read } }
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

    var answered: Int { state.withLock { $0.accepted + $0.failed + $0.unknown } }

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
public func haltAdvice(_ error: GraphError, tokenVariable: String = "WHATSAPP_ACCESS_TOKEN") -> String {
    knownAdvice(error, tokenVariable: tokenVariable)
        ?? "Fix the cause above, then run the same command again: what was not sent is still queued."
}

/// What to do about one of Meta's codes that doom a run; nil for any other error.
public func knownAdvice(_ error: GraphError, tokenVariable: String = "WHATSAPP_ACCESS_TOKEN") -> String? {
    switch error.code ?? -1 {
    case 190:
        return
            "The access token is invalid or expired: create a new one (a System User token in Meta's Business Manager) and set \(tokenVariable)."
    case 0, 3, 10, 200...299:
        return "The token lacks a permission (whatsapp_business_messaging): grant it to the app's System User and set the new token."
    case 131042: return "Meta reports a payment problem on the WhatsApp Business Account: fix the payment method in Business Manager."
    case 131031, 368: return "The WhatsApp Business Account is restricted or locked: see Business Manager's Account Quality page."
    case 132001: return "The template does not exist in this language at Meta: check WHATSAPP_TEMPLATE_NAME and the approved languages."
    case 132015:
        return
            "Meta paused the template for its quality: 3 hours the first time, 6 the second (a third time disables it). Run the same command again once the pause is over (`dispatcher templates check` shows its status); what was not sent is still queued."
    case 132016: return "The template is disabled at Meta (quality): edit it and submit it again, or send with another template."
    case 133010, 131045:
        return "The sender phone number is not registered with the Cloud API: register it (and check WHATSAPP_PHONE_NUMBER_ID)."
    case 131048: return "Meta's spam rate limit was hit: wait, and review the template's quality."
    default: return nil
    }
}

/// Two manifests whose names derive the same run name (`march-2026.csv`, `march-2026.xml`): the
/// second is refused, never merged into the first one's run without a word.
public struct RunNameConflict: Error, CustomStringConvertible {
    public var run: String
    public var existingManifest: String
    public var manifest: String

    /// The conflict when `existing`, the run a manifest's derived name names, was made from a
    /// manifest of another file name; nil when there is none (`send` refuses, `preview` warns).
    public init?(existing: RunRecord?, manifest: String) {
        guard let existing, existing.manifest.split(separator: "/").last != manifest.split(separator: "/").last else { return nil }
        run = existing.name
        existingManifest = existing.manifest
        self.manifest = manifest
    }

    public var description: String {
        "run '\(run)' was made from \(existingManifest), not \(manifest): name this one's run with --run NAME "
            + "(or --run \(run) to add its invoices to that run on purpose)"
    }
}
