import Dispatcher
public import Foundation
import Mustache
public import Store
import WhatsApp

/// Where a run's reports were written.
public struct ReportFiles: Sendable {
    public init(html: String, messagesCSV: String, landlordsCSV: String) {
        self.html = html
        self.messagesCSV = messagesCSV
        self.landlordsCSV = landlordsCSV
    }

    public var html: String
    public var messagesCSV: String
    public var landlordsCSV: String
}

/// Writes a run's delivery report from the store: `index.html` (self-contained), `messages.csv`
/// and `landlords.csv`. Reads through the store's API a page at a time, so a million-message run
/// is never held in memory; the page keeps the totals and the first failures, the CSVs everything.
public struct DeliveryReportWriter: Sendable {
    let library: MustacheLibrary
    public var lang: String
    public var excel: Bool
    /// How many sequence numbers a page of `messages.csv` covers (smaller in tests, to cross pages).
    var pageSpan: Int64 = 10_000
    /// Rows per failure group and in the retryable list on the page.
    public var pageRows = 50

    /// The page's times (the CSVs keep UTC, ISO 8601 with `Z`, for spreadsheets and imports).
    public var timeZone: TimeZone

    public init(templatesDirectory: String, lang: String = "en", excel: Bool = false, timeZone: TimeZone = .current) async throws {
        library = try await loadReportTemplates(templatesDirectory)
        self.lang = lang
        self.excel = excel
        self.timeZone = timeZone
    }

    public func write(
        run: RunRecord, store: any DispatchStore, to directory: String, settle: String? = nil,
        landlord: String? = nil, now: Date = Date()
    ) async throws -> ReportFiles {
        try createReportDirectory(directory)
        let files = ReportFiles(
            html: (directory as NSString).appendingPathComponent("index.html"),
            messagesCSV: (directory as NSString).appendingPathComponent("messages.csv"),
            landlordsCSV: (directory as NSString).appendingPathComponent("landlords.csv"))
        // The page's figures come from queries of their own: run beside the CSV's pass.
        async let page: Void = writePage(run: run, store: store, files: files, settle: settle, landlord: landlord, now: now)
        try await writeMessagesCSV(run: run, store: store, to: files.messagesCSV, landlord: landlord)
        try await page
        return files
    }

