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
    /// Scheduled events, earliest first (a heap: a send schedules, a delivery takes, both in
    /// O(log n); the array sorted on every take, and copied on every schedule, took a quarter of
    /// the sandbox's CPU at 4,000 sends a second).
    private var events = EventQueue()
    /// Per phone number id, the last second's accepted sends.
    private var sendTimes: [String: SlidingSecond] = [:]
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
        sendTimes[phoneNumberID, default: SlidingSecond()].admit(now: now, limit: limit)
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
        for event in new { events.push(event) }
    }

    /// The events due now, up to `limit`, in time order (events due at the same time in the order
    /// they were scheduled); they are gone from the queue until put back.
    func takeDue(now: Double, limit: Int) -> [Event] {
        guard !paused else { return [] }
        var taken: [Event] = []
        while taken.count < limit, let next = events.first, next.due <= now {
            taken.append(events.pop())
        }
        return taken
    }

    /// A delivery that failed: its events go back, due again after `delay`.
    func putBack(_ failed: [Event], retryAt: Double) {
        for event in failed {
            events.push(Event(due: retryAt, value: event.value, isStatus: event.isStatus, phoneNumberID: event.phoneNumberID))
        }
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
        events = EventQueue()
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

/// Accepted sends of one number in the trailing second, oldest first, kept in place.
struct SlidingSecond {
    private var times: [Double] = []
    private var start = 0

    /// Admits one more at `now` unless `limit` were accepted in the second before it.
    mutating func admit(now: Double, limit: Double) -> Bool {
        while start < times.count, times[start] <= now - 1 { start += 1 }
        if start > 1024, start * 2 > times.count {
            times.removeFirst(start)
            start = 0
        }
        guard Double(times.count - start) < limit else { return false }
        times.append(now)
        return true
    }
}

/// A binary min-heap of events by due time, then by the order they were scheduled.
struct EventQueue {
    private var heap: [(event: SandboxState.Event, order: Int)] = []
    private var scheduled = 0

    var count: Int { heap.count }
    var first: SandboxState.Event? { heap.first?.event }

    mutating func push(_ event: SandboxState.Event) {
        heap.append((event, scheduled))
        scheduled += 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard precedes(child, parent) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the earliest event (the queue must not be empty).
    mutating func pop() -> SandboxState.Event {
        heap.swapAt(0, heap.count - 1)
        let earliest = heap.removeLast().event
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var first = parent
            if left < heap.count, precedes(left, first) { first = left }
            if right < heap.count, precedes(right, first) { first = right }
            if first == parent { break }
            heap.swapAt(parent, first)
            parent = first
        }
        return earliest
    }

    private func precedes(_ a: Int, _ b: Int) -> Bool {
        heap[a].event.due < heap[b].event.due || (heap[a].event.due == heap[b].event.due && heap[a].order < heap[b].order)
    }
}
