import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Logging
import Reports
import Sandbox
import Server
import ServiceLifecycle
import Store
import Synchronization
import UnixSignals
import WhatsApp

/// One organization's part of a billing run: its own run (name, lease, pacing, halt), sent from its
/// number with its token and templates, reported in its own folder. A run of one organization (the
/// single-number setup) is one lane with no label.
struct RunLane: Sendable {
    var run: String
    var organization: Organization
    /// `[caribe] ` before the lane's lines when several lanes run at once; nil for one.
    var label: String?
    var renderer: MessageRenderer
    var validation: ValidationOptions
    var reportDirectory: String
}

/// How one lane ended, for the command's exit status and `--json`.
struct LaneResult: Sendable {
    var lane: RunLane
    var counts: [MessageState: Int]
    var stop: StopReason?
    var report: String
}

/// What `send` and `retry` share: the store, the Graph clients (Meta or the in-process sandbox),
/// the embedded receiver, signals, dispatching, settling, the reports and the summary.
struct RunSession {
    var settings: Settings
    var database: DatabaseOptions
    var settle: SettleOptions
    var sandbox: Bool
    var catalog: TemplateCatalog
    var templatesDirectory: String
    var scenario = Scenario()
    /// The organizations come from a configuration file (the property system's organization id is
    /// then what PDF fetches name, not `DISPATCHER_PROPERTY_SYSTEM_ORGANIZATION`).
    var organizationsFromFile = false
    /// The run's name as the user knows it (its lanes are `NAME@ORGANIZATION`), for `--json`.
    var runName: String?
    /// The store, when the command opened it already (`retry` reads the run first); else opened here.
    var store: (any DispatchStore)?

    /// The one-lane run of `run` (the single-number setup): prepares with `prepare`, then sends,
    /// settles and reports.
    func execute(
        run: String, organization: Organization, renderer: MessageRenderer, validation: ValidationOptions,
        prepare: @escaping @Sendable (RunEngine, Console) async throws -> RunOptions
    ) async throws {
        let lane = RunLane(
            run: run, organization: organization, label: nil, renderer: renderer, validation: validation,
            reportDirectory: settle.out ?? reportDirectory(run: run, landlord: nil))
        try await execute(lanes: [lane]) { engine, _, console in try await prepare(engine, console) }
    }

