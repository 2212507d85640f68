public import Dispatcher
public import Foundation
import Mustache
import WhatsApp

/// Writes a preview's report: `messages.csv` while the preview runs (every rendered message), and
/// `index.html` at the end (totals, problems, skipped invoices, chat bubbles, Graph API bodies).
public struct PreviewReportWriter: Sendable {
    public let outputDirectory: String
    let library: MustacheLibrary
    /// How many request bodies the page shows in full.
    public var requestsShown = 3

    /// - Parameters:
    ///   - templatesDirectory: the project's `templates/` (the report templates are in `reports/` below it).
    ///   - outputDirectory: created if missing.
    public init(templatesDirectory: String, outputDirectory: String) async throws {
        self.library = try await loadReportTemplates(templatesDirectory)
        self.outputDirectory = outputDirectory
        try createReportDirectory(outputDirectory)
    }

    /// The CSV of rendered messages, to be fed with `add(_:)` while the preview runs.
    /// `bodies`: a `request_body` column with each message's exact request to Meta.
    public func messagesCSV(bodies: Bool = false) throws -> PreviewMessagesCSV {
        try PreviewMessagesCSV(path: (outputDirectory as NSString).appendingPathComponent("messages.csv"), bodies: bodies)
    }

    /// Writes `index.html` and returns its path.
    @discardableResult
    /// `estimate`: the cost lines to show (the console's), when there is an estimate.
    public func writeHTML(_ result: PreviewResult, endpoint: String, estimate: [String] = [], generatedAt: Date = Date()) throws -> String {
        var page = PreviewPage(result, requestsShown: requestsShown, endpoint: endpoint, generatedAt: generatedAt)
        page.estimate = estimate.first
        page.estimateLines = Array(estimate.dropFirst()).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let html = library.render(page, withTemplate: "preview") else {
            throw ReportError("the report template 'preview' is missing from templates/reports")
        }
        let path = (outputDirectory as NSString).appendingPathComponent("index.html")
        do {
            try html.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw ReportError("cannot write \(path): \(error.localizedDescription)")
        }
        return path
    }
}

/// `messages.csv` of a preview: one row per message that would be sent, with its text.
public final class PreviewMessagesCSV {
    private let writer: CSVWriter
    public var path: String { writer.path }

    public static let columns = [
        "message_id", "invoice_id", "tenant_name", "landlord", "property", "phone", "language", "template",
        "amount", "currency", "period", "due_date", "email", "document_url", "text",
    ]

    let bodies: Bool

    init(path: String, bodies: Bool = false) throws {
        writer = try CSVWriter(path: path)
        self.bodies = bodies
        try writer.header(Self.columns + (bodies ? ["request_body"] : []))
    }

    public func add(_ m: RenderedMessage) throws {
        let i = m.invoice
        // Written straight into the line: no array of cells, no strings for the amount and dates.
        try writer.row { line in
            line.plain(m.id)
            line.text(i.invoiceID)
            line.text(i.tenantName)
            line.text(i.landlord)
            line.text(i.property)
            line.plain("+", m.phone)
            line.plain(m.language)
            line.plain(m.key.template)
            line.decimal(i.amount.minorUnits, digits: i.amount.currency.minorUnitDigits)
            line.plain(i.amount.currency.code)
            line.date(year: i.period.year, month: i.period.month, day: nil)
            if let due = i.dueDate { line.date(year: due.year, month: due.month, day: due.day) } else { line.plain("") }
            line.text(i.email)
            line.text(i.documentURL)
            line.text(m.body)
            if bodies { line.text(m.request.jsonBody) }
        }
    }

    public func finish() throws { try writer.finish() }
}

/// Loads `DIR/reports/*.mustache`; a missing folder is a clear error, not an empty page.
func loadReportTemplates(_ templatesDirectory: String) async throws -> MustacheLibrary {
    let folder = (templatesDirectory as NSString).appendingPathComponent("reports")
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw ReportError("no report templates at \(folder): pass --templates DIR (the folder that holds reports/*.mustache)")
    }
    return try await MustacheLibrary(directory: folder)
}

/// `18095550101` → `+1 809 555 0101`; other numbers as `+` and their digits.
public func displayPhone(_ digits: String) -> String {
    if digits.count == 11 && digits.hasPrefix("1") {
        let d = Array(digits)
        return "+1 \(String(d[1...3])) \(String(d[4...6])) \(String(d[7...10]))"
    }
    return "+" + digits
}

// MARK: - View model

