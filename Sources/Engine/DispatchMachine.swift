import DequeModule
import Dispatcher
import Foundation
import Store
import WhatsApp

/// The send loop's every decision, as a value: what to send now, what to write to the ledger, when
/// to look again. It is told what happened (answers, a ledger write that finished, the first
/// request written out, messages read from the queue) and asked, at an instant it is given, what
/// to do. It never reads a clock, sleeps, or does I/O: `RunEngine.dispatch` drives it with the
/// real clock, the Graph client and the store; the tests drive it in virtual time
/// (`Tests/EngineTests/VirtualRun.swift`), so pacing, the pair rule, back-off, the circuit
/// breaker and halts are checked exactly, in milliseconds of real time.
///
/// Each step
/// - starts the requests the rate budget allows now, from those whose attempt is already
///   committed to the ledger (the first request alone, until it has been written out: it opens the
///   connection, and requests queued behind a connection being opened reach Meta bunched);
/// - when fewer than about 75 ms of sends are committed ahead and no ledger write is under way,
///   takes the next messages from the queue (the pair rule holds back a tenant's second invoice)
///   and asks for their attempts to be written, together with the outcomes read so far, in one
///   transaction beside the loop. A slow commit therefore never holds the pace back, and never
///   releases a bunch of sends at once.
///
/// A crash leaves at most those 100 ms of committed attempts unsent (more while commits are slow, up
/// to 500 ms: see `ahead`); like the requests in flight, they become `unknown` on the next run. A stop (SIGINT/SIGTERM, a halt) puts them back in the
/// queue.
struct DispatchMachine {
    typealias Instant = ContinuousClock.Instant

    /// What to do now.
    struct Step {
        /// Requests to start now, in this order; each answer comes back through `receive`.
        var sends: [(item: Outgoing, attempt: Int)] = []
        /// A ledger write to begin: these outcomes recorded, and attempts begun for these messages
        /// (their attempt numbers come back through `ledgerWritten`).
        var write: (outcomes: [AttemptOutcome], begin: [Outgoing])? = nil
        /// When to be asked again, at the latest (an answer or a finished write may come sooner).
        var wake: Instant
        /// Nothing more to do: the queue is empty, or the run stopped and everything is resolved.
        var finished = false
    }

    let options: RunOptions
    let control: RunControl
    /// The back-off's jitter factor (0.75…1.25 in a run; fixed in tests).
    let jitter: () -> Double

    private var budget: RateBudget
    private var begun = false
    private var answered = 0
    private var sentAny = false
    private(set) var firstWritten = false
    private var queue: SendQueue
    private let maxInFlight: Int
    private let perTick: Int
    /// Attempts committed ahead of their requests: 100 ms of sends, written 25 ms at a time, so
    /// that a commit may take 75 ms before the sends run dry (50 ms fsyncs were measured while
    /// `serve` wrote the run's statuses to the same disk). That holds for one slow commit; commits
    /// are one after another, so to keep the pace through a run of commits that each take L, what
    /// is committed ahead must cover 2 L (found in virtual time: with 60 ms commits a fixed 100 ms
    /// lost 4 % of the rate at 1,000/s). So it grows with the slowest recent commit: 2.5 L, at
    /// least 100 ms, at most 500 ms of sends.
    private var ahead: Int
    private var refill: Int
    /// The slowest recent commit (it follows a slower one at once, a faster one slowly).
    private var commitTime = Duration.zero
    private var writeBegan: Instant? = nil
    private static let longestSleep = Duration.milliseconds(20)
    /// Messages taken from the feed only while fewer than this wait ready in the queue: the feed
    /// stays a page ahead of the queue, the store holds the rest (taking all it offered, a
    /// million-message run held its whole queue, 1.5 GB, within a few minutes of its first request).
    static let queueAhead = 4_096
    /// When each recipient's last request left (the pair rule counts from there).
    private var lastSent: [String: Instant] = [:]
    /// Committed as `sending`, to be started in this order as the budget allows.
    private var ready = Deque<(item: Outgoing, attempt: Int)>()
    /// Outcomes read but not yet written, and since when the oldest of them waits.
    private var outcomes: [AttemptOutcome] = []
    private var oldestOutcome: Instant? = nil
    /// The messages whose attempts the ledger write under way begins (nil: no write under way).
    private var writing: [Outgoing]? = nil
    private(set) var inFlight = 0
    /// Messages read from the queue that were no longer queued when their attempt was to begin
    /// (see `ledgerWritten`): not sent.
    private(set) var notQueued = 0
    private var lastForget: Instant
    /// Reading the queue failed: stop as for a halt, and report this error.
    private(set) var failure: (any Error)? = nil

