import GRDB

/// Everything the dispatcher keeps: runs, invoices, messages, send attempts, every webhook payload
/// and status event, inbound replies and opt-outs. SQLite (`SQLiteStore`) is the embedded default;
/// callers see only this interface.
public protocol DispatchStore: Sendable {
    // MARK: Runs, invoices, messages

    /// Creates the run, or updates its status and times if it exists.
    func saveRun(_ run: RunRecord) async throws
    func run(named name: String) async throws -> RunRecord?
    /// The runs `including` accepts, newest first, with their messages counted by state (those
    /// of runs it leaves out are not counted: counting reads every message of a run).
    func runs(including: @Sendable (String) -> Bool) async throws -> [RunSummary]
    func addInvoices(_ invoices: [InvoiceRecord]) async throws
    /// Adds messages; one whose id exists already (the same invoice, number and template, in this
    /// run or an earlier one) is left as it is and reported.
    func addMessages(_ messages: [NewMessage]) async throws -> [MessageInsert]
    /// By dispatcher id (`m-…`) or by wamid.
    func message(_ idOrWamid: String) async throws -> MessageRecord?
    /// Which of these message ids are stored already, with their run and state (what `preview`
    /// needs to count what `send` will skip).
    func storedMessages(ids: [String]) async throws -> [String: StoredMessage]
    func events(messageID: String) async throws -> [StatusEventRecord]
    func attempts(messageID: String) async throws -> [AttemptRecord]
    func messages(_ filter: MessageFilter) async throws -> MessagePage
    func stateCounts(run: String) async throws -> [MessageState: Int]
    /// Statuses Meta named a sender number for that are applied to no message (for a number no
    /// run was sent from, or about a message another number sent; also, briefly, one that came
    /// before its send's answer), counted per number.
    func statusesForOtherNumbers() async throws -> [(number: String, statuses: Int)]

    /// The first and last sequence number of a run's messages (of those after `after`, if given),
    /// nil when there is none: what a report reads between, a range of sequence numbers at a time.
    func messageSequences(run: String, after: Int64?) async throws -> ClosedRange<Int64>?

    /// A run's messages whose sequence number is in `sequences`, with their invoices, in order
    /// (for reports: a page is a range of sequence numbers, so several pages can be read at once).
    func reportRows(run: String, sequences: ClosedRange<Int64>) async throws -> [ReportRow]
    /// One landlord's messages of a run with their invoices, in order: up to `limit` after sequence
    /// number `after` (nil: from the first). Read through the landlord's index, not the whole run.
    func reportRows(run: String, landlord: String, after: Int64?, limit: Int) async throws -> [ReportRow]
    /// Invoices of a run that were not sent at all (nothing due), for reports.
    func skippedInvoices(run: String) async throws -> [InvoiceRecord]
    /// One invoice of a run, as stored (the first version of it: a run keeps an invoice once).
    func invoice(run: String, invoiceID: String) async throws -> InvoiceRecord?
    /// A run's figures for its report page, added up by the database (no pass over the messages
    /// here): one landlord's when `landlord` is given, with up to `samples` example rows per group.
    func reportSummary(run: String, landlord: String?, samples: Int) async throws -> ReportSummary

    // MARK: Sending

