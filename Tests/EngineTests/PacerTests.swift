import Testing
import WhatsApp

@testable import Engine

@Suite("Pacer")
struct PacerTests {
    @Test("however late callers arrive, no second sees more releases than the rate")
    func lateCallers() async throws {
        let pacer = Pacer(rate: 20)
        // 10 callers take their slots; then a stall of 600 ms; then 40 more arrive together.
        for _ in 0..<10 { try await pacer.slot() }
        try await Task.sleep(for: .milliseconds(600))
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<40 { group.addTask { try await pacer.slot() } }
            try await group.waitForAll()
        }
        #expect(await pacer.mostInOneSecond <= 20)
        // 50 releases at 20 a second take at least two seconds after the first twenty.
        #expect(ContinuousClock.now - started >= .milliseconds(1400))
    }

    @Test("throttling pauses every release")
    func pause() async throws {
        let pacer = Pacer(rate: 1000)
        try await pacer.slot()
        await pacer.pause(seconds: 0.3)
        let started = ContinuousClock.now
        try await pacer.slot()
        #expect(ContinuousClock.now - started >= .milliseconds(290))
    }
}

@Suite("Rate budget")
struct RateBudgetTests {
    /// Releases as much as the budget allows at each of `times` (milliseconds from the start).
    func drive(_ budget: inout RateBudget, start: ContinuousClock.Instant, at times: [Int]) -> [ContinuousClock.Instant] {
        var released: [ContinuousClock.Instant] = []
        for ms in times {
            let now = start + .milliseconds(ms)
            let n = budget.available(now: now)
            budget.take(n, now: now)
            released += Array(repeating: now, count: n)
        }
        return released
    }

    func most(inOneSecond releases: [ContinuousClock.Instant]) -> Int {
        var most = 0, first = 0
        for last in releases.indices {
            while releases[last] - releases[first] >= .seconds(1) { first += 1 }
            most = max(most, last - first + 1)
        }
        return most
    }

    @Test("at 1,000/s: 98.5 % of the rate when asked every 5 ms, never more than 985 in any second")
    func steady() {
        let start = ContinuousClock.now
        var budget = RateBudget(rate: 1000, now: start)
        let released = drive(&budget, start: start, at: Array(stride(from: 0, through: 10_000, by: 5)))
        #expect(released.count >= 9_840 && released.count <= 9_860)
        #expect(most(inOneSecond: released) <= 985)
        #expect(budget.mostInOneSecond == most(inOneSecond: released))
    }

    @Test("a late caller catches up by at most the burst, and the trailing second stays under the limit")
    func lateCallers() {
        let start = ContinuousClock.now
        var budget = RateBudget(rate: 1000, now: start)
        // Every 5 ms, with stalls of 12, 40 and 300 ms.
        var times = Array(stride(from: 0, through: 2_000, by: 5))
        times += [2_012, 2_052, 2_352]
        times += Array(stride(from: 2_355, through: 5_000, by: 5))
        let released = drive(&budget, start: start, at: times)
        let counts = Dictionary(grouping: released, by: { $0 }).mapValues(\.count)
        #expect(counts.values.max()! <= 15)
        #expect(most(inOneSecond: released) <= 985)
    }

    @Test("at 80/s: 79 in a second at most, and at least 98 % of the rate")
    func lowRate() {
        let start = ContinuousClock.now
        var budget = RateBudget(rate: 80, now: start)
        let released = drive(&budget, start: start, at: Array(stride(from: 0, through: 20_000, by: 3)))
        #expect(most(inOneSecond: released) <= 79)
        #expect(Double(released.count) / 20 >= 78.4)
    }

    @Test("a throttle pauses every release, and the budget restarts empty")
    func pause() {
        let start = ContinuousClock.now
        var budget = RateBudget(rate: 1000, now: start)
        _ = drive(&budget, start: start, at: Array(stride(from: 0, through: 100, by: 5)))
        budget.pause(seconds: 0.5, now: start + .milliseconds(100))
        #expect(drive(&budget, start: start, at: Array(stride(from: 105, through: 595, by: 5))).isEmpty)
        let after = drive(&budget, start: start, at: [600, 605])
        #expect(after.count <= 5)
        #expect(budget.due(10, now: start + .milliseconds(605)) > start + .milliseconds(605))
    }

    @Test("each throttling episode slows the rest of the run by 1.5 %, down to 90 %; answers within one pause count once")
    func slowerAfterThrottling() {
        let start = ContinuousClock.now
        var budget = RateBudget(rate: 1000, now: start)
        #expect(budget.limit == 985)
        budget.pause(seconds: 1, now: start)
        budget.pause(seconds: 1, now: start + .milliseconds(3))  // another answer of the same episode
        #expect(budget.limit == 970)
        let released = drive(&budget, start: start, at: Array(stride(from: 1_000, through: 11_000, by: 5)))
        #expect(most(inOneSecond: released) <= 970)
        #expect(released.count >= 9_650 && released.count <= 9_720)
        for n in 0..<20 { budget.pause(seconds: 0.01, now: start + .seconds(20 + n)) }
        #expect(budget.limit == 900)
    }
}

@Suite("Why a run stopped")
struct StopReasonTests {
    let database = GraphError(code: nil, title: "the database could not record a send", httpStatus: 0)
    let token = GraphError(code: 190, title: "Error validating access token", httpStatus: 401)

    @Test("a halt after SIGINT is what the run reports (a database failing while stopping is not hidden)")
    func haltReplacesInterrupt() {
        let control = RunControl()
        control.stop(.interrupted)
        control.stop(.halted(database))
        #expect(control.stopReason == .halted(database))
    }

    @Test("otherwise the first reason stands")
    func firstReasonStands() {
        let halted = RunControl()
        halted.stop(.halted(token))
        halted.stop(.halted(database))
        halted.stop(.interrupted)
        #expect(halted.stopReason == .halted(token))
        let interrupted = RunControl()
        interrupted.stop(.interrupted)
        interrupted.stop(.interrupted)
        #expect(interrupted.stopReason == .interrupted)
    }
}