    /// `messages.csv`: every message of the run (or of one landlord), a page of rows at a time.
    public func writeMessagesCSV(run: RunRecord, store: any DispatchStore, to path: String, landlord: String? = nil) async throws {
        let csv = try CSVWriter(path: path, dialect: excel ? .excel : .standard)
        try csv.header([
            "run", "invoice_id", "tenant_name", "landlord", "property", "phone", "amount", "currency", "state", "wamid",
            "sent_at", "delivered_at", "read_at", "failed_at", "error_code", "error_title", "error_details", "retryable",
            "attempts", "skip_reason", "email", "message_id",
        ])
        // Rows come in runs of one currency: its decimals are looked up when it changes.
        var lastCurrency = "", digits = 2
        func write(_ rows: [ReportRow]) throws {
            // A landlord's rows come as theirs only (`reportRows(run:landlord:…)`).
            for row in rows {
                let m = row.message
                let retryable =
                    (m.state == .failed || m.state == .unknown)
                    ? explain(code: m.errorCode, title: m.errorTitle, state: m.state.rawValue, lang: lang).retryable : nil
                try csv.row { line in
                    line.text(m.run)
                    line.text(m.invoiceID)
                    line.text(row.tenantName)
                    line.text(row.landlord)
                    line.text(row.property)
                    line.plain("+", m.phone)
                    if row.currency != lastCurrency {
                        lastCurrency = row.currency
                        digits = (Currency(code: row.currency) ?? Currency(code: "USD")!).minorUnitDigits
                    }
                    line.decimal(row.amountMinor, digits: digits)
                    line.plain(row.currency)
                    line.plain(m.state.rawValue)
                    line.text(m.wamid)
                    line.time(m.sentAt)
                    line.time(m.deliveredAt)
                    line.time(m.readAt)
                    line.time(m.failedAt)
                    line.int(m.errorCode)
                    line.text(m.errorTitle)
                    line.text(m.errorDetails)
                    line.plain(retryable.map { $0 ? "yes" : "no" } ?? "")
                    line.int(m.attempts)
                    line.text(m.skipReason)
                    line.text(row.email)
                    line.plain(m.id)
                }
            }
        }
        // Pages are ranges of 10,000 sequence numbers (fewer rows where other runs' messages are
        // interleaved), so that two can be read at once while the one before is written: reading
        // (SQLite, a String per cell) takes more than writing, and a million rows took 2.55-2.62 s
        // this way against 2.78-2.80 s with one page read ahead (2026-12-03, two cores). After an
        // empty page (a run retried long after, other runs' messages in between), the next page
        // starts at the run's next message: a gap of 50 million sequence numbers cost 0.8 s of
        // empty pages.
        if let landlord {
            // One landlord's, through their index: a page read ahead while the one before is written.
            var page = try await store.reportRows(run: run.name, landlord: landlord, after: nil, limit: Int(pageSpan))
            let name = run.name, span = Int(pageSpan)
            while !page.isEmpty {
                let after = page.last?.message.sequence
                let next =
                    page.count < span ? nil : Task { try await store.reportRows(run: name, landlord: landlord, after: after, limit: span) }
                do { try write(page) } catch {
                    next?.cancel()
                    throw error
                }
                page = try await next?.value ?? []
            }
        } else if let all = try await store.messageSequences(run: run.name) {
            let span = pageSpan, readers = 2, last = all.upperBound, name = run.name
            try await withThrowingTaskGroup(of: (Int, [ReportRow]).self) { group in
                var next = all.lowerBound  // where the next page to ask for starts
                var ends: [Int64] = []  // each page's last sequence number, by page
                func ask() {
                    let page = ends.count, range = next...min(next + (span - 1), last)
                    group.addTask { (page, try await store.reportRows(run: name, sequences: range)) }
                    ends.append(range.upperBound)
                    next = range.upperBound + 1
                }
                while ends.count < readers && next <= last { ask() }
                var ready: [Int: [ReportRow]] = [:]
                var page = 0
                // A failed write leaves the group, which cancels the reads under way and waits for them.
                while page < ends.count {
                    while ready[page] == nil, let (at, rows) = try await group.next() { ready[at] = rows }
                    let rows = ready.removeValue(forKey: page) ?? []
                    if rows.isEmpty, next <= last, let following = try await store.messageSequences(run: name, after: ends[page]) {
                        // Nothing of the run lies between this page's end and `following`: pages asked for since
                        // (one, at most) end before it or contain it.
                        next = max(next, following.lowerBound)
                    }
                    if next <= last { ask() }
                    try write(rows)
                    page += 1
                }
            }
        }
        try csv.finish()
    }

    /// `index.html` and `landlords.csv`, from the figures the database adds up: no pass over the messages.
    public func writePage(
        run: RunRecord, store: any DispatchStore, files: ReportFiles, settle: String? = nil, landlord: String? = nil,
        now: Date = Date()
    ) async throws {
        let dialect: CSVWriter.Dialect = excel ? .excel : .standard
        let summary = try await store.reportSummary(run: run.name, landlord: landlord, samples: pageRows * 4)
        var totals = Totals(summary, lang: lang, pageRows: pageRows)
        for invoice in try await store.skippedInvoices(run: run.name) where landlord == nil || invoice.landlord == landlord {
            totals.addSkippedInvoice(invoice)
        }
        if let cost = try await CostEstimate.charged(run: run, store: store, landlord: landlord, counts: summary.charges) {
            totals.add(cost: cost)
        }
        try totals.writeLandlords(to: files.landlordsCSV, dialect: dialect)
        let page = DeliveryPage(
            run: run, totals: totals, settle: settle, landlordFilter: landlord, lang: lang, generatedAt: now,
            fallbacks: try await store.fallbacks(run: run.name), clock: LocalClock(zone: timeZone))
        guard let html = library.render(page, withTemplate: "delivery") else {
            throw ReportError("the report template 'delivery' is missing from templates/reports")
        }
        do { try html.write(toFile: files.html, atomically: true, encoding: .utf8) } catch {
            throw ReportError("cannot write \(files.html): \(error.localizedDescription)")
        }
    }
}

