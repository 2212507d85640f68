import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Hummingbird
import Logging
import Server
import ServiceLifecycle
import Store
import UnixSignals
import WhatsApp

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Receive Meta's webhooks and answer the status API (long-running).",
        discussion: """
            Needs WHATSAPP_APP_SECRET (webhook signatures) and WHATSAPP_WEBHOOK_VERIFY_TOKEN (Meta's handshake); \
            the API needs DISPATCHER_API_TOKEN and/or DISPATCHER_JWT_SECRET. Stops gracefully on SIGINT/SIGTERM. \
            See docs/operating.md.
            """
    )

    @Option(help: "Address to listen on (default 0.0.0.0:8500, or 0.0.0.0:WHATSAPP_PORT).")
    var listen: String?

    @Option(help: "Mount every route below this path (e.g. /api/v2/whatsapp behind the property system's gateway).")
    var basePath: String = ""

    @OptionGroup var database: DatabaseOptions

    @Option(help: "Where runs' reports are (for /runs/RUN/report.html).")
    var reports: String = "reports"

    @Flag(help: "Ask for the bearer token on /metrics too.")
    var metricsNeedToken = false

    @Option(name: .customLong("templates"), help: "Folder with whatsapp/*.json (for POST /send-invoice).")
    var templatesDirectory: String = "templates"

    @Option(help: "Messages per second for POST /send-invoice.")
    var rate: Double = 80

    @Option(help: "Organizations, each with its own number, token and templates (env DISPATCHER_CONFIG; docs/configuration.md).")
    var config: String?

    func validate() throws {
        if let listen { _ = try parseListen(listen) }
    }

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let (host, port) = try parseListen(listen ?? "0.0.0.0:\(settings.servePort ?? 8500)")
        let logger = bootstrapLogging(label: "dispatcher.serve")
        for note in settings.notes { logger.warning("\(note)") }
        guard let appSecret = settings.appSecret else {
            throw ValidationError("WHATSAPP_APP_SECRET is not set: without it no webhook can be verified, so none would be accepted")
        }
        if settings.verifyToken == nil {
            logger.warning("WHATSAPP_WEBHOOK_VERIFY_TOKEN is not set: Meta's handshake (GET /webhook) will be refused")
        }
        if let secret = settings.jwtSecret, let problem = HS256Verifier.problem(withSecret: secret) { throw ValidationError(problem) }
        if settings.apiToken == nil && settings.jwtSecret == nil {
            logger.warning(
                "neither DISPATCHER_API_TOKEN nor DISPATCHER_JWT_SECRET is set: every API route but the webhook, health and metrics will answer 401"
            )
        }
        let store = try await database.open(settings: settings)
        // The landlord UI's send route: only with credentials, through the same engine pieces as a
        // run; one sender (its own number, token and templates) per organization.
        let (organizations, fromFile) = try loadOrganizations(config: config, settings: settings)
        if fromFile, settings.jwtSecret != nil {
            for organization in organizations where organization.members.isEmpty {
                logger.warning(
                    "organization \(organization.id) lists no members: no property-system token reaches it (its landlord UI gets 403s); list its accounts' emails under members (docs/configuration.md)"
                )
            }
        }
        var clients: [GraphClient] = []
        var senders: [String: any InvoiceSendService] = [:]
        let propertySystem = try settings.propertySystem()
        let fetcher = propertySystem.map { _ in DocumentFetcher() }
        if !organizations.isEmpty {
            if let problem = settings.apiBaseURLProblem { throw ValidationError(problem) }
            let catalog = try TemplateCatalog(directory: templatesDirectory)
            for organization in organizations {
                let graph = GraphClient(
                    configuration: GraphConfiguration(
                        baseURL: settings.apiBaseURL, apiVersion: settings.apiVersion,
                        phoneNumberID: organization.phoneNumberID, accessToken: organization.accessToken))
                clients.append(graph)
                senders[organization.id] = InvoiceAPISender(
                    store: store, client: graph, catalog: catalog, defaultLanguage: organization.language,
                    defaultCountryCode: organization.defaultCountryCode ?? settings.defaultCountryCode, rate: rate,
                    propertySystem: propertySystem, fetcher: fetcher, serviceHeaders: settings.propertySystemHeaders,
                    templateNames: organization.templateNames, defaultCurrency: organization.currency,
                    organization: fromFile ? organization.id : nil)
            }
            logger.info(
                "sending for \(organizations.count) organization(s)",
                metadata: ["organizations": "\(organizations.map { "\($0.id) (\($0.phoneNumberID))" }.joined(separator: ", "))"])
        } else {
            logger.warning("WHATSAPP_ACCESS_TOKEN or WHATSAPP_PHONE_NUMBER_ID is not set: POST /send-invoice will answer 503")
        }
        let sender: OrganizationRouter? = senders.isEmpty ? nil : OrganizationRouter(senders: senders)
        let server = DispatcherServer(
            store: store,
            configuration: ServerConfiguration(
                basePath: basePath, appSecret: appSecret, verifyToken: settings.verifyToken, apiToken: settings.apiToken,
                jwtSecret: settings.jwtSecret, reportsDirectory: reports, metricsNeedToken: metricsNeedToken,
                organizationAccess: fromFile
                    ? OrganizationAccess(members: Dictionary(uniqueKeysWithValues: organizations.map { ($0.id, $0.members) })) : nil),
            sender: sender)
        logger.info(
            "dispatcher serve listening",
            metadata: [
                "address": "\(host):\(port)", "base_path": "\(basePath.isEmpty ? "/" : basePath)",
                "database": "\(database.describe(settings: settings))",
            ])
        // One service group, stopped gracefully by SIGTERM or SIGINT, last started first: the
        // server stops taking requests (those under way are let finish), then the Graph client its
        // /send-invoice calls use shuts down, then the heartbeat stops, and the store's connections
        // close last.
        let heartbeat = HeartbeatService(
            store: store, id: "\(ProcessInfo.processInfo.hostName):\(getpid())",
            address: "\(host):\(port)\(basePath.isEmpty ? "" : basePath)")
        let services: [any Service] =
            [ShutdownService { await store.close() }, heartbeat] + clients.map { client in ShutdownService { try await client.shutdown() } }
            + (fetcher.map { fetcher in [ShutdownService { try await fetcher.shutdown() }] } ?? [])
            + [server.application(host: host, port: port, logger: logger)]
        var configuration = serviceConfiguration(services, logger: logger)
        configuration.gracefulShutdownSignals = [.sigterm, .sigint]
        // No cut-off: a /send-invoice under way (a throttling pause, a slow answer) is let finish
        // and record its outcome, as Hummingbird's own runService did.
        configuration.maximumGracefulShutdownDuration = nil
        try await ServiceGroup(configuration: configuration).run()
    }
}

