import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Reports
import Server
import Store
import WhatsApp

struct PreviewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preview",
        abstract: "Import, validate and render a manifest, and write the preview report. Sends nothing.",
        discussion: "Exit status: 0 when every invoice is valid, 65 when any is not."
    )

    @Argument(help: "The manifest: CSV (, or ;) or XML.")
    var manifest: String

    @OptionGroup var common: CommonOptions

    @Option(help: "Run name (default: the manifest's file name).")
    var run: String?

    @Option(help: "Where the report goes (default: reports/RUN/preview).")
    var out: String?

    @Option(help: "Template to render (default: env WHATSAPP_TEMPLATE_NAME, else invoice).")
    var template: String?

    @Option(help: "Template language for rows whose locale has none (default: env WHATSAPP_TEMPLATE_LANGUAGE, else es).")
    var language: String?

    @Option(help: "Currency for rows that give none (ISO 4217).")
    var defaultCurrency: String?

    @Option(
        help:
            "Organizations (env DISPATCHER_CONFIG; docs/configuration.md): rows are checked against them as `send --config` checks them (the manifest's `organization` column)."
    )
    var config: String?

    @Option(help: "Check only this organization's rows, or the organization that rows without an `organization` belong to.")
    var organization: String?

    @Option(help: "Your messaging-limit tier (250, 2000, 10000, 100000 unique users per 24 h): warn when the run reaches more.")
    var messagingLimit: Int?

    @Flag(help: "Print one JSON object on stdout (human output goes to stderr).")
    var json = false

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Do not read the database (opt-outs, messages sent before): count as if it were empty.")
    var ignoreStore = false

    @Flag(
        help:
            "Add each message's exact request to Meta to messages.csv (request_body) and, with --json, as `requests` (a property-system PDF link becomes its uploaded media id when sent)."
    )
    var bodies = false

    func validate() throws {
        try checkManifestPath(manifest)
        try checkRunName(run)
        if let messagingLimit, messagingLimit <= 0 {
            throw ValidationError("--messaging-limit must be a positive number of users")
        }
        if let defaultCurrency, Currency(code: defaultCurrency) == nil {
            throw ValidationError("--default-currency '\(defaultCurrency)' is not an ISO 4217 code")
        }
    }

    func run() async throws {
        let console = Console(json: json)
        let settings = common.settings
        var options = ValidationOptions(
            defaultCountryCode: try common.countryCode(), defaultCurrency: defaultCurrency,
            defaultLocale: (language ?? settings.templateLanguage).replacingOccurrences(of: "_", with: "-"),
            propertySystem: try settings.propertySystem())
        // Rows of organizations `send` would not take are errors here too, each named (a preview
        // that passed them while `send` refused every row was no preview).
        let loaded = try loadOrganizations(config: config, settings: settings, requireTokens: false)
        // A template that does not match Meta's rules stops here (exit 1), before any manifest is read.
        let catalog = try TemplateCatalog(directory: common.templatesDirectory)
        var renderers: [String: MessageRenderer] = [:]
        if loaded.fromFile {
            let known = loaded.organizations.map(\.id)
            try checkOrganizationOption(organization, known: known)
            options.organizations = OrganizationScope(
                organization: organization, known: known, fallback: organization ?? (known.count == 1 ? known[0] : nil),
                reportsStrays: true)
            // Each organization's rows read with its own country code, currency and language, and
            // rendered with its own template, as its run (`send`) takes them; the flags, when
            // given, over every organization's.
            for own in loaded.organizations where organization == nil || own.id == organization {
                options.byOrganization[own.id] = OrganizationDefaults(
                    countryCode: try common.countryCode(organization: own.defaultCountryCode),
                    currency: defaultCurrency ?? own.currency,
                    locale: (language ?? own.language).replacingOccurrences(of: "_", with: "-"))
                renderers[own.id] = try organizationRenderer(
                    catalog: catalog, organization: own, fromFile: true, template: template, language: language, settings: settings)
            }
        } else {
            let id = organization ?? loaded.organizations.first?.id ?? "default"
            options.organizations = OrganizationScope(
                organization: id, known: [id], fallback: id, reportsStrays: true,
                strayHint: oneOrganizationHint(organization)
            )
        }
        let renderer =
            try loaded.organizations.lazy.compactMap({ renderers[$0.id] }).first
            ?? MessageRenderer(
                catalog: catalog, templateName: template ?? settings.templateName, defaultLanguage: language ?? settings.templateLanguage)
        var previewer = Previewer(options: options, renderer: renderer)
        previewer.renderers = renderers
        let runName = run ?? runName(forManifest: manifest)
        let outDirectory = out ?? "reports/\(runName)/preview"
        let writer = try await PreviewReportWriter(templatesDirectory: common.templatesDirectory, outputDirectory: outDirectory)
        // What `send` will skip, read from the store when there is one (a dry run never creates it).
        var store: (any DispatchStore)? = nil
        if !ignoreStore {
            do {
                store = try await StoreOpener.openExisting(url: database.resolved(settings: settings))
            } catch {
                console.warn(
                    "could not read \(database.describe(settings: settings)) (\(error)): opt-outs and messages sent before are not counted")
            }
        }
        var optOuts = OptOutList(numbers: [])
        if let store { optOuts = try await OptOutList.load(from: store) }
        // `send` refuses a manifest whose derived run name is another manifest's run
        // (`march-2026.xml` after `march-2026.csv`): said here too, before anyone runs it.
        let conflict = run == nil ? RunNameConflict(existing: try await store?.run(named: runName), manifest: manifest) : nil
        var toLookUp: [String] = []
        var optedOut = 0
        // The estimate: every message to send, by organization, landlord, market and category;
        // those the store says are sent already come off below.
        guard let card = try await rateCard(on: isoDay(Date()), store: store).0 else { throw ValidationError("no rate card in USD") }
        var estimate = CostEstimate(card: card)
        func category(_ renderer: MessageRenderer) -> PricingCategory { PricingCategory(meta: renderer.template.category) ?? .utility }
        let categories = renderers.mapValues(category)
        let defaultCategory = category(renderer)
        var keys: [CostEstimate.Key] = []
        var keyIndex: [CostEstimate.Key: Int] = [:]
        var lookUpKeys: [Int] = []
        let csv = try writer.messagesCSV(bodies: bodies)
        // With --json, every request goes in the object too: kept in a file meanwhile (a million
        // of them do not fit in memory), copied into the object at the end.
        let requests = json && bodies ? try RequestSpool() : nil
        let result = try previewer.run(path: manifest) { message in
            try csv.add(message)
            try requests?.add(message)
            if store != nil, optOuts.contains(message.phone) {
                optedOut += 1
                return
            }
            let key = estimate.key(
                organization: message.invoice.organization, landlord: message.invoice.landlord, phone: message.phone,
                category: message.invoice.organization.flatMap { categories[$0] } ?? defaultCategory)
            estimate.add(key)
            guard store != nil else { return }
            toLookUp.append(message.id)
            if let i = keyIndex[key] {
                lookUpKeys.append(i)
            } else {
                keyIndex[key] = keys.count
                lookUpKeys.append(keys.count)
                keys.append(key)
            }
        }
        try csv.finish()
        var history = StoreCounts(optedOut: optedOut)
        if let store {
            let found = try await store.storedMessages(ids: toLookUp)
            for (i, id) in toLookUp.enumerated() {
                guard let stored = found[id] else { continue }
                if stored.run != runName {
                    history.alreadySent += 1
                } else if stored.state == .queued {
                    history.resumed += 1
                    continue
                } else {
                    history.alreadyInRun += 1
                }
                estimate.remove(keys[lookUpKeys[i]])
            }
        }
        toLookUp = []
        lookUpKeys = []
        let estimateLines = EstimateOutput(estimate: estimate).lines()
        let report = try writer.writeHTML(result, endpoint: settings.messagesEndpoint, estimate: estimateLines)

        // Human summary.
        console.say("Preview of \(manifest) (\(result.format.rawValue.uppercased())), template \(result.templateName): nothing sent")
        console.say(
            "  invoices     \(result.invoices)"
                + (result.otherOrganizations > 0
                    ? " (and \(result.otherOrganizations) of other organizations, left for their own run: preview without --organization for them)"
                    : ""))
        console.say("  messages     \(result.messages)")
        console.say("  recipients   \(result.recipients)")
        console.say("  skipped      \(result.skipped.count)")
        if result.languageFallbacks > 0 {
            console.say(
                "  language     \(result.languageFallbacks) messages in the default language: their locale has none of its own in the template"
            )
        }
        if store == nil {
            console.say(
                "  (no database read: \(ignoreStore ? "--ignore-store" : "none yet at \(database.describe(settings: settings))"); opt-outs and earlier sends not counted)"
            )
        } else {
            console.say("  opted out    \(history.optedOut)\(history.optedOut > 0 ? " (send skips them; dispatcher optout list)" : "")")
            console.say(
                "  sent before  \(history.alreadySent)\(history.alreadySent > 0 ? " (in earlier runs: send skips them unless --resend)" : "")"
            )
            if history.alreadyInRun + history.resumed > 0 {
                console.say("  in run \(runName)  \(history.alreadyInRun) done, \(history.resumed) still queued (send goes on with those)")
            }
            console.say("  to send      \(result.messages - history.optedOut - history.alreadySent - history.alreadyInRun)")
        }
        for skipped in result.skipped.prefix(10) { console.say("    line \(skipped.line), \(skipped.invoiceID): \(skipped.reason)") }
        console.say("  problems     \(result.errorCount) in \(result.invalidInvoices) invoices")
        for issue in result.errors.prefix(20) { console.say("    \(issue)") }
        if result.errorCount > 20 { console.say("    …\(result.errorCount - 20) more in the report") }
        var warnings = result.warnings
        if let warning = MessagingLimit.warning(recipients: result.recipients, limit: messagingLimit) { warnings.append(warning) }
        if let conflict { warnings.append("send will refuse this manifest as it is: \(conflict)") }
        for warning in warnings { console.warn(warning) }
        for line in estimateLines { console.say(line) }
        console.say("Report: \(report)")
        console.say("Messages: \(csv.path)")

        if json {
            try console.emit(
                requests: requests,
                PreviewJSON(
                    invoices: result.invoices, messages: result.messages, recipients: result.recipients,
                    skipped: result.skipped, errors: result.errors, report: report,
                    opted_out: store == nil ? nil : history.optedOut, already_sent: store == nil ? nil : history.alreadySent,
                    to_send: store == nil ? nil : result.messages - history.optedOut - history.alreadySent - history.alreadyInRun,
                    estimate: EstimateOutput(estimate: estimate).json))
        }
        if !result.isValid { throw Exit.invalidManifest }
    }
}

