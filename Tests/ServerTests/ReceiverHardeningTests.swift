import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import StoreTesting
import Testing

@testable import Server
@testable import Store
@testable import WhatsApp

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// The receiver as an attacker meets it: refuses early, closes what idles, serves reports inert.
@Suite("Receiver hardening")
struct ReceiverHardeningTests {
    @Test("a POST without a signature, or with a malformed one, is refused before its body is read")
    func signatureFirst() async throws {
        let store = try freshStore()
        // 3.5 MB declared and sent: refused on the header alone (401/403), nothing stored.
        let big = String(repeating: "x", count: 3_400_000)
        try await withRouter(server(store)) { client in
            let none = try await client.execute(
                uri: "/webhook", method: .post, headers: [.contentType: "application/json"],
                body: ByteBuffer(string: big))
            #expect(none.status == .unauthorized)
            let malformed = try await signedPost(client, big, signature: "sha256=zz")
            #expect(malformed.status == .forbidden)
        }
        #expect(try await payloadCount(store) == 0)
    }

    @Test("a declared Content-Length past the cap is refused with 413 before the body is read")
    func declaredLength() async throws {
        let store = try freshStore()
        try await withRouter(server(store, maxBytes: 1000)) { client in
            var headers: HTTPFields = [.contentType: "application/json", .contentLength: "5000"]
            headers[HTTPField.Name("X-Hub-Signature-256")!] = signer.header(for: Array("{}".utf8))
            let response = try await client.execute(
                uri: "/webhook", method: .post, headers: headers,
                body: ByteBuffer(string: String(repeating: " ", count: 5000)))
            #expect(response.status == .contentTooLarge)
        }
        #expect(try await payloadCount(store) == 0)
    }

    @Test("a status whose timestamp is a number (not Meta's documented string) is applied, not dropped", arguments: engines)
    func numericTimestamp(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let id = try await seed(store)[0]
        let body = statusPayload([("wamid.N", "delivered", 1_767_225_600, id)])
            .replacingOccurrences(of: #""timestamp":"1767225600""#, with: #""timestamp":1767225600"#)
        #expect(body.contains(#""timestamp":1767225600"#))
        try await withRouter(server(store)) { client in
            let response = try await signedPost(client, body)
            #expect(response.status == .ok)
        }
        let message = try #require(try await store.message(id))
        #expect(message.state == .delivered)
        #expect(message.deliveredAt == 1_767_225_600)
    }

    @Test("served reports are never sniffed and run no script")
    func reportHeaders() async throws {
        let store = try freshStore()
        let reports = try scratchFolder("reports")
        try FileManager.default.createDirectory(at: reports.appendingPathComponent("march"), withIntermediateDirectories: true)
        try Data("<html><script>alert(1)</script></html>".utf8).write(to: reports.appendingPathComponent("march/index.html"))
        let server = DispatcherServer(
            store: store,
            configuration: ServerConfiguration(
                appSecret: appSecret, apiToken: "api-token",
                reportsDirectory: reports.path))
        try await withRouter(server) { client in
            let response = try await client.execute(
                uri: "/runs/march/report.html", method: .get, headers: [.authorization: "Bearer api-token"])
            #expect(response.status == .ok)
            #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            let csp = try #require(response.headers[HTTPField.Name("Content-Security-Policy")!])
            #expect(csp.contains("default-src 'none'"))
            #expect(!csp.contains("script-src"))
        }
    }

    @Test("the connection cap stays below the process's file limit, whatever it is set to")
    func connectionCapUnderFileLimit() throws {
        var limit = rlimit()
        try #require(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0)
        var configuration = ServerConfiguration(appSecret: "s")
        configuration.maxConnections = 1_000_000
        #expect(configuration.effectiveMaxConnections <= Int(clamping: limit.rlim_cur) - 128)
        configuration.maxConnections = 20
        #expect(configuration.effectiveMaxConnections == 20)
    }

    @Test("an idle connection is closed by the server; /health still answers over a fresh one")
    func idleTimeout() async throws {
        let store = try freshStore()
        var configuration = ServerConfiguration(appSecret: appSecret, apiToken: "api-token")
        configuration.idleTimeout = .milliseconds(300)
        let server = DispatcherServer(store: store, configuration: configuration)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let ready = Ready()
        let task = Task { try await server.run(host: "127.0.0.1", port: 0, logger: logger) { await ready.set($0) } }
        defer { task.cancel() }
        let port = await ready.wait()

        // A client that connects and says nothing: the server hangs up after the idle timeout.
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let started = ContinuousClock.now
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        #expect(n == 0, "the server should close an idle connection (recv returned \(n))")
        #expect(ContinuousClock.now - started < .seconds(2))

        let (_, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/health")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
    }
}

func connectLoopback(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard result == 0 else { throw POSIXError(.ECONNREFUSED) }
    return fd
}