    /// Marks the message `sending` and records a new attempt before the request leaves; returns its number.
    func beginAttempt(messageID: String, at time: Double) async throws -> Int
    /// Begins an attempt only if the message is `queued` (atomically: of two callers, one gets it).
    /// Returns the attempt number, or nil when it is not queued (another caller is sending it, or
    /// it was sent). What `/send-invoice` sends with: two calls for one invoice never both send.
    func claimAttempt(messageID: String, at time: Double) async throws -> Int?
    /// A receiver (`serve`) says it is up: what `send` checks before a run, so that it can say
    /// whether statuses will arrive.
    func heardFromReceiver(id: String, address: String, at time: Double) async throws
    /// The receiver heard from last, and when.
    func lastHeardReceiver() async throws -> (address: String, at: Double)?
    /// A sender number's sends per second, shared by every process that sends from it (see
    /// `SendSlots`): a billing run reserves its pace for the seconds ahead of it, all in one write.
    func reserveSendSlots(sender: String, seconds: ClosedRange<Int64>, count: Int, capacity: Int) async throws
    /// A billing run's reservations for the seconds after `second` given back (the run has ended),
    /// so that single sends need not wait for them to pass.
    func releaseSendSlots(sender: String, after second: Int64) async throws
    /// One send of `/send-invoice` in `second`, if what is left of the number's rate allows it
    /// (`SendSlots.allows`; `capacity`: the sender's own rate); false: try a later second.
    func takeSendSlot(sender: String, second: Int64, capacity: Int) async throws -> Bool
    /// Several messages at once (one transaction): the ledger entry before each request leaves.
    /// Returns each message's attempt number. A message no longer `queued` (moved since it was
    /// read: another process began it, its run's lease having lapsed while this one was stopped, or
    /// a late status of an earlier attempt moved it) is left as it is and gets no number: it must
    /// not be sent.
    func beginAttempts(messageIDs: [String], at time: Double) async throws -> [String: Int]
    /// Several outcomes at once (one transaction).
    func recordOutcomes(_ outcomes: [AttemptOutcome], at time: Double) async throws
    /// The billing run's ledger write for one tick of its loop: the outcomes that came back, then
    /// the attempts about to leave (a message requeued by one of the outcomes may begin again in
    /// the same write). Returns each begun message's attempt number.
    func recordLedger(outcomes: [AttemptOutcome], begin messageIDs: [String], at time: Double) async throws -> [String: Int]
    /// Deletes a run, its invoices and its messages, but only when none of its messages was ever
    /// attempted (a run prepared from a manifest that turned out invalid). Returns false, deleting
    /// nothing, when any message has an attempt.
    func discardUnsentRun(_ name: String) async throws -> Bool
    /// After a crash: messages left `sending` become `unknown` (the request may have left). Returns how many.
    func markInterrupted(run: String, at time: Double) async throws -> Int
    /// Messages waiting to be sent in a run, in order, a page at a time: only what sending needs
    /// (the billing run reads the whole queue this way, and decoding whole records was 6 % of its CPU).
    func queuedMessages(run: String, after: Int64?, limit: Int) async throws -> [QueuedMessage]
    /// The (template, language) pairs the run's queued messages will be sent with (the template
    /// as their stored request names it: a `with_document` variant shows as itself), for checking
    /// them against Meta's approved templates before the first send.
    func queuedTemplates(run: String) async throws -> [TemplateLanguage]
    /// Marks the run's queued messages sent with `template` in `language` skipped, with `reason`
    /// (Meta would refuse them: the template is not approved there). Returns how many.
    func skipQueued(run: String, template: String, language: String, reason: String, at time: Double) async throws -> Int
    /// Puts back in the queue the run's messages skipped with a reason starting with `reasonPrefix`
    /// (those `skipQueued` skipped because their template was not approved: sent once it is, by the
    /// same command again or `retry`, checked again before the first send). Returns their ids.
    func requeueSkipped(run: String, reasonPrefix: String, at time: Double) async throws -> [String]
    /// The media id of a PDF already uploaded to Meta from `sender`'s number, when the same link
    /// gave the same bytes (`sha256`) at or after `notBefore` (Meta keeps uploads 30 days).
    func cachedMedia(url: String, sha256: String, sender: String, notBefore: Double) async throws -> String?
    func saveMedia(url: String, sha256: String, sender: String, mediaID: String, at time: Double) async throws
    /// Replaces a queued message's stored request (its document now sent by media id); false
    /// when the message is no longer queued.
    func replaceQueuedRequest(messageID: String, body: String, at time: Double) async throws -> Bool
    /// Fails a queued message without sending it (its PDF could not be fetched), with the reason;
    /// false when it is no longer queued.
    func failQueued(messageID: String, title: String, details: String?, at time: Double) async throws -> Bool
    /// Puts failed or unknown messages back in the queue for `dispatcher retry`; never a message
    /// that reached the tenant. Returns the ids requeued.
    func requeue(messageIDs: [String], at time: Double) async throws -> [String]
    /// Meta answered with a wamid: `accepted`, and any status that arrived first is applied now.
    func recordAccepted(messageID: String, attempt: Int, wamid: String, at time: Double) async throws
    /// Meta refused the message: `failed` when final, back to `queued` when it is to be retried.
    func recordRejected(messageID: String, attempt: Int, error: SendError, final: Bool, at time: Double) async throws
    /// The request may have reached Meta with no answer recorded: `unknown`, never resent blindly.
    func recordUnknown(messageID: String, attempt: Int, reason: String, at time: Double) async throws

    // MARK: Webhooks

    /// Stores a webhook POST durably (the raw bytes first) and applies what it carries, in one
    /// transaction. `contents` is nil when the body did not parse: it is kept for replay.
    func ingestWebhook(
        body: [UInt8], signature: String?, contents: WebhookContents?, parseError: String?,
        at time: Double
    ) async throws -> IngestResult

    // MARK: Opt-outs

