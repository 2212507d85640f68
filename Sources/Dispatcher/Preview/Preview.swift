/// What a preview found: the numbers the summary prints and the report shows.
public struct PreviewResult: Sendable {
    public var manifest: String
    public var format: ManifestFormat
    public var templateName: String
    /// Records in the manifest (valid, skipped and invalid), other organizations' not counted.
    public var invoices = 0
    /// Records of other organizations, sent by their own runs (`OrganizationScope`).
    public var otherOrganizations = 0
    /// Messages that would be sent (one per valid invoice and distinct number).
    public var messages = 0
    /// Distinct numbers those messages go to.
    public var recipients = 0
    /// Numbers with `CrowdedNumber.threshold` messages or more, most first: Meta's pair rule sends
    /// them one every 6 seconds, so they alone keep a run sending for that long.
    public var crowded: [CrowdedNumber] = []
    public var skipped: [SkippedInvoice] = []
    /// Import and template problems, in manifest order, up to `ManifestImporter.issueLimit`.
    public var errors: [ValidationIssue] = []
    public var errorCount = 0
    public var invalidInvoices = 0
    public var warnings: [String] = []
    /// The first messages, for the report's chat bubbles.
    public var samples: [RenderedMessage] = []
    /// Messages whose row locale had no language of its own in the template.
    public var languageFallbacks = 0
    /// Messages per template language code.
    public var languages: [String: Int] = [:]
    /// Amount billed per currency (valid invoices with something due), in minor units.
    public var billed: [String: Money] = [:]
    /// Invoices rendered as they were read (on the reader thread, when reading ahead), the others
    /// on the caller's (`Previewer.rendering`).
    public var renderedAhead = 0

    public var isValid: Bool { errorCount == 0 }
    /// The file itself could not be read to its end (not well-formed, cut short, a DOCTYPE) or
    /// holds no invoice: a problem `--skip-invalid` cannot skip, since what it would drop is not
    /// an invoice it can name.
    public var fileUnreadable = false

    /// Nothing found yet.
    public init(manifest: String, format: ManifestFormat, templateName: String) {
        self.manifest = manifest
        self.format = format
        self.templateName = templateName
    }
}

/// Import, validate and render a manifest without sending anything: the dry run, and the first
/// half of every billing run.
public struct Previewer: Sendable {
    public var options: ValidationOptions
    public var renderer: MessageRenderer
    /// Organizations' own renderers (their template names and default languages), by id: a row of
    /// one of them is rendered with its renderer, as its run (`send`) renders it; other rows with
    /// `renderer`.
    public var renderers: [String: MessageRenderer] = [:]
    /// How many rendered messages to keep for the report.
    public var sampleLimit: Int
    /// Read, validate and (as `rendering` says) render on a second thread while the caller's callbacks run on this one:
    /// a preview's whole command a quarter faster. A billing run's preparation turns it off: its
    /// store's writes are the slower half and need the second core (with it on, a million-invoice
    /// `send` reached its first request 10 % later).
    public var readAhead = true
    /// Count the distinct numbers and the messages of those that get several
    /// (`PreviewResult.recipients`, `crowded`): a set of every number, 16 MB or more for a million.
    /// A billing run's storing pass does not need it (`send` says of a crowded number as its
    /// queue holds its messages).
    public var countsRecipients = true
    /// With `readAhead`, which thread renders. The reader thread parses and validates; rendering
    /// goes where the other thread has time.
    public enum Rendering: Sendable {
        /// The reader thread renders every invoice.
        case reader
        /// The caller's thread does: a billing run's check pass only counts, and rendering on its
        /// side brought a million-invoice `send` to its first request in 9.7 s instead of 13.3 s
        /// (medians of five, the two builds alternating).
        case caller
        /// The reader renders while the caller is behind (more than half the batches that may
        /// wait are waiting) and leaves it to the caller otherwise: in a preview, reading and
        /// writing the CSV take about the same time, and neither side is idle for long.
        case balanced
    }
    public var rendering = Rendering.balanced

    public init(options: ValidationOptions, renderer: MessageRenderer, sampleLimit: Int = 200) {
        self.options = options
        self.renderer = renderer
        self.sampleLimit = sampleLimit
    }

    /// The template the rows are rendered with, or each organization's (`invoice (caribe),
    /// factura (norte)`) when they differ.
    public var templateNames: String {
        let names = Set(renderers.values.map(\.template.name))
        guard names.count > 1 else { return renderers.values.first?.template.name ?? renderer.template.name }
        return renderers.keys.sorted().map { "\(renderers[$0]!.template.name) (\($0))" }.joined(separator: ", ")
    }

