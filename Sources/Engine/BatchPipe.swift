import Dispatch
import Foundation
import Synchronization

/// Batches handed from a synchronous producer (the manifest reader, on its own thread) to an async
/// consumer (the store's writes), with at most `depth` batches waiting: the producer blocks while
/// the consumer is behind, so memory stays bounded whatever the manifest's size.
final class BatchPipe<Batch: Sendable>: Sendable {
    let batches: AsyncStream<Batch>
    private let continuation: AsyncStream<Batch>.Continuation
    private let room: DispatchSemaphore
    private let closed = Atomic<Bool>(false)

    init(depth: Int) {
        (batches, continuation) = AsyncStream.makeStream(of: Batch.self)
        room = DispatchSemaphore(value: depth)
    }

    /// Producer: hands over a batch, waiting while `depth` are waiting. Throws `CancellationError`
    /// once the consumer has given up, so that the producer stops reading.
    func put(_ batch: Batch) throws {
        room.wait()
        if closed.load(ordering: .acquiring) {
            room.signal()
            throw CancellationError()
        }
        continuation.yield(batch)
    }

    /// Producer: no more batches.
    func finish() { continuation.finish() }

    /// Consumer: one batch is dealt with; its room is free again.
    func taken() { room.signal() }

    /// Consumer: gives up. A producer waiting in `put` wakes and throws.
    func close() {
        closed.store(true, ordering: .releasing)
        room.signal()
        continuation.finish()
    }
}

/// Runs blocking work on a thread of its own, not on the concurrency pool (whose few threads must
/// never block), and returns its result.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
