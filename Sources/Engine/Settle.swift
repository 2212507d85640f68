import Store

/// The settle window: waits until every message of the run is final (delivered, read, failed,
/// skipped), the window closes, or `stopped` says the run was stopped; returns the run's counts
/// then. `observe` sees the counts and the time left at every look (the console's live line). Statuses come from a receiver writing to the same store; the store is asked every `poll`, or after ten times what the last count took if that is longer.
/// On the caller's clock: the real one in a run, a virtual one in the tests.
func settleWindow<C: Clock<Duration>>(
    store: any DispatchStore, run: String, window: Duration, poll: Duration, clock: C, stopped: () -> Bool,
    observe: ([MessageState: Int], Duration) -> Void = { _, _ in }
) async throws -> [MessageState: Int] {
    let deadline = clock.now.advanced(by: window)
    while true {
        let asked = clock.now
        let counts = try await store.stateCounts(run: run)
        let open = counts.filter { !$0.key.isFinal }.values.reduce(0, +)
        let now = clock.now
        observe(counts, now < deadline ? now.duration(to: deadline) : .zero)
        if open == 0 || now >= deadline || stopped() { return counts }
        // Counting a run reads all of its messages (107 ms at a million on SQLite): the window
        // looks again after ten times what the count took, at the soonest, so that a long window
        // over a big run costs at most a tenth of a core.
        let next = min(now.advanced(by: max(poll, asked.duration(to: now) * 10)), deadline)
        // Asleep in steps of `poll` meanwhile: a stop is seen as soon as before.
        var slept = now
        repeat {
            try await clock.sleep(until: min(slept.advanced(by: poll), next), tolerance: nil)
            slept = clock.now
        } while slept < next && !stopped()
    }
}
