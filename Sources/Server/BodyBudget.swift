import HTTPTypes
import Synchronization

/// The bytes of webhook bodies held in memory at once, across every connection: a body is counted
/// chunk by chunk as it arrives and until it is stored. Without it, each of the 2,000 connections
/// `serve` takes could hold a body of up to the cap (3.5 MB) before its signature is even checked:
/// 60 unsigned 3.4 MB POSTs held open took 225 MB, all 2,000 would take 7 GB. Past the budget a
/// webhook is answered 503 (Meta sends it again later) and its connection closed.
final class BodyBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// Takes `bytes` from the budget; false (and nothing taken) when that would pass it.
    func reserve(_ bytes: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard current + bytes <= limit else { return false }
            let (exchanged, original) = used.compareExchange(
                expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.subtract(bytes, ordering: .relaxed)
    }

    /// Bytes held now (for tests).
    var inUse: Int { used.load(ordering: .relaxed) }
}

/// One webhook body as it arrives, on either path (the router's handler, `WebhookFastPath`): the
/// same cap, share of the budget and deadline, so that both refuse alike.
struct BodyAdmission {
    let budget: BodyBudget
    let maxBytes: Int
    let deadline: Duration
    /// When the request's head arrived (the router: when its handler began).
    let since: ContinuousClock.Instant
    /// Bytes taken so far, and this body's share of the budget.
    private(set) var received = 0
    private(set) var reserved = 0

    init(budget: BodyBudget, maxBytes: Int, deadline: Duration, since: ContinuousClock.Instant) {
        self.budget = budget
        self.maxBytes = maxBytes
        self.deadline = deadline
        self.since = since
    }

    /// Why a body is refused: the metric's reason, and the error to answer.
    struct Refusal: Error {
        var reason: String
        var error: APIError
    }

    /// Takes a chunk of `bytes`, or says why the body is refused (nothing more is to be read).
    mutating func admit(_ bytes: Int) -> Refusal? {
        guard received + bytes <= maxBytes else {
            return Refusal(reason: "too_large", error: APIError(.contentTooLarge, "the body is larger than \(maxBytes) bytes"))
        }
        guard budget.reserve(bytes) else {
            return Refusal(
                reason: "busy",
                error: APIError(
                    .serviceUnavailable, "too many webhook bodies at once; retry later", headers: DispatcherServer.closeAndRetry))
        }
        reserved += bytes
        received += bytes
        guard ContinuousClock.now - since <= deadline else {
            return Refusal(
                reason: "too_slow",
                error: APIError(.requestTimeout, "the body did not arrive within \(deadline)", headers: [.connection: "close"]))
        }
        return nil
    }

    /// Gives this body's share back (once answered, or dropped).
    mutating func release() {
        budget.release(reserved)
        reserved = 0
    }
}