/// The `--json` object, as the spec gives it; the store's counts are added when a database was read.
struct PreviewJSON: Encodable {
    var invoices: Int
    var messages: Int
    var recipients: Int
    var skipped: [SkippedInvoice]
    var errors: [ValidationIssue]
    var report: String
    var opted_out: Int?
    var already_sent: Int?
    var to_send: Int?
    /// What the messages to send will cost, on the rate card in force today.
    var estimate: EstimateJSON
}

/// What the store says about a preview's messages, counted as `send` will count them.
struct StoreCounts {
    var optedOut = 0
    /// Stored by another run: `send` skips them (unless `--resend`).
    var alreadySent = 0
    /// Stored by this run and past the queue.
    var alreadyInRun = 0
    /// Stored by this run and still queued: `send` goes on with them.
    var resumed = 0
}

/// The `requests` of `preview --json --bodies`: one object per message (its id, invoice, number and
/// the exact request body to Meta), written to a temporary file as the manifest is read.
final class RequestSpool {
    private let path = NSTemporaryDirectory() + "dispatcher-requests-\(UUID().uuidString).json"
    private let file: FileHandle
    private var buffer: [UInt8] = []
    private var count = 0

    init() throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
            let file = FileHandle(forUpdatingAtPath: path)
        else { throw ValidationError("cannot write a temporary file in \(NSTemporaryDirectory())") }
        self.file = file
        unlink(path)  // gone with the process, however it ends
    }

    func add(_ m: RenderedMessage) throws {
        if count > 0 { buffer.append(UInt8(ascii: ",")) }
        count += 1
        // Keys in order, as the rest of the object (sortedKeys).
        buffer += Array(#"{"body":"#.utf8)
        buffer += Array(m.request.jsonBody.utf8)
        buffer += Array(#","invoice_id":"#.utf8)
        appendJSONString(m.invoice.invoiceID, to: &buffer)
        buffer += Array(#","message_id":"#.utf8)
        appendJSONString(m.id, to: &buffer)
        buffer += Array(#","phone":"#.utf8)
        appendJSONString("+" + m.phone, to: &buffer)
        buffer.append(UInt8(ascii: "}"))
        if buffer.count > 1 << 20 { try flush() }
    }

    private func flush() throws {
        try file.write(contentsOf: buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes `"requests":[…]` to `out`, after everything added.
    func copy(to out: FileHandle) throws {
        try flush()
        try out.write(contentsOf: Array(#""requests":["#.utf8))
        try file.seek(toOffset: 0)
        while let chunk = try file.read(upToCount: 1 << 20), !chunk.isEmpty { try out.write(contentsOf: chunk) }
        try out.write(contentsOf: Array("]".utf8))
    }
}

extension Console {
    /// `emit`, with the spooled requests as the object's last member.
    func emit<T: Encodable>(requests: RequestSpool?, _ value: T) throws {
        guard let requests else { return try emit(value) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var object = try encoder.encode(value)
        guard object.last == UInt8(ascii: "}") else { return try emit(value) }
        object.removeLast()
        fflush(nil)  // whatever print() buffered goes first
        let out = FileHandle.standardOutput
        try out.write(contentsOf: object)
        if object.count > 1 { try out.write(contentsOf: Array(",".utf8)) }
        try requests.copy(to: out)
        try out.write(contentsOf: Array("}\n".utf8))
    }
}