    init(options: RunOptions, control: RunControl, now: Instant, jitter: @escaping () -> Double = { Double.random(in: 0.75...1.25) }) {
        self.options = options
        self.control = control
        self.jitter = jitter
        budget = RateBudget(rate: options.rate, now: now)
        queue = SendQueue(pairSpacing: options.pairSpacing)
        maxInFlight = max(8, min(1024, Int(options.rate * 0.6)))
        perTick = max(1, Int(options.rate / 100))
        ahead = max(4, Int(options.rate / 10))
        refill = ahead * 3 / 4
        lastForget = now
    }

    /// Messages waiting, committed or in flight (for the progress line).
    var remaining: Int { queue.count + ready.count + inFlight }

    /// Messages kept in memory with their request bodies (in the queue, or committed and not yet
    /// started): what the tests hold to a bound whatever the run's size.
    var retained: Int { queue.count + ready.count }

    /// The most requests released in any one second so far.
    var mostInOneSecond: Int { budget.mostInOneSecond }

    /// Numbers that now have `SendQueue.crowdedAt` messages held back by the pair rule (each
    /// once), and the least minutes those alone keep the run going.
    mutating func takeCrowded() -> [(phone: String, held: Int, minutes: Int)] {
        queue.takeCrowded().map { ($0.phone, $0.held, CrowdedNumber.minutes($0.held, spacing: queue.pairSpacing)) }
    }

    /// The first request has been written out whole: its connection is open, the rest may go.
    mutating func firstRequestWritten() { firstWritten = true }

    /// Reading the queue failed: nothing more is sent.
    mutating func fail(_ error: any Error) {
        if failure == nil { failure = error }
    }

    /// Answers that came back, and what each means.
    mutating func receive(_ arrived: [Answer], now: Instant) {
        guard !arrived.isEmpty else { return }
        inFlight -= arrived.count
        answered += arrived.count
        for answer in arrived {
            let decision = decide(answer.outcome, item: answer.item, attempt: answer.attempt, now: now)
            outcomes.append(decision.record)
            if let delay = decision.requeueAfter {
                if decision.releasePair && lastSent[answer.item.phone] == answer.sentAt {
                    // Refused before it reached the tenant: the pair rule does not count it (else a
                    // throttled message would wait 6 s to be sent again). Only if it was the last
                    // send to that number: a later one still counts.
                    queue.release(answer.item.phone, now: now)
                    lastSent[answer.item.phone] = nil
                }
                queue.hold(decision.item, for: delay, now: now)
            }
            if let pause = decision.pauseSender { budget.pause(seconds: pause, now: now, slowDown: !decision.outage) }
        }
    }

    /// The ledger write under way finished: on success its messages may go. On failure the run
    /// stops rather than send what it cannot record; outcomes not yet committed are lost (on SQLite
    /// they share the transaction; PostgreSQL commits them first): their messages stay `sending`,
    /// and become `unknown` on the next run.
    mutating func ledgerWritten(_ result: Result<[String: Int], any Error>, now: Instant) {
        guard let items = writing else { return }
        writing = nil
        if let began = writeBegan {
            let took = now - began
            commitTime = took >= commitTime ? took : commitTime - (commitTime - took) / 8
            let span = min(0.5, max(0.1, 2.5 * seconds(commitTime)))
            ahead = max(4, Int(options.rate * span))
            refill = ahead * 3 / 4
        }
        switch result {
        case .success(let numbers):
            // A message the ledger gave no number was no longer queued (`beginAttempts`): another
            // process began it since it was read, or a late status of an earlier attempt moved it.
            // It is not sent, and its tenant's next invoice need not wait for it (the pair rule).
            for item in items {
                if let number = numbers[item.id] {
                    ready.append((item, number))
                } else {
                    notQueued += 1
                    queue.release(item.phone, now: now)
                }
            }
        case .failure(let error) where error is CancellationError:
            control.stop(.interrupted)  // the task was cancelled, not the database at fault
        case .failure(let error):
            control.stop(.halted(GraphError(code: nil, title: "the database could not record a send: \(error)", httpStatus: 0)))
        }
    }