    /// Every lane at once, each from its own number at its own rate, with its own lease, pair rule,
    /// back-off and halt (a dead token halts its organization, not the others); the receiver and
    /// the sandbox are shared. The command then exits with the worst of the lanes' endings.
    func execute(
        lanes: [RunLane], prepare: @escaping @Sendable (RunEngine, RunLane, Console) async throws -> RunOptions,
        onLaneFailed: @escaping @Sendable (RunLane) async -> Void = { _ in }
    ) async throws {
        let console = Console(json: settle.json)
        let logger = bootstrapLogging(label: "dispatcher.run", level: .warning)
        for note in settings.notes { console.warn(note) }
        let store: any DispatchStore
        if let opened = self.store { store = opened } else { store = try await database.open(settings: settings) }
        let settleWindow = settle.settle ?? (sandbox ? .seconds(15) : .seconds(120))

        // Where to send: Meta, or the in-process sandbox with its webhooks wired to our receiver.
        let appSecret: String?
        var graphs: [GraphConfiguration] = lanes.map { lane in
            GraphConfiguration(
                baseURL: settings.apiBaseURL, apiVersion: settings.apiVersion, phoneNumberID: lane.organization.phoneNumberID,
                accessToken: lane.organization.accessToken)
        }
        if sandbox {
            appSecret = "sandbox-app-secret-\(UInt64.random(in: 0...UInt64.max))"
            for i in graphs.indices {
                graphs[i].accessToken = "sandbox-token"
                graphs[i].timeout = .seconds(10)
            }
        } else {
            if let problem = settings.apiBaseURLProblem { throw ValidationError(problem) }
            appSecret = settings.appSecret
        }
        if settle.listen != nil && appSecret == nil {
            throw ValidationError("--listen needs WHATSAPP_APP_SECRET to verify Meta's webhooks")
        }
        let listen = try settle.listen.map(parseListen) ?? (sandbox ? ("127.0.0.1", 0) : nil)
        if listen == nil {
            // Statuses come only through a receiver: say before sending whether one is there.
            let heard = try? await store.lastHeardReceiver()
            if let heard, Date().timeIntervalSince1970 - heard.at < 60 {
                console.say(
                    "statuses: received by `dispatcher serve` at \(heard.address) (heard \(Int(Date().timeIntervalSince1970 - heard.at)) s ago)"
                )
            } else {
                console.warn(
                    "nothing is receiving Meta's webhooks for this database (no `dispatcher serve` heard from in the last minute, and no --listen): "
                        + "delivery statuses will not arrive during this run, and the report will say so. Start `dispatcher serve` where Meta's webhook points (docs/operating.md), or send with --listen HOST:PORT."
                )
            }
        }

        // The embedded receiver and the sandbox run as services, shut down gracefully at the end.
        var services: [any Service] = []
        var receiverPort: Int? = nil
        let receiverReady = PortSignal(), sandboxReady = PortSignal()
        if let (host, port) = listen, let appSecret {
            let server = DispatcherServer(store: store, configuration: ServerConfiguration(appSecret: appSecret))
            services.append(
                EmbeddedService.server("cannot receive webhooks on \(host):\(port)", ready: receiverReady) {
                    try await server.run(host: host, port: port, logger: logger, onListening: $0)
                })
        }
        let group = ServiceGroup(configuration: serviceConfiguration(services, logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            if listen != nil { receiverPort = try await receiverReady.wait() }
            var sandboxGroup: ServiceGroup? = nil
            if sandbox, let appSecret {
                let simulator = Sandbox(
                    configuration: SandboxConfiguration(
                        appSecret: appSecret, webhookURL: receiverPort.map { "http://127.0.0.1:\($0)/webhook" }, throughput: 1000,
                        statusSpacing: 0.3, templates: catalog, scenario: scenario))
                let simulatorGroup = ServiceGroup(
                    configuration: serviceConfiguration(
                        [
                            EmbeddedService.server("cannot start the sandbox", ready: sandboxReady) {
                                try await simulator.run(logger: logger, onListening: $0)
                            }
                        ], logger: logger))
                sandboxGroup = simulatorGroup
                tasks.addTask { try await simulatorGroup.run() }
                let port = try await sandboxReady.wait()
                for i in graphs.indices { graphs[i].baseURL = "http://127.0.0.1:\(port)" }
                console.say(
                    "sandbox: a local WhatsApp Cloud API simulator; nothing reaches Meta (outcomes by the numbers' last digits, docs/sandbox.md)"
                )
            }
            let clients = graphs.map { GraphClient(configuration: $0) }
            let engines = zip(lanes, clients).map { lane, client in
                RunEngine(store: store, client: client, renderer: lane.renderer, validation: lane.validation, logger: logger)
            }
            // The lanes, beside a watcher for SIGINT/SIGTERM (no new sends; those in flight are
            // resolved and recorded). The watcher is cancelled when the lanes end; the services are
            // not: they are shut down gracefully, then awaited.
            let results: [Result<LaneResult, any Error>] = await withTaskGroup(of: (Int, Result<LaneResult, any Error>)?.self) { inner in
                inner.addTask {
                    // A second interrupt exits at once, as a crash would: what was in flight is
                    // resolved by the next run of the same command (never resent blindly), and
                    // what was not stored yet is stored by it.
                    var stopping = false
                    for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                        if stopping {
                            FileHandle.standardError.write(
                                Data(
                                    "\nstopped at once. Run the same command again: it finishes the run and sends no invoice twice (what was in flight is marked unknown: its webhooks settle it, and `retry --include-unknown` resends the rest).\n"
                                        .utf8))
                            Foundation.exit(signal == .sigint ? 130 : 143)
                        }
                        stopping = true
                        FileHandle.standardError.write(
                            Data(
                                "\nstopping: no new sends; waiting for those in flight (and, if the manifest is still being stored, for that: the report lists every invoice). Interrupt again to stop at once.\n"
                                    .utf8))
                        for engine in engines { await engine.requestStop() }
                    }
                    return nil
                }
                for (index, (lane, engine)) in zip(lanes, engines).enumerated() {
                    var laneConsole = console
                    laneConsole.prefix = lane.label.map { "[\($0)] " } ?? ""
                    let progress = lanes.count == 1 && isatty(STDERR_FILENO) == 1 && !settle.json
                    inner.addTask {
                        do {
                            return (
                                index,
                                .success(
                                    try await perform(
                                        lane: lane, engine: engine, store: store, console: laneConsole, settleWindow: settleWindow,
                                        logger: logger, showProgress: progress, prepare: prepare))
                            )
                        } catch {
                            await onLaneFailed(lane)
                            return (index, .failure(error))
                        }
                    }
                }
                var results = [Result<LaneResult, any Error>?](repeating: nil, count: lanes.count)
                var pending = lanes.count
                for await finished in inner {
                    guard let (index, result) = finished else { continue }
                    results[index] = result
                    pending -= 1
                    if pending == 0 { inner.cancelAll() }
                }
                return results.map { $0 ?? .failure(CancellationError()) }
            }
            // The run is over and recorded: shutting down must not keep the command from returning,
            // nor change what it reports. The Graph clients get 5 s, then are left behind; the
            // services get 10 s to stop gracefully, then are cancelled (`serviceConfiguration`).
            logger.debug("run: shutting down the Graph clients")
            if !(await finishes(within: .seconds(5), { for client in clients { try? await client.shutdown() } })) {
                logger.warning("the Graph API client did not shut down within 5 s; exiting without it")
            }
            logger.debug("run: shutting down the sandbox and the receiver")
            await sandboxGroup?.triggerGracefulShutdown()
            await group.triggerGracefulShutdown()
            do {
                try await tasks.waitForAll()
            } catch {
                // The run's own outcome is what the command reports; this is said beside it.
                logger.warning("the webhook receiver or the sandbox stopped with an error", metadata: ["error": "\(error)"])
            }
            logger.debug("run: services stopped")
            // Last, once nothing uses it: the store's connections (PostgreSQL's pool). Also a store
            // the command opened and handed over (`retry`): nothing uses it after the session.
            if !(await finishes(within: .seconds(5), { await store.close() })) {
                logger.warning("the database connections did not close within 5 s; exiting without them")
            }
            try conclude(results, lanes: lanes, console: console)
        }
    }

