import Dispatcher

/// Paces requests from callers that each send one message (the single-invoice API): each waits
/// for its turn from a `RateBudget`. The billing run's loop asks its own budget directly.
public actor Pacer {
    public let rate: Double
    private var budget: RateBudget
    private let clock = ContinuousClock()

    public init(rate: Double, margin: Double = 0.985) {
        self.rate = rate
        budget = RateBudget(rate: rate, margin: margin)
    }

    /// The most releases there were in any one second.
    public var mostInOneSecond: Int { budget.mostInOneSecond }

    /// Waits for this caller's turn. An actor is reentrant, so callers that wake together each
    /// check again; the budget never lets more go than the rate allows.
    public func slot() async throws {
        while true {
            let now = clock.now
            if budget.available(now: now) > 0 {
                budget.take(1, now: now)
                return
            }
            try await clock.sleep(until: budget.due(1, now: now))
        }
    }

    /// Holds every release back for `seconds` from now (Meta's `Retry-After`, or our back-off).
    public func pause(seconds: Double) {
        budget.pause(seconds: seconds, now: clock.now)
    }
}