    /// What to do at `now`. `incoming` hands over the messages read from the queue since the last
    /// step; `exhausted` says the queue has been read to its end.
    mutating func step(now: Instant, incoming: () -> [Outgoing], exhausted: Bool) -> Step {
        let stopping = control.stopReason != nil || failure != nil
        if stopping {
            // Committed but not started: back in the queue, for the next run.
            for (item, attempt) in ready {
                outcomes.append(
                    .rejected(
                        messageID: item.id, attempt: attempt,
                        error: SendError(code: nil, title: "not sent: the run stopped before this request left"),
                        final: false))
            }
            ready.removeAll()
        }
        var step = Step(wake: now + Self.longestSleep)
        if !stopping { step.sends = start(now: now) }

        // The next ledger write: outcomes so far, and the attempts of the next sends. It waits
        // until a quarter of the sends committed ahead have left, so that each commit carries
        // about 25 ms of them (40 commits a second at 1,000/s rather than one per tick); outcomes
        // go with it, or alone when no attempts are coming. Outcomes never wait more than 100 ms
        // (during a throttling pause no attempts leave): after a crash, a message whose answer was
        // not written is `unknown` (until its webhook, if it was accepted), and one that was
        // refused is `unknown` instead of back in the queue.
        let pending = ready.count
        if !outcomes.isEmpty && oldestOutcome == nil { oldestOutcome = now }
        let outcomesDue = oldestOutcome.map { now - $0 >= .milliseconds(100) } ?? false
        if writing == nil && (pending <= refill || outcomes.count >= ahead * 4 || outcomesDue) {
            var batch: [Outgoing] = []
            if !stopping {
                let stoppedLanguages = control.stoppedLanguages
                let read = queue.readyCount < Self.queueAhead ? incoming() : []
                queue.append(stoppedLanguages.isEmpty ? read : read.filter { !stoppedLanguages.contains($0.language) })
                var room = min(ahead - pending, maxInFlight - inFlight - pending)
                while room > 0, let item = queue.pop(now: now, lastSent: { lastSent[$0] }) {
                    if stoppedLanguages.contains(item.language) { continue }  // stays queued in the store
                    batch.append(item)
                    room -= 1
                }
            }
            if !batch.isEmpty || !outcomes.isEmpty {
                step.write = (outcomes, batch)
                outcomes.removeAll(keepingCapacity: true)
                oldestOutcome = nil
                writing = batch
                writeBegan = now
            }
        }

        if now - lastForget >= .seconds(1) && lastSent.count + queue.remembered > 8192 {
            // Numbers last sent to more than a pair interval ago: nothing to remember.
            lastForget = now
            let horizon = now - options.pairSpacing - .seconds(1)
            lastSent = lastSent.filter { $0.value > horizon }
            queue.forgetPast(now)
        }
        if inFlight == 0 && writing == nil && outcomes.isEmpty && ready.isEmpty {
            if stopping || (queue.isEmpty && exhausted) {
                step.finished = true
                return step
            }
        }

        // Wake when the next few sends are due, or a held message is; answers and writes are
        // picked up on the way.
        let waiting = ready.count
        if writing != nil { step.wake = min(step.wake, now + .milliseconds(5)) }
        if !stopping {
            if answered == 0 && sentAny && !firstWritten {
                step.wake = min(step.wake, now + .milliseconds(1))  // the first request written
            } else if waiting > 0 {
                step.wake = min(step.wake, budget.due(min(perTick, waiting), now: now))
            }
            // Room for more ahead: the next messages are due (or being read, or held back until a
            // time). Without room, a held message's time is no reason to wake: that would spin
            // while sends wait out a throttling pause.
            if writing == nil && waiting <= refill && inFlight + waiting < maxInFlight {
                if !queue.isEmpty || !exhausted { step.wake = min(step.wake, now + .milliseconds(5)) }
                if let held = queue.nextWake() { step.wake = min(step.wake, held) }
            }
        }
        step.wake = max(step.wake, now + .milliseconds(1))
        return step
    }