    /// The command's ending from its lanes': `--json`, then the worst exit (an error before sending,
    /// a halt, an interrupt), after every lane has said its own.
    private func conclude(_ results: [Result<LaneResult, any Error>], lanes: [RunLane], console: Console) throws {
        let finished = results.compactMap { try? $0.get() }
        if settle.json, !finished.isEmpty {
            if results.count == 1 {
                try console.emit(RunResultJSON(run: finished[0].lane.run, counts: finished[0].counts, report: finished[0].report))
            } else {
                var total: [MessageState: Int] = [:]
                for result in finished { total.merge(result.counts, uniquingKeysWith: +) }
                var json = RunResultJSON(run: runName ?? "", counts: total, report: "")
                json.organizations = finished.map { result in
                    var one = RunResultJSON(run: result.lane.run, counts: result.counts, report: result.report)
                    one.organization = result.lane.organization.id
                    one.halted = result.stop.map { if case .halted(let e) = $0 { e.description } else { nil } } ?? nil
                    return one
                }
                try console.emit(json)
            }
        }
        // Every lane's own failure, said with its organization; the command ends with the first
        // one's exit status (a lane that stopped because of another is not a cause).
        let failures = results.compactMap { result -> (any Error)? in
            guard case .failure(let error) = result, !(error is CancellationError), !(error is OtherLaneFailed) else { return nil }
            return error
        }
        if results.count > 1 {
            for (result, lane) in zip(results, results.indices) {
                guard case .failure(let error) = result, !(error is CancellationError), !(error is OtherLaneFailed), !(error is ExitCode)
                else { continue }
                FileHandle.standardError.write(Data("[\(lanes[lane].organization.id)] error: \(error)\n".utf8))
            }
        }
        if let first = failures.first { throw first }
        if finished.contains(where: { if case .halted = $0.stop { true } else { false } }) { throw Exit.halted }
        if finished.contains(where: { $0.stop == .interrupted }) { throw ExitCode(1) }
        for result in results { _ = try result.get() }
    }

