/// Paces sends from one sender number: grants are at least `1 / (rate × margin)` apart, so no
/// one-second window ever holds more than `rate` sends, and a slot missed is never made up by a
/// burst. The margin (1.5 % by default, about 15 ms a second) absorbs the jitter between our clock and the moment a request reaches Meta (measured: 1 % was not enough on a loaded 2-core machine).
///
/// Throttling from Meta (130429, 4, 80007) pauses every grant until the pause is over.
public actor Pacer {
    public let rate: Double
    private let interval: Duration
    /// How early a slot may be released without sleeping for it. Waking up once per message costs
    /// more CPU than the send itself at 1,000/s; releasing a few slots together costs at most that
    /// many extra sends in a one-second window, so it is allowed only as far as the margin absorbs
    /// (at 1,000/s: 4 ms, against a margin of 15 sends; at 80/s: none).
    private let early: Duration
    private var next: ContinuousClock.Instant
    private var pausedUntil: ContinuousClock.Instant
    private let clock = ContinuousClock()
    /// The last `limit` releases: no release may make more than `limit` in any one second, however
    /// late a caller woke up (a reserved slot is a promise about time; this is the guarantee).
    private var releases: [ContinuousClock.Instant] = []
    private var oldest = 0
    private let limit: Int
    /// The most releases there were in any one second.
    public private(set) var mostInOneSecond = 0

    public init(rate: Double, margin: Double = 0.985) {
        self.rate = rate
        interval = .nanoseconds(Int64(1e9 / (rate * margin)))
        let spare = Int((rate * (1 - margin)).rounded(.down)) - 2
        early = interval * max(0, min(4, spare))
        limit = max(1, Int(rate.rounded(.down)))
        releases.reserveCapacity(limit)
        next = clock.now
        pausedUntil = clock.now
    }

    /// Waits for this caller's slot. Each caller reserves its slot before sleeping, so callers
    /// queue in order.
    ///
    /// Slots follow a fixed schedule: a caller that arrives a little late (a wake-up is never
    /// exact) takes its slot at once and the schedule does not slip, so the rate is held; one later
    /// than the margin allows (four slots at 1,000/s; none at 80/s, where the margin is less than one
    /// message) restarts the schedule from now, so lateness never bunches into more sends in a
    /// one-second window than the margin absorbs (measured: one slot of catch-up let 51 out at 50/s).
    public func slot() async throws {
        let now = clock.now
        var at = max(next, pausedUntil)
        if now - at > early { at = now }
        next = at + interval
        if at > now + early { try await clock.sleep(until: at) }
        // The release itself: at most `limit` in the trailing second, checked and recorded with no
        // suspension in between.
        while true {
            let now = clock.now
            if releases.count < limit {
                releases.append(now)
            } else {
                let oldestRelease = releases[oldest]
                if now - oldestRelease < .seconds(1) {
                    try await clock.sleep(until: oldestRelease + .seconds(1))
                    continue
                }
                releases[oldest] = now
                oldest = (oldest + 1) % limit
            }
            // Releases in the second ending now (the log holds the last `limit` in order).
            let count = releases.count < limit ? releases.filter { now - $0 < .seconds(1) }.count : countWithin(now)
            mostInOneSecond = max(mostInOneSecond, count)
            return
        }
    }

    private func countWithin(_ now: ContinuousClock.Instant) -> Int {
        // Oldest-first walk from the oldest entry: stop at the first inside the window.
        var i = oldest, skipped = 0
        while skipped < limit && now - releases[i] >= .seconds(1) {
            i = (i + 1) % limit
            skipped += 1
        }
        return limit - skipped
    }

    /// Holds every grant back for `seconds` from now (Meta's `Retry-After`, or our back-off).
    public func pause(seconds: Double) {
        let until = clock.now + .milliseconds(Int64(seconds * 1000))
        if until > pausedUntil { pausedUntil = until }
    }
}
