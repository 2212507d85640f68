import ArgumentParser
import Dispatcher
import Foundation
import Logging
import Sandbox
import ServiceLifecycle
import UnixSignals

struct SandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "A local WhatsApp Cloud API simulator: the send endpoint, Meta's limits, scripted outcomes, signed webhooks.",
        discussion: "Outcomes follow the recipient's last digits unless a scenario file says otherwise: see docs/sandbox.md.")

    @Option(help: "Address to listen on.")
    var listen: String = "127.0.0.1:8600"

    @Option(help: "Where to post status webhooks (e.g. http://127.0.0.1:8500/webhook).")
    var webhookURL: String?

    @Option(help: "App secret that signs webhooks (default: env WHATSAPP_APP_SECRET; needed with --webhook-url).")
    var appSecret: String?

    @Option(help: "Bearer token the simulator accepts (default: env WHATSAPP_ACCESS_TOKEN, else sandbox-token).")
    var accessToken: String?

    @Option(help: "JSON scenario: rules matching numbers to outcomes.")
    var scenario: String?

    @Option(help: "Messages per second per sender number before 130429.")
    var throughput: Double = 80

    @Option(help: "Messages to one user before the 6-second rule (1 is strict; Meta allows bursts).")
    var pairBurst: Int = 1

    @Option(help: "Milliseconds added to every answer.")
    var latencyMs: Int = 0

    @Option(name: .customLong("templates"), help: "Folder with whatsapp/*.json.")
    var templatesDirectory: String = "templates"

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        // Needed only to sign webhooks: without --webhook-url none are posted.
        guard let secret = appSecret ?? settings.appSecret ?? (webhookURL == nil ? "" : nil) else {
            throw ValidationError("give --app-secret (or WHATSAPP_APP_SECRET): the webhooks to --webhook-url are signed with it")
        }
        let (host, port) = try parseListen(listen)
        let logger = bootstrapLogging(label: "dispatcher.sandbox")
        let sandbox = Sandbox(
            configuration: SandboxConfiguration(
                accessToken: accessToken ?? settings.accessToken ?? "sandbox-token", appSecret: secret, webhookURL: webhookURL,
                throughput: throughput, pairBurst: pairBurst, latency: .milliseconds(latencyMs),
                templates: try TemplateCatalog(directory: templatesDirectory), scenario: try scenario.map(Scenario.load) ?? Scenario()))
        let service = EmbeddedService {
            try await sandbox.run(host: host, port: port, logger: logger) { port in
                logger.info("sandbox listening", metadata: ["address": "\(host):\(port)", "webhook": "\(webhookURL ?? "none")"])
            }
        }
        try await ServiceGroup(configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            .run()
    }
}
