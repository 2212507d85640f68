/// One webhook POST to store.
struct IngestJob: Sendable {
    var body: [UInt8]
    var signature: String?
    var contents: WebhookContents?
    var parseError: String?
    var time: Double
}

/// Group commit for webhook intake: POSTs that arrive while a transaction is being written wait
/// and go together into the next one, so N concurrent POSTs cost one commit (one fsync), not N.
/// Each caller still gets its answer only after its own payload is committed. Both engines use
/// it: SQLite writes a batch in one transaction with a savepoint per payload, PostgreSQL in one
/// call of `dispatcher_ingest_many` with a subtransaction per payload.
///
/// A caller that finds a writer free writes its own payload; the others queue, and each writer,
/// once its batch is committed, hands the next batch to the oldest caller queued (see `submit`).
actor IngestBatcher {
    /// Writes a batch in one transaction: one result per job, in order; a throw means the
    /// transaction itself failed and none of the batch is stored.
    typealias Write = @Sendable ([IngestJob]) async throws -> [Result<IngestResult, any Error>]

    /// The most payloads in one transaction, and the most statuses (a batch takes at least one
    /// payload, of up to 1,000): a transaction stays well within PostgreSQL's statement timeout.
    let maxBatch = 32
    let maxStatuses = 2_000
    /// Batches written at once. Both engines use 1: SQLite has one writer anyway, and PostgreSQL's
    /// batches deadlocked on each other with four (see `PostgresStore.batcher`).
    let maxWriters: Int
    private var pending: [Entry] = []
    private var waiting: [Int: CheckedContinuation<Turn, Never>] = [:]
    private var nextID = 0
    private var writers = 0

    typealias Entry = (id: Int, job: IngestJob)

    /// What a queued caller is woken with: its payload's result, or a batch to write (its own
    /// payload first).
    private enum Turn {
        case done(Result<IngestResult, any Error>)
        case write([Entry])
    }

    init(maxWriters: Int = 1) { self.maxWriters = max(1, maxWriters) }

    /// The oldest queued payloads, within the limits.
    private func carve() -> [Entry] {
        var count = 0, statuses = 0
        for entry in pending.prefix(maxBatch) {
            let size = entry.job.contents?.statuses.count ?? 0
            if count > 0, statuses + size > maxStatuses { break }
            count += 1
            statuses += size
        }
        defer { pending.removeFirst(count) }
        return Array(pending.prefix(count))
    }

    // Each writer writes one batch, its own payload in it, answers the others in it, and hands the
    // next batch to the oldest caller still queued (or stops writing when none is). So a queue is
    // only ever kept while all `maxWriters` are writing, and a newcomer that finds a writer free
    // finds the queue empty: its batch is its own payload.
    func submit(_ job: IngestJob, write: Write) async throws -> IngestResult {
        let id = nextID
        nextID += 1
        pending.append((id, job))
        var batch: [Entry]
        if writers < maxWriters {
            writers += 1
            batch = carve()
        } else {
            // (Registered before this actor runs anything else: the writers find every queued caller.)
            switch await withCheckedContinuation({ waiting[id] = $0 }) {
            case .done(let result): return try result.get()
            case .write(let given): batch = given
            }
        }
        var results: [Result<IngestResult, any Error>]
        do {
            results = try await write(batch.map(\.job))
            if results.count != batch.count {
                results = Array(
                    repeating: .failure(StoreError("the webhook batch was answered for \(results.count) of \(batch.count) payloads")),
                    count: batch.count)
            }
        } catch {
            // The transaction itself failed (database locked, disk full): nobody in it is stored.
            results = Array(repeating: .failure(error), count: batch.count)
        }
        var mine: Result<IngestResult, any Error>? = nil
        for (entry, result) in zip(batch, results) {
            if entry.id == id {
                mine = result
            } else {
                waiting.removeValue(forKey: entry.id)?.resume(returning: .done(result))
            }
        }
        // Answered as soon as its own payload is committed: the next batch is someone else's to
        // write. (A writer that kept going while others queued was answered only when the queue
        // ran dry: seconds, under steady load.)
        if !pending.isEmpty {
            let next = carve()
            if let continuation = waiting.removeValue(forKey: next[0].id) {
                continuation.resume(returning: .write(next))
            } else {
                pending.insert(contentsOf: next, at: 0)
                writers -= 1
            }
        } else {
            writers -= 1
        }
        guard let mine else { throw StoreError("the webhook payload was not written (internal error: lost from the batch)") }
        return try mine.get()
    }
}