    /// Every id a tenant is opted out under (a WhatsApp id, a user id, a number added by hand),
    /// oldest first.
    func optOuts() async throws -> [OptOut]
    /// The numbers to send nothing to: every opted-out id, and every number we sent to that Meta
    /// answered under an opted-out id (a `wa_id` that differs from the number, a user id learnt
    /// from a status). `OptOutList` adds the known national variants.
    func optedOutNumbers() async throws -> Set<String>
    /// Opts an id out by hand (`dispatcher optout add`); false when it was already. Every change is kept.
    func addOptOut(_ id: String, kind: OptOutKind, note: String?, at time: Double) async throws -> Bool
    /// Opts a number back in: removes the opt-outs kept under it, under its national variants and
    /// under every id Meta answered for it. Returns what was removed (each change kept).
    func removeOptOut(_ number: String, note: String?, at time: Double) async throws -> [OptOut]
    /// Every opt-out and opt-in, oldest first.
    func optOutChanges() async throws -> [OptOutChange]
    /// The other ids Meta answered for a number we sent to (`wa_id`, user id).
    func recipientIDs(phone: String) async throws -> [String]
    /// The first message of `run` that failed at or after `since` with one of `codes` (account-level
    /// errors that arrive by webhook while a run sends: payment, spam limits), if any.
    func firstFailure(run: String, codes: [Int], since: Double) async throws -> (code: Int, title: String?)?

    // MARK: Senders

    /// Takes the sender number's lease for `run`: one billing run per number at a time, on every
    /// machine sharing the database. The holder calls again before `ttl` seconds pass to keep it;
    /// a crashed holder's lease expires. Returns the lease as it stands: `holder` has it when
    /// `lease.holder == holder`, otherwise it says who does and until when.
    func acquireSenderLease(sender: String, holder: String, run: String, ttl: Double, at time: Double) async throws -> SenderLease
    /// Gives the lease up (nothing happens if `holder` no longer has it).
    func releaseSenderLease(sender: String, holder: String) async throws

    // MARK: Prices and fallbacks

    /// Keeps a rate card (`dispatcher pricing import`); cards are never replaced, only added.
    func saveRateCard(_ card: StoredRateCard) async throws
    /// Every rate card imported, newest effective date first.
    func rateCards() async throws -> [StoredRateCard]
    /// A run's messages in `states` by landlord, number prefix and pricing (`ChargeCount`):
    /// `[.delivered, .read]` for what was charged, `[.queued]` for what is still to send.
    func chargeCounts(run: String, states: [MessageState]) async throws -> [ChargeCount]
    /// Invoices of a run WhatsApp could not carry (`unreachableCodes`, opt-outs), in run order,
    /// each with its fallback so far.
    func fallbackCandidates(run: String) async throws -> [FallbackCandidate]
    /// Claims an invoice's fallback before it is sent: true when this call claimed it (no fallback
    /// yet, or the last one `failed`); false when one is `sending`, `sent` or recorded otherwise.
    func claimFallback(run: String, invoiceID: String, via: String, address: String?, at time: Double) async throws -> Bool
    /// Records how a claim ended: only the claim this caller made (`sending`, started at
    /// `claimedAt`) changes; false when another pass's write came first.
    func finishFallback(
        run: String, invoiceID: String, claimedAt: Double, state: FallbackState, detail: String?, at time: Double
    ) async throws -> Bool
    /// Records a fallback without a hand-over (`noAddress`; `failed` to let `--again` send one
    /// once more), only over what the caller read: `expecting` nil means no record yet (or one
    /// `failed`/`no_address`); else that record, unchanged since. False when it changed meanwhile.
    func markFallback(
        run: String, invoiceID: String, via: String, state: FallbackState, detail: String?, expecting: FallbackRecord?, at time: Double
    ) async throws -> Bool
    /// A run's fallbacks, by invoice id.
    func fallbacks(run: String) async throws -> [String: FallbackRecord]

    // MARK: Audit

    /// Webhook POSTs exactly as received, oldest first, a page at a time (for audits and replay).
    func webhookPayloads(after: Int64?, limit: Int) async throws -> [StoredPayload]
    /// Messages tenants sent us (replies, opt-out words), oldest first.
    func inboundMessages(limit: Int) async throws -> [InboundRecord]

    /// Throws when the database cannot be reached (for `/health` and `doctor`).
    func ping() async throws
    /// Which database this is, without any password (for logs and `doctor`).
    var location: String { get }
    /// Ends the store's connections once the work that uses them is over: a long-running command
    /// (`serve`, `send`) closes it last, after its server and its sends have stopped. Nothing may
    /// use the store afterwards.
    func close() async
}