    private func perform(
        lane: RunLane, engine: RunEngine, store: any DispatchStore, console: Console, settleWindow: Duration, logger: Logger,
        showProgress: Bool, prepare: @escaping @Sendable (RunEngine, RunLane, Console) async throws -> RunOptions
    ) async throws -> LaneResult {
        let run = lane.run
        // One run per sender number at a time (on every machine sharing the database), from
        // preparing (which resolves what a crash left `sending`) to the last send: `BillingRun`.
        let billing = BillingRun(
            engine: engine, run: run, leaseSeconds: settings.senderLeaseSeconds, waitForSender: settle.waitForSender ?? .zero,
            settleWindow: settleWindow)
        // Preparing (import, rendering, storing) and sending are measured apart: the rate target is
        // about sending; preparing is a one-off step before it.
        let marks = StatsMarks(cpu: processCPUSeconds(), wall: ContinuousClock.now)
        let sent: (options: RunOptions, stop: StopReason?)
        do {
            sent = try await billing.send(
                prepare: { engine in try await prepare(engine, lane, console) },
                beforeSending: { _ in
                    try await checkTemplatesAtMeta(engine: engine, lane: lane, console: console)
                    try await checkCost(engine: engine, lane: lane, console: console)
                    try await uploadDocuments(engine: engine, lane: lane, console: console, logger: logger)
                    // Only `--stats` needs them: on a million messages the count reads the whole index.
                    marks.prepared(countsBefore: settle.stats ? try await store.stateCounts(run: run) : [:])
                }, progress: showProgress ? printProgress : nil)
        } catch let busy as SenderBusy {
            FileHandle.standardError.write(Data("\(console.prefix)error: \(busy)\n".utf8))
            throw ExitCode(1)
        } catch let halt as LaneHalted {
            // Stopped before its first request (a template not approved, the PDFs' upload refused):
            // a halt like any other, said already; the other organizations go on.
            return LaneResult(
                lane: lane, counts: try await store.stateCounts(run: run),
                stop: .halted(GraphError(code: halt.code, title: halt.reason, httpStatus: 0)), report: "")
        }
        logger.debug("run: sender lease released")
        let (options, stop) = sent
        // The progress line ends before anything else is said (the stats included).
        if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
        if let stored = engine.stored, stored.alreadySent > 0 {
            console.say("\(stored.alreadySent) messages were already sent by an earlier run: skipped, not sent again")
        }
        if settle.stats {
            let m = marks.read()
            let sent =
                try await store.stateCounts(run: run).filter { ![.queued, .skipped].contains($0.key) }.values.reduce(0, +)
                - m.countsBefore.filter { ![.queued, .skipped].contains($0.key) }.values.reduce(0, +)
            func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
            let wall = seconds(ContinuousClock.now - m.prepared.wall)
            let cpu = processCPUSeconds() - m.prepared.cpu
            let prepareWall = seconds(m.prepared.wall - m.start.wall), prepareCPU = m.prepared.cpu - m.start.cpu
            // CPU is the process's: with several lanes at once it is every lane's, per this lane's message.
            // (The label is joined, not formatted: through `%@` in this format, Foundation on Linux
            // printed "(null)" in its place.)
            console.say(
                String(
                    format:
                        "stats: %d messages in %.2f s (%.1f/s, %.1f%% of --rate %.0f, at most %d in any second as they left); %.0f µs CPU per message while sending (%.2f of a core",
                    sent, wall, Double(sent) / wall, Double(sent) / wall / options.rate * 100, options.rate, engine.mostSendsInOneSecond,
                    sent > 0 ? cpu / Double(sent) * 1e6 : 0, cpu / wall)
                    + (lane.label == nil ? "" : ", the whole process")
                    + String(
                        format: "); preparing took %.2f s, %.0f µs CPU per message", prepareWall,
                        sent > 0 ? prepareCPU / Double(sent) * 1e6 : 0))
        }

        var liveLine = false
        // Whether statuses were waited for (not after a halt or an interrupt).
        var settled = false
        let (record, counts) = try await billing.conclude(
            stop: stop,
            settling: { window in
                settled = true
                console.say("waiting up to \(window) for delivery statuses…")
            },
            nothingSent: {
                console.say(
                    "nothing was sent now: not waiting for statuses (those of earlier sends arrive through `dispatcher serve`; `dispatcher report \(run)` shows them)"
                )
            },
            settleProgress: { counts, left in
                guard showProgress else { return }
                liveLine = true
                terminalLine(settleLine(counts, left: left, prefix: console.prefix))
            })
        if liveLine { FileHandle.standardError.write(Data("\n".utf8)) }

        logger.debug("run: writing the reports")
        let writer = try await DeliveryReportWriter(
            templatesDirectory: templatesDirectory, lang: settle.lang.rawValue, timeZone: settle.timeZone)
        console.say("Run \(run): \(cumulativeSummary(counts))")
        let files: ReportFiles
        do {
            files = try await writer.write(run: record, store: store, to: lane.reportDirectory, settle: "\(settleWindow)")
        } catch {
            // The run is done and recorded: only its report is missing.
            console.say("The run is recorded, but its report could not be written: `dispatcher report \(run) --out DIR` writes it.")
            throw error
        }
        let taken = [MessageState.accepted, .held, .sent, .delivered, .read].reduce(0) { $0 + (counts[$1] ?? 0) }
        let statused = [MessageState.sent, .delivered, .read].reduce(0) { $0 + (counts[$1] ?? 0) }
        if taken > 0 && statused == 0 && settled {
            console.say(
                "no delivery status arrived for this run: nothing was receiving Meta's webhooks (`dispatcher serve` where Meta's webhook points, or --listen). \"accepted\" means WhatsApp took the message, not that it failed; `dispatcher report \(run)` shows statuses that arrive later."
            )
        }
        if let held = counts[.held], held > 0 {
            console.say(
                "\(held) messages are held by Meta (quality assessment, or a paused template): their statuses follow when Meta releases them; `dispatcher report \(run)` later shows them."
            )
        }
        console.say("Report: \(files.html)")
        switch stop {
        case .halted(let error):
            console.say(
                "HALTED: \(error.description)\n\(haltAdvice(error, tokenVariable: lane.organization.tokenVariable))\nWhat was not sent is still queued: run the same command again once it is fixed."
            )
        case .interrupted:
            console.say("Interrupted: run the same command again to continue; nothing already sent will be sent twice.")
        case nil:
            break
        }
        return LaneResult(lane: lane, counts: counts, stop: stop, report: files.html)
    }
}