/// A time on the page, or nothing.
func iso(_ seconds: Double?) -> String { iso8601(seconds) ?? "" }

/// Everything the page and landlords.csv need, from the store's summary of the run.
struct Totals {
    /// One landlord's figures in one currency: invoices by outcome, each counted once.
    struct Counts {
        typealias Tally = ReportSummary.Tally
        var invoices = 0
        var messages = 0
        /// What Meta charged for the delivered messages, millionths of the rate card's currency.
        var cost: Int64 = 0
        var billed: Int64 = 0
        var delivered = Tally(), read = Tally(), open = Tally(), failed = Tally(), notOnWhatsApp = Tally(), notSent = Tally()
    }

    struct Landlord {
        var byCurrency: [String: Counts] = [:]
        var invoices: Int { byCurrency.values.map(\.invoices).reduce(0, +) }
        var billed: [String: Int64] { byCurrency.mapValues(\.billed) }
        var cost: Int64 { byCurrency.values.map(\.cost).reduce(0, +) }
        /// One outcome's invoices, and their amounts per currency.
        func outcome(_ tally: KeyPath<Counts, ReportSummary.Tally>) -> (count: Int, amounts: [String: Int64]) {
            (byCurrency.values.map { $0[keyPath: tally].count }.reduce(0, +), byCurrency.mapValues { $0[keyPath: tally].amountMinor })
        }
    }

    typealias Example = (sequence: Int64, tenant: String, phone: String, invoice: String, email: String?, detail: String?)

    struct Failure {
        var explanation: FailureExplanation
        var code: Int?
        var count = 0
        var rows: [Example] = []
    }

    let lang: String
    let pageRows: Int
    var states: [MessageState: Int]
    var landlords: [String: Landlord] = [:]
    var failures: [String: Failure] = [:]
    var retryable: [(tenant: String, phone: String, invoice: String, reason: String)] = []
    var retryableCount = 0
    var skipped: [(invoice: String, tenant: String, reason: String)] = []
    var skippedCount = 0
    var sendsPerMinute: [Int: Int]
    var deliveriesPerMinute: [Int: Int]
    /// What Meta charged (nil: no rate card).
    var cost: CostEstimate?
    /// The first messages WhatsApp took whose outcome is not known yet (accepted, held, sent), and how many.
    var pending: [ReportSummary.Pending]
    var pendingCount: Int

