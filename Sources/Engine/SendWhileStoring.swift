import Dispatcher
import Foundation
import Logging
public import Store
import Synchronization
import WhatsApp

// MARK: - Sending while storing (issue 14: a million-invoice run's first request within seconds)
//
// Storing a million invoices and their rendered requests takes a minute or more; a run used to
// send nothing until all of it was stored. A new run (`RunOptions.sendWhileStoring`) now goes:
//
// 1. `prepare`: one check pass over the manifest on both cores, storing nothing: validation and
//    rendering (so an invalid manifest still sends nothing, all or none), and what the checks before
//    the first request need, counted as it goes: the (template, language) pairs for Meta's approval,
//    and the messages per landlord, currency and number prefix for the cost estimate and
//    `--max-cost`. Only the run's record is written.
// 2. The checks read those counts (`queuedTemplates`, `queuedCharges`, `skipQueued`) instead of
//    the store.
// 3. `dispatch` stores the run (the same pass as before, `storePass`) beside the send loop, whose
//    feeder reads the queue as batches commit and ends only after the last one. A stop (a halt, an
//    interrupt) waits for storing to finish, so that every invoice of the manifest is in the store
//    and in the report, queued with why.
//
// The counts of step 1 are what storing will queue, except messages an earlier run already sent:
// those are skipped when stored (and said after the run, `stored`), so the estimate before the
// first request can only be above the cost, never below. A run already in the store (a re-run)
// and a run whose PDFs are staged from the property system first (that needs the stored messages)
// are stored before sending, as before.

/// The manifest's file as the check pass read it: storing it later must read the same file.
struct ManifestStamp: Equatable, Sendable {
    var size: Int
    var modified: Date
    var fileNumber: Int

    init?(path: String) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let size = (attributes[.size] as? NSNumber)?.intValue,
            let modified = attributes[.modificationDate] as? Date
        else { return nil }
        self.size = size
        self.modified = modified
        fileNumber = (attributes[.systemFileNumber] as? NSNumber)?.intValue ?? 0
    }
}

/// The manifest changed after it was checked (edited, replaced or deleted): nothing read from the
/// change is stored or sent.
struct ManifestChanged: Error, CustomStringConvertible {
    var path: String
    var description: String {
        "the manifest \(path) changed after it was checked, while the run was sending: nothing read after the change was stored or sent. Run the same command again to check it and send the rest"
    }
}

/// A checked run waiting to be stored while it sends.
struct PendingStore: Sendable {
    var options: RunOptions
    /// The file the check pass read.
    var stamp: ManifestStamp?
    var optedOut: OptOutList
    var tally: QueuedTally
    /// (template, language) pairs not approved at Meta: their messages are stored skipped with this reason.
    var skip: [TemplateLanguage: String] = [:]
}

/// What the check pass counts of the messages storing will queue (opted-out numbers apart).
struct QueuedTally: Sendable {
    struct Charge: Hashable, Sendable {
        /// The message's template and language: a language skipped before sending is not priced.
        var template: TemplateLanguage
        var landlord: String?
        var currency: String
        /// The first four digits of the number, as `DispatchStore.chargeCounts` groups them.
        var prefix: Substring
    }
    var queued = 0
    var optedOut = 0
    var templates: [TemplateLanguage: Int] = [:]
    var charges: [Charge: Int] = [:]

    mutating func add(_ invoice: Invoice, _ message: RenderedMessage, optedOut isOptedOut: Bool) {
        guard !isOptedOut else {
            optedOut += 1
            return
        }
        queued += 1
        let template = TemplateLanguage(template: message.request.template.name, language: message.language)
        templates[template, default: 0] += 1
        let charge = Charge(
            template: template, landlord: invoice.landlord, currency: invoice.amount.currency.code, prefix: message.phone.prefix(4))
        charges[charge, default: 0] += 1
    }

    var chargeCounts: [ChargeCount] {
        var merged: [String: ChargeCount] = [:]
        for (key, n) in charges {
            let name = "\(key.landlord ?? "")\u{1F}\(key.currency)\u{1F}\(key.prefix)"
            merged[
                name,
                default: ChargeCount(
                    landlord: key.landlord, currency: key.currency, prefix: String(key.prefix), category: nil, type: nil, messages: 0)
            ]
            .messages += n
        }
        return merged.values.sorted { ($0.landlord ?? "", $0.currency, $0.prefix) < ($1.landlord ?? "", $1.currency, $1.prefix) }
    }

    /// The messages sent with `template` are not to be sent (skipped): no longer counted. Returns how many.
    mutating func drop(_ template: TemplateLanguage) -> Int {
        let n = templates.removeValue(forKey: template) ?? 0
        queued -= n
        charges = charges.filter { $0.key.template != template }
        return n
    }
}

extension RunEngine {
    /// Step 1: the check pass of a new run, on both cores; nothing stored but the run's record
    /// (and not even that when the manifest is invalid without `skipInvalid`).
    func prepareToSendWhileStoring(_ options: RunOptions) async throws -> Preparation {
        let optedOut = try await OptOutList.load(from: store)
        var checking = Previewer(options: validation, renderer: renderer, sampleLimit: 0)  // reads ahead
        checking.rendering = .caller  // this thread only counts: it renders, the reader parses and validates
        let previewer = checking
        let stamp = ManifestStamp(path: options.manifest)
        let (preview, tally) = try await onOwnThread {
            var tally = QueuedTally()
            let preview = try previewer.run(path: options.manifest) { invoice, messages in
                for message in messages { tally.add(invoice, message, optedOut: optedOut.contains(message.phone)) }
            }
            return (preview, tally)
        }
        guard !options.refuses(preview) else { return Preparation(preview: preview) }
        try await store.saveRun(
            RunRecord(
                name: options.run, manifest: options.manifest, template: renderer.template.name,
                sender: client.configuration.phoneNumberID, status: .sending, createdAt: wallClock()))
        pending.withLock { $0 = PendingStore(options: options, stamp: stamp, optedOut: optedOut, tally: tally) }
        logger.debug("run: checked; storing while sending", metadata: ["messages": "\(tally.queued)"])
        return Preparation(preview: preview, queued: tally.queued, optedOut: tally.optedOut, storing: true)
    }

