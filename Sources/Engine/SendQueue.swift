import Dispatcher
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
struct SendQueue {
    private var ready: [Outgoing] = []
    private var readyIndex = 0
    /// Held back until an instant: the recipient's 6 seconds (`pair`), or a retry's back-off.
    private var held: [(at: ContinuousClock.Instant, item: Outgoing, pair: Bool)] = []
    private var nextAllowed: [String: ContinuousClock.Instant] = [:]
    /// The pair interval plus a margin: the interval is counted from when a message leaves the
    /// queue, and its request leaves a little later (the ledger write), by a few milliseconds.
    let pairSpacing: Duration

    init(pairSpacing: Duration = .seconds(6), margin: Duration = .milliseconds(250)) {
        self.pairSpacing = pairSpacing + margin
    }

    var isEmpty: Bool { readyIndex >= ready.count && held.isEmpty }
    var count: Int { ready.count - readyIndex + held.count }
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
    mutating func hold(_ item: Outgoing, for delay: Duration, now: ContinuousClock.Instant) {
        held.append((now + delay, item, false))
    }

    /// The next message that may go now, or nil (see `nextWake`). `lastSent` tells when the last
    /// request to a number actually left: the pair interval counts from there, whatever delayed it.
    mutating func pop(now: ContinuousClock.Instant, lastSent: (String) -> ContinuousClock.Instant? = { _ in nil }) -> Outgoing? {
        func allowed(_ phone: String) -> ContinuousClock.Instant {
            let fromQueue = nextAllowed[phone] ?? now
            guard let sent = lastSent(phone) else { return fromQueue }
            return max(fromQueue, sent + pairSpacing)
        }
        // Held messages whose time has come go first: they were first in line.
        var best: Int? = nil
        for i in held.indices where held[i].at <= now && allowed(held[i].item.phone) <= now {
            if best == nil || held[i].at < held[best!].at { best = i }
        }
        if let best {
            let item = held.remove(at: best).item
            nextAllowed[item.phone] = now + pairSpacing
            return item
        }
        while readyIndex < ready.count {
            let item = ready[readyIndex]
            readyIndex += 1
            let at = allowed(item.phone)
            if at > now {
                held.append((at, item, true))
                continue
            }
            nextAllowed[item.phone] = now + pairSpacing
            return item
        }
        return nil
    }

    /// Forgets the numbers whose pair interval is over (they hold nothing back any more), so that a
    /// million-message run does not keep a million entries.
    mutating func forgetPast(_ now: ContinuousClock.Instant) {
        nextAllowed = nextAllowed.filter { $0.value > now }
    }

    var remembered: Int { nextAllowed.count }

    /// A message to this number was refused before reaching the tenant, or not sent at all: it does
    /// not count for the pair rule. The number's messages held back for that rule alone may go from
    /// `now` (unless a request to it that did leave still holds them).
    mutating func release(_ phone: String, now: ContinuousClock.Instant) {
        nextAllowed[phone] = nil
        for i in held.indices where held[i].pair && held[i].item.phone == phone && held[i].at > now {
            held[i].at = now
        }
    }

    /// When something held becomes due, if anything is held.
    var nextWake: ContinuousClock.Instant? {
        held.map { max($0.at, nextAllowed[$0.item.phone] ?? $0.at) }.min()
    }
}