extension DispatchStore {
    /// SQLite keeps no connection to end: its files close with the store.
    public func close() async {}

    /// Whether nothing may be sent to `phone` (one lookup; a run loads `OptOutList` once instead).
    public func isOptedOut(phone: String) async throws -> Bool {
        try await OptOutList.load(from: self).contains(phone)
    }

    /// The first and last sequence number of a run's messages, nil when it has none.
    public func messageSequences(run: String) async throws -> ClosedRange<Int64>? {
        try await messageSequences(run: run, after: nil)
    }
}

extension DispatchStore {
    /// Every run, newest first, with its messages counted by state.
    public func runs() async throws -> [RunSummary] { try await runs(including: { _ in true }) }

    /// One run with its messages counted by state, or nil.
    public func runSummary(named name: String) async throws -> RunSummary? {
        try await runs(including: { $0 == name }).first
    }
}

/// The single-message forms of the ledger, the same for every store.
extension DispatchStore {
    /// Two writes, in that order (a store that can do both in one transaction does).
    public func recordLedger(outcomes: [AttemptOutcome], begin messageIDs: [String], at time: Double) async throws -> [String: Int] {
        if !outcomes.isEmpty { try await recordOutcomes(outcomes, at: time) }
        return messageIDs.isEmpty ? [:] : try await beginAttempts(messageIDs: messageIDs, at: time)
    }

    public func beginAttempt(messageID: String, at time: Double) async throws -> Int {
        guard let number = try await beginAttempts(messageIDs: [messageID], at: time)[messageID] else {
            throw StoreError("message \(messageID) is not queued: no attempt begun")
        }
        return number
    }

    public func recordAccepted(messageID: String, attempt: Int, wamid: String, at time: Double) async throws {
        try await recordOutcomes([.accepted(messageID: messageID, attempt: attempt, wamid: wamid)], at: time)
    }

    public func recordRejected(messageID: String, attempt: Int, error: SendError, final: Bool, at time: Double) async throws {
        try await recordOutcomes([.rejected(messageID: messageID, attempt: attempt, error: error, final: final)], at: time)
    }

    public func recordUnknown(messageID: String, attempt: Int, reason: String, at time: Double) async throws {
        try await recordOutcomes([.unknown(messageID: messageID, attempt: attempt, reason: reason)], at: time)
    }
}

public struct SenderLease: Sendable, Equatable {
    public var sender: String
    public var holder: String
    public var run: String
    public var acquiredAt: Double
    public var expiresAt: Double

    public init(sender: String, holder: String, run: String, acquiredAt: Double, expiresAt: Double) {
        self.sender = sender
        self.holder = holder
        self.run = run
        self.acquiredAt = acquiredAt
        self.expiresAt = expiresAt
    }
}

public struct StoredPayload: Sendable, Equatable {
    public var id: Int64
    public var receivedAt: Double
    public var signature: String?
    public var body: [UInt8]
    public var parseError: String?
    public var statuses: Int
}

public struct InboundRecord: Sendable, Equatable {
    public var wamid: String
    /// The sender's WhatsApp id; `""` when Meta gave only a user id.
    public var from: String
    public var fromUserID: String? = nil
    public var timestamp: Double
    public var type: String
    public var body: String?
}

// MARK: - Records

/// Where a billing run stands, as `status` shows it and the store keeps it (as text).
public enum RunStatus: String, Sendable, Codable, CaseIterable {
    /// Saved, nothing prepared yet.
    case created
    /// Prepared; its queue is being sent (also what a crash leaves).
    case sending
    /// Everything sent; waiting for the last statuses.
    case settling
    case done
    /// Stopped by an error that dooms the run (token, payment, template); what was not sent is queued.
    case halted
    /// Stopped by SIGINT/SIGTERM; the same command continues it.
    case interrupted

    /// As the store keeps it. Only this code writes the column; a value it does not know (a newer
    /// version's) reads as `sending`, the state that promises least.
    init(stored text: String) { self = RunStatus(rawValue: text) ?? .sending }
}

public struct RunRecord: Sendable, Codable, Equatable {
    public var name: String
    public var manifest: String
    public var template: String
    /// The sender's phone number id.
    public var sender: String
    public var status: RunStatus
    public var createdAt: Double
    public var finishedAt: Double?
    public var haltReason: String?

    public init(
        name: String, manifest: String, template: String, sender: String, status: RunStatus = .created,
        createdAt: Double, finishedAt: Double? = nil, haltReason: String? = nil
    ) {
        self.name = name
        self.manifest = manifest
        self.template = template
        self.sender = sender
        self.status = status
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.haltReason = haltReason
    }
}