struct PreviewPage {
    struct Stat { var label: String; var value: String; var tone: String }
    struct ErrorRow { var line: String; var invoice: String; var field: String; var message: String }
    struct SkippedRow { var line: String; var invoice: String; var reason: String }
    struct Billed { var currency: String; var amount: String }
    struct Document { var filename: String; var link: String }
    struct Button { var text: String }
    struct Bubble {
        var tenant: String
        var phone: String
        var invoice: String
        var landlord: String?
        var language: String
        var document: Document?
        var headerText: String?
        var body: String
        var footer: String?
        var buttons: [Button]
        var fallbackNote: String?
    }
    struct Request { var json: String }

    var manifestName: String
    var manifestPath: String
    var templateName: String
    var generatedAt: String
    var stats: [Stat]
    var valid: Bool
    var invalidCount: Int
    var errorCount: Int
    var messageCount: Int
    var warnings: [String]
    var hasErrors: Bool
    var errors: [ErrorRow]
    var moreErrors: String?
    var hasSkipped: Bool
    var skipped: [SkippedRow]
    var hasBilled: Bool
    /// The estimate's headline and its lines (per landlord, market, what is not charged).
    var estimate: String? = nil
    var estimateLines: [String] = []
    var billed: [Billed]
    var messages: [Bubble]
    var moreMessages: String?
    var hasRequests: Bool
    var requestCount: Int
    var endpoint: String
    var requests: [Request]

    init(_ r: PreviewResult, requestsShown: Int, endpoint: String, generatedAt: Date) {
        manifestName = (r.manifest as NSString).lastPathComponent
        manifestPath = r.manifest
        templateName = r.templateName
        self.generatedAt = iso(generatedAt.timeIntervalSince1970)
        stats = [
            Stat(label: "invoices in the manifest", value: "\(r.invoices)", tone: ""),
            Stat(label: "messages to send", value: "\(r.messages)", tone: ""),
            Stat(label: "distinct numbers", value: "\(r.recipients)", tone: ""),
            Stat(label: "skipped (nothing due)", value: "\(r.skipped.count)", tone: r.skipped.isEmpty ? "" : "warn"),
            Stat(label: "invoices with problems", value: "\(r.invalidInvoices)", tone: r.invalidInvoices > 0 ? "bad" : ""),
        ]
        valid = r.isValid
        invalidCount = r.invalidInvoices
        errorCount = r.errorCount
        messageCount = r.messages
        var warnings = r.warnings
        if r.languageFallbacks > 0 {
            warnings.append(
                "\(r.languageFallbacks) messages use the default template language because their locale has none of its own in template '\(r.templateName)'."
            )
        }
        self.warnings = warnings
        hasErrors = !r.errors.isEmpty
        errors = r.errors.map {
            ErrorRow(line: $0.line.map(String.init) ?? "—", invoice: $0.invoiceID ?? "—", field: $0.field ?? "—", message: $0.message)
        }
        moreErrors = r.errorCount > r.errors.count ? "…and \(r.errorCount - r.errors.count) more problems not listed." : nil
        hasSkipped = !r.skipped.isEmpty
        skipped = r.skipped.map { SkippedRow(line: "\($0.line)", invoice: $0.invoiceID, reason: $0.reason) }
        billed = r.billed.keys.sorted().map { code in
            let money = r.billed[code]!
            return Billed(currency: code, amount: LocaleFormatting(locale: "en").money(money))
        }
        hasBilled = !billed.isEmpty
        messages = r.samples.map { m in
            Bubble(
                tenant: m.invoice.tenantName, phone: displayPhone(m.phone), invoice: m.invoice.invoiceID,
                landlord: m.invoice.landlord, language: m.language,
                document: m.document.map { Document(filename: $0.filename, link: $0.link) },
                headerText: m.headerText, body: m.body, footer: m.footer,
                buttons: m.buttons.map { Button(text: $0.text) },
                fallbackNote: m.languageFallback
                    ? "Locale \(m.invoice.locale) has no text of its own in this template: sent in \(m.language)." : nil)
        }
        moreMessages =
            r.messages > r.samples.count
            ? "The first \(r.samples.count) of \(r.messages) messages are shown; messages.csv has every one." : nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        requests = r.samples.prefix(requestsShown).map { m in
            Request(json: (try? encoder.encode(m.request)).map { String(decoding: $0, as: UTF8.self) } ?? "")
        }
        hasRequests = !requests.isEmpty
        requestCount = requests.count
        self.endpoint = endpoint
    }
}
