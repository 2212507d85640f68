import Tracking

/// Group commit for the send ledger: attempts and outcomes that arrive while a transaction is
/// being written go together into the next one. Every caller returns only once its own entry is
/// committed, so "recorded as sending before the request leaves" holds for each message.
actor LedgerWriter {
    enum Operation {
        case begin(String)
        case outcome(AttemptOutcome)
    }

    private let store: any DispatchStore
    private var pending: [(id: Int, operation: Operation)] = []
    private var finished: [Int: Result<Int, any Error>] = [:]
    private var waiting: [Int: CheckedContinuation<Int, any Error>] = [:]
    private var nextID = 0
    private var writing = false

    init(store: any DispatchStore) { self.store = store }

    /// Records the attempt (`sending`) and returns its number.
    func begin(_ messageID: String) async throws -> Int {
        try await submit(.begin(messageID))
    }

    func record(_ outcome: AttemptOutcome) async throws {
        _ = try await submit(.outcome(outcome))
    }

    private func submit(_ operation: Operation) async throws -> Int {
        let id = nextID
        nextID += 1
        pending.append((id, operation))
        if !writing {
            writing = true
            while !pending.isEmpty {
                let batch = pending
                pending.removeAll()
                var begins: [String] = []
                var outcomes: [AttemptOutcome] = []
                for entry in batch {
                    switch entry.operation {
                    case .begin(let message): begins.append(message)
                    case .outcome(let outcome): outcomes.append(outcome)
                    }
                }
                var results: [Int: Result<Int, any Error>] = [:]
                do {
                    let time = wallClock()
                    // Outcomes first: a message requeued by one of them may begin again in this same batch.
                    if !outcomes.isEmpty { try await store.recordOutcomes(outcomes, at: time) }
                    let numbers = begins.isEmpty ? [:] : try await store.beginAttempts(messageIDs: begins, at: time)
                    for entry in batch {
                        if case .begin(let message) = entry.operation { results[entry.id] = .success(numbers[message] ?? 0) } else { results[entry.id] = .success(0) }
                    }
                } catch {
                    for entry in batch { results[entry.id] = .failure(error) }
                }
                for (entryID, result) in results {
                    if let continuation = waiting.removeValue(forKey: entryID) { continuation.resume(with: result) } else { finished[entryID] = result }
                }
            }
            writing = false
        }
        if let result = finished.removeValue(forKey: id) { return try result.get() }
        return try await withCheckedThrowingContinuation { waiting[id] = $0 }
    }
}
