/// How soon, and how many times, a refused message is sent again within one billing run or one
/// `/send-invoice` request, by its error class: the one schedule both use. (Whether
/// `dispatcher retry` may send it again later, and what the reports call "retryable", is
/// `ErrorClass.isRetryable` and `earliestRetry`.)
public struct RetryPolicy: Sendable, Equatable {
    /// Transient failures (`ErrorClass.transient`) retried this many times; then the message fails.
    public var maxTransientRetries: Int
    /// The first transient back-off; each next one doubles (±25 % jitter in a run), up to `maxBackoff`.
    public var firstBackoff: Duration
    public var maxBackoff: Duration
    /// 131056 (a second message to one user within 6 s) sent again after 4^x seconds.
    public var retriesPairRate: Bool
    /// For a caller that waits (`/send-invoice`): how many times Meta's 6-second pair window is
    /// waited out (`pairWindow`) before the message fails. A run requeues the tenant instead.
    public var pairWaits: Int

    public init(maxTransientRetries: Int, firstBackoff: Duration, maxBackoff: Duration, retriesPairRate: Bool, pairWaits: Int = 0) {
        self.maxTransientRetries = maxTransientRetries
        self.firstBackoff = firstBackoff
        self.maxBackoff = maxBackoff
        self.retriesPairRate = retriesPairRate
        self.pairWaits = pairWaits
    }

    /// Meta's pair rule: one message to a user per 6 seconds (after a burst).
    public static let pairWindow: Duration = .seconds(6)

    /// A billing run: five transient retries over about a minute (1, 2, 4, 8, 16 s), and the pair
    /// rule's wait for that tenant only.
    public static let billingRun = RetryPolicy(
        maxTransientRetries: 5, firstBackoff: .seconds(1), maxBackoff: .seconds(60), retriesPairRate: true)

    /// The landlord UI waits for its answer: two quick retries (0.5 s, 1 s), and Meta's 6-second
    /// pair window waited out once (two invoices to one tenant in a row are both sent).
    public static let interactive = RetryPolicy(
        maxTransientRetries: 2, firstBackoff: .milliseconds(500), maxBackoff: .seconds(2), retriesPairRate: false, pairWaits: 1)

    /// Whether a refusal of this class is sent again now (after its delay), `transientRetries`
    /// transient retries having been made before.
    public func retriesNow(_ errorClass: ErrorClass, transientRetries: Int) -> Bool {
        switch errorClass {
        case .throttled: true
        case .pairRate: retriesPairRate
        case .transient: transientRetries < maxTransientRetries
        case .waitDay, .halt, .final, .unknownCode: false
        }
    }

    /// The wait before transient retry `retry` (1 for the first): `firstBackoff` doubled each time,
    /// times `jitter` (0.75…1.25 in a run, so that a crowd of retries spreads out), at most `maxBackoff`.
    public func backoff(retry: Int, jitter: Double = 1) -> Duration {
        let base = min(maxBackoff, firstBackoff * (1 << min(30, max(0, retry - 1))))
        return base * jitter
    }

    /// Throttling (130429, 4, 80007): the whole sender pauses for Meta's `Retry-After`, or 1, 2, 4…
    /// seconds (at most 60) for its `retry`-th throttle of the same message.
    public static func throttlePause(retryAfter: Double?, retry: Int) -> Double {
        retryAfter ?? min(60, Double(1 << min(6, max(0, retry - 1))))
    }

    /// Meta's pair rate (131056): this recipient only, again after 4^x seconds (1, 4, 16…).
    public static func pairDelay(retry: Int) -> Duration {
        .seconds(1 << (2 * min(10, max(0, retry))))
    }
}
