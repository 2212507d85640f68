import Dispatcher
import Foundation
import Store
import WhatsApp

/// What `dispatcher retry` sends again, and what it holds back.
public struct RetrySelection: Sendable {
    /// Requeued now.
    public var requeued: [String]
    /// Failed with Meta's per-user limit (131049) less than 24 hours ago: held back (unless `now`).
    public var heldBack: Int
    /// When the first of those may go.
    public var earliest: Double?
}

extension RunEngine {
    /// Puts back in the queue the run's failed messages that may be sent again (`ErrorClass.isRetryable`,
    /// or those whose code is in `codes`), and with `includeUnknown` those whose fate is unknown; those
    /// Meta asked to wait for (131049) only once their time has come, or with `ignoringWait`; with
    /// `includeTemplateSkips` (and no `codes`), those skipped because their template was not
    /// approved, checked again before sending.
    public func requeueForRetry(
        run: String, codes: Set<Int>? = nil, includeUnknown: Bool = false, ignoringWait: Bool = false,
        now: Double? = nil, includeTemplateSkips: Bool = false
    ) async throws -> RetrySelection {
        let now = now ?? wallClock()
        // What a crash (or a second Ctrl-C) left in flight is `unknown` first, as `prepare` does
        // for `send`: `--include-unknown` can then resend it, and it is never left `sending`.
        _ = try await store.markInterrupted(run: run, at: now)
        var candidates: [String] = []
        var heldBack = 0
        var earliest: Double? = nil
        var after: Int64? = nil
        repeat {
            let page = try await store.messages(MessageFilter(run: run, after: after, limit: 1000))
            for m in page.messages {
                if m.state == .unknown && includeUnknown { candidates.append(m.id) }
                guard m.state == .failed else { continue }
                let errorClass = ErrorClass.of(code: m.errorCode)
                // `codes` names what to resend; otherwise the one rule of what is retryable.
                let chosen = codes.map { set in m.errorCode.map(set.contains) ?? false } ?? errorClass.isRetryable
                guard chosen else { continue }
                if !ignoringWait, let notBefore = errorClass.earliestRetry(failedAt: m.failedAt ?? m.updatedAt), notBefore > now {
                    heldBack += 1
                    earliest = min(earliest ?? notBefore, notBefore)
                    continue
                }
                candidates.append(m.id)
            }
            after = page.next
        } while after != nil
        var requeued = try await store.requeue(messageIDs: candidates, at: now)
        if includeTemplateSkips && codes == nil {
            requeued += try await store.requeueSkipped(run: run, reasonPrefix: SkipReason.templateNotApproved, at: now)
        }
        if var record = try await store.run(named: run) {
            record.status = .sending
            try await store.saveRun(record)
        }
        return RetrySelection(requeued: requeued, heldBack: heldBack, earliest: earliest)
    }
}
