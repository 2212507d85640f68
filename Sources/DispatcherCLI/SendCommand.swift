import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Logging
import Reports
import Sandbox
import Server
import Store
import UnixSignals
import WhatsApp

/// Options shared by `send` and `retry`: where statuses come from during the settle window.
struct SettleOptions: ParsableArguments {
    @Option(
        help:
            "How long to wait for statuses after the last send (90s, 15m, 2h; default 120s, 15s with --sandbox); ends early once every message is final.",
        transform: parseDuration)
    var settle: Duration?

    @Option(help: "Receive Meta's webhooks here during the run (HOST:PORT); without it, a `serve` writing to the same database does.")
    var listen: String?

    @Option(help: "Where the reports go (default: reports/RUN/).")
    var out: String?

    @Option(help: "Report language.")
    var lang: ReportLanguage = .en

    @Option(help: ArgumentHelp("Times on the report page in this zone (default: the machine's).", valueName: "America/Santo_Domingo"))
    var timezone: String?

    @Flag(help: "Print one JSON object on stdout (human output goes to stderr).")
    var json = false

    @Flag(help: "After sending, print the achieved rate and the CPU time per message of the sending phase.")
    var stats = false

    @Option(
        help: "If another run is sending from the same number, wait this long for it (90s, 15m) instead of refusing at once.",
        transform: parseDuration)
    var waitForSender: Duration?

    @Flag(
        help:
            "When a language the run needs is not approved at Meta (WHATSAPP_BUSINESS_ACCOUNT_ID set), skip its messages instead of refusing to start; run again with it, they are tried again (sent once approved)."
    )
    var skipUnapprovedLanguages = false

    @Option(
        help: ArgumentHelp(
            "Refuse to send when the estimated cost of what is still to send passes this amount (in the rate card's currency, USD); per organization with --config.",
            valueName: "USD"))
    var maxCost: Double?

    /// The zone the report page's times are in.
    var timeZone: TimeZone { timezone.flatMap(TimeZone.init(identifier:)) ?? .current }

    func validate() throws {
        try validateTimeZone(timezone)
        if let maxCost, !(maxCost >= 0) || !maxCost.isFinite || maxCost > 1_000_000_000 {
            throw ValidationError("--max-cost must be an amount of US dollars, 0 or more (e.g. 25 or 12.50)")
        }
    }
}

struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "The billing run: import, send paced, wait for statuses, write the reports. Re-running it resumes and never sends twice.",
        discussion: """
            Exit status: 0 done (failed messages are results, not errors); 64 usage; 65 invalid manifest; \
            69 halted by a systemic API error (token, payment, template, account); 1 anything else. \
            Needs WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID, or --sandbox.
            """
    )

    @Argument(help: "The manifest: CSV or XML.")
    var manifest: String

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var settleOptions: SettleOptions

    @Option(help: "Run name (default: the manifest's file name).")
    var run: String?

    @Option(help: "Messages per second from the sender number (Meta: 80 by default, up to 1,000).")
    var rate: Double = 80

    @Option(help: "Template to send (default: env WHATSAPP_TEMPLATE_NAME, else invoice).")
    var template: String?

    @Option(help: "Currency for rows that give none (ISO 4217).")
    var defaultCurrency: String?

    @Flag(help: "Start a local WhatsApp Cloud API simulator and send to it (the demo; nothing reaches Meta).")
    var sandbox = false

    @Option(help: "With --sandbox: a scenario file choosing outcomes per number (docs/sandbox.md).")
    var sandboxScenario: String?

    @Flag(help: "Send the valid rows even when others are invalid.")
    var skipInvalid = false

    @Flag(help: "Send again what an earlier run already sent.")
    var resend = false

    @Option(
        help:
            "Organizations, each with its own number, token and templates (env DISPATCHER_CONFIG; docs/configuration.md): the manifest's `organization` column picks each row's."
    )
    var config: String?

    @Option(
        help:
            "Send only this organization's rows (with --config), or the organization that rows without an `organization` belong to.")
    var organization: String?

    func validate() throws {
        try checkManifestPath(manifest)
        try checkRunName(run)
        guard rate > 0, rate <= 1000 else {
            throw ValidationError("--rate must be between 1 and 1000 messages per second (Meta's ceiling)")
        }
        if let listen = settleOptions.listen { _ = try parseListen(listen) }
    }

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let baseName = run ?? runName(forManifest: manifest)
        let catalog = try TemplateCatalog(directory: common.templatesDirectory)
        let loaded = try loadOrganizations(config: config, settings: settings)
        let console = Console(json: settleOptions.json)

        // Which organizations send, and which rows each sends (the manifest's `organization`).
        var lanes: [RunLane] = []
        func lane(_ organization: Organization, run: String, label: String?, scope: OrganizationScope, reports: String) throws -> RunLane {
            let renderer = try organizationRenderer(
                catalog: catalog, organization: organization, fromFile: loaded.fromFile, template: template, settings: settings)
            var validation = ValidationOptions(
                defaultCountryCode: try common.countryCode(organization: organization.defaultCountryCode),
                defaultCurrency: defaultCurrency ?? (loaded.fromFile ? organization.currency : nil),
                defaultLocale: organization.language, propertySystem: try settings.propertySystem())
            validation.organizations = scope
            return RunLane(
                run: run, organization: organization, label: label, renderer: renderer, validation: validation, reportDirectory: reports)
        }
        if loaded.fromFile {
            let known = loaded.organizations.map(\.id)
            try checkOrganizationOption(organization, known: known)
            let scope = OrganizationScope(
                organization: nil, known: known, fallback: organization ?? (known.count == 1 ? known[0] : nil), reportsStrays: false)
            let census = OrganizationCensus(path: manifest, scope: scope)
            if census.strayCount > 0 {
                for issue in census.strays.prefix(30) { console.say("  \(issue)") }
                if census.strayCount > 30 { console.say("  …and \(census.strayCount - 30) more") }
                guard skipInvalid else {
                    console.say(
                        "\(census.strayCount) invoices belong to no configured organization: nothing was sent. Fix them, or send the rest with --skip-invalid."
                    )
                    throw Exit.invalidManifest
                }
                console.say("skipping \(census.strayCount) invoices of no configured organization (--skip-invalid)")
            }
            let others = census.rows.filter { $0.key != organization && organization != nil }.values.reduce(0, +)
            if others > 0 {
                console.say("\(others) invoices of other organizations are not in this run (send without --organization for them)")
            }
            for org in loaded.organizations where census.rows[org.id, default: 0] > 0 && (organization == nil || organization == org.id) {
                var own = scope
                own.organization = org.id
                let out = settleOptions.out ?? reportDirectory(run: baseName, landlord: nil)
                lanes.append(try lane(org, run: "\(baseName)@\(org.id)", label: org.id, scope: own, reports: "\(out)/\(org.id)"))
            }
            if lanes.isEmpty {
                // Nothing any organization could send: the one-lane path reports it (an empty export, an unreadable file).
                let org = loaded.organizations.first { $0.id == (organization ?? known[0]) }!
                var own = scope
                own.organization = org.id
                own.reportsStrays = true
                lanes.append(
                    try lane(
                        org, run: "\(baseName)@\(org.id)", label: nil, scope: own,
                        reports: "\(settleOptions.out ?? reportDirectory(run: baseName, landlord: nil))/\(org.id)"))
            }
        } else {
            guard var org = sandbox ? Organization.sandbox(settings) : loaded.organizations.first else {
                throw ValidationError(
                    "set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID, or organizations with --config (or try --sandbox)")
            }
            org.id = organization ?? org.id
            let scope = OrganizationScope(
                organization: org.id, known: [org.id], fallback: org.id, reportsStrays: true,
                strayHint: oneOrganizationHint(organization)
            )
            lanes.append(
                try lane(
                    org, run: baseName, label: nil, scope: scope,
                    reports: settleOptions.out ?? reportDirectory(run: baseName, landlord: nil)))
        }
        if lanes.count > 1 {
            console.say(
                "Run \(baseName): \(lanes.count) organizations at once: \(lanes.map { "\($0.organization.id) (\($0.organization.phoneNumberID))" }.joined(separator: ", "))"
            )
        }

        // Several organizations: all or none sent when rows are invalid, as for one manifest.
        let barrier = LaneBarrier(lanes: lanes.count)
        let (skipInvalid, resend, rate, nameDerived, manifest) = (skipInvalid, resend, rate, run == nil, manifest)
        // PDFs staged from the property system before the first request need the stored messages:
        // such a run is stored before it sends; any other new run sends while it is stored.
        let stagesDocuments = try settings.propertySystem() != nil
        var session = RunSession(
            settings: settings, database: database, settle: settleOptions, sandbox: sandbox, catalog: catalog,
            templatesDirectory: common.templatesDirectory, scenario: try sandboxScenario.map(Scenario.load) ?? Scenario())
        session.organizationsFromFile = loaded.fromFile
        session.runName = baseName
        try await session.execute(lanes: lanes) { engine, lane, console in
            var options = RunOptions(run: lane.run, manifest: manifest, rate: rate, skipInvalid: skipInvalid, resend: resend)
            options.nameDerived = nameDerived
            // With --max-cost the run is stored before it sends: the estimate is then of what is
            // really queued (messages an earlier run sent are skipped when stored; the check pass
            // of a run sent while stored counts them, and refused a run that would send nothing).
            options.sendWhileStoring = !stagesDocuments && settleOptions.maxCost == nil
            options.requeueTemplateSkips = settleOptions.skipUnapprovedLanguages
            let existed = try await engine.store.run(named: lane.run) != nil
            let preparation = try await engine.prepare(options)
            let preview = preparation.preview
            if !preview.isValid {
                for issue in preview.errors.prefix(30) { console.say("  \(issue)") }
                if preview.errorCount > 30 { console.say("  …and \(preview.errorCount - 30) more (dispatcher preview writes them all)") }
            }
            guard await barrier.arrive(lane.run, ok: !options.refuses(preview)) else {
                if !options.refuses(preview) {
                    // Another lane failed (its own reason is said and decides the exit status).
                    if !existed {
                        _ = try? await engine.store.discardUnsentRun(lane.run)
                    } else if var record = try? await engine.store.run(named: lane.run) {
                        record.status = .interrupted
                        try? await engine.store.saveRun(record)
                    }
                    console.say("nothing was sent: another organization's part of the run could not start")
                    throw OtherLaneFailed()
                } else if preview.fileUnreadable {
                    console.say(
                        "the manifest cannot be read as a whole (see above): nothing was sent"
                            + (options.skipInvalid
                                ? "; --skip-invalid skips invalid invoices, not a file cut short or not well-formed." : ".")
                    )
                } else {
                    console.say(
                        "\(preview.invalidInvoices) invoices have problems: nothing was sent. Fix them, or send the rest with --skip-invalid."
                    )
                }
                throw Exit.invalidManifest
            }
            if !preview.isValid { console.say("skipping \(preview.invalidInvoices) invalid invoices (--skip-invalid)") }
            console.say(
                "Run \(lane.run): \(preview.invoices) invoices, \(preparation.queued + preparation.resumed) messages to send"
                    + (preparation.alreadySent > 0 ? ", \(preparation.alreadySent) already sent by an earlier run (skipped)" : "")
                    + (preparation.optedOut > 0 ? ", \(preparation.optedOut) opted out" : "")
                    + (preparation.interrupted > 0 ? ", \(preparation.interrupted) left in flight by an interrupted run (now unknown)" : "")
                    + (preparation.storing ? " (stored while sending)" : "")
            )
            return options
        } onLaneFailed: { lane in
            await barrier.arrive(lane.run, ok: false)
        }
    }
}