public struct RunSummary: Sendable, Equatable {
    public var run: RunRecord
    public var invoices: Int
    public var counts: [MessageState: Int]
    public var messages: Int { counts.values.reduce(0, +) }
}

public struct InvoiceRecord: Sendable, Equatable {
    public var run: String
    public var invoiceID: String
    public var line: Int
    public var tenantName: String
    public var tenantID: String?
    public var landlord: String?
    public var property: String?
    public var amountMinor: Int64
    public var currency: String
    public var period: String
    public var dueDate: String?
    public var locale: String
    public var documentURL: String?
    public var email: String?
    public var skipReason: String?

    public init(
        run: String, invoiceID: String, line: Int, tenantName: String, tenantID: String? = nil, landlord: String? = nil,
        property: String? = nil, amountMinor: Int64, currency: String, period: String, dueDate: String? = nil,
        locale: String, documentURL: String? = nil, email: String? = nil, skipReason: String? = nil
    ) {
        self.run = run
        self.invoiceID = invoiceID
        self.line = line
        self.tenantName = tenantName
        self.tenantID = tenantID
        self.landlord = landlord
        self.property = property
        self.amountMinor = amountMinor
        self.currency = currency
        self.period = period
        self.dueDate = dueDate
        self.locale = locale
        self.documentURL = documentURL
        self.email = email
        self.skipReason = skipReason
    }
}

public struct NewMessage: Sendable, Equatable {
    public var id: String
    public var run: String
    public var invoiceID: String
    public var phone: String
    public var template: String
    public var language: String
    public var state: MessageState
    public var skipReason: String?
    /// The Graph API request body (JSON), kept so a retry sends exactly the same message.
    public var requestBody: String?

    public init(
        id: String, run: String, invoiceID: String, phone: String, template: String, language: String,
        state: MessageState = .queued, skipReason: String? = nil, requestBody: String? = nil
    ) {
        self.id = id
        self.run = run
        self.invoiceID = invoiceID
        self.phone = phone
        self.template = template
        self.language = language
        self.state = state
        self.skipReason = skipReason
        self.requestBody = requestBody
    }
}

public struct StoredMessage: Sendable, Equatable {
    public var run: String
    public var state: MessageState

    public init(run: String, state: MessageState) {
        self.run = run
        self.state = state
    }
}

public enum MessageInsert: Sendable, Equatable {
    case inserted(id: String)
    /// The message existed: in which run, and where it stands.
    case exists(id: String, run: String, state: MessageState)
}

public struct MessageRecord: Sendable, Equatable, Codable {
    public var id: String
    public var run: String
    public var invoiceID: String
    public var phone: String
    public var template: String
    public var language: String
    public var state: MessageState
    public var wamid: String?
    public var errorCode: Int?
    public var errorTitle: String?
    public var errorDetails: String?
    public var skipReason: String?
    public var attempts: Int
    public var createdAt: Double
    public var updatedAt: Double
    public var acceptedAt: Double?
    public var sentAt: Double?
    public var deliveredAt: Double?
    public var readAt: Double?
    public var failedAt: Double?
    public var requestBody: String?
    /// From the invoice: for filters and reports.
    public var landlord: String?
    public var tenantName: String?
    /// Cursor for pagination.
    public var sequence: Int64
}

public struct StatusEventRecord: Sendable, Equatable, Codable {
    public var wamid: String
    public var messageID: String?
    public var status: String
    /// Meta's timestamp, Unix seconds.
    public var timestamp: Double
    public var receivedAt: Double
    public var applied: Bool
    public var errorCode: Int?
    public var errorTitle: String?
    public var errorDetails: String?
}

/// How one attempt ended, as the `attempts` table keeps it.
public enum AttemptResult: String, Sendable, Codable, CaseIterable {
    /// Begun, its answer not recorded (yet: after a crash, `unknown` on the next run).
    case sending
    /// Meta gave a wamid.
    case accepted
    /// Refused for good: the message failed.
    case rejected
    /// Refused, and the message went back in the queue.
    case retry
    /// No answer we could read: Meta may have it.
    case unknown
}

public struct AttemptRecord: Sendable, Equatable, Codable {
    public var number: Int
    public var startedAt: Double
    public var finishedAt: Double?
    public var outcome: AttemptResult
    public var wamid: String?
    public var errorCode: Int?
    public var errorTitle: String?
}

