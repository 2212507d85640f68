import Synchronization

/// Thrown by `withDeadline` when its time is up.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public var limit: Duration
    public var description: String { "did not finish within \(limit)" }
}

/// The one deadline helper: `body`'s result, or `DeadlineExceeded` once `limit` has passed. `body`
/// runs in a task of its own; when the time is up it is cancelled and left behind, not awaited (a
/// query on a connection the server has cut, a client's shutdown, may never complete), so the caller
/// is answered on time. A task group cannot do this: it waits for every child. Cancelling the
/// caller cancels `body`.
public func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let answer = FirstAnswer<T>()
    let work = Task {
        do { answer.give(.success(try await body())) } catch { answer.give(.failure(error)) }
    }
    let timer = Task {
        try await Task.sleep(for: limit)
        answer.give(.failure(DeadlineExceeded(limit: limit)))
        work.cancel()
    }
    defer { timer.cancel() }
    return try await withTaskCancellationHandler {
        try await answer.value()
    } onCancel: {
        work.cancel()
    }
}

/// The first of several results, for one waiter.
final class FirstAnswer<T: Sendable>: Sendable {
    private let state = Mutex<(result: Result<T, any Error>?, waiter: CheckedContinuation<T, any Error>?)>((nil, nil))

    func give(_ result: Result<T, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }

    func value() async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<T, any Error>? in
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