    /// Runs the preview, calling `onMessage` for every message that would be sent, in order.
    public func run(
        path: String, format: ManifestFormat? = nil,
        onMessage: (RenderedMessage) throws -> Void = { _ in }
    ) throws -> PreviewResult {
        try run(
            path: path, format: format,
            onInvoice: { _, messages in
                // Each message handed over in place, not copied out of the array first.
                try messages.withUnsafeBufferPointer { messages in
                    for i in messages.indices { try onMessage(messages[i]) }
                }
            })
    }

    /// Runs the preview in one pass, handing over each invoice as its verdict is known: `onInvoice`
    /// for a valid one with its messages (what a billing run stores and sends), `onSkipped` for one
    /// with nothing due. Invalid records reach neither; they are in the result's errors.
    public func run(
        path: String, format: ManifestFormat? = nil,
        onInvoice: (Invoice, [RenderedMessage]) throws -> Void,
        onSkipped: (Invoice, String) throws -> Void = { _, _ in }
    ) throws -> PreviewResult {
        let format = format ?? ManifestFormat.detect(path: path)
        var result = PreviewResult(manifest: path, format: format, templateName: templateNames)
        // Every number once; the messages of a number only from its second on (few numbers get
        // several: a count of every number took 12 MB more of a million-invoice preview).
        var recipients = Set<UInt64>()
        var repeated: [UInt64: UInt32] = [:]
        var renderIssues: [ValidationIssue] = []
        var renderIssueCount = 0
        var renderInvalid = 0
        let (options, countsRecipients) = (self.options, self.countsRecipients)
        let (renderer, renderers) = (self.renderer, self.renderers)
        @Sendable func rendered(_ invoice: Invoice, memo: MessageRenderer.Memo) -> Result<[RenderedMessage], InvoiceProblems> {
            let own = renderers.isEmpty ? nil : invoice.organization.flatMap { renderers[$0] }
            return (own ?? renderer).render(invoice, memo: memo)
        }
        /// `readerRenders`: whether to render an invoice here or leave it to `hand`.
        @Sendable func read(_ emit: (ReadAhead.Item) throws -> Void, readerRenders: () -> Bool) throws -> ImportSummary {
            let memo = MessageRenderer.Memo()
            return try ManifestImporter(options: options).importManifest(path: path, format: format) {
                try emit(.invoice($0, readerRenders() ? rendered($0, memo: memo) : nil))
            } onSkipped: {
                try emit(.skipped($0, $1))
            }
        }
        func take(_ invoice: Invoice, _ rendered: Result<[RenderedMessage], InvoiceProblems>) throws {
            switch rendered {
            case .success(let messages):
                let code = invoice.amount.currency.code
                guard
                    let total = result.billed[code, default: Money(minorUnits: 0, currency: invoice.amount.currency)].adding(invoice.amount)
                else {
                    // Never wrapped: the invoice that would pass the limit is refused, by name.
                    renderInvalid += 1
                    renderIssueCount += 1
                    renderIssues.append(
                        ValidationIssue(
                            line: invoice.line, invoiceID: invoice.invoiceID, field: "amount",
                            message: "brings the manifest's total in \(code) past 18 digits; split the manifest into smaller ones"))
                    return
                }
                result.billed[code] = total
                messages.withUnsafeBufferPointer { messages in
                    for i in messages.indices {
                        result.messages += 1
                        if countsRecipients {
                            let number = UInt64(messages[i].phone) ?? 0
                            if !recipients.insert(number).inserted { repeated[number, default: 1] &+= 1 }
                        }
                        if messages[i].languageFallback { result.languageFallbacks += 1 }
                        result.languages[messages[i].language, default: 0] += 1
                        if result.samples.count < sampleLimit { result.samples.append(messages[i]) }
                    }
                }
                try onInvoice(invoice, messages)
            case .failure(let problems):
                let issues = problems.issues
                renderInvalid += 1
                renderIssueCount += issues.count
                if renderIssues.count < ManifestImporter.issueLimit { renderIssues.append(contentsOf: issues) }
            }
        }
        let memo = MessageRenderer.Memo()  // this thread's, when it renders
        func hand(_ item: ReadAhead.Item) throws {
            if let reason = item.skipped {
                try onSkipped(item.invoice, reason)
            } else if let rendered = item.rendered {
                result.renderedAhead += 1
                try take(item.invoice, rendered)
            } else {
                try take(item.invoice, rendered(item.invoice, memo: memo))
            }
        }
        let summary: ImportSummary
        if readAhead {
            // Reading and validating (and rendering, as `rendering` says) on a thread of their own;
            // counting and handing over on this one.
            let ahead = ReadAhead()
            let rendering = self.rendering
            ahead.start { emit in
                try read(emit) {
                    switch rendering {
                    case .reader: true
                    case .caller: false
                    case .balanced: ahead.callerIsBehind
                    }
                }
            }
            do {
                while let batch = ahead.next() {
                    // Read in place: the items stay the batch's, freed on the reader's thread.
                    try batch.withUnsafeBufferPointer { items in
                        for i in items.indices { try hand(items[i]) }
                    }
                    ahead.recycle(batch)
                }
            } catch {
                ahead.stop()
                _ = try? ahead.summary()  // the reader has stopped before this returns
                throw error
            }
            summary = try ahead.summary()
        } else {
            summary = try read(hand) { true }
        }
        result.invoices = summary.records - summary.elsewhere
        result.otherOrganizations = summary.elsewhere
        result.recipients = recipients.count
        result.crowded = repeated.filter { $0.value >= CrowdedNumber.threshold }
            .map { CrowdedNumber(phone: String($0.key), messages: Int($0.value)) }
            .sorted { ($0.messages, $1.phone) > ($1.messages, $0.phone) }
        result.skipped = summary.skipped
        result.warnings = summary.warnings + CrowdedNumber.warnings(result.crowded)
        result.invalidInvoices = summary.invalidRecords + renderInvalid
        result.fileUnreadable = summary.stoppedEarly || summary.records == 0
        result.errorCount = summary.issueCount + renderIssueCount
        // One list in manifest order; a file-level problem (no line) stays last, where reading stopped.
        result.errors = (summary.issues + renderIssues).enumerated().sorted { a, b in
            switch (a.element.line, b.element.line) {
            case let (x?, y?): x != y ? x < y : a.offset < b.offset
            case (nil, _?): false
            case (_?, nil): true
            case (nil, nil): a.offset < b.offset
            }
        }.map(\.element).prefix(ManifestImporter.issueLimit).map { $0 }
        return result
    }
}