extension RunSession {
    /// The WhatsApp Business Account whose templates are checked before sending: the sandbox's
    /// own, or the organization's (`WHATSAPP_BUSINESS_ACCOUNT_ID`); nil: not checked (said once).
    func businessAccountID(_ lane: RunLane) -> String? {
        sandbox ? (lane.organization.businessAccountID ?? "SANDBOX-WABA") : lane.organization.businessAccountID
    }

    /// Before the first request: every (template, language) the queued messages need must be
    /// APPROVED at Meta. Otherwise the run refuses to start (exit 69) naming each, or with
    /// `--skip-unapproved-languages` their messages are skipped with the reason and the rest sent.
    /// Without a business account id, or when Meta will not list the templates (a token without
    /// `whatsapp_business_management`), it says so and sends: Meta's own answers still halt the run.
    func checkTemplatesAtMeta(engine: RunEngine, lane: RunLane, console: Console) async throws {
        let check = try await engine.checkTemplates(
            run: lane.run, businessAccountID: businessAccountID(lane), skipUnapproved: settle.skipUnapprovedLanguages)
        switch check {
        case .nothingQueued:
            break
        case .noAccount:
            console.warn("templates not checked against Meta before sending: set WHATSAPP_BUSINESS_ACCOUNT_ID (docs/operating.md)")
        case .unreadable(let reason):
            console.warn("\(reason); sending without checking them")
        case .approved(let needed):
            let names = Dictionary(grouping: needed, by: \.template).sorted { $0.key < $1.key }
                .map { "\($0.key) (\($0.value.map(\.language).sorted().joined(separator: ", ")))" }
            console.say("templates approved at Meta: \(names.joined(separator: ", "))")
        case .refused(let problems):
            for problem in problems { console.say("NOT APPROVED: \(problem)") }
            console.say(
                "Nothing was sent. Wait for Meta's approval (`dispatcher templates check`), or send the other languages with --skip-unapproved-languages."
            )
            throw LaneHalted(reason: problems.map(\.description).joined(separator: "; "), code: nil)
        case .skipped(let skipped):
            for (problem, n) in skipped { console.say("skipped \(n) messages: \(problem)") }
        }
    }
}

