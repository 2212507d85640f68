import Crypto
public import Dispatcher
import Foundation
public import Store
public import WhatsApp

/// `POST /send-invoice` for the property system's landlord UI: one invoice, sent through the same
/// Graph client, pacing, ledger and idempotency as a billing run, answered once each send has an
/// outcome. Each day's API sends form one run per number: `api-YYYY-MM-DD`, or
/// `api-YYYY-MM-DD@ORGANIZATION` with organizations from the configuration file (a run is sent
/// from one number, and its statuses are applied only when they come for that number).
public final class InvoiceAPISender: InvoiceSendService {
    let store: any DispatchStore
    let client: GraphClient
    let catalog: TemplateCatalog
    let defaultLanguage: String
    let phones: PhoneNormalizer
    let pacer: Pacer
    /// Where PDFs behind the property system's authentication are fetched from, and the uploader.
    let documents: (system: PropertySystem, uploader: DocumentUploader, serviceHeaders: [(String, String)])?

    /// The kinds the landlord UI asks for by `templateName`.
    public static let kinds: Set<String> = ["invoice", "rentcall", "rentcall_reminder", "rentcall_last_reminder"]
    /// The organization's template name for each kind (`WHATSAPP_INVOICE_TEMPLATE`…); a kind not
    /// named here is sent with the template of its own name.
    let templateNames: [String: String]
    /// For a body without `currency`: the old service's default was `RD$`.
    let defaultCurrency: String
    /// The configured organization this sender sends for (its daily run's suffix); nil: the single-number setup.
    let organization: String?

    public init(
        store: any DispatchStore, client: GraphClient, catalog: TemplateCatalog, defaultLanguage: String,
        defaultCountryCode: String?, rate: Double = 80, propertySystem: PropertySystem? = nil, fetcher: DocumentFetcher? = nil,
        serviceHeaders: [(String, String)] = [], templateNames: [String: String] = [:], defaultCurrency: String = "DOP",
        organization: String? = nil
    ) {
        self.organization = organization
        self.templateNames = templateNames
        self.defaultCurrency = defaultCurrency
        self.store = store
        self.client = client
        self.catalog = catalog
        self.defaultLanguage = defaultLanguage
        self.phones = PhoneNormalizer(defaultCountryCode: defaultCountryCode)
        self.pacer = Pacer(rate: rate)
        if let propertySystem, let fetcher {
            documents = (propertySystem, DocumentUploader(store: store, client: client, fetcher: fetcher), serviceHeaders)
        } else {
            documents = nil
        }
    }

    /// Whether `run` is this sender's organization's (every run is, without organizations). A
    /// message's id is its invoice, number and template: the same three in another organization
    /// name that organization's message, which this caller must neither see nor answer with.
    func isOurs(run: String) async throws -> Bool {
        guard let organization else { return true }
        // A run without an organization in its name (before the configuration had several, or a
        // day's `api-DATE` then): ours when it was sent from our number.
        guard let at = run.lastIndex(of: "@") else {
            return try await store.run(named: run)?.sender == client.configuration.phoneNumberID
        }
        return run[run.index(after: at)...] == organization
    }

    /// The refusal when another organization holds the message this call would make: it says no
    /// more than that (not whose, nor what was sent).
    static func takenElsewhere(_ invoiceID: String, phone: String) -> InvoiceRequestError {
        .conflict(
            "invoiceId '\(invoiceID)' to +\(phone) is already taken by a message outside your organization: send this invoice with an invoiceId of its own"
        )
    }

