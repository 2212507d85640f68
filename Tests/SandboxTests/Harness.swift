import Dispatcher
import Foundation
import Logging
import Sandbox
import ServiceLifecycle
import StoreTesting

@testable import Engine
@testable import Server
@testable import Store
@testable import WhatsApp

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

let testPackageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The real receiver (DispatcherServer on a SQLite file) and the real sandbox, on loopback,
/// wired together as in `send --sandbox`.
struct Harness {
    var store: any DispatchStore
    var graph: GraphConfiguration
    var sandboxURL: String
    var receiverURL: String

    static let appSecret = "harness-secret"

    static func run<T: Sendable>(
        throughput: Double = 1000, pairBurst: Int = 1, pairInterval: Double = 6, scenario: Scenario = Scenario(),
        statusSpacing: Double = 0.05, clientTimeout: Duration = .seconds(10), store existing: (any DispatchStore)? = nil,
        engine: StoreEngine = .sqlite,
        jwtSecret: String? = nil, templates: TemplateCatalog? = nil, propertySystem: PropertySystem? = nil,
        templateNames: [String: String] = [:],
        _ body: @Sendable (Harness) async throws -> T
    ) async throws -> T {
        let store: any DispatchStore
        if let existing { store = existing } else { store = try await makeStore(engine, busyTimeout: 0.3) }
        let logger: Logger = {
            var logger = Logger(label: "harness")
            logger.logLevel = .critical
            return logger
        }()
        let catalog = try templates ?? TemplateCatalog(directory: testPackageRoot.appendingPathComponent("templates").path)
        let receiverReady = Ready(), sandboxReady = Ready()
        let senderBox = SenderBox()
        let server = DispatcherServer(
            store: store, configuration: ServerConfiguration(appSecret: appSecret, apiToken: "api-token", jwtSecret: jwtSecret),
            sender: senderBox)
        let receiver = ServiceGroup(
            configuration: .init(
                services: [Body { try await server.run(host: "127.0.0.1", port: 0, logger: logger) { await receiverReady.set($0) } }],
                gracefulShutdownSignals: [], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await receiver.run() }
            let receiverPort = await receiverReady.wait()
            let sandbox = Sandbox(
                configuration: SandboxConfiguration(
                    appSecret: appSecret, webhookURL: "http://127.0.0.1:\(receiverPort)/webhook", throughput: throughput,
                    pairBurst: pairBurst,
                    pairInterval: pairInterval, statusSpacing: statusSpacing, templates: catalog, scenario: scenario))
            let simulator = ServiceGroup(
                configuration: .init(
                    services: [Body { try await sandbox.run(logger: logger) { await sandboxReady.set($0) } }],
                    gracefulShutdownSignals: [], logger: logger))
            tasks.addTask { try await simulator.run() }
            let sandboxPort = await sandboxReady.wait()
            let graph = GraphConfiguration(
                baseURL: "http://127.0.0.1:\(sandboxPort)", apiVersion: "v23.0", phoneNumberID: "SANDBOX",
                accessToken: "sandbox-token", timeout: clientTimeout)
            let apiClient = GraphClient(configuration: graph)
            let fetcher = propertySystem.map { _ in DocumentFetcher() }
            await senderBox.set(
                InvoiceAPISender(
                    store: store, client: apiClient, catalog: catalog, defaultLanguage: "es", defaultCountryCode: "1",
                    propertySystem: propertySystem, fetcher: fetcher, serviceHeaders: [("Authorization", "Bearer service-token")],
                    templateNames: templateNames))
            let harness = Harness(
                store: store,
                graph: GraphConfiguration(
                    baseURL: "http://127.0.0.1:\(sandboxPort)", apiVersion: "v23.0", phoneNumberID: "SANDBOX",
                    accessToken: "sandbox-token", timeout: clientTimeout),
                sandboxURL: "http://127.0.0.1:\(sandboxPort)", receiverURL: "http://127.0.0.1:\(receiverPort)")
            let result: Result<T, any Error>
            do { result = .success(try await body(harness)) } catch { result = .failure(error) }
            try? await apiClient.shutdown()
            try? await fetcher?.shutdown()
            await simulator.triggerGracefulShutdown()
            await receiver.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return try result.get()
        }
    }

    /// The sandbox's control API.
    func control(_ path: String) async throws -> Any {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "\(sandboxURL)/_sandbox/\(path)")!)
        return try JSONSerialization.jsonObject(with: data)
    }

    func post(_ path: String) async throws {
        var request = URLRequest(url: URL(string: "\(sandboxURL)/_sandbox/\(path)")!)
        request.httpMethod = "POST"
        _ = try await URLSession.shared.data(for: request)
    }

    func requests() async throws -> [[String: Any]] { try await control("requests") as? [[String: Any]] ?? [] }

    /// Waits until `condition` holds (statuses arrive asynchronously), or fails after `timeout`.
    func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError("condition not met in \(timeout)")
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

struct Body: Service {
    let body: @Sendable () async throws -> Void
    init(_ body: @escaping @Sendable () async throws -> Void) { self.body = body }
    func run() async throws { try await body() }
}

func freshPath() throws -> String {
    try scratchFolder("sandbox").appendingPathComponent("dispatcher.sqlite").path
}

/// A valid `invoice_pdf` template request (the invoice with its PDF) to a number, naming message `id`.
func invoiceRequest(to phone: String, id: String, language: String = "es", bodyParameters: Int = 4) -> TemplateMessageRequest {
    var body: [TemplateMessageRequest.Parameter] = [
        .text("María Pérez"), .text("marzo 2026"),
        .currency(fallback: "RD$12,345.50", code: "DOP", amount1000: 12_345_500), .text("10 de marzo de 2026"),
    ]
    body = Array(body.prefix(bodyParameters))
    return TemplateMessageRequest(
        to: phone, callbackData: id,
        template: .init(
            name: "invoice_pdf", language: .init(code: language),
            components: [
                .init(type: "header", parameters: [.document(link: "https://docs.example.com/i.pdf", filename: "i.pdf")]),
                .init(type: "body", parameters: body),
            ]))
}

/// Stores a run with one queued message per phone, ids `m-PHONE`.
func seedMessages(_ store: any DispatchStore, phones: [String], run: String = "t") async throws {
    try await store.saveRun(RunRecord(name: run, manifest: "m", template: "invoice", sender: "SANDBOX", createdAt: 1))
    try await store.addInvoices(
        phones.map {
            InvoiceRecord(
                run: run, invoiceID: "I-\($0)", line: 2, tenantName: "T", amountMinor: 100, currency: "DOP", period: "2026-03", locale: "es"
            )
        })
    _ = try await store.addMessages(
        phones.map { NewMessage(id: "m-\($0)", run: run, invoiceID: "I-\($0)", phone: $0, template: "invoice", language: "es") })
}

/// The receiver is built before the sandbox's port is known; the sender is handed over once it is.
actor SenderBox: InvoiceSendService {
    private var sender: (any InvoiceSendService)?
    func set(_ sender: any InvoiceSendService) { self.sender = sender }
    func sendInvoice(_ request: SendInvoiceRequest, caller: InvoiceCaller) async throws -> SendInvoiceResponse {
        try await sender!.sendInvoice(request, caller: caller)
    }
}