    /// The requests the budget allows now, from those committed.
    private mutating func start(now: Instant) -> [(item: Outgoing, attempt: Int)] {
        if !begun && !ready.isEmpty {
            // The budget starts with the first send, empty: tokens saved up while the first
            // attempts were committed would leave as a burst, on connections still opening.
            budget = RateBudget(rate: options.rate, now: now)
            begun = true
        }
        // The first request goes alone, and the rest wait until it has been written out. They do
        // not wait for its answer, which would cost a round trip of sends (1 % of a 10-second run
        // at 100 ms); a dead token or a missing template then halts the run after one round trip
        // of requests, each refused and still queued.
        var allowed = answered > 0 || firstWritten ? Int.max : sentAny ? 0 : 1
        // While the circuit breaker is open, one probe at a time until one is accepted.
        if control.breakerIsOpen { allowed = inFlight == 0 ? 1 : 0 }
        let count = min(budget.available(now: now), ready.count, allowed)
        guard count > 0 else { return [] }
        budget.take(count, now: now)
        var sends: [(item: Outgoing, attempt: Int)] = []
        sends.reserveCapacity(count)
        for (item, attempt) in ready.prefix(count) {
            if control.isStopped(language: item.language) {
                // Committed before its language was stopped: back in the queue, unsent.
                outcomes.append(
                    .rejected(
                        messageID: item.id, attempt: attempt,
                        error: SendError(
                            code: nil, title: "not sent: the template is missing in language \(item.language) at Meta (132001)"),
                        final: false))
                continue
            }
            lastSent[item.phone] = now
            sends.append((item, attempt))
        }
        inFlight += sends.count
        sentAny = true
        // Let go at once: refilled before it runs dry, an array with a read index that was reset
        // only once emptied kept every message sent, request body included.
        ready.removeFirst(count)
        return sends
    }

    // MARK: - What an answer means

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
    func decide(_ outcome: SendOutcome, item: Outgoing, attempt: Int, now: Instant) -> Decision {
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
        switch outcome {
        case .accepted(let wamid, let waID, let held):
            control.count(accepted: 1)
            return Decision(
                record: .accepted(messageID: item.id, attempt: attempt, wamid: wamid, waID: waID == item.phone ? nil : waID, held: held),
                item: item)
        case .unknown(let reason):
            control.count(unknown: 1)
            return Decision(record: .unknown(messageID: item.id, attempt: attempt, reason: reason), item: item)
        case .notSent(let reason):
            return transient(SendError(code: nil, title: "not sent: \(reason)"), item: item, attempt: attempt, now: now)
        case .rejected(let e):
            let error = SendError(code: e.code, title: e.title, details: e.details)
            if e.code == 131057 {
                // Meta is upgrading the number's throughput, "up to a minute": the whole sender waits
                // and then probes; the message keeps its retries.
                var decision = requeue(error, after: .zero)
                let pause = control.openBreaker(pause: options.throughputUpgradePause, now: now)
                decision.pauseSender = pause > 0 ? pause : nil
                decision.outage = true
                return decision
            }
            switch e.errorClass {
            case .throttled:
                item.throttledRetries += 1
                var decision = requeue(error, after: .zero)
                decision.pauseSender = RetryPolicy.throttlePause(retryAfter: e.retryAfter, retry: item.throttledRetries)
                return decision
            case .pairRate:
                // For this recipient only; others go on.
                let delay = RetryPolicy.pairDelay(retry: item.pairRetries)
                item.pairRetries += 1
                return requeue(error, after: delay, releasePair: false)
            case .transient:
                return transient(error, item: item, attempt: attempt, now: now)
            case .waitDay:
                let notBefore = iso8601(wallClock() + 86_400) ?? ""
                return fail(SendError(code: e.code, title: e.title, details: FailureDetail.perUserLimit(notBefore: notBefore)))
            case .halt where e.code == 132001:
                // The template is missing in this language at Meta (132001 is per template and
                // language): that language's messages stay queued, the others go on. The run ends
                // halted, saying which languages to fix; the same command then sends them.
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
    func transient(_ error: SendError, item: Outgoing, attempt: Int, now: Instant) -> Decision {
        var item = item
        if let pause = control.transientFailure(threshold: options.breakerThreshold, now: now) {
            var decision = Decision(
                record: .rejected(messageID: item.id, attempt: attempt, error: error, final: false), item: item, requeueAfter: .zero)
            decision.pauseSender = pause > 0 ? pause : nil
            decision.outage = true
            return decision
        }
        guard options.retry.retriesNow(.transient, transientRetries: item.transientRetries) else {
            control.count(failed: 1)
            return Decision(record: .rejected(messageID: item.id, attempt: attempt, error: error, final: true), item: item)
        }
        item.transientRetries += 1
        return Decision(
            record: .rejected(messageID: item.id, attempt: attempt, error: error, final: false), item: item,
            requeueAfter: options.retry.backoff(retry: item.transientRetries, jitter: jitter()))
    }
}
