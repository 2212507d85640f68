import NIOCore
import Store
import WhatsApp

@testable import Engine

/// A request as (virtual) Meta received it.
struct Request {
    var id: String
    var phone: String
    var language: String
    var attempt: Int
    /// Virtual time since the run began.
    var at: Duration
}

/// The send loop driven in virtual time: the real `DispatchMachine`, with Meta, the network and the
/// ledger simulated around it on a clock that jumps to the next thing due. Exact (no wall clock, no
/// scheduler) and fast (a minute of sending at 1,000/s takes well under a second).
///
/// - Meta answers every request after `answerLatency` with what `meta` says (given the request and
///   everything Meta received before it); the first request is written out 1 ms after it starts.
/// - The ledger commits each write after `writeLatency`; `failWrite` makes one write fail.
/// - `at` schedules things that happen to the run from outside (a stop, say).
final class VirtualRun {
    let start = ContinuousClock.now
    private(set) var now: ContinuousClock.Instant
    var machine: DispatchMachine
    let control: RunControl
    let options: RunOptions
    var answerLatency = Duration.milliseconds(80)
    var writeLatency = Duration.milliseconds(10)
    /// The write with this number (1 is the first) fails, with `writeError`.
    var failWrite: Int? = nil
    var writeError: any Error = StoreError("disk full")
    var meta: (Request, _ before: [Request]) -> SendOutcome = { request, _ in .accepted(wamid: "wamid.\(request.id)", waID: nil) }
    /// Messages another process begins before this run's ledger write does: the ledger gives them
    /// no number (`beginAttempts`).
    var takenElsewhere: Set<String> = []
    /// Every request Meta received, in order.
    private(set) var requests: [Request] = []
    /// Every outcome written to the ledger, in order.
    private(set) var outcomes: [AttemptOutcome] = []
    /// Attempts begun per message (what the ledger numbers them).
    private(set) var attempts: [String: Int] = [:]
    /// The most requests without an answer at any moment.
    private(set) var mostInFlight = 0
    /// Hand the queue over this many messages per read, as the store's feeder does (nil: all at once).
    var feedPage: Int? = nil
    /// The most messages taken from the feed and not yet sent, at any moment (what the loop holds).
    private(set) var mostHeld = 0
    /// The most messages the loop kept in memory at any moment, sent ones not yet let go included.
    private(set) var mostRetained = 0
    private var events: [(at: Duration, action: (VirtualRun) -> Void)] = []
    private var queued: [Outgoing]

    /// A run of `messages` (phone, language) at `options`, with the back-off's jitter fixed at 1.
    init(_ messages: [(phone: String, language: String)], options: RunOptions) {
        self.options = options
        control = RunControl()
        now = start
        machine = DispatchMachine(options: options, control: control, now: start, jitter: { 1 })
        queued = messages.enumerated().map { i, m in
            Outgoing(id: "m\(i + 1)", phone: m.phone, body: ByteBuffer(), language: m.language)
        }
    }

    convenience init(tenants: Int, rate: Double = 80, configure: (inout RunOptions) -> Void = { _ in }) {
        var options = RunOptions(run: "virtual", manifest: "virtual.csv", rate: rate)
        configure(&options)
        self.init((0..<tenants).map { ("1809\(5_000_000 + $0)", "es") }, options: options)
    }

    func at(_ time: Duration, _ action: @escaping (VirtualRun) -> Void) { events.append((time, action)) }

    var elapsed: Duration { now - start }

