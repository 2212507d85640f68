/// One webhook POST to store.
struct IngestJob: Sendable {
    var body: [UInt8]
    var signature: String?
    var contents: WebhookContents?
    var parseError: String?
    var time: Double
}

/// Group commit for webhook intake: POSTs that arrive while a transaction is being written wait
/// and go together into the next one, so N concurrent POSTs cost one fsync, not N. Each caller
/// still gets its answer only after its own payload is committed.
///
/// The first caller to find no transaction under way does the writing, for itself and for
/// whoever queues meanwhile; the others wait for their result.
actor IngestBatcher {
    /// The most payloads in one transaction (up to 1,000 statuses each).
    let maxBatch = 32
    private var pending: [(id: Int, job: IngestJob)] = []
    private var finished: [Int: Result<IngestResult, any Error>] = [:]
    private var waiting: [Int: CheckedContinuation<IngestResult, any Error>] = [:]
    private var nextID = 0
    private var writing = false

    func submit(_ job: IngestJob, to store: SQLiteStore) async throws -> IngestResult {
        let id = nextID
        nextID += 1
        pending.append((id, job))
        if !writing {
            writing = true
            while !pending.isEmpty {
                let batch = Array(pending.prefix(maxBatch))
                pending.removeFirst(batch.count)
                let results: [Result<IngestResult, any Error>]
                do {
                    results = try await store.writeBatch(batch.map(\.job))
                } catch {
                    // The transaction itself failed (database locked, disk full): nobody in it is stored.
                    results = Array(repeating: .failure(error), count: batch.count)
                }
                for (entry, result) in zip(batch, results) {
                    if let continuation = waiting.removeValue(forKey: entry.id) {
                        continuation.resume(with: result)
                    } else {
                        finished[entry.id] = result
                    }
                }
            }
            writing = false
        }
        if let result = finished.removeValue(forKey: id) { return try result.get() }
        return try await withCheckedThrowingContinuation { waiting[id] = $0 }
    }
}
