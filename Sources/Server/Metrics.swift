public import Prometheus
import Store

/// The receiver's metrics, created once with fixed labels (never one per message or invoice).
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let webhooksReceived: Counter
    let webhooksRejected: [String: Counter]
    let webhooksUnavailable: Counter
    let statusesReceived: Counter
    let statusesApplied: [MessageState: Counter]
    let statusesDuplicate: Counter
    let statusesUnmatched: Counter
    let optOuts: Counter
    let intakeLatency: DurationHistogram

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        webhooksReceived = registry.makeCounter(
            descriptor: .init(namespace: "dispatcher", metricName: "webhooks_received", unitName: "total", helpText: "Webhook POSTs stored")
        )
        var rejected: [String: Counter] = [:]
        for reason in ["missing_signature", "malformed_signature", "bad_signature", "too_large", "malformed_request", "busy", "too_slow"] {
            rejected[reason] = registry.makeCounter(
                descriptor: .init(
                    namespace: "dispatcher", metricName: "webhooks_rejected", unitName: "total",
                    helpText: "Webhook POSTs refused, by reason"), labels: [("reason", reason)])
        }
        webhooksRejected = rejected
        webhooksUnavailable = registry.makeCounter(
            descriptor: .init(
                namespace: "dispatcher", metricName: "webhooks_unavailable", unitName: "total",
                helpText: "Webhook POSTs answered 503 because the database could not store them"))
        statusesReceived = registry.makeCounter(
            descriptor: .init(
                namespace: "dispatcher", metricName: "statuses_received", unitName: "total", helpText: "Status updates received"))
        var applied: [MessageState: Counter] = [:]
        for state in [MessageState.sent, .delivered, .read, .failed] {
            applied[state] = registry.makeCounter(
                descriptor: .init(
                    namespace: "dispatcher", metricName: "statuses_applied", unitName: "total",
                    helpText: "Status updates that moved a message, by the state reached"), labels: [("state", state.rawValue)])
        }
        statusesApplied = applied
        statusesDuplicate = registry.makeCounter(
            descriptor: .init(
                namespace: "dispatcher", metricName: "statuses_duplicate", unitName: "total", helpText: "Status updates seen before"))
        statusesUnmatched = registry.makeCounter(
            descriptor: .init(
                namespace: "dispatcher", metricName: "statuses_unmatched", unitName: "total",
                helpText: "Status updates for no known message (kept, applied when it appears)"))
        optOuts = registry.makeCounter(
            descriptor: .init(
                namespace: "dispatcher", metricName: "opt_outs", unitName: "total", helpText: "Tenants who replied STOP or the like"))
        intakeLatency = registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "dispatcher", metricName: "webhook_intake", unitName: "seconds",
                helpText: "From a webhook POST's arrival to its 200"),
            buckets: [
                .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            ])
    }

    func record(_ result: IngestResult) {
        webhooksReceived.increment()
        statusesReceived.increment(by: Int64(result.statuses))
        for (state, n) in result.applied { statusesApplied[state]?.increment(by: Int64(n)) }
        if result.duplicates > 0 { statusesDuplicate.increment(by: Int64(result.duplicates)) }
        if result.unmatched > 0 { statusesUnmatched.increment(by: Int64(result.unmatched)) }
        if result.optOuts > 0 { optOuts.increment(by: Int64(result.optOuts)) }
    }

    /// The Prometheus text format.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
