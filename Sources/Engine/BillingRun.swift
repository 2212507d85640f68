import Foundation
import Logging
public import Store
import WhatsApp

/// A whole billing run, as the CLI, a test or (later) the server drives it: the sender's lease
/// (taken before preparing, which resolves what a crash left `sending`; renewed beside the run, and
/// if another process takes it the run halts; given back after the last send), preparing, sending,
/// the run's status as it goes (settling, then done; or halted with the reason, or interrupted),
/// and the settle window. Reports, printing and statistics are the caller's.
///
/// `perform` does it all; `send` and `conclude` are its two halves, for a caller that reports
/// something between them (the CLI's `--stats`).
public struct BillingRun: Sendable {
    public let engine: RunEngine
    public let run: String
    /// How long a lease lasts unless renewed (renewed at a third of it).
    public var leaseSeconds: Double
    /// If another run holds the sender, wait this long for it (zero: refuse at once with `SenderBusy`).
    public var waitForSender: Duration
    /// How long to wait for statuses after the last send.
    public var settleWindow: Duration
    /// A run that sent nothing now (a re-run with nothing left) does not wait for statuses: those
    /// of earlier sends arrive through `serve`, and `report` shows them.
    public var settleOnlyAfterSends = true

    public init(engine: RunEngine, run: String, leaseSeconds: Double = 60, waitForSender: Duration = .zero, settleWindow: Duration) {
        self.engine = engine
        self.run = run
        self.leaseSeconds = leaseSeconds
        self.waitForSender = waitForSender
        self.settleWindow = settleWindow
    }

    /// How the run ended: the options it was sent with, why it stopped (nil: the queue is empty),
    /// its record as stored and its messages' states.
    public struct Outcome: Sendable {
        public var options: RunOptions
        public var stop: StopReason?
        public var record: RunRecord
        public var counts: [MessageState: Int]
    }

    /// The whole run: `send`, then `conclude`.
    public func perform(
        prepare: (RunEngine) async throws -> RunOptions, progress: (@Sendable (RunProgress) -> Void)? = nil
    ) async throws -> Outcome {
        let (options, stop) = try await send(prepare: prepare, progress: progress)
        let (record, counts) = try await conclude(stop: stop)
        return Outcome(options: options, stop: stop, record: record, counts: counts)
    }

    /// Takes the sender's lease (throws `SenderBusy` if another run keeps it past `waitForSender`),
    /// prepares with `prepare`, calls `beforeSending`, sends, and gives the lease back whatever
    /// happened. Returns the options and why sending stopped.
    public func send(
        prepare: (RunEngine) async throws -> RunOptions, beforeSending: (RunOptions) async throws -> Void = { _ in },
        progress: (@Sendable (RunProgress) -> Void)? = nil
    ) async throws -> (options: RunOptions, stop: StopReason?) {
        let lease = SenderLeaseKeeper(
            store: engine.store, sender: engine.client.configuration.phoneNumberID, run: run, ttl: leaseSeconds)
        try await lease.acquire(wait: waitForSender)
        engine.logger.debug("run: sender lease acquired")
        let engine = self.engine
        // Renewed beside the run, in a child task that ends with it.
        return try await withThrowingTaskGroup(of: Void.self) { group in
            let lost = Flag()
            group.addTask {
                await lease.keep { reason in
                    lost.set()
                    engine.halt(reason)
                }
            }
            let result: Result<(RunOptions, StopReason?), any Error>
            do {
                let options = try await prepare(engine)
                do {
                    try await beforeSending(options)
                } catch {
                    // Refused before its first request (a template not approved, over --max-cost):
                    // a run checked but not stored yet is stored now, queued, as the report and a
                    // re-run expect.
                    await engine.storeUnsent(run: run)
                    throw error
                }
                // The run's pace, reserved in the store ahead, so that `/send-invoice` calls on any
                // machine take only what is left of the number's rate (`SendSlots`) while it sends.
                // The first seconds are reserved before the first request, then kept ahead beside it.
                await reserve(rate: options.rate)
                group.addTask { await reserveSlots(rate: options.rate) }
                engine.logger.debug("run: prepared; dispatching")
                result = .success((options, try await engine.dispatch(options, progress: progress)))
            } catch {
                result = .failure(error)
            }
            engine.logger.debug("run: dispatch ended; releasing the sender lease")
            group.cancelAll()
            try? await group.waitForAll()
            // The pace's last reserved second still counts beside the next (`SendSlots`); later ones go.
            // (Not if another process took the sender: those seconds are its run's now.)
            if !lost.isSet { await releaseSlots() }
            await lease.release()
            return try result.get()
        }
    }

