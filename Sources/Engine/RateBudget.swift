import Dispatcher

/// How many requests one sender number may release now: a token bucket refilled at the rate less a
/// margin, with a hard cap on the trailing second. A plain value owned by one task (the dispatch
/// loop, or the `Pacer` actor): asking it costs no thread hop.
///
/// - The bucket refills at `rate × margin` (1.5 % below the rate by default, about 15 sends a
///   second at 1,000/s). The margin absorbs the jitter between our release and the moment a
///   request reaches Meta (1 % was measured not to be enough on a loaded 2-core machine).
/// - It holds at most `burst` tokens (15 ms of sends, at least 2): a release that comes late (a
///   wake-up is never exact) catches up by up to that many sends, and no more.
/// - Whatever the bucket says, no release makes more than `limit` releases in the second ending
///   then: the rate less 1.5 % (985 at 1,000/s), or less one message at low rates (79 at 80/s). The bucket is the schedule; this is the
///   guarantee, with room below Meta's count for a request that travels slower than the next.
///   (Capped at the rate itself, a loop catching up sat at 1,000 for whole seconds and the
///   sandbox, counting arrivals, answered 130429 a few times a run; 99 % was still not enough.)
/// - Throttling from Meta (130429, 4, 80007) pauses it; it restarts empty, and 1.5 % slower for
///   the rest of the run (down to 90 % of the rate): a throttle says the way to Meta jitters more
///   than the margin absorbs, and each costs a whole second of pause.
struct RateBudget {
    let rate: Double
    /// Tokens added per second.
    private(set) var refill: Double
    let burst: Double
    /// The most releases allowed in any one second.
    private(set) var limit: Int
    private var tokens: Double
    private var updated: ContinuousClock.Instant
    private var pausedUntil: ContinuousClock.Instant
    /// Releases of the trailing second, oldest first: (when, how many). Releases come in groups (a
    /// tick of the loop), so this holds a few hundred entries at most.
    private var window: [(at: ContinuousClock.Instant, count: Int)] = []
    private var windowStart = 0
    private var inWindow = 0
    /// The most releases there were in any one second.
    private(set) var mostInOneSecond = 0

    /// The share of its rate a budget releases in any second by default (`margin` and `cap`).
    static let defaultMargin = 0.985

    init(
        rate: Double, margin: Double = defaultMargin, cap: Double = defaultMargin, burstSeconds: Double = 0.015,
        now: ContinuousClock.Instant = .now
    ) {
        self.rate = rate
        refill = rate * margin
        burst = max(2, (rate * burstSeconds).rounded(.down))
        // At low rates the headroom is one message (79 at 80/s): a whole 1.5 % would round to two.
        limit = max(1, Int(rate.rounded(.down)) - max(1, Int((rate * (1 - cap)).rounded())))
        tokens = 1
        updated = now
        pausedUntil = now
    }

    /// How many may go now.
    mutating func available(now: ContinuousClock.Instant) -> Int {
        if now < pausedUntil { return 0 }
        refresh(now: now)
        forget(before: now)
        return max(0, min(Int(tokens.rounded(.down)), limit - inWindow))
    }

    /// Records `count` releases at `now` (no more than `available` said).
    mutating func take(_ count: Int, now: ContinuousClock.Instant) {
        guard count > 0 else { return }
        refresh(now: now)
        forget(before: now)
        tokens -= Double(count)
        if let last = window.last, last.at == now, window.count > windowStart {
            window[window.count - 1].count += count
        } else {
            window.append((now, count))
        }
        inWindow += count
        mostInOneSecond = max(mostInOneSecond, inWindow)
    }

    /// When `count` sends (at most `burst`) may go, assuming nothing else is released before.
    func due(_ count: Int, now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        let wanted = min(Double(count), burst)
        let start = max(now, pausedUntil)
        var current = tokens
        if start > updated { current = min(burst, tokens + seconds(start - updated) * refill) }
        var at = current >= wanted ? start : start + .nanoseconds(Int64((wanted - current) / refill * 1e9))
        // The trailing second must have room for them too.
        var room = limit - inWindow
        var i = windowStart
        while room < Int(wanted), i < window.count {
            at = max(at, window[i].at + .seconds(1))
            room += window[i].count
            i += 1
        }
        return at
    }

    /// Holds every release back for `seconds` from now (Meta's `Retry-After`, or our back-off).
    /// `slowDown`: a throttling episode also lowers the rate a little for the rest of the run; an
    /// outage (the circuit breaker) does not, since it says nothing about our pace.
    mutating func pause(seconds: Double, now: ContinuousClock.Instant, slowDown: Bool = true) {
        let until = now + .milliseconds(Int64(seconds * 1000))
        guard until > pausedUntil else { return }
        if now >= pausedUntil && slowDown {
            // A new throttling episode (the answers of requests already in flight are the same one).
            let step = rate * 0.015
            refill = max(rate * 0.9, refill - step)
            limit = max(1, min(limit, Int(max(rate * 0.9, Double(limit) - step).rounded(.down))))
        }
        pausedUntil = until
        tokens = 0
        updated = until
    }

    private mutating func refresh(now: ContinuousClock.Instant) {
        guard now > updated else { return }
        tokens = min(burst, tokens + seconds(now - updated) * refill)
        updated = now
    }

    private mutating func forget(before now: ContinuousClock.Instant) {
        while windowStart < window.count, now - window[windowStart].at >= .seconds(1) {
            inWindow -= window[windowStart].count
            windowStart += 1
        }
        if windowStart > 512, windowStart * 2 > window.count {
            window.removeFirst(windowStart)
            windowStart = 0
        }
    }
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