extension RunSession {
    /// The estimate of what is still queued, before the first request; refused (a halt, nothing
    /// sent) over `--max-cost`.
    func checkCost(engine: RunEngine, lane: RunLane, console: Console) async throws {
        let queued = try await engine.queuedCharges(run: lane.run)
        guard !queued.isEmpty, let card = try await rateCard(on: isoDay(Date()), store: engine.store).0 else { return }
        let estimate = CostEstimate(
            card: card, counts: queued, organization: nil, category: PricingCategory(meta: lane.renderer.template.category) ?? .utility)
        for line in EstimateOutput(estimate: estimate).lines() { console.say(line) }
        if let refusal = try await engine.refuseOverCost(run: lane.run, estimate: estimate, maxCost: settle.maxCost) {
            console.say(
                "REFUSED: \(refusal). Nothing was sent; the messages stay queued (run again with a higher --max-cost to send them).")
            throw LaneHalted(reason: refusal, code: nil)
        }
    }

    /// Before the first request: the property system's PDFs are fetched (with its service token)
    /// and uploaded to Meta, their messages then sent by media id; an invoice whose PDF cannot be
    /// had fails with the reason, the rest go. A refusal that dooms every upload (the token) halts.
    func uploadDocuments(engine: RunEngine, lane: RunLane, console: Console, logger: Logger) async throws {
        let run = lane.run
        guard let system = try settings.propertySystem() else { return }
        // With organizations from the file, each fetch names the lane's organization.
        var headers = settings.propertySystemHeaders
        if organizationsFromFile {
            headers.removeAll { $0.0 == "organizationId" }
            headers.append(("organizationId", lane.organization.id))
        }
        let fetcher = DocumentFetcher()
        let stager = MediaStager(
            uploader: DocumentUploader(store: engine.store, client: engine.client, fetcher: fetcher), propertySystem: system,
            headers: headers, logger: logger)
        let result: Result<MediaStager.Report, any Error>
        do { result = .success(try await stager.stage(run: run)) } catch { result = .failure(error) }
        try? await fetcher.shutdown()
        let report: MediaStager.Report
        do {
            report = try result.get()
        } catch let error as GraphError {
            console.say(
                "HALTED: Meta refused the invoice PDFs' upload: \(error.description)\n\(haltAdvice(error, tokenVariable: lane.organization.tokenVariable))"
            )
            try await engine.haltBeforeSending(run: run, reason: "PDF upload: \(error.description)")
            throw LaneHalted(reason: "PDF upload: \(error.description)", code: error.code)
        }
        if report.isEmpty { return }
        console.say(
            "invoice PDFs from \(system.origin): \(report.uploaded) uploaded to Meta, \(report.reused) already there"
                + (report.failed > 0 ? ", \(report.failed) messages not sendable:" : ""))
        for reason in report.reasons { console.say("  \(reason)") }
    }
}

/// A lane halted before its first request, with why (already said and recorded).
struct LaneHalted: Error {
    var reason: String
    var code: Int?
}

/// Hands a listening port (or why there is none) from a server task to the code waiting for it.
actor PortSignal {
    private var result: Result<Int, any Error>?
    private var waiters: [CheckedContinuation<Int, any Error>] = []

    func set(_ port: Int) { finish(.success(port)) }

    /// The server could not start: the waiter gets the error instead of waiting forever.
    func fail(_ error: any Error) { finish(.failure(error)) }

    private func finish(_ result: Result<Int, any Error>) {
        guard self.result == nil else { return }
        self.result = result
        for waiter in waiters { waiter.resume(with: result) }
        waiters.removeAll()
    }

    func wait() async throws -> Int {
        if let result { return try result.get() }
        return try await withCheckedThrowingContinuation { waiters.append($0) }
    }
}

/// The services of a run (the receiver, the sandbox): stopped by the run, not by signals (the run
/// handles SIGINT/SIGTERM itself), and cancelled if a graceful stop takes more than 10 s.
func serviceConfiguration(_ services: [any Service], logger: Logger) -> ServiceGroupConfiguration {
    var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [], logger: logger)
    configuration.maximumGracefulShutdownDuration = .seconds(10)
    return configuration
}

/// A server of the run (the receiver, the sandbox) that did not start.
struct StartFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// When `send --stats` measures from: the start, and the end of preparing with the counts then.
final class StatsMarks: Sendable {
    struct Marks {
        var start: (cpu: Double, wall: ContinuousClock.Instant)
        var prepared: (cpu: Double, wall: ContinuousClock.Instant)
        var countsBefore: [MessageState: Int] = [:]
    }
    private let marks: Mutex<Marks>