    public func sendInvoice(_ request: SendInvoiceRequest, caller: InvoiceCaller) async throws -> SendInvoiceResponse {
        let organizationID = caller.organizationID
        let kind = request.templateName ?? "invoice"
        guard Self.kinds.contains(kind) else {
            throw InvoiceRequestError.invalid("templateName '\(kind)' is not one of \(Self.kinds.sorted().joined(separator: ", "))")
        }
        let template = templateNames[kind] ?? kind
        guard catalog[template] != nil else {
            throw InvoiceRequestError.invalid(
                "templateName '\(kind)' is sent with template '\(template)', which is not in templates/whatsapp (dispatcher templates pull reads the account's)"
            )
        }
        guard let code = request.currencyCode ?? (request.currency == nil ? defaultCurrency : nil), let currency = Currency(code: code)
        else {
            throw InvoiceRequestError.invalid("currency '\(request.currency ?? "")' is not an ISO 4217 code (or RD$)")
        }
        guard request.totalAmount > 0 else {
            return SendInvoiceResponse(
                results: [], nothingDue: "\(SkipReason.nothingDue) (totalAmount \(request.totalAmount)): nothing was sent",
                templateName: template)
        }
        guard !request.phoneNumbers.isEmpty else { throw InvoiceRequestError.invalid("phoneNumbers is empty") }
        var numbers: [String] = []
        for raw in request.phoneNumbers {
            switch phones.normalize(raw) {
            case .success(let number): if !numbers.contains(number) { numbers.append(number) }
            case .failure(let error): throw InvoiceRequestError.invalid("phoneNumbers: '\(raw)' \(error.message)")
            }
        }
        var documentURL = request.invoiceURL
        if let url = request.invoiceURL {
            if let local = documents?.system.resolve(url) {
                documentURL = local  // the property system's own PDF: fetched with the caller's token, uploaded
            } else if url.hasPrefix("/") {
                throw InvoiceRequestError.invalid(
                    "invoiceUrl: '\(url)' is a path on the property system: set DISPATCHER_PROPERTY_SYSTEM_URL so that its PDF can be fetched"
                )
            } else {
                var copy = url
                if let problem = copy.withUTF8({ checkDocumentURL($0) }) {
                    throw InvoiceRequestError.invalid(
                        "invoiceUrl: \(problem)\(documents == nil ? " (or set DISPATCHER_PROPERTY_SYSTEM_URL if it is the property system's)" : "")"
                    )
                }
            }
        }
        // Through the manifest's own amount parser: the same digit limits, never a wrapped or zeroed amount.
        var amountText = request.totalAmount.description
        let minor: Int64
        switch amountText.withUTF8({ parseAmount($0, digits: currency.minorUnitDigits) }) {
        case .success(let value): minor = value
        case .failure(let error): throw InvoiceRequestError.invalid("totalAmount: \(error.message)")
        }
        // ISO (2026-03-10), or day first as the landlord UI writes it (10/03/2026); never dropped without a word.
        var dueDate: CalendarDate? = nil
        if let text = request.dueDate, !text.trimmingCharacters(in: .whitespaces).isEmpty {
            var copy = text
            guard let date = copy.withUTF8({ parseDate($0) }) ?? parseDayFirstDate(text) else {
                throw InvoiceRequestError.invalid("dueDate: '\(text)' is not a date (2026-03-10 or 10/03/2026)")
            }
            dueDate = date
        }
        let today = Date()
        let components = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: today)
        let period = BillingPeriod(year: components.year!, month: components.month!)
        // Without invoiceId, the key is (organization, tenant, period, amount): the same call twice sends once.
        let invoiceID =
            request.invoiceID ?? "api-"
            + lowercaseHex(
                SHA256.hash(
                    data: Array(
                        "\(organizationID ?? request.organizationName ?? "")\u{1F}\(request.tenantName)\u{1F}\(request.invoicePeriod ?? "")\u{1F}\(minor)"
                            .utf8)
                )
                .prefix(8))
        var invoice = Invoice(
            line: 0, invoiceID: invoiceID, tenantName: request.tenantName, phones: numbers,
            amount: Money(minorUnits: minor, currency: currency),
            period: period,
            dueDate: dueDate,
            landlord: request.organizationName, locale: request.locale.flatMap(normalizeLocale) ?? defaultLanguage,
            documentURL: documentURL)
        invoice.periodLabel = request.invoicePeriod
        let renderer = try MessageRenderer(
            catalog: catalog, templateName: template,
            defaultLanguage: catalog[template]!.languages[defaultLanguage] != nil
                ? defaultLanguage : catalog[template]!.languages.keys.sorted()[0])
        let rendered: [RenderedMessage]
        switch renderer.render(invoice) {
        case .success(let messages): rendered = messages
        case .failure(let problems):
            throw InvoiceRequestError.invalid(problems.issues.map { "\($0.field ?? "body"): \($0.message)" }.joined(separator: "; "))
        }

        // Another organization's message with the same id (invoice, number, template): nothing of
        // it is told (its run, amount or state), and nothing is stored or answered in its name.
        for message in rendered {
            if let existing = try await store.message(message.id), try await !isOurs(run: existing.run) {
                throw Self.takenElsewhere(invoiceID, phone: message.phone)
            }
        }
        let run = "api-" + (iso8601(today.timeIntervalSince1970) ?? "").prefix(10) + (organization.map { "@\($0)" } ?? "")
        if try await store.run(named: run) == nil {
            try await store.saveRun(
                RunRecord(
                    name: run, manifest: "POST /send-invoice", template: "various", sender: client.configuration.phoneNumberID,
                    status: .sending, createdAt: today.timeIntervalSince1970))
        }
        // The same invoice received before with another amount: a correction needs its own
        // invoiceId, never the first answer replayed as if it were this one. Any of its numbers
        // (one may be new), in any earlier run, and today's.
        if request.invoiceID != nil {
            var earlierRuns = [run]
            for message in rendered {
                if let earlier = try await store.message(message.id), !earlierRuns.contains(earlier.run) { earlierRuns.append(earlier.run) }
            }
            for earlierRun in earlierRuns {
                guard let stored = try await store.invoice(run: earlierRun, invoiceID: invoiceID),
                    stored.amountMinor != minor || stored.currency != currency.code
                else { continue }
                let was = LocaleFormatting(locale: "en").money(
                    Money(minorUnits: stored.amountMinor, currency: Currency(code: stored.currency) ?? currency))
                let now = LocaleFormatting(locale: "en").money(Money(minorUnits: minor, currency: currency))
                throw InvoiceRequestError.conflict(
                    "invoiceId '\(invoiceID)' was received before (\(earlierRun)) for \(was); this call says \(now): send the corrected invoice with a new invoiceId"
                )
            }
        }
        try await store.addInvoices([InvoiceRecord(run: run, invoice: invoice)])
        let optedOut = try await OptOutList.load(from: store)
        // The property system's PDF: fetched (with the caller's own token) and uploaded once, and
        // only when a message is actually to be sent, so that a repeated call for an invoice
        // already sent is answered from the ledger whatever the property system says now.
        var upload: Result<String, DocumentProblem>? = nil
        func mediaID() async throws -> Result<String, DocumentProblem>? {
            guard let documents, let link = documentURL, documents.system.owns(link), let filename = rendered.first?.document?.filename
            else { return nil }
            if let upload { return upload }
            var headers = documents.serviceHeaders.filter { $0.0 != "Authorization" || caller.propertySystemAuthorization == nil }
            if let authorization = caller.propertySystemAuthorization { headers.append(("Authorization", authorization)) }
            if let organizationID {
                headers.removeAll { $0.0 == "organizationId" }
                headers.append(("organizationId", organizationID))
            }
            do {
                upload = .success(try await documents.uploader.mediaID(for: link, filename: filename, headers: headers).id)
            } catch let problem as DocumentProblem {
                upload = .failure(problem)
            } catch let error as GraphError {
                upload = .failure(DocumentProblem("Meta refused the invoice PDF's upload: \(error.description)"))
            }
            return upload
        }
        var results: [SendInvoiceResponse.Result] = []
        for message in rendered {
            let display = "+" + message.phone
            if optedOut.contains(message.phone) {
                _ = try await store.addMessages([
                    NewMessage(
                        id: message.id, run: run, invoiceID: invoiceID, phone: message.phone, template: template,
                        language: message.language, state: .skipped, skipReason: SkipReason.optedOut)
                ])
                results.append(
                    .init(
                        phoneNumber: display, success: false, id: message.id, wamid: nil, state: "skipped",
                        error: "the tenant opted out of WhatsApp messages"))
                continue
            }
            var body = message.request.jsonBody
            let insert = try await store.addMessages([
                NewMessage(
                    id: message.id, run: run, invoiceID: invoiceID, phone: message.phone,
                    template: template, language: message.language, requestBody: body)
            ])
            if case .exists = insert.first, let existing = try await store.message(message.id), existing.state != .queued,
                !(try await sendsAgain(existing))
            {
                // Sent before: answered as it stands, never sent twice.
                results.append(
                    .init(
                        phoneNumber: display, success: existing.state != .failed, id: existing.id, wamid: existing.wamid,
                        state: existing.state.rawValue, error: existing.errorTitle))
                continue
            }
            switch try await mediaID() {
            case nil: break
            case .success(let id)?:
                if let link = documentURL, let byID = TemplateMessageRequest.body(body, sendingDocument: link, asMedia: id) {
                    body = byID
                    _ = try await store.replaceQueuedRequest(messageID: message.id, body: body, at: wallClock())
                }
            case .failure(let problem)?:
                // Failed with the reason, no code: a later call (the PDF fixed) sends it again.
                _ = try await store.failQueued(
                    messageID: message.id, title: "not sent: the invoice PDF could not be sent", details: problem.description,
                    at: wallClock())
                results.append(
                    .init(phoneNumber: display, success: false, id: message.id, wamid: nil, state: "failed", error: problem.description))
                continue
            }
            results.append(try await send(messageID: message.id, phone: message.phone, body: Array(body.utf8), display: display))
        }
        return SendInvoiceResponse(results: results, templateName: template)
    }