/// A lane that stopped before sending because another one failed (that one's error is the command's).
struct OtherLaneFailed: Error {}

/// Lanes of one run wait here after preparing: they send only if every lane's invoices are valid
/// (or `--skip-invalid`); a lane that fails before it gets here counts as invalid. A lane counts
/// once (a failure after preparing changes nothing).
actor LaneBarrier {
    private var waiting: [CheckedContinuation<Bool, Never>] = []
    private var arrived = Set<String>()
    private var allOK = true
    private let lanes: Int

    init(lanes: Int) { self.lanes = lanes }

    @discardableResult
    func arrive(_ lane: String, ok: Bool) async -> Bool {
        guard arrived.insert(lane).inserted else { return allOK }
        allOK = allOK && ok
        if arrived.count == lanes {
            for waiter in waiting { waiter.resume(returning: allOK) }
            waiting.removeAll()
            return allOK
        }
        return await withCheckedContinuation { waiting.append($0) }
    }
}

struct RetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract: "Resend what failed for a retryable reason (or what --codes names); never a message that reached the tenant.")

    @Argument(help: "The run's name.")
    var run: String

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var settleOptions: SettleOptions

    @Option(help: "Retry messages that failed with these Meta codes (e.g. 131000,131016) instead of the retryable ones.")
    var codes: String?

    @Flag(help: "Also resend messages whose outcome is unknown (their request may have reached Meta).")
    var includeUnknown = false

    @Flag(name: .customLong("now"), help: "Resend at once even what Meta asked to wait for (131049: 24 hours after it failed).")
    var retryNow = false

    @Option(help: "Messages per second.")
    var rate: Double = 80

    @Flag(help: "Send to a local simulator instead of Meta.")
    var sandbox = false

    @Option(help: "Organizations (env DISPATCHER_CONFIG): the run is sent again from its own number with that organization's token.")
    var config: String?

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let loaded = try loadOrganizations(config: config, settings: settings)
        // The organization whose number sent the run: its token and templates send it again.
        let store = try await database.openExisting(settings: settings)
        let record = try await store.run(named: run)
        guard let record else { throw ValidationError("no run \(run): `dispatcher runs` lists them") }
        let organization: Organization
        if sandbox {
            // The in-process sandbox, from the number the run was sent from (its lease and statuses are that number's).
            var own = Organization.sandbox(settings)
            own.phoneNumberID = record.sender
            if let configured = loaded.organizations.first(where: { $0.phoneNumberID == record.sender }) {
                own.templateNames = configured.templateNames
                own.language = configured.language
            }
            organization = own
        } else if let own = loaded.organizations.first(where: { $0.phoneNumberID == record.sender }) {
            organization = own
        } else if loaded.fromFile {
            throw ValidationError("run \(run) was sent from number \(record.sender), which no organization of the configuration has")
        } else {
            throw ValidationError(
                "set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID (the number run \(run) was sent from: \(record.sender))")
        }
        let wanted: Set<Int>? = try codes.map { list in
            Set(
                try list.split(separator: ",").map { part in
                    guard let code = Int(part.trimmingCharacters(in: .whitespaces)) else {
                        throw ValidationError("--codes: '\(part)' is not a number")
                    }
                    return code
                })
        }
        let catalog = try TemplateCatalog(directory: common.templatesDirectory)
        // A run's template (`various` for /send-invoice's daily runs: each message keeps its own request).
        let renderer = try MessageRenderer(
            catalog: catalog,
            templateName: catalog[record.template] != nil
                ? record.template : (organization.templateNames["invoice"] ?? settings.templateName),
            defaultLanguage: organization.language)
        var session = RunSession(
            settings: settings, database: database, settle: settleOptions, sandbox: sandbox, catalog: catalog,
            templatesDirectory: common.templatesDirectory)
        session.organizationsFromFile = loaded.fromFile
        session.store = store
        try await session.execute(run: run, organization: organization, renderer: renderer, validation: ValidationOptions()) {
            engine, console in
            let selection = try await engine.requeueForRetry(
                run: run, codes: wanted, includeUnknown: includeUnknown, ignoringWait: retryNow,
                includeTemplateSkips: settleOptions.skipUnapprovedLanguages)
            console.say("Run \(run): \(selection.requeued.count) messages to send again")
            if selection.heldBack > 0 {
                console.say(
                    "\(selection.heldBack) held back by Meta's per-user limit (131049) may go from "
                        + "\(iso8601(selection.earliest) ?? "?") (run this again then, or now with --now)")
            }
            return RunOptions(run: run, manifest: record.manifest, rate: rate)
        }
    }
}

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "(Re)write a run's reports with the statuses known now.")

    @Argument(help: "The run's name.")
    var run: String

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: DatabaseOptions

    @Option(help: "Where the reports go (default: reports/RUN/, or reports/RUN/LANDLORD/ with --landlord).")
    var out: String?

    @Option(help: "Only this landlord's invoices: a report to send them.")
    var landlord: String?

    @Option(help: "Report language.")
    var lang: ReportLanguage = .en

    @Flag(help: "CSV for a spreadsheet in a Spanish, French or Portuguese locale: ';' between cells, decimal commas, and a BOM.")
    var excel = false

    @Option(help: ArgumentHelp("Times on the report page in this zone (default: the machine's).", valueName: "America/Santo_Domingo"))
    var timezone: String?

    @Flag(help: "Also one folder per landlord (reports/RUN/LANDLORD/): each landlord's own report and CSVs, ready to send them.")
    var perLandlord = false

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func validate() throws {
        try validateTimeZone(timezone)
        if perLandlord && landlord != nil { throw ValidationError("--per-landlord writes every landlord's folder: leave out --landlord") }
        if perLandlord && out != nil { throw ValidationError("--per-landlord writes under reports/RUN/: leave out --out") }
    }

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let store = try await database.openExisting(settings: settings)
        guard let record = try await store.run(named: run) else {
            FileHandle.standardError.write(Data("error: no run \(run): `dispatcher runs` lists them\n".utf8))
            throw ExitCode(1)
        }
        if perLandlord {
            let writer = try await DeliveryReportWriter(
                templatesDirectory: common.templatesDirectory, lang: lang.rawValue, excel: excel,
                timeZone: timezone.flatMap(TimeZone.init(identifier:)) ?? .current)
            let whole = try await writer.write(run: record, store: store, to: reportDirectory(run: run, landlord: nil))
            let known = Set(try await store.reportSummary(run: run, landlord: nil, samples: 0).landlords.compactMap(\.landlord)).sorted()
            let console = Console(json: json)
            console.say("Report: \(whole.html)")
            var folders: [String: String] = [:]
            // An organization's run of the same name (`march@norte`) reports in reports/march/norte/:
            // a landlord "norte" of this run gets a folder of its own, never that one (whose
            // organization's callers are served it).
            var used = Set(
                try await store.runs(including: { $0.hasPrefix(run + "@") }).map {
                    reportDirectory(run: $0.run.name, landlord: nil).lowercased()
                })
            for name in known {
                // Two names that make the same folder ("A&B", "A B") get their own.
                var directory = reportDirectory(run: run, landlord: name)
                let base = directory
                var n = 2
                // Compared without case: "ACME" and "Acme" are one folder on some file systems.
                while used.contains(directory.lowercased()) {
                    directory = "\(base)-\(n)"
                    n += 1
                }
                used.insert(directory.lowercased())
                let files = try await writer.write(run: record, store: store, to: directory, landlord: name)
                folders[name] = directory
                console.say("  \(name): \(files.html)")
            }
            if known.isEmpty { console.say("(the run's invoices name no landlord: only the whole report)") }
            if json {
                struct PackJSON: Encodable {
                    var run, report: String
                    var landlords: [String: String]
                }
                try console.emit(PackJSON(run: run, report: whole.html, landlords: folders))
            }
            return
        }
        if let landlord {
            // A mistyped name would write an empty report: refused, with the names there are.
            let known = try await store.reportSummary(run: run, landlord: nil, samples: 0).landlords.compactMap(\.landlord)
            guard known.contains(landlord) else {
                let list = Array(Set(known)).sorted()
                FileHandle.standardError.write(
                    Data(
                        ("error: run \(run) has no landlord '\(landlord)'; "
                            + (list.isEmpty ? "its invoices name no landlord" : "its landlords: \(list.joined(separator: ", "))") + "\n")
                            .utf8))
                throw ExitCode(1)
            }
        }
        let directory = out ?? reportDirectory(run: run, landlord: landlord)
        let writer = try await DeliveryReportWriter(
            templatesDirectory: common.templatesDirectory, lang: lang.rawValue, excel: excel,
            timeZone: timezone.flatMap(TimeZone.init(identifier:)) ?? .current)
        let files = try await writer.write(run: record, store: store, to: directory, landlord: landlord)
        let counts = try await store.stateCounts(run: run)
        let console = Console(json: json)
        console.say("Report: \(files.html)\nMessages: \(files.messagesCSV)\nLandlords: \(files.landlordsCSV)")
        if json { try console.emit(RunResultJSON(run: run, counts: counts, report: files.html)) }
    }
}

