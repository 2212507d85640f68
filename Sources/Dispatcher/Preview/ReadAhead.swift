import Foundation

/// Reads, validates and (as `Previewer.rendering` says) renders a manifest on a thread of its own
/// while the caller's thread hands over what was read (a preview's CSV and estimate, a billing
/// run's batches for the store): two cores at work instead of one. Items come to the caller in manifest order, in batches; at most `depth` batches wait,
/// so memory stays bounded whatever the manifest's size.
final class ReadAhead: @unchecked Sendable {
    /// A struct rather than an enum: the caller reads its fields in place, where taking an enum's
    /// payload apart copied the invoice (a dozen retains, and as many releases).
    struct Item: Sendable {
        var invoice: Invoice
        /// A valid invoice's messages, rendered on the reader thread, or nil: to be rendered on the
        /// caller's (`Previewer.rendering`).
        var rendered: Result<[RenderedMessage], InvoiceProblems>?
        /// Why an invoice with nothing due is skipped; nil for a valid invoice.
        var skipped: String?

        static func invoice(_ invoice: Invoice, _ rendered: Result<[RenderedMessage], InvoiceProblems>?) -> Item {
            Item(invoice: invoice, rendered: rendered, skipped: nil)
        }

        static func skipped(_ invoice: Invoice, _ reason: String) -> Item {
            Item(invoice: invoice, rendered: nil, skipped: reason)
        }
    }

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var batches: [[Item]] = []
    /// Batches the caller is done with, dropped on the reader thread (`recycle`).
    private var spent: [[Item]] = []
    private var finished: Result<ImportSummary, any Error>?
    private var stopped = false
    private let depth: Int
    /// Whether more than half of `depth` batches wait: the caller is the slower thread. Read and
    /// written on the reader thread only (set as each batch is handed over).
    private var behind = false

    init(depth: Int = 8) { self.depth = depth }

    /// On the reader thread: whether the caller is behind, so that work which could go either side
    /// (rendering) is better done here (`Previewer.Rendering.balanced`).
    var callerIsBehind: Bool { behind }

    /// Starts the reader thread: `read` imports, handing each item to `emit`.
    func start(batchSize: Int = 256, _ read: @escaping @Sendable (_ emit: (Item) throws -> Void) throws -> ImportSummary) {
        let thread = Thread { [self] in
            var batch: [Item] = []
            batch.reserveCapacity(batchSize)
            let result = Result {
                do {
                    let summary = try read { item in
                        batch.append(item)
                        if batch.count >= batchSize {
                            try put(batch)
                            batch.removeAll(keepingCapacity: true)
                        }
                    }
                    if !batch.isEmpty { try put(batch) }
                    return summary
                } catch {
                    // What was read before the error is handed over first, as a reader on the
                    // caller's thread would have (unless the caller stopped: then nobody takes it).
                    if !batch.isEmpty { try? put(batch) }
                    throw error
                }
            }
            condition.lock()
            finished = result
            condition.broadcast()
            condition.unlock()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func put(_ batch: [Item]) throws {
        var dropped: [[Item]] = []
        condition.lock()
        while batches.count >= depth && !stopped { condition.wait() }
        if stopped {
            condition.unlock()
            throw CancellationError()
        }
        batches.append(batch)
        behind = batches.count > depth / 2
        swap(&dropped, &spent)
        condition.broadcast()
        condition.unlock()
        // Freed here, outside the lock: memory goes back to the allocator on the thread that took
        // it, instead of both threads contending for one arena's lock.
        dropped = []
    }

    /// The caller is done with `batch`: it is dropped on the reader thread, at its next hand-over.
    func recycle(_ batch: consuming [Item]) {
        condition.lock()
        if !stopped && finished == nil { spent.append(batch) }
        condition.unlock()
    }

    /// The next batch, or nil once the reader is done (then `summary` says how it ended).
    func next() -> [Item]? {
        condition.lock()
        defer { condition.unlock() }
        while batches.isEmpty && finished == nil { condition.wait() }
        guard !batches.isEmpty else { return nil }
        condition.broadcast()
        return batches.removeFirst()
    }

    /// How the reader ended (after `next()` returned nil, or after `stop()`): its summary or its error.
    func summary() throws -> ImportSummary {
        condition.lock()
        defer { condition.unlock() }
        while finished == nil { condition.wait() }
        return try finished!.get()
    }

    /// The caller gives up (its own callback threw): the reader stops at its next batch.
    func stop() {
        condition.lock()
        stopped = true
        batches.removeAll()
        condition.broadcast()
        condition.unlock()
    }
}