    /// How many seconds ahead of the clock the run's pace is reserved: the reserving loop may be
    /// starved for that long (a loaded machine, a slow store) before the run could send in a second
    /// it has not reserved. (Three were once seen not to be enough, under a whole test suite on two
    /// cores.) Given back when the run ends, so a call waits at most a second for them after it.
    static let reserveAhead: Int64 = 10

    /// Reserves the run's sends for this second and the next `reserveAhead`, every second until
    /// cancelled: what the run may send in any sliding second under `RateBudget`. A failed write is
    /// said and retried the next second (the lease keeper halts the run if the store is gone for good).
    func reserveSlots(rate: Double) async {
        while !Task.isCancelled {
            await reserve(rate: rate)
            let now = Date().timeIntervalSince1970
            try? await Task.sleep(for: .milliseconds(Int64((now.rounded(.down) + 1 - now) * 1000) + 1))
        }
    }

    /// This second and the next `reserveAhead`, reserved in one write.
    func reserve(rate: Double) async {
        let sender = engine.client.configuration.phoneNumberID
        // Its budget refills at rate × margin: that many sends are 1/(rate × margin) apart, so a
        // sliding second can hold the next whole number of them (10 at 10/s, 79 at 80/s, 985 at 1,000/s).
        let count = max(1, Int((rate * RateBudget.defaultMargin).rounded(.up)))
        let capacity = Int(rate.rounded(.down))
        let second = Int64(Date().timeIntervalSince1970.rounded(.down))
        do {
            try await engine.store.reserveSendSlots(
                sender: sender, seconds: second...(second + Self.reserveAhead), count: count, capacity: capacity)
        } catch {
            engine.logger.warning(
                "the run's pace could not be reserved in the store (retried in a second; calls to /send-invoice may wait longer)",
                metadata: ["error": "\(error)"])
        }
    }

    /// The reservations after this second given back, once the run has stopped sending.
    func releaseSlots() async {
        let sender = engine.client.configuration.phoneNumberID
        let second = Int64(Date().timeIntervalSince1970.rounded(.down))
        do {
            try await engine.store.releaseSendSlots(sender: sender, after: second)
        } catch {
            engine.logger.warning(
                "the run's reserved pace could not be given back: calls to /send-invoice on this number wait up to \(Self.reserveAhead) s",
                metadata: ["error": "\(error)"])
        }
    }

    /// Records how sending ended: a halt (with its reason) or an interrupt as they are; otherwise
    /// `settling` while the settle window waits for statuses, then `done`. Returns the stored record
    /// and the run's states.
    public func conclude(
        stop: StopReason?, settling: (Duration) -> Void = { _ in }, nothingSent: () -> Void = {},
        settleProgress: ([MessageState: Int], Duration) -> Void = { _, _ in }
    ) async throws -> (
        record: RunRecord, counts: [MessageState: Int]
    ) {
        let store = engine.store
        guard var record = try await store.run(named: run) else { throw StoreError("no run \(run) to conclude") }
        let counts: [MessageState: Int]
        switch stop {
        case .halted(let error):
            record.status = .halted
            record.haltReason = error.description
            counts = try await store.stateCounts(run: run)
        case .interrupted:
            record.status = .interrupted
            counts = try await store.stateCounts(run: run)
        case nil where settleOnlyAfterSends && engine.requestsAnswered == 0:
            nothingSent()
            counts = try await store.stateCounts(run: run)
            record.status = .done
        case nil:
            settling(settleWindow)
            record.status = .settling
            try await store.saveRun(record)
            counts = try await engine.settle(run: run, window: settleWindow, observe: settleProgress)
            engine.logger.debug("run: settled")
            record.status = .done
        }
        record.finishedAt = Date().timeIntervalSince1970
        try await store.saveRun(record)
        return (record, counts)
    }
}