/// The `--json` object of `send`, `retry` and `report`.
struct RunResultJSON: Encodable {
    var run: String
    var messages: Int
    /// Taken by Meta, held ones included (the spec's key set has no `held`; the console line and
    /// the reports show them apart), so that the counts add up to `messages`.
    var accepted: Int
    var sent: Int
    var delivered: Int
    var read: Int
    var failed: Int
    var pending: Int
    var unknown: Int
    var skipped: Int
    var report: String
    /// With several organizations: this lane's organization, and why it halted.
    var organization: String?
    var halted: String?
    /// With several organizations: each one's run (the counts above are their sum).
    var organizations: [RunResultJSON]?
    /// The counts above are of messages in each state now, adding up to `messages` (a read
    /// message counts as `read` only). This is how far messages got, as the summary line and the
    /// report's funnel count: each includes those after it (accepted ≥ sent ≥ delivered ≥ read).
    var reached: Reached

    struct Reached: Encodable {
        var accepted: Int
        var sent: Int
        var delivered: Int
        var read: Int
    }

    init(run: String, counts: [MessageState: Int], report: String) {
        self.run = run
        messages = counts.values.reduce(0, +)
        accepted = (counts[.accepted] ?? 0) + (counts[.held] ?? 0)
        sent = counts[.sent] ?? 0
        delivered = counts[.delivered] ?? 0
        read = counts[.read] ?? 0
        failed = counts[.failed] ?? 0
        pending = (counts[.queued] ?? 0) + (counts[.sending] ?? 0)
        unknown = counts[.unknown] ?? 0
        skipped = counts[.skipped] ?? 0
        self.report = report
        reached = Reached(
            accepted: accepted + sent + delivered + read, sent: sent + delivered + read, delivered: delivered + read, read: read)
    }
}

