import Foundation

/// Everything the sandbox remembers: requests in order, limits, scheduled webhooks, counters.
actor SandboxState {
    struct RequestRecord: Sendable, Encodable {
        var at: Double
        var phoneNumberID: String
        var to: String?
        var template: String?
        var callbackData: String?
        var httpStatus: Int
        var errorCode: Int?
        var wamid: String?
    }

    struct DeliveryRecord: Sendable, Encodable {
        var at: Double
        var statuses: Int
        var inbound: Int
        var httpStatus: Int?
        var error: String?
        var attempt: Int
    }

    /// A status or reply due to be posted to the webhook.
    struct Event: Sendable {
        var due: Double
        var value: MetaJSON
        var isStatus: Bool
        /// The sender number the event is about (its webhook's `metadata.phone_number_id`).
        var phoneNumberID = "SANDBOX"
    }

    private(set) var requests: [RequestRecord] = []
    private(set) var deliveries: [DeliveryRecord] = []
    private var events: [Event] = []
    private var sendTimes: [String: [Double]] = [:]  // per phone number id, the last second's accepted sends
    private var lastToRecipient: [String: [Double]] = [:]
    private var attemptsPerRecipient: [String: Int] = [:]
    private(set) var accepted = 0
    /// Uploaded media ids and when they were uploaded.
    private(set) var media: [String: Double] = [:]
    private(set) var mediaUploads = 0

    func addMedia(id: String, at time: Double, bytes: Int) {
        media[id] = time
        mediaUploads += 1
    }

    /// Accepted sends per template name (a scenario may pause a template after some).
    private(set) var acceptedPerTemplate: [String: Int] = [:]
    private(set) var rejected: [Int: Int] = [:]
    private(set) var webhooksPosted = 0
    private(set) var webhooksFailed = 0
    private(set) var statusesDelivered = 0

    private var firstSendAt: Double? = nil

    /// Seconds since the first send request (0 for the first one itself).
    func sinceFirstSend(now: Double) -> Double {
        if firstSendAt == nil { firstSendAt = now }
        return now - firstSendAt!
    }

    func record(_ request: RequestRecord) {
        requests.append(request)
        if let code = request.errorCode { rejected[code, default: 0] += 1 }
        if request.wamid != nil {
            accepted += 1
            if let template = request.template { acceptedPerTemplate[template, default: 0] += 1 }
        }
    }

    /// How many requests to this number came before (for "the first request fails" outcomes).
    func attempt(for number: String) -> Int {
        attemptsPerRecipient[number, default: 0] += 1
        return attemptsPerRecipient[number]!
    }

    /// Meta's throughput: at most `limit` messages in any one second per sender number.
    func admitThroughput(phoneNumberID: String, limit: Double, now: Double) -> Bool {
        var times = sendTimes[phoneNumberID, default: []]
        let cutoff = now - 1
        if let firstKept = times.firstIndex(where: { $0 > cutoff }) { times.removeFirst(firstKept) } else { times.removeAll() }
        guard Double(times.count) < limit else {
            sendTimes[phoneNumberID] = times
            return false
        }
        times.append(now)
        sendTimes[phoneNumberID] = times
        return true
    }

    /// Meta's pair rate: `burst` messages to one user, then one per `interval` seconds.
    func admitPair(to number: String, burst: Int, interval: Double, now: Double) -> Bool {
        var times = lastToRecipient[number, default: []].filter { $0 > now - interval * Double(burst) }
        guard times.count < burst, times.last.map({ now - $0 >= interval || burst > 1 }) ?? true else {
            lastToRecipient[number] = times
            return false
        }
        times.append(now)
        lastToRecipient[number] = times
        return true
    }

    func schedule(_ new: [Event]) {
        events.append(contentsOf: new)
    }

    /// The events due now, up to `limit`, in time order; they are gone from the queue until put back.
    func takeDue(now: Double, limit: Int) -> [Event] {
        guard !events.isEmpty, !paused else { return [] }
        events.sort { $0.due < $1.due }
        let due = events.prefix { $0.due <= now }.prefix(limit)
        let taken = Array(due)
        events.removeFirst(taken.count)
        return taken
    }

    /// A delivery that failed: its events go back, due again after `delay`.
    func putBack(_ failed: [Event], retryAt: Double) {
        events.append(
            contentsOf: failed.map { Event(due: retryAt, value: $0.value, isStatus: $0.isStatus, phoneNumberID: $0.phoneNumberID) })
    }

    func recordDelivery(_ record: DeliveryRecord, ok: Bool) {
        deliveries.append(record)
        if ok {
            webhooksPosted += 1
            statusesDelivered += record.statuses
        } else {
            webhooksFailed += 1
        }
    }

    var pendingEvents: Int { events.count }

    /// While paused, statuses pile up (to see batching, or a receiver's catch-up).
    private(set) var paused = false
    func setPaused(_ value: Bool) { paused = value }

    func reset() {
        requests = []
        deliveries = []
        events = []
        sendTimes = [:]
        lastToRecipient = [:]
        attemptsPerRecipient = [:]
        acceptedPerTemplate = [:]
        media = [:]
        mediaUploads = 0
        accepted = 0
        rejected = [:]
        webhooksPosted = 0
        webhooksFailed = 0
        statusesDelivered = 0
    }

    func counters() -> [String: Int] {
        var out: [String: Int] = [
            "requests": requests.count, "accepted": accepted, "webhooks_posted": webhooksPosted, "webhooks_failed": webhooksFailed,
            "statuses_delivered": statusesDelivered, "pending_events": events.count, "media_uploads": mediaUploads,
        ]
        for (code, n) in rejected { out["rejected_\(code)"] = n }
        return out
    }
}