/// One message and its invoice, as a report shows it.
public struct ReportRow: Sendable {
    public var message: MessageRecord
    public var tenantName: String
    public var landlord: String?
    public var property: String?
    public var amountMinor: Int64
    public var currency: String
    public var period: String
    public var email: String?
}

/// A run's figures, as its report page shows them.
public struct ReportSummary: Sendable, Equatable {
    /// One landlord's figures in one currency.
    ///
    /// Invoices are counted once each, under their outcome (`InvoiceOutcome`), so that
    /// `invoices` = delivered + open + notOnWhatsApp + failed + notSent, and so do the amounts.
    public struct Landlord: Sendable, Equatable {
        public var landlord: String?
        public var currency: String
        /// Invoices with at least one message.
        public var invoices = 0
        public var messages = 0
        public var billedMinor: Int64 = 0
        /// Invoices with a message delivered or read.
        public var delivered = Tally()
        /// Of those, the invoices with a message read.
        public var read = Tally()
        /// Not delivered, and a message may still be (queued, sending, accepted, held, sent, unknown).
        public var open = Tally()
        /// Every message ended, at least one failed for another reason than 131026.
        public var failed = Tally()
        /// Every message ended, those that failed because the number is not on WhatsApp (131026).
        public var notOnWhatsApp = Tally()
        /// Every message skipped on purpose (nothing due, opted out, already sent in another run).
        public var notSent = Tally()

        public init(landlord: String?, currency: String) {
            self.landlord = landlord
            self.currency = currency
        }

        /// Adds `count` invoices of `amountMinor` in all with this outcome.
        public mutating func add(_ outcome: InvoiceOutcome, read: Bool, count: Int, amountMinor: Int64) {
            invoices += count
            billedMinor.addClamping(amountMinor)
            switch outcome {
            case .delivered:
                delivered.add(count, amountMinor)
                if read { self.read.add(count, amountMinor) }
            case .open: open.add(count, amountMinor)
            case .notOnWhatsApp: notOnWhatsApp.add(count, amountMinor)
            case .failed: failed.add(count, amountMinor)
            case .notSent: notSent.add(count, amountMinor)
            }
        }
    }

    /// Invoices and their amount.
    public struct Tally: Sendable, Equatable {
        public var count = 0
        public var amountMinor: Int64 = 0
        public init(count: Int = 0, amountMinor: Int64 = 0) {
            self.count = count
            self.amountMinor = amountMinor
        }
        mutating func add(_ count: Int, _ amount: Int64) {
            self.count += count
            amountMinor.addClamping(amount)
        }
    }

    /// Messages in one state with one error (failed, unknown or skipped), counted, with examples.
    public struct Group: Sendable, Equatable {
        public var state: MessageState
        public var errorCode: Int?
        public var errorTitle: String?
        public var count: Int
        public var samples: [Sample]
    }

    public struct Sample: Sendable, Equatable {
        public var sequence: Int64
        public var invoiceID: String
        public var tenantName: String
        public var phone: String
        public var email: String?
        public var errorDetails: String?
        public var skipReason: String?
    }

    /// A message whose outcome is not known yet, named on the page.
    public struct Pending: Sendable, Equatable {
        public var sequence: Int64
        public var invoiceID: String
        public var tenantName: String
        public var phone: String
        public var state: MessageState
        public var amountMinor: Int64
        public var currency: String
    }

    public var states: [MessageState: Int] = [:]
    /// The first messages WhatsApp took whose outcome is not known yet (accepted, held, sent), in run order.
    public var pending: [Pending] = []
    public var landlords: [Landlord] = []
    /// Failed and unknown messages by (state, code, title), largest first.
    public var problems: [Group] = []
    public var skipped: Group?
    /// Messages accepted, and delivered (or read), per minute since 1970.
    public var sendsPerMinute: [Int: Int] = [:]
    public var deliveriesPerMinute: [Int: Int] = [:]
    /// The delivered and read messages (of the landlord asked for, or all) as
    /// `chargeCounts(run:states:)` counts them, when the engine counts them with the rest (SQLite
    /// in the same pass, PostgreSQL in a query beside the others); nil when they are to be asked for apart.
    public var charges: [ChargeCount]?

    public init() {}
}

/// How one attempt ended, for `recordOutcomes`.
public enum AttemptOutcome: Sendable, Equatable {
    /// `waID`: the WhatsApp id Meta answered with, when it differs from the number sent to (kept,
    /// so that the tenant's STOP under that id holds for the number).
    /// `held`: Meta answered `message_status` `held_for_quality_assessment` or `paused`.
    case accepted(messageID: String, attempt: Int, wamid: String, waID: String? = nil, held: Bool = false)
    /// `final`: failed for good; otherwise back in the queue.
    case rejected(messageID: String, attempt: Int, error: SendError, final: Bool)
    case unknown(messageID: String, attempt: Int, reason: String)
}