    /// One message, retried as `RetryPolicy.interactive` says (two quick retries of transient
    /// errors or throttling; the landlord UI is waiting).
    /// Whether a message this call finds already stored is sent again: only one that failed for a
    /// passing reason Meta gave before taking it (the pair rule, throttling, a transient error, no
    /// connection), and never reached the tenant. Requeued here; anything else is answered as it stands.
    func sendsAgain(_ message: MessageRecord) async throws -> Bool {
        guard message.state == .failed, message.deliveredAt == nil, message.readAt == nil,
            [.pairRate, .throttled, .transient].contains(ErrorClass.of(code: message.errorCode))
        else { return false }
        return try await store.requeue(messageIDs: [message.id], at: wallClock()) == [message.id]
    }

    /// How long a call waits for room in its number's rate (`SendSlots`) before answering that the
    /// number is busy.
    static let sharedWait = 20.0

    /// One send within the number's rate as every process sending from it shares it (a billing
    /// run reserves its pace; these calls take what is left): waits for a second with room, up to
    /// `sharedWait`. False: none came.
    func sharedSlot() async throws -> Bool {
        let sender = client.configuration.phoneNumberID
        let capacity = max(1, Int(pacer.rate.rounded(.down)))
        let deadline = wallClock() + Self.sharedWait
        while true {
            let now = wallClock()
            let second = Int64(now.rounded(.down))
            if try await store.takeSendSlot(sender: sender, second: second, capacity: capacity) { return true }
            guard now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(Int64((Double(second + 1) - now) * 1000) + 1))
        }
    }

    func send(messageID: String, phone: String, body: [UInt8], display: String) async throws -> SendInvoiceResponse.Result {
        let policy = RetryPolicy.interactive
        let rounds = policy.maxTransientRetries + 1
        var round = 0
        var pairWaits = 0
        while round < rounds {
            defer { round += 1 }
            // Room in the number's rate first (it may take a while): the message is claimed only
            // when it can go, so a wait that fails or is cut short leaves it queued, not `sending`.
            try await pacer.slot()
            guard try await sharedSlot() else {
                return .init(
                    phoneNumber: display, success: false, id: messageID, wamid: nil, state: "queued",
                    error: "the number is at its rate (a billing run is sending from it): not sent now; call again later")
            }
            // Claimed, not just begun: a second call for the same invoice (the UI retrying while this
            // one waits out a back-off) finds it taken and does not send it too.
            guard let attempt = try await store.claimAttempt(messageID: messageID, at: wallClock()) else {
                return .init(
                    phoneNumber: display, success: false, id: messageID, wamid: nil, state: "sending",
                    error: "another call is sending this invoice to this number now; its status will follow")
            }
            switch await client.send(body: Data(body)) {
            case .accepted(let wamid, let waID, let held):
                try await store.recordOutcomes(
                    [
                        AttemptOutcome.accepted(
                            messageID: messageID, attempt: attempt, wamid: wamid,
                            waID: waID == phone ? nil : waID, held: held)
                    ], at: wallClock())
                return .init(
                    phoneNumber: display, success: true, id: messageID, wamid: wamid, state: held ? "held" : "accepted",
                    error: held ? "Meta holds the message for now (quality assessment or a paused template): its status will follow" : nil)
            case .unknown(let reason):
                try await store.recordOutcomes(
                    [AttemptOutcome.unknown(messageID: messageID, attempt: attempt, reason: reason)], at: wallClock())
                return .init(
                    phoneNumber: display, success: false, id: messageID, wamid: nil, state: "unknown",
                    error: "no answer from WhatsApp; its status will follow if it was sent")
            case .notSent(let reason):
                let error = SendError(code: nil, title: "not sent: \(reason)")
                try await store.recordOutcomes(
                    [AttemptOutcome.rejected(messageID: messageID, attempt: attempt, error: error, final: round == rounds - 1)],
                    at: wallClock())
                if round == rounds - 1 {
                    // The reason (an address, a connection error) is the operator's, in the ledger
                    // and `dispatcher status`; the caller is told what it means for the invoice.
                    return .init(
                        phoneNumber: display, success: false, id: messageID, wamid: nil, state: "failed",
                        error: "not sent: WhatsApp could not be reached; call again later")
                }
            case .rejected(let e) where e.errorClass == .pairRate && pairWaits < policy.pairWaits:
                // A second invoice to this tenant within Meta's 6 s: waited out (the UI waits), not a failure.
                try await store.recordOutcomes(
                    [
                        AttemptOutcome.rejected(
                            messageID: messageID, attempt: attempt, error: SendError(code: e.code, title: e.title, details: e.details),
                            final: false)
                    ], at: wallClock())
                pairWaits += 1
                round -= 1  // not one of the transient rounds
                try await Task.sleep(for: RetryPolicy.pairWindow)
                continue
            case .rejected(let e):
                // Throttling counts against the same rounds: the UI cannot wait out a long pause.
                let retry = round < rounds - 1 && policy.retriesNow(e.errorClass, transientRetries: round)
                let error = SendError(code: e.code, title: e.title, details: e.details)
                try await store.recordOutcomes(
                    [AttemptOutcome.rejected(messageID: messageID, attempt: attempt, error: error, final: !retry)], at: wallClock())
                if !retry {
                    return .init(
                        phoneNumber: display, success: false, id: messageID, wamid: nil, state: "failed",
                        error: "\(e.code.map { "(#\($0)) " } ?? "")\(e.title)")
                }
                if e.errorClass == .throttled {
                    // Meta's Retry-After, else 1 s: the pause holds every API send back, and the UI waits.
                    await pacer.pause(seconds: RetryPolicy.throttlePause(retryAfter: e.retryAfter, retry: 1))
                }
            }
            try await Task.sleep(for: policy.backoff(retry: round + 1))
        }
        return .init(phoneNumber: display, success: false, id: messageID, wamid: nil, state: "failed", error: "gave up after retries")
    }
}