    init(cpu: Double, wall: ContinuousClock.Instant) { marks = Mutex(Marks(start: (cpu, wall), prepared: (cpu, wall))) }

    func prepared(countsBefore: [MessageState: Int]) {
        let now = (processCPUSeconds(), ContinuousClock.now)
        marks.withLock {
            $0.prepared = now
            $0.countsBefore = countsBefore
        }
    }

    func read() -> Marks { marks.withLock { $0 } }
}

/// Whether `body` finished within `limit` (`withDeadline`: left behind when it takes longer), for
/// steps that must not keep a command from ending.
func finishes(within limit: Duration, _ body: @escaping @Sendable () async -> Void) async -> Bool {
    (try? await withDeadline(limit) { await body() }) != nil
}

/// The progress line on a terminal: sent, failed, unknown, remaining, rate, ETA.
@Sendable func printProgress(_ p: RunProgress) {
    let eta =
        p.isWaiting
        ? " waiting for \(p.inFlight) answer\(p.inFlight == 1 ? "" : "s") from Meta: nothing for \(Int(p.quietFor))s"
        : p.eta.map { " ETA \(Int($0))s" } ?? ""
    terminalLine("  accepted \(p.accepted)  failed \(p.failed)  unknown \(p.unknown)  remaining \(p.remaining)  \(Int(p.rate))/s\(eta)")
}

/// Rewrites the terminal's current line with `text`, cut to its width: a line that wrapped would
/// leave a new row at every update, and a shorter one the end of the longer before it.
func terminalLine(_ text: String) {
    var size = winsize()
    let width = ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + String(text.prefix(width - 1))).utf8))
}

/// The live line of the settle window: statuses so far (cumulative, as the summary counts them),
/// what is still open, and the time left.
func settleLine(_ counts: [MessageState: Int], left: Duration, prefix: String) -> String {
    let open = counts.filter { !$0.key.isFinal }.values.reduce(0, +)
    return "\(prefix)  statuses: \(cumulativeSummary(counts)); \(open) still open; \(Int(left.components.seconds))s left"
}

/// A long-running piece of a run (the receiver, the sandbox) as a ServiceLifecycle service.
struct EmbeddedService: Service {
    let body: @Sendable () async throws -> Void
    init(_ body: @escaping @Sendable () async throws -> Void) { self.body = body }

    /// A server as a service: its port goes to `ready` once it listens, or, if it cannot start (a
    /// port already taken), the reason, prefixed with `failure`: the run ends with it instead of
    /// waiting for the port.
    static func server(
        _ failure: String, ready: PortSignal,
        _ run: @escaping @Sendable (_ onListening: @escaping @Sendable (Int) async -> Void) async throws -> Void
    ) -> EmbeddedService {
        EmbeddedService {
            do {
                try await run { await ready.set($0) }
            } catch {
                await ready.fail(StartFailure("\(failure): \(error)"))
                throw error
            }
        }
    }
    func run() async throws { try await body() }
}

/// CPU time (user and system) this process has used, in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(
        usage.ru_stime.tv_usec) / 1e6
}

/// A run's messages as a reader counts them: each status includes those after it (a read message
/// was sent and delivered), so the numbers only shrink from left to right; failed, not known,
/// skipped and still queued apart. `26 messages: 22 accepted by Meta, 21 sent, 20 delivered,
/// 16 read; 3 failed; 1 skipped`.
func cumulativeSummary(_ counts: [MessageState: Int]) -> String {
    func n(_ states: MessageState...) -> Int { states.reduce(0) { $0 + (counts[$1] ?? 0) } }
    let total = counts.values.reduce(0, +)
    var parts = [
        "\(n(.accepted, .held, .sent, .delivered, .read)) accepted by Meta, \(n(.sent, .delivered, .read)) sent, "
            + "\(n(.delivered, .read)) delivered, \(n(.read)) read"
    ]
    if n(.held) > 0 { parts.append("\(n(.held)) held by Meta") }
    if n(.failed) > 0 { parts.append("\(n(.failed)) failed") }
    if n(.unknown) > 0 { parts.append("\(n(.unknown)) not known (no answer to the request)") }
    if n(.queued, .sending) > 0 { parts.append("\(n(.queued, .sending)) not sent yet") }
    if n(.skipped) > 0 { parts.append("\(n(.skipped)) skipped") }
    return "\(total) messages: " + parts.joined(separator: "; ")
}
