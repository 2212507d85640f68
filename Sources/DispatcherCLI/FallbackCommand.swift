import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Store

/// `dispatcher fallback RUN --via smtp|property-system`: the invoices WhatsApp could not carry, by email.
struct FallbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fallback",
        abstract: "Send by email the invoices WhatsApp could not carry (not on WhatsApp, opted out, country not allowed).",
        discussion: """
            Each invoice goes once: the hand-over is recorded before and after, so running it again \
            sends nothing twice (one interrupted while handing over is listed, not resent). \
            --via smtp: one email per tenant with the PDF attached when it can be fetched (else the \
            link), through the machine's mail program (sendmail interface: msmtp, Postfix…); tenants \
            with no email address are listed as needing a call. --via property-system: the property \
            system's own emailer (POST /api/v2/emails, as its landlord UI), per tenant id and term. \
            Exit status: 0 done; 1 when a hand-over failed (run again to retry those) or its outcome \
            is uncertain (check, then --again).
            """)

    enum Via: String, ExpressibleByArgument, CaseIterable {
        case smtp
        case propertySystem = "property-system"
    }

    @Argument(help: "The run (as `dispatcher runs` lists it).")
    var run: String

    @Option(help: "smtp (the machine's mail program) or property-system (its emailer).")
    var via: Via

    @Flag(help: "Say what would be sent, send nothing and record nothing.")
    var dryRun = false

    @Option(help: "The mail program and its arguments (default: env DISPATCHER_SENDMAIL, else sendmail, else msmtp).")
    var sendmail: String?

    @Option(help: "The sender address of the emails (default: env DISPATCHER_MAIL_FROM).")
    var from: String?

    @Option(
        name: .customLong("again"),
        help: ArgumentHelp(
            "Send this invoice once more although it was sent (or a pass stopped while handing it over): after checking the mailbox. Repeatable.",
            valueName: "invoice-id"))
    var again: [String] = []

    @Flag(help: "Print one JSON object on stdout (human output goes to stderr).")
    var json = false

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let console = Console(json: json)
        let store = try await database.openExisting(settings: settings)
        guard try await store.run(named: run) != nil else {
            throw ValidationError("no run \(run) in \(database.describe(settings: settings)) (dispatcher runs lists them)")
        }
        let channel: any FallbackChannel
        var fetcher: DocumentFetcher? = nil
        var emailer: PropertySystemEmailChannel? = nil
        switch via {
        case .smtp:
            let environment = ProcessInfo.processInfo.environment
            guard let from = from ?? environment["DISPATCHER_MAIL_FROM"], InvoiceEmail.isAddress(from) else {
                throw ValidationError("--via smtp needs the sender address: --from billing@example.com (or env DISPATCHER_MAIL_FROM)")
            }
            let command = (sendmail ?? environment["DISPATCHER_SENDMAIL"] ?? Self.defaultMailProgram())
                .split(whereSeparator: \.isWhitespace).map(String.init)
            guard !command.isEmpty else { throw ValidationError("--sendmail is empty") }
            let documents = DocumentFetcher()
            fetcher = documents
            let system = try settings.propertySystem()
            let headers = propertySystemHeaders(settings)
            channel = SendmailChannel(command: command, from: from) { invoice in
                guard let link = invoice.documentURL else { return .failure(DocumentProblem("no document link")) }
                // Only the property system's PDFs are fetched (with its credentials; the tenant
                // could not open those links). Any other link goes as it is: this machine fetches
                // nothing a manifest names elsewhere, so nothing internal is mailed out.
                guard let url = system?.resolve(link) else {
                    return .failure(DocumentProblem("only the property system's PDFs are fetched"))
                }
                do throws(DocumentProblem) {
                    return .success(try await documents.fetch(url, headers: headers))
                } catch {
                    return .failure(error)
                }
            }
        case .propertySystem:
            guard let system = try settings.propertySystem(), settings.propertySystemToken != nil else {
                throw ValidationError(
                    "--via property-system needs DISPATCHER_PROPERTY_SYSTEM_URL and DISPATCHER_PROPERTY_SYSTEM_TOKEN (docs/configuration.md)"
                )
            }
            let property = PropertySystemEmailChannel(origin: system.origin, headers: propertySystemHeaders(settings))
            emailer = property
            channel = property
        }
        let report: FallbackReport
        let started = Date().timeIntervalSince1970
        do {
            report = try await FallbackRunner(store: store, channel: channel).run(run, dryRun: dryRun, again: Set(again))
        } catch {
            try? await fetcher?.shutdown()
            try? await emailer?.shutdown()
            throw error
        }
        try? await fetcher?.shutdown()
        try? await emailer?.shutdown()

        var rows: [FallbackJSON.Invoice] = []
        for (invoice, reason, outcome) in report.outcomes {
            let who = "\(invoice.invoiceID) \(invoice.tenantName)"
            let row: FallbackJSON.Invoice
            switch outcome {
            case .sent(let address, let note):
                console.say("sent          \(who) → \(address) (\(note))")
                row = .init(
                    invoice_id: invoice.invoiceID, tenant: invoice.tenantName, reason: reason, outcome: "sent", address: address,
                    detail: note)
            case .wouldSend(let address):
                console.say("would send    \(who) → \(address)")
                row = .init(
                    invoice_id: invoice.invoiceID, tenant: invoice.tenantName, reason: reason, outcome: "would_send", address: address)
            case .failed(let address, let why):
                console.say("FAILED        \(who) → \(address): \(why)")
                row = .init(
                    invoice_id: invoice.invoiceID, tenant: invoice.tenantName, reason: reason, outcome: "failed", address: address,
                    detail: why)
            case .noAddress:
                console.say(
                    "needs a call  \(who): \(via == .smtp ? "no email address in the manifest" : "no tenant id for the property system")")
                row = .init(invoice_id: invoice.invoiceID, tenant: invoice.tenantName, reason: reason, outcome: "no_address")
            case .sentBefore(let address, let at):
                console.say("sent before   \(who) → \(address ?? "—") on \(iso8601(at) ?? "")")
                row = .init(
                    invoice_id: invoice.invoiceID, tenant: invoice.tenantName, reason: reason, outcome: "sent_before", address: address,
                    detail: iso8601(at))
            case .uncertain(let address, let since, let why):
                console.say(
                    "UNCERTAIN     \(who) → \(address ?? "—"): \(why ?? "a pass stopped while handing it over") (\(iso8601(since) ?? "")); it may have gone: check, then --again \(invoice.invoiceID) if it did not arrive"
                )
                row = .init(
                    invoice_id: invoice.invoiceID, tenant: invoice.tenantName, reason: reason, outcome: "uncertain", address: address,
                    detail: why)
            case .inProgress(let address):
                console.say("in progress   \(who) → \(address ?? "—"): another pass is handing it over now")
                row = .init(
                    invoice_id: invoice.invoiceID, tenant: invoice.tenantName, reason: reason, outcome: "in_progress", address: address)
            }
            rows.append(row)
        }
        func n(_ outcome: String) -> Int { rows.filter { $0.outcome == outcome }.count }
        console.say(
            "Fallback of \(run) via \(via.rawValue)\(dryRun ? " (dry run: nothing sent)" : ""): \(rows.count) invoices WhatsApp could not carry; "
                + "\(n("sent")) sent now, \(n("would_send")) would be sent, \(n("sent_before")) sent before, \(n("no_address")) need a call, "
                + "\(n("failed")) failed, \(n("uncertain")) uncertain\(n("in_progress") > 0 ? ", \(n("in_progress")) in progress elsewhere" : "")"
        )
        if json {
            try console.emit(FallbackJSON(run: run, via: via.rawValue, dry_run: dryRun, invoices: rows))
        }
        if n("failed") > 0 || report.count({ if case .uncertain(_, let since, _) = $0 { since >= started } else { false } }) > 0 {
            throw ExitCode(1)
        }
    }

    /// The property system's headers; a run of one organization (`RUN@ORG`) names that one.
    func propertySystemHeaders(_ settings: Settings) -> [(String, String)] {
        var headers = settings.propertySystemHeaders
        if let at = run.lastIndex(of: "@") {
            headers.removeAll { $0.0 == "organizationId" }
            headers.append(("organizationId", String(run[run.index(after: at)...])))
        }
        return headers
    }

    /// `sendmail` when the machine has one, else `msmtp`.
    static func defaultMailProgram() -> String {
        for candidate in ["/usr/sbin/sendmail", "/usr/lib/sendmail"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "msmtp"
    }
}

struct FallbackJSON: Encodable {
    struct Invoice: Encodable {
        var invoice_id: String
        var tenant: String
        var reason: String
        var outcome: String
        var address: String? = nil
        var detail: String? = nil
    }
    var run: String
    var via: String
    var dry_run: Bool
    var invoices: [Invoice]
}