/// A number many invoices of one run go to: a company renting many units, or a placeholder typed
/// for tenants without one. Meta takes one message to a number every 6 seconds (131056), so its
/// messages alone keep the run sending for that long.
public struct CrowdedNumber: Sendable, Equatable {
    public var phone: String
    public var messages: Int

    public init(phone: String, messages: Int) {
        self.phone = phone
        self.messages = messages
    }

    /// From this many messages to one number, a run says so (about 10 minutes of sending).
    public static let threshold: UInt32 = 100
    /// Meta's pair rule: one message to a number every 6 seconds.
    public static let pairInterval: Duration = .seconds(6)
    /// What the send queue adds to it: the interval is counted from when a message leaves the
    /// queue, and its request leaves a little later (the ledger write).
    public static let margin: Duration = .milliseconds(250)

    /// Whole minutes (rounded up) that `messages` to one number take, one every `spacing`.
    public static func minutes(_ messages: Int, spacing: Duration = pairInterval + margin) -> Int {
        Int((Double((spacing * messages).components.seconds) / 60).rounded(.up))
    }

    /// The preview's warnings: the five most crowded numbers, then how many more there are.
    static func warnings(_ crowded: [CrowdedNumber]) -> [String] {
        var lines = crowded.prefix(5).map {
            "\($0.messages) invoices of this manifest go to one number (ending \($0.phone.suffix(4))): Meta takes one message to a number every 6 seconds, so they alone keep the run sending for \(minutes($0.messages)) minutes; check the number, or send them another way"
        }
        if crowded.count > 5 { lines.append("\(crowded.count - 5) more numbers have \(threshold) or more invoices each") }
        return lines
    }
}

/// Meta's messaging-limit tiers: unique users reached in a moving 24 h, per business portfolio.
public enum MessagingLimit {
    public static let tiers = [250, 2_000, 10_000, 100_000]

    /// A warning when `recipients` is more than `limit` allows, nil otherwise.
    public static func warning(recipients: Int, limit: Int?) -> String? {
        guard let limit, recipients > limit else { return nil }
        let next = tiers.first { $0 >= recipients }.map { "the \($0.formatted(grouping: ","))-user tier" } ?? "the unlimited tier"
        return "this run reaches \(recipients) distinct numbers but the messaging limit is \(limit) unique users per 24 h: "
            + "\(recipients - limit) tenants would not get their invoice today. "
            + "Split the run over several days or ask Meta for \(next)."
    }
}

extension Int {
    func formatted(grouping separator: String) -> String {
        let digits = String(self.magnitude)
        var out = ""
        for (i, ch) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += separator }
            out.append(ch)
        }
        return (self < 0 ? "-" : "") + out
    }
}
