import Store
import Testing

@Suite("withDeadline: the one deadline helper")
struct DeadlineTests {
    struct Boom: Error {}

    @Test("a body that ignores cancellation is left behind: the caller is answered on time")
    func leftBehind() async throws {
        let started = ContinuousClock.now
        do {
            // A detached task is not cancelled with its caller: this body cannot be stopped.
            _ = try await withDeadline(.milliseconds(100)) {
                await Task.detached { try? await Task.sleep(for: .seconds(30)) }.value
                return 1
            }
            Issue.record("no deadline")
        } catch let error as DeadlineExceeded {
            #expect(error.limit == .milliseconds(100))
        }
        // Not awaited: long before the body's 30 s (the bound is loose for a machine under load).
        #expect(ContinuousClock.now - started < .seconds(20))
    }

    @Test("within the time: the body's value, or its own error")
    func answered() async throws {
        #expect(try await withDeadline(.seconds(5)) { 42 } == 42)
        await #expect(throws: Boom.self) { try await withDeadline(.seconds(5)) { () throws -> Int in throw Boom() } }
    }

    @Test("a cancellable body is cancelled when the time is up")
    func cancelled() async throws {
        let seen = AsyncStream<Bool>.makeStream()
        _ = try? await withDeadline(.milliseconds(50)) {
            do {
                try await Task.sleep(for: .seconds(30))
                seen.continuation.yield(false)
            } catch {
                seen.continuation.yield(Task.isCancelled)
            }
        }
        for await wasCancelled in seen.stream {
            #expect(wasCancelled)
            break
        }
    }
}