/// `90s`, `15m`, `2h`, `1h30m`.
/// The languages a report is written in.
/// The report's language: the property system's locales.
enum ReportLanguage: String, CaseIterable, ExpressibleByArgument {
    case en, es, fr, pt
}

/// A duration as options take it: 90s, 15m, 2h, or several (1h30m); a bare number is seconds.
/// Used as the options' `transform`, so a bad one is a usage error (exit 64) naming the option.
func parseDuration(_ text: String) throws -> Duration {
    guard !text.isEmpty else { throw ValidationError("an empty duration: write it as 90s, 15m or 2h") }
    var total = 0.0
    var number = ""
    for ch in text {
        if ch.isNumber || ch == "." { number.append(ch); continue }
        guard let value = Double(number) else { throw ValidationError("'\(text)' is not a duration (90s, 15m, 2h)") }
        switch ch {
        case "s": total += value
        case "m": total += value * 60
        case "h": total += value * 3600
        default: throw ValidationError("'\(text)' is not a duration (90s, 15m, 2h)")
        }
        number = ""
    }
    if !number.isEmpty {
        guard let value = Double(number) else { throw ValidationError("'\(text)' is not a duration (90s, 15m, 2h)") }
        total += value
    }
    return .milliseconds(Int64(total * 1000))
}

/// `reports/RUN/`, or `reports/RUN/LANDLORD/` with the landlord's name made safe for a folder.
func reportDirectory(run: String, landlord: String?) -> String {
    // An organization's run (`march@caribe`) reports beside the others of its month: reports/march/caribe/.
    let folder = "reports/\(run.replacingOccurrences(of: "@", with: "/"))"
    guard let landlord else { return folder }
    // Letters and digits only (no `/`, no `..`), and short enough for any file system.
    let safe = String(landlord.map { ch -> Character in ch.isLetter || ch.isNumber ? ch : "-" }.prefix(80))
    return "\(folder)/\(safe)"
}

/// `--timezone`: an IANA zone name, refused with examples when it is not one.
func validateTimeZone(_ name: String?) throws {
    guard let name, TimeZone(identifier: name) == nil else { return }
    throw ValidationError(
        "--timezone '\(name)' is not a time zone: use an IANA name such as America/Santo_Domingo, Europe/Madrid or UTC")
}