    /// The check pass's counts of the run, if it is waiting to be stored.
    private func pendingTally(run: String) -> QueuedTally? {
        pending.withLock { $0.flatMap { $0.options.run == run ? $0.tally : nil } }
    }

    /// The (template, language) pairs the run's queued messages are sent with: the store's, or the
    /// check pass's for a run not stored yet.
    public func queuedTemplates(run: String) async throws -> [TemplateLanguage] {
        if let tally = pendingTally(run: run) {
            return tally.templates.keys.sorted { ($0.template, $0.language) < ($1.template, $1.language) }
        }
        return try await store.queuedTemplates(run: run)
    }

    /// The run's queued messages by landlord, currency and number prefix (the cost estimate's input):
    /// the store's, or the check pass's for a run not stored yet.
    public func queuedCharges(run: String) async throws -> [ChargeCount] {
        if let tally = pendingTally(run: run) { return tally.chargeCounts }
        return try await store.chargeCounts(run: run, states: [.queued])
    }

    /// Skips the run's queued messages sent with `template` in `language`, with `reason` (not
    /// approved at Meta); for a run not stored yet they are stored skipped. Returns how many.
    public func skipQueued(run: String, template: String, language: String, reason: String) async throws -> Int {
        let key = TemplateLanguage(template: template, language: language)
        let counted: Int? = pending.withLock { pending in
            guard pending?.options.run == run else { return nil }
            pending!.skip[key] = reason
            return pending!.tally.drop(key)
        }
        if let counted { return counted }
        return try await store.skipQueued(run: run, template: template, language: language, reason: reason, at: wallClock())
    }

    /// How storing the last run that sent while storing ended (nil: none did, or it did not finish).
    public var stored: Preparation? { storedPreparation.withLock { $0 } }

    /// The run's pending store, taken by `dispatch` (nil when it was stored before sending).
    func takePending(run: String) -> PendingStore? {
        pending.withLock { pending in
            guard pending?.options.run == run else { return nil }
            defer { pending = nil }
            return pending
        }
    }

    /// How far storing runs ahead of sending: half a minute of sends, at least 20,000 messages (ten
    /// batches): far enough that the feeder never waits for a batch, near enough that storing
    /// takes little of the sender's core.
    static func storeAhead(rate: Double) -> Int { max(20_000, Int(rate * 30)) }

    /// A checked run refused before its first request (a template not approved, over `--max-cost`):
    /// stored as a run stored before sending would be, its messages queued (or skipped with why),
    /// so that the report lists them and a re-run sends them. Nothing to do for a run stored already.
    public func storeUnsent(run: String) async {
        guard let pending = takePending(run: run) else { return }
        do {
            _ = try await storePending(pending, pace: nil)
        } catch {
            logger.error("the run's messages could not be stored", metadata: ["run": "\(run)", "error": "\(error)"])
        }
    }

    /// Stores a checked run (the pass a run stored before sending makes), and keeps how it ended in `stored`.
    private func storePending(_ pending: PendingStore, pace: (@Sendable (_ queued: Int) async -> Void)?) async throws -> Preparation {
        let preparation = try await storePass(
            pending.options, optedOut: pending.optedOut, skip: pending.skip, unchanged: pending.stamp, pace: pace,
            discardOnFailure: false)
        storedPreparation.withLock { $0 = preparation }
        return preparation
    }

    /// Step 3, beside the send loop: stores the run, then says so through `done` (also when it
    /// failed: the failure reaches the loop through `feed`, and stops it). Cancelled, it says
    /// nothing: the loop is ending then, and must not take an unfinished queue for the whole run.
    ///
    /// Storing keeps `storeAhead(rate:)` messages ahead of the feeder, no more: at full speed it
    /// takes both cores, and a send at 1,000/s beside it fell to 71 % of its rate with a request in
    /// a hundred timing out. Once the run stops, the rest is stored at full speed.
    func storeWhileSending(_ pending: PendingStore, feed: Feed, done: Flag) async {
        let ahead = Self.storeAhead(rate: pending.options.rate)
        let control = self.control
        do {
            let preparation = try await storePending(pending) { queued in
                while queued - feed.read > ahead && control.stopReason == nil && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
            logger.debug("run: stored while sending", metadata: ["queued": "\(preparation.queued)"])
            if pending.options.refuses(preparation.preview) {
                // Valid when checked, invalid when stored: the file changed in between.
                halt(
                    "the manifest changed while the run was sending: \(preparation.preview.invalidInvoices) invoices are invalid now (they were not when it was checked); fix them and run again"
                )
            }
            done.set()
        } catch is CancellationError {
        } catch let changed as ManifestChanged {
            halt(changed.description)
            done.set()
        } catch {
            logger.error("storing the run's messages failed; stopping", metadata: ["error": "\(error)"])
            feed.fail(error)
            done.set()
        }
    }
}
