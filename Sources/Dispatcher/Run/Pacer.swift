/// Paces sends from one sender number: grants are at least `1 / (rate × margin)` apart, so no
/// one-second window ever holds more than `rate` sends, and a slot missed is never made up by a
/// burst. The margin (1.5 % by default, about 15 ms a second) absorbs the jitter between our clock and the moment a request reaches Meta (measured: 1 % was not enough on a loaded 2-core machine).
///
/// Throttling from Meta (130429, 4, 80007) pauses every grant until the pause is over.
public actor Pacer {
    public let rate: Double
    private let interval: Duration
    private var next: ContinuousClock.Instant
    private var pausedUntil: ContinuousClock.Instant
    private let clock = ContinuousClock()

    public init(rate: Double, margin: Double = 0.985) {
        self.rate = rate
        interval = .nanoseconds(Int64(1e9 / (rate * margin)))
        next = clock.now
        pausedUntil = clock.now
    }

    /// Waits for this caller's slot. Each caller reserves its slot before sleeping, so callers
    /// queue in order.
    public func slot() async throws {
        let now = clock.now
        let at = max(now, next, pausedUntil)
        next = at + interval
        if at > now { try await clock.sleep(until: at) }
    }

    /// Holds every grant back for `seconds` from now (Meta's `Retry-After`, or our back-off).
    public func pause(seconds: Double) {
        let until = clock.now + .milliseconds(Int64(seconds * 1000))
        if until > pausedUntil { pausedUntil = until }
    }
}
