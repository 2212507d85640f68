import Testing
@testable import Dispatcher

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