    init(_ summary: ReportSummary, lang: String, pageRows: Int) {
        self.lang = lang
        self.pageRows = pageRows
        states = summary.states
        pending = Array(summary.pending.prefix(pageRows * 4))
        pendingCount = [MessageState.accepted, .held, .sent].reduce(0) { $0 + (summary.states[$1] ?? 0) }
        sendsPerMinute = summary.sendsPerMinute
        deliveriesPerMinute = summary.deliveriesPerMinute
        for figures in summary.landlords {
            landlords[landlordName(figures.landlord), default: Landlord()].byCurrency[figures.currency] = Counts(
                invoices: figures.invoices, messages: figures.messages, billed: figures.billedMinor, delivered: figures.delivered,
                read: figures.read, open: figures.open, failed: figures.failed, notOnWhatsApp: figures.notOnWhatsApp,
                notSent: figures.notSent)
        }
        // Groups Meta told apart (by title) that mean the same to a landlord are shown as one.
        var retryableExamples: [(Example, String)] = []
        for group in summary.problems {
            let explanation = explain(code: group.errorCode, title: group.errorTitle, state: group.state.rawValue, lang: lang)
            let key = "\(group.errorCode.map(String.init) ?? "none")|\(explanation.reason)"
            var failure = failures[key] ?? Failure(explanation: explanation, code: group.errorCode)
            failure.count += group.count
            let examples = group.samples.map { s in
                (
                    sequence: s.sequence, tenant: s.tenantName, phone: displayPhone(s.phone), invoice: s.invoiceID, email: s.email,
                    detail: s.errorDetails
                )
            }
            failure.rows = Array((failure.rows + examples).sorted { $0.sequence < $1.sequence }.prefix(pageRows))
            failures[key] = failure
            if explanation.retryable {
                retryableCount += group.count
                retryableExamples += examples.map { ($0, explanation.reason) }
            }
        }
        retryable = retryableExamples.sorted { $0.0.sequence < $1.0.sequence }.prefix(pageRows * 4).map { example, reason in
            (example.tenant, example.phone, example.invoice, reason)
        }
        if let group = summary.skipped {
            skippedCount = group.count
            skipped = group.samples.prefix(pageRows * 4).map { ($0.invoiceID, $0.tenantName, skipReason($0.skipReason ?? "", lang: lang)) }
        }
    }

    func landlordName(_ name: String?) -> String {
        name ?? ReportLanguageWords(lang).pick("(no landlord)", "(sin arrendador)", "(sans bailleur)", "(sem proprietário)")
    }

    /// An invoice with nothing to send still shows its landlord.
    mutating func addSkippedInvoice(_ invoice: InvoiceRecord) {
        let name = landlordName(invoice.landlord)
        if landlords[name] == nil { landlords[name] = Landlord() }
    }

    /// The run's cost, shared out to its landlords (per currency of their invoices).
    mutating func add(cost estimate: CostEstimate) {
        cost = estimate
        for line in estimate.lines() {
            let name = landlordName(line.key.landlord)
            landlords[name, default: Landlord()].byCurrency[line.key.invoiceCurrency ?? "", default: Counts()].cost += line.cost
        }
    }

    func writeLandlords(to path: String, dialect: CSVWriter.Dialect) throws {
        let csv = try CSVWriter(path: path, dialect: dialect)
        let costCurrency = (cost?.card.currency ?? "USD").lowercased()
        // Each invoice once, under its outcome: the outcomes' invoices and amounts add up to
        // `invoices` and `amount_billed` (read ones are among the delivered). `pending` is the
        // page's "Open", `unreachable` its "Not on WhatsApp" (131026).
        let outcomes: [(String, KeyPath<Counts, ReportSummary.Tally>)] = [
            ("delivered", \.delivered), ("read", \.read), ("pending", \.open), ("failed", \.failed),
            ("unreachable", \.notOnWhatsApp), ("not_sent", \.notSent),
        ]
        try csv.header(
            ["landlord", "currency", "invoices", "messages", "amount_billed"]
                + outcomes.flatMap { [$0.0, "amount_\($0.0)"] } + ["whatsapp_cost_\(costCurrency)"])
        for name in landlords.keys.sorted() {
            for (currency, x) in landlords[name]!.byCurrency.sorted(by: { $0.key < $1.key }) {
                let c = Currency(code: currency) ?? Currency(code: "USD")!
                func amount(_ minor: Int64) -> CSVWriter.Cell { .plain(csv.amount(Money(minorUnits: minor, currency: c).plainDecimal)) }
                try csv.row(
                    [.text(name), .plain(currency), .plain(String(x.invoices)), .plain(String(x.messages)), amount(x.billed)]
                        + outcomes.flatMap { [.plain(String(x[keyPath: $0.1].count)), amount(x[keyPath: $0.1].amountMinor)] }
                        + [.plain(cost == nil ? "" : csv.amount(CostEstimate.decimal(x.cost)))])
            }
        }
        try csv.finish()
    }
}