/// What Meta (or the network) answered to a send.
public struct SendError: Sendable, Equatable, Error {
    public var code: Int?
    public var title: String
    public var details: String?

    public init(code: Int?, title: String, details: String? = nil) {
        self.code = code
        self.title = title
        self.details = details
    }
}

public struct MessageFilter: Sendable, Equatable {
    public var run: String?
    public var state: MessageState?
    public var landlord: String?
    /// Messages after this cursor (the `next` of the previous page).
    public var after: Int64?
    public var limit: Int

    public init(run: String? = nil, state: MessageState? = nil, landlord: String? = nil, after: Int64? = nil, limit: Int = 100) {
        self.run = run
        self.state = state
        self.landlord = landlord
        self.after = after
        self.limit = limit
    }
}

public struct MessagePage: Sendable {
    public var messages: [MessageRecord]
    /// Pass as `after` for the next page; nil on the last.
    public var next: Int64?
}

public struct IngestResult: Sendable, Equatable {
    public var payloadID: Int64
    public var statuses = 0
    /// Statuses that moved a message, by the state they moved it to.
    public var applied: [MessageState: Int] = [:]
    /// Seen before (same wamid, status and timestamp): they change nothing.
    public var duplicates = 0
    /// For no message we know yet: kept, and applied when the message appears.
    public var unmatched = 0
    public var inbound = 0
    public var optOuts = 0

    public init(payloadID: Int64) { self.payloadID = payloadID }
}

public enum OptOutKind: String, Sendable, Codable, CaseIterable {
    /// A WhatsApp id: a number's digits as Meta knows it (`from`, `wa_id`), or a number added by hand.
    case waID = "wa_id"
    /// A business-scoped user id (2026: users with a username may have no number in webhooks).
    case userID = "user_id"

    /// A user id has letters or a dot (`US.1349…`); a WhatsApp id is digits only.
    public static func of(_ id: String) -> OptOutKind {
        id.allSatisfy(\.isASCII) && id.allSatisfy(\.isNumber) ? .waID : .userID
    }
}

/// How a tenant came to be opted out.
public enum OptOutSource: String, Sendable, Codable {
    /// They replied with an opt-out word.
    case reply
    /// Someone ran `dispatcher optout add`/`remove`.
    case manual
}

public struct OptOut: Sendable, Equatable, Codable {
    /// The id the opt-out is kept under (see `kind`).
    public var id: String
    public var kind: OptOutKind
    public var at: Double
    /// The word the tenant wrote (`STOP`), or `""` when added by hand.
    public var word: String
    public var source: OptOutSource
    public var note: String?
    /// The tenant's message that opted them out.
    public var wamid: String?

    public init(id: String, kind: OptOutKind, at: Double, word: String, source: OptOutSource, note: String? = nil, wamid: String? = nil) {
        self.id = id
        self.kind = kind
        self.at = at
        self.word = word
        self.source = source
        self.note = note
        self.wamid = wamid
    }
}

/// One opt-out or opt-in, as kept forever.
public struct OptOutChange: Sendable, Equatable, Codable {
    public enum Change: String, Sendable, Codable {
        case optedOut = "out"
        case optedIn = "in"
    }

    public var id: String
    public var kind: OptOutKind
    public var change: Change
    public var at: Double
    public var source: OptOutSource
    public var word: String?
    public var wamid: String?
    public var note: String?

    public init(
        id: String, kind: OptOutKind, change: Change, at: Double, source: OptOutSource, word: String? = nil,
        wamid: String? = nil, note: String? = nil
    ) {
        self.id = id
        self.kind = kind
        self.change = change
        self.at = at
        self.source = source
        self.word = word
        self.wamid = wamid
        self.note = note
    }
}

/// Whether a number is opted out: the store's list, with the national variants of a number that
/// WhatsApp ids are known to take (so a STOP under one form holds for the other).
public struct OptOutList: Sendable {
    public let numbers: Set<String>

    public init(numbers: Set<String>) { self.numbers = numbers }

    public static func load(from store: any DispatchStore) async throws -> OptOutList {
        OptOutList(numbers: try await store.optedOutNumbers())
    }

    public func contains(_ number: String) -> Bool {
        numbers.contains(number) || WhatsAppID.variants(of: number).contains { numbers.contains($0) }
    }

    public var isEmpty: Bool { numbers.isEmpty }
}

