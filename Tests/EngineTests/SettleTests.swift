import Store
import StoreTesting
import Synchronization
import Testing

@testable import Engine

/// A clock whose sleeps return at once, moving its time to their deadline (one sleeper at a time).
/// `onSleep` runs after each move: a test makes things happen at a virtual moment there.
final class VirtualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private let time = Mutex(Instant(offset: .zero))
    let onSleep: @Sendable (Duration) async throws -> Void
    /// Each reading of `now` moves time on by this much (work that takes time between two readings).
    let readCost: Duration

    init(readCost: Duration = .zero, onSleep: @escaping @Sendable (Duration) async throws -> Void = { _ in }) {
        self.readCost = readCost
        self.onSleep = onSleep
    }

    var now: Instant {
        time.withLock {
            $0.offset += readCost
            return $0
        }
    }
    var minimumResolution: Duration { .nanoseconds(1) }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let now = time.withLock { now in
            now = max(now, deadline)
            return now
        }
        try await onSleep(now.offset)
    }
}

@Suite("The settle window in virtual time")
struct SettleTests {
    @Test("with no statuses it waits the whole window, and returns the counts as they are")
    func wholeWindow() async throws {
        let store = try freshStore()
        try await seed(store, phones: ["18095550101", "18095550102"])
        let clock = VirtualClock()
        let real = ContinuousClock.now
        let counts = try await settleWindow(store: store, run: "march", window: .seconds(120), poll: .milliseconds(500), clock: clock) {
            false
        }
        #expect(clock.now.offset == .seconds(120))
        #expect(counts == [.queued: 2])
        // Virtual: far less than the 120 s window, however loaded the machine (240 reads of the
        // store took 12 s in CI with every suite running at once).
        #expect(ContinuousClock.now - real < .seconds(60))
    }

    @Test("the live line sees every look at the store: the counts and the time left, down to zero")
    func observed() async throws {
        let store = try freshStore()
        try await seed(store, phones: ["18095550101"])
        let clock = VirtualClock()
        let seen = Mutex<[Duration]>([])
        _ = try await settleWindow(
            store: store, run: "march", window: .seconds(3), poll: .milliseconds(500), clock: clock, stopped: { false },
            observe: { counts, left in
                #expect(counts == [.queued: 1])
                seen.withLock { $0.append(left) }
            })
        #expect(seen.withLock { $0 } == stride(from: 3000, through: 0, by: -500).map { Duration.milliseconds($0) })
    }

    @Test("a count of the run that takes long is not asked again at once: the next look waits ten times what it took")
    func slowCounts() async throws {
        let store = try freshStore()
        try await seed(store, phones: ["18095550101"])
        // Each count takes 100 ms of (virtual) time, as a million-message run's does: looks a
        // second apart or more (with this clock's readings, about 1.4 s), not about 0.7 s.
        let clock = VirtualClock(readCost: .milliseconds(100))
        let looks = Mutex<[Duration]>([])
        _ = try await settleWindow(
            store: store, run: "march", window: .seconds(30), poll: .milliseconds(500), clock: clock, stopped: { false },
            observe: { _, _ in looks.withLock { $0.append(clock.now.offset) } })
        let at = looks.withLock { $0 }
        #expect(at.count >= 15 && at.count <= 28, "\(at.count) looks in 30 s")
        #expect(zip(at, at.dropFirst()).allSatisfy { $1 - $0 >= .seconds(1) }, "\(at)")

        // Looks 4 s apart (400 ms counts): a stop meanwhile is still seen within a poll.
        let stop = Mutex(false)
        let slower = VirtualClock(readCost: .milliseconds(400)) { now in
            if now >= .seconds(11) { stop.withLock { $0 = true } }
        }
        _ = try await settleWindow(
            store: store, run: "march", window: .seconds(60), poll: .milliseconds(500), clock: slower,
            stopped: { stop.withLock { $0 } })
        #expect(slower.now.offset < .seconds(14), "stopped at 11 s, returned at \(slower.now.offset)")
    }

    @Test("it ends as soon as every message is final, at the next poll")
    func endsWhenFinal() async throws {
        let store = try freshStore()
        let ids = try await seed(store, phones: ["18095550101", "18095550102"])
        let finished = Mutex(false)
        let clock = VirtualClock { now in
            guard now >= .seconds(30), !finished.withLock({ $0 }) else { return }
            finished.withLock { $0 = true }
            // Both refused for good at 30 s (as a status webhook of `failed` would end them).
            let numbers = try await store.recordLedger(outcomes: [], begin: ids, at: 1_772_000_000)
            try await store.recordOutcomes(
                ids.map {
                    .rejected(messageID: $0, attempt: numbers[$0]!, error: SendError(code: 131026, title: "undeliverable"), final: true)
                },
                at: 1_772_000_001)
        }
        let counts = try await settleWindow(store: store, run: "march", window: .seconds(120), poll: .milliseconds(500), clock: clock) {
            false
        }
        #expect(counts == [.failed: 2])
        #expect(clock.now.offset == .seconds(30))
    }

    @Test("a stopped run does not wait")
    func stopped() async throws {
        let store = try freshStore()
        try await seed(store)
        let clock = VirtualClock()
        let counts = try await settleWindow(store: store, run: "march", window: .seconds(120), poll: .milliseconds(500), clock: clock) {
            true
        }
        #expect(counts == [.queued: 1])
        #expect(clock.now.offset == .zero)
    }
}
