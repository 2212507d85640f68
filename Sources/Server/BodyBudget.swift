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