    /// Runs until the machine says it is finished (or `limit` of virtual time, which fails the
    /// expectation of whoever reads `finished`). Returns why it stopped, as `dispatch` does.
    @discardableResult
    func run(limit: Duration = .seconds(3_600)) -> StopReason? {
        var inFlight: [(due: ContinuousClock.Instant, answer: Answer)] = []
        var write: (due: ContinuousClock.Instant, result: Result<[String: Int], any Error>)? = nil
        var writes = 0
        var firstWrittenAt: ContinuousClock.Instant? = nil
        var fed = false
        var offset = 0
        var firstRequests = 0
        while now - start < limit {
            for event in events where start + event.at <= now { event.action(self) }
            events.removeAll { start + $0.at <= now }
            let due = inFlight.filter { $0.due <= now }
            inFlight.removeAll { $0.due <= now }
            machine.receive(due.map(\.answer), now: now)
            if let w = write, w.due <= now {
                write = nil
                machine.ledgerWritten(w.result, now: now)
            }
            if let at = firstWrittenAt, at <= now { machine.firstRequestWritten() }

            let step = machine.step(
                now: now,
                incoming: {
                    if let page = feedPage {
                        let chunk = queued[offset..<min(offset + page, queued.count)]
                        offset += chunk.count
                        return Array(chunk)
                    }
                    defer { fed = true }
                    return fed ? [] : queued
                }, exhausted: feedPage.map { _ in offset >= queued.count } ?? fed)
            for (item, attempt) in step.sends {
                let request = Request(id: item.id, phone: item.phone, language: item.language, attempt: attempt, at: now - start)
                let outcome = meta(request, requests)
                requests.append(request)
                if attempt == 1 { firstRequests += 1 }
                inFlight.append((now + answerLatency, Answer(item: item, attempt: attempt, sentAt: now, outcome: outcome)))
                if firstWrittenAt == nil { firstWrittenAt = now + .milliseconds(1) }
            }
            mostInFlight = max(mostInFlight, inFlight.count)
            if feedPage != nil { mostHeld = max(mostHeld, offset - firstRequests) }
            mostRetained = max(mostRetained, machine.retained)
            if let (written, begin) = step.write {
                writes += 1
                outcomes += written
                if writes == failWrite {
                    write = (now + writeLatency, .failure(writeError))
                } else {
                    var numbers: [String: Int] = [:]
                    for item in begin where !takenElsewhere.contains(item.id) {
                        attempts[item.id, default: 0] += 1
                        numbers[item.id] = attempts[item.id]
                    }
                    write = (now + writeLatency, .success(numbers))
                }
            }
            if step.finished {
                control.haltForStoppedLanguages(template: "invoice")
                return control.stopReason
            }
            var next = step.wake
            if let first = inFlight.map(\.due).min() { next = min(next, first) }
            if let w = write { next = min(next, w.due) }
            if let first = firstWrittenAt, first > now { next = min(next, first) }
            if let event = events.map({ start + $0.at }).min() { next = min(next, max(event, now)) }
            now = max(next, now + .microseconds(1))
        }
        return control.stopReason
    }

    // MARK: - What happened

    /// The last outcome written for each message.
    var finalOutcomes: [String: AttemptOutcome] {
        var last: [String: AttemptOutcome] = [:]
        for outcome in outcomes { last[outcome.messageID] = outcome }
        return last
    }

    var accepted: [String] { finalOutcomes.values.filter(\.isAccepted).map(\.messageID) }

    var failedForGood: [String] { finalOutcomes.values.filter { $0.rejection?.final == true }.map(\.messageID) }

    /// The most requests Meta received within any one second.
    var mostInOneSecond: Int {
        var most = 0
        var first = 0
        for last in requests.indices {
            while requests[last].at - requests[first].at >= .seconds(1) { first += 1 }
            most = max(most, last - first + 1)
        }
        return most
    }

    /// Requests per second from the first to the last.
    var achievedRate: Double {
        guard let first = requests.first, let last = requests.last, requests.count > 1 else { return 0 }
        return Double(requests.count - 1) / (last.at - first.at).seconds
    }

    func requests(to phone: String) -> [Request] { requests.filter { $0.phone == phone } }
}

extension AttemptOutcome {
    var messageID: String {
        switch self {
        case .accepted(let id, _, _, _, _), .rejected(let id, _, _, _), .unknown(let id, _, _): id
        }
    }

    var isAccepted: Bool {
        switch self {
        case .accepted: true
        default: false
        }
    }

    var isUnknown: Bool {
        switch self {
        case .unknown: true
        default: false
        }
    }

    var rejection: (error: SendError, final: Bool)? {
        switch self {
        case .rejected(_, _, let error, let final): (error, final)
        default: nil
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Meta's error for `code`, as the Graph client decodes it.
func metaError(_ code: Int, retryAfter: Double? = nil) -> SendOutcome {
    .rejected(GraphError(code: code, title: "error \(code)", httpStatus: code == 131000 ? 500 : 400, retryAfter: retryAfter))
}