/// Says in the store, every 15 s, that this receiver is up: `send` checks it before a run, to say
/// whether statuses will arrive.
struct HeartbeatService: Service {
    let store: any DispatchStore
    let id: String
    let address: String

    static let interval: Duration = .seconds(15)

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await store.heardFromReceiver(id: id, address: address, at: Date().timeIntervalSince1970)
                try await Task.sleep(for: Self.interval)
            }
        }
    }
}

/// An HTTP client (the Graph client, the PDF fetcher) or the store as a service: it lives while
/// its group runs, and is shut down (given 5 s, then left behind) once the group shuts down gracefully.
struct ShutdownService: Service {
    let shutdown: @Sendable () async throws -> Void

    func run() async throws {
        try? await gracefulShutdown()
        _ = try? await withDeadline(.seconds(5)) { try await shutdown() }
    }
}

/// `--db`, shared by every command that reads or writes the store.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("db"), help: "Database URL (env DISPATCHER_DATABASE_URL; default sqlite:dispatcher.sqlite).")
    var url: String?

    func resolved(settings: Settings) -> String { url ?? settings.databaseURL }

    func open(settings: Settings) async throws -> any DispatchStore {
        try await StoreOpener.open(url: resolved(settings: settings))
    }

    /// For a command that only reads what runs left (or changes it): a SQLite file that is not
    /// there is an error naming where it was looked for, not a new empty database made in
    /// whatever folder the command ran in (`runs` then said "no runs yet").
    func openExisting(settings: Settings) async throws -> any DispatchStore {
        let url = resolved(settings: settings)
        guard let store = try await StoreOpener.openExisting(url: url) else { throw NoDatabase(url: url) }
        return store
    }

    /// The URL without any password, for logs.
    func describe(settings: Settings) -> String {
        PostgresURL.redacted(resolved(settings: settings))
    }
}

/// No SQLite database where a reading command looked.
struct NoDatabase: Error, CustomStringConvertible {
    let url: String
    var description: String {
        "no database at \(url) (in \(FileManager.default.currentDirectoryPath)): run the command in the folder `send` ran in, or name the database with --db or DISPATCHER_DATABASE_URL"
    }
}

func parseListen(_ text: String) throws -> (String, Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
        throw ValidationError("--listen '\(text)' is not HOST:PORT (e.g. 0.0.0.0:8500)")
    }
    let host = String(text[..<colon])
    return (host.isEmpty ? "0.0.0.0" : host, port)
}

/// Logs to stderr at LOG_LEVEL (default info). Only the executable bootstraps logging.
func bootstrapLogging(label: String, level defaultLevel: Logger.Level = .info) -> Logger {
    let given = ProcessInfo.processInfo.environment["LOG_LEVEL"].map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
    let level = given.flatMap(Logger.Level.init(rawValue:)) ?? defaultLevel
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    let logger = Logger(label: label)
    if let given, !given.isEmpty, Logger.Level(rawValue: given) == nil {
        // Said, not ignored: an operator who asked for `verbose` would otherwise wonder why nothing more came.
        logger.warning(
            "LOG_LEVEL is not a level: \(defaultLevel.rawValue) is used",
            metadata: [
                "LOG_LEVEL": "\(given.prefix(40))", "levels": "\(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))",
            ])
    }
    return logger
}