/// WhatsApp ids that differ from the number written in E.164 (digits, no `+`).
public enum WhatsAppID {
    /// The other forms of a number: Mexico's mobile `52 1 …` (13 digits) and `52 …` (12); Brazil's
    /// mobile with and without the ninth digit (`55 DD 9XXXXXXXX`, 13 digits, and `55 DD XXXXXXXX`,
    /// 12 digits, whose first local digit is 6–9).
    public static func variants(of number: String) -> [String] {
        let digits = Array(number.utf8)
        guard digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return [] }
        if number.hasPrefix("521"), digits.count == 13 { return ["52" + number.dropFirst(3)] }
        if number.hasPrefix("52"), digits.count == 12 { return ["521" + number.dropFirst(2)] }
        if number.hasPrefix("55"), digits.count == 13, digits[4] == UInt8(ascii: "9") {
            return [String(number.prefix(4)) + number.dropFirst(5)]
        }
        if number.hasPrefix("55"), digits.count == 12, digits[4] >= UInt8(ascii: "6") {
            return [String(number.prefix(4)) + "9" + number.dropFirst(4)]
        }
        return []
    }
}

/// A store could not be opened or used; the message says what to do.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The database server answered with an error (it refused this statement), as opposed to not
    /// answering at all.
    public var refusedByServer = false
    /// The database could not be reached or used just now (no answer, no connection): a passing
    /// condition to retry, not a fault in what was asked (the API answers 503, not 500).
    public var unavailable = false
    public init(_ description: String, refusedByServer: Bool = false, unavailable: Bool = false) {
        self.description = description
        self.refusedByServer = refusedByServer
        self.unavailable = unavailable
    }

    /// Whether `error`, thrown by a store, says the database is unavailable now: PostgreSQL not
    /// answering or not connectable (`unavailable`), an SQLite file locked past its busy timeout,
    /// unreadable, or on a full disk.
    public static func isUnavailable(_ error: any Error) -> Bool {
        if let error = error as? StoreError { return error.unavailable }
        if let error = error as? DatabaseError {
            return [.SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_CANTOPEN, .SQLITE_IOERR, .SQLITE_FULL].contains(
                error.resultCode.primaryResultCode)
        }
        return false
    }
}

/// A template in one language.
public struct TemplateLanguage: Sendable, Hashable {
    public var template: String
    public var language: String

    public init(template: String, language: String) {
        self.template = template
        self.language = language
    }
}

/// A message waiting in the queue, as the billing run sends it.
public struct QueuedMessage: Sendable, Equatable {
    /// Its place in the queue (the order of the manifest).
    public var sequence: Int64
    public var id: String
    public var phone: String
    /// The Graph API request, as stored when the run was prepared.
    public var requestBody: String?
    /// The template language (Meta's 132001 stops one language, not the run).
    public var language: String

    public init(sequence: Int64, id: String, phone: String, requestBody: String?, language: String = "") {
        self.sequence = sequence
        self.id = id
        self.phone = phone
        self.requestBody = requestBody
        self.language = language
    }
}

/// The rule that shares a sender number's rate between a billing run and `/send-invoice` calls
/// (on any number of machines). Sends are counted per wall-clock second: a run *reserves* its pace
/// (at most `RateBudget`'s 98.5 % of its rate, in any sliding second) for each second before it
/// begins; single sends *take* what is left, one at a time. Any sliding second overlaps at most two
/// wall-clock seconds, so single sends are limited over each pair of consecutive seconds: then the
/// run's sends plus the single ones never pass the number's capacity in any second.
public enum SendSlots {
    /// Whether one more single send fits in `second`, given the counts of that second and the one
    /// before it. While a run reserves, the number's capacity is the run's rate (the one chosen for
    /// it), and single sends are counted over both seconds; otherwise `capacity`, the single sends'
    /// own, per second.
    public static func allows(
        previous: (reserved: Int, taken: Int, capacity: Int)?, current: (reserved: Int, taken: Int, capacity: Int)?, capacity: Int
    ) -> Bool {
        let reserved = max(previous?.reserved ?? 0, current?.reserved ?? 0)
        guard reserved > 0 else {
            // No run: the calls' own rate per second (each process's pacer keeps its sliding second).
            return (current?.taken ?? 0) + 1 <= capacity
        }
        let limit = max(previous?.capacity ?? 0, current?.capacity ?? 0)
        return (previous?.taken ?? 0) + (current?.taken ?? 0) + 1 <= limit - reserved
    }

    /// Seconds kept: older rows are deleted as new ones are written.
    public static let kept: Int64 = 120
}
