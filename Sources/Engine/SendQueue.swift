import DequeModule
import Dispatcher
import HeapModule
import NIOCore

/// A message on its way: what to send, and how its retries have gone.
struct Outgoing: Sendable {
    var id: String
    var phone: String
    var body: ByteBuffer
    /// The template language: a 132001 for it stops its messages only.
    var language = ""
    /// Retries so far for each reason (pair rate: 4^x seconds; transient: exponential with jitter).
    var pairRetries = 0
    var transientRetries = 0
    var throttledRetries = 0
}

/// The messages of a run in order, holding back any whose recipient got a message less than 6
/// seconds ago (Meta's pair rate): other tenants go first meanwhile.
///
/// What is held back is kept per number, with a heap of the numbers by when their next message
/// may go: taking the next message costs a few steps however many are held. (A list of them all,
/// walked at every take, cost a run whose manifest gives 5,000 invoices one phone most of a core:
/// 1,234 µs of CPU a message against 345, and 57 % of the rate.)
struct SendQueue {
    typealias Instant = ContinuousClock.Instant

    private struct Held {
        var at: Instant
        var order: Int
        var item: Outgoing
        /// Held for the pair rule (not a retry's back-off): `release` lets it go at once.
        var pair: Bool
        func before(_ other: Held) -> Bool { (at, order) < (other.at, other.order) }
    }

    /// When a number's first held message may go, as far as was known when it was scheduled.
    private struct Wake: Comparable {
        var at: Instant
        var order: Int
        var phone: String
        static func < (a: Wake, b: Wake) -> Bool { (a.at, a.order) < (b.at, b.order) }
    }

    private var ready: [Outgoing] = []
    private var readyIndex = 0
    /// Held back until an instant, per number, in the order they may go: the recipient's 6 seconds
    /// (`pair`), or a retry's back-off.
    private var held: [String: Deque<Held>] = [:]
    private var heldCount = 0
    /// The numbers with messages held, by when the first may go. A number's live entry is the one
    /// in `scheduled`; an entry it left behind when rescheduled earlier is skipped when reached.
    private var wakes = Heap<Wake>()
    private var scheduled: [String: Wake] = [:]
    private var order = 0
    private var nextAllowed: [String: Instant] = [:]
    /// Numbers whose held messages just reached `crowdedAt` (each said once), with that count.
    private(set) var crowded: [(phone: String, held: Int)] = []
    private var saidCrowded: Set<String> = []
    /// So many messages held for one number keep a run going for minutes (one every pair interval).
    static let crowdedAt = Int(CrowdedNumber.threshold)
    /// The pair interval plus a margin: the interval is counted from when a message leaves the
    /// queue, and its request leaves a little later (the ledger write), by a few milliseconds.
    let pairSpacing: Duration

    init(pairSpacing: Duration = CrowdedNumber.pairInterval, margin: Duration = CrowdedNumber.margin) {
        self.pairSpacing = pairSpacing + margin
    }

    var isEmpty: Bool { readyIndex >= ready.count && heldCount == 0 }
    var count: Int { ready.count - readyIndex + heldCount }
    /// Messages in order, not held back.
    var readyCount: Int { ready.count - readyIndex }

    mutating func append(_ items: [Outgoing]) {
        if readyIndex > 4096 && readyIndex * 2 > ready.count {
            ready.removeFirst(readyIndex)
            readyIndex = 0
        }
        ready.append(contentsOf: items)
    }

    /// Back in the queue after `delay` (a retry), still subject to the pair rule.
    mutating func hold(_ item: Outgoing, for delay: Duration, now: Instant) {
        keep(item, until: now + delay, pair: false)
    }

