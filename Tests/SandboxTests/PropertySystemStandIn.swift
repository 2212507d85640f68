import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// A stand-in for the property system's document route, as its landlord UI links it:
/// `GET /api/v2/documents/invoice/{tenantId}/{term}`, answered only with an accepted bearer token
/// and `organizationId` header. Tenant `MISSING` is a 404, tenant `LOGIN` answers a login page
/// (HTML with a 200), any other gets a small PDF naming the tenant and term.
final class PropertySystemStandIn: Sendable {
    let tokens: Set<String>
    let organization: String

    init(tokens: Set<String>, organization: String) {
        self.tokens = tokens
        self.organization = organization
    }

    var fetchCount: Int { fetches.withLock { $0 } }
    var tokensSeen: [String] { seen.withLock { $0 } }
    let fetches = Mutex(0)
    /// Every bearer token it was shown.
    let seen = Mutex<[String]>([])
    /// The bodies posted to its emailer (`POST /api/v2/emails`), as JSON text.
    let emails = Mutex<[String]>([])
    /// Answer the emailer's calls with this status (500: its emailer is down).
    let emailStatus = Mutex(HTTPResponse.Status.ok)

    /// Serves on a free port for the length of `body`, which gets the base URL.
    static func run<T: Sendable>(
        tokens: Set<String>, organization: String = "org-42", _ body: @Sendable (String, PropertySystemStandIn) async throws -> T
    ) async throws -> T {
        let standIn = PropertySystemStandIn(tokens: tokens, organization: organization)
        let router = Router()
        router.get("api/v2/documents/invoice/:tenant/:term") { request, context -> Response in
            standIn.fetches.withLock { $0 += 1 }
            let token = request.headers[.authorization].map { String($0.dropFirst("Bearer ".count)) }
            if let token { standIn.seen.withLock { $0.append(token) } }
            guard let token, standIn.tokens.contains(token), request.headers[HTTPField.Name("organizationId")!] == standIn.organization
            else {
                return Response(status: .unauthorized, body: .init(byteBuffer: ByteBuffer(string: #"{"error":"unauthorized"}"#)))
            }
            let tenant = context.parameters.get("tenant") ?? "", term = context.parameters.get("term") ?? ""
            switch tenant {
            case "MISSING": return Response(status: .notFound)
            case "LOGIN":
                return Response(
                    status: .ok, headers: [.contentType: "text/html"],
                    body: .init(byteBuffer: ByteBuffer(string: "<html><body>Sign in</body></html>")))
            default:
                return Response(
                    status: .ok, headers: [.contentType: "application/pdf"],
                    body: .init(byteBuffer: ByteBuffer(string: "%PDF-1.4\n% invoice \(tenant) \(term)\n%%EOF\n")))
            }
        }
        // The emailer, as the landlord UI calls it: {document, tenantIds, terms}; it answers per tenant.
        router.post("api/v2/emails") { request, context -> Response in
            let token = request.headers[.authorization].map { String($0.dropFirst("Bearer ".count)) }
            guard let token, standIn.tokens.contains(token), request.headers[HTTPField.Name("organizationId")!] == standIn.organization
            else {
                return Response(status: .unauthorized, body: .init(byteBuffer: ByteBuffer(string: #"{"error":"unauthorized"}"#)))
            }
            let body = String(buffer: try await request.body.collect(upTo: 64 * 1024))
            standIn.emails.withLock { $0.append(body) }
            let status = standIn.emailStatus.withLock { $0 }
            return Response(
                status: status, headers: [.contentType: "application/json"],
                body: .init(
                    byteBuffer: ByteBuffer(
                        string: status == .ok ? #"[{"status":"queued","email":"tenant@example.com"}]"# : #"{"error":"emailer down"}"#)))
        }
        var logger = Logger(label: "property-system")
        logger.logLevel = .critical
        let ready = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { ready.continuation.yield($0.localAddress?.port ?? 0) }, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var port = 0
            for await p in ready.stream {
                port = p
                break
            }
            let result: Result<T, any Error>
            do { result = .success(try await body("http://127.0.0.1:\(port)", standIn)) } catch { result = .failure(error) }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return try result.get()
        }
    }
}