    /// The next message that may go now, or nil (see `nextWake`). `lastSent` tells when the last
    /// request to a number actually left: the pair interval counts from there, whatever delayed it.
    mutating func pop(now: Instant, lastSent: (String) -> Instant? = { _ in nil }) -> Outgoing? {
        func allowed(_ phone: String) -> Instant {
            let fromQueue = nextAllowed[phone] ?? now
            guard let sent = lastSent(phone) else { return fromQueue }
            return max(fromQueue, sent + pairSpacing)
        }
        // Held messages whose time has come go first: they were first in line.
        while let wake = wakes.min, wake.at <= now {
            wakes.removeMin()
            guard scheduled[wake.phone] == wake else { continue }
            scheduled[wake.phone] = nil
            guard var list = held.removeValue(forKey: wake.phone), let first = list.first else { continue }
            let at = max(first.at, allowed(wake.phone))
            if at > now {
                // Its last request left later than the queue knew: not yet.
                held[wake.phone] = list
                schedule(wake.phone, at: at)
                continue
            }
            list.removeFirst()
            heldCount -= 1
            nextAllowed[wake.phone] = now + pairSpacing
            if let next = list.first {
                held[wake.phone] = list
                schedule(wake.phone, at: max(next.at, now + pairSpacing))
            }
            return first.item
        }
        while readyIndex < ready.count {
            let item = ready[readyIndex]
            readyIndex += 1
            let at = allowed(item.phone)
            if at > now {
                keep(item, until: at, pair: true)
                continue
            }
            nextAllowed[item.phone] = now + pairSpacing
            return item
        }
        return nil
    }

    /// Forgets the numbers whose pair interval is over (they hold nothing back any more), so that a
    /// million-message run does not keep a million entries.
    mutating func forgetPast(_ now: Instant) {
        nextAllowed = nextAllowed.filter { $0.value > now }
    }

    var remembered: Int { nextAllowed.count }

    /// A message to this number was refused before reaching the tenant, or not sent at all: it does
    /// not count for the pair rule. The number's messages held back for that rule alone may go from
    /// `now` (unless a request to it that did leave still holds them).
    mutating func release(_ phone: String, now: Instant) {
        nextAllowed[phone] = nil
        guard var list = held.removeValue(forKey: phone) else { return }
        var moved = false
        for i in list.indices where list[i].pair && list[i].at > now {
            list[i].at = now
            moved = true
        }
        if moved { list = Deque(list.sorted { $0.before($1) }) }
        held[phone] = list
        if let first = list.first, scheduled[phone].map({ first.at < $0.at }) ?? true { schedule(phone, at: first.at) }
    }

    /// The numbers that became crowded since the last call (see `crowded`).
    mutating func takeCrowded() -> [(phone: String, held: Int)] {
        guard !crowded.isEmpty else { return [] }
        defer { crowded.removeAll() }
        return crowded
    }

    /// When something held becomes due, if anything is held.
    mutating func nextWake() -> Instant? {
        while let wake = wakes.min, scheduled[wake.phone] != wake { wakes.removeMin() }
        return wakes.min?.at
    }

    private mutating func keep(_ item: Outgoing, until at: Instant, pair: Bool) {
        order += 1
        let entry = Held(at: at, order: order, item: item, pair: pair)
        var list = held.removeValue(forKey: item.phone) ?? []
        if let last = list.last, entry.before(last) {
            list.insert(entry, at: list.firstIndex { entry.before($0) } ?? list.endIndex)
        } else {
            list.append(entry)
        }
        heldCount += 1
        if list.count == Self.crowdedAt, saidCrowded.insert(item.phone).inserted { crowded.append((item.phone, list.count)) }
        let first = list[list.startIndex]
        held[item.phone] = list
        let due = max(first.at, nextAllowed[item.phone] ?? first.at)
        if scheduled[item.phone].map({ due < $0.at }) ?? true { schedule(item.phone, at: due) }
    }

    private mutating func schedule(_ phone: String, at: Instant) {
        order += 1
        let wake = Wake(at: at, order: order, phone: phone)
        scheduled[phone] = wake
        wakes.insert(wake)
    }
}
