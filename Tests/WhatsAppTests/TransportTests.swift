import Foundation
import Testing

@testable import WhatsApp

/// A TCP server on loopback that reads a request and closes the connection without an answer.
final class SilentServer: @unchecked Sendable {
    let port: Int
    private let socket: Int32

    init() throws {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                Glibc.bind(fd, pointer, length) == 0 && Glibc.listen(fd, 8) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        port = Int(UInt16(bigEndian: address.sin_port))
        socket = fd
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 65_536)
                _ = recv(client, &buffer, buffer.count, 0)
                Glibc.close(client)
            }
        }
    }

    /// A port nothing listens on: this server's, once closed.
    func close() { Glibc.shutdown(socket, Int32(SHUT_RDWR)); Glibc.close(socket) }
}

@Suite("What a failed request means: never connected (not sent) or maybe sent (unknown)")
struct TransportTests {
    func client(port: Int) -> GraphClient {
        GraphClient(
            configuration: GraphConfiguration(
                baseURL: "http://127.0.0.1:\(port)", apiVersion: "v23.0", phoneNumberID: "1", accessToken: "t", timeout: .seconds(5),
                connectTimeout: .seconds(2)))
    }

    @Test("a refused connection is not sent (retried as such); a connection closed after the request is unknown")
    func classifiedByType() async throws {
        let server = try SilentServer()
        let silent = client(port: server.port)
        let closedAfterRequest = await silent.send(body: Data("{}".utf8))
        try await silent.shutdown()
        guard case .unknown = closedAfterRequest else {
            Issue.record("closed after the request: \(closedAfterRequest)")
            return
        }
        server.close()
        let refused = client(port: server.port)
        let outcome = await refused.send(body: Data("{}".utf8))
        try await refused.shutdown()
        guard case .notSent(let reason) = outcome else {
            Issue.record("refused: \(outcome)")
            return
        }
        #expect(reason.hasPrefix("could not connect"))
    }

    @Test("the classification reads the error's type, not its text")
    func byTypeNotText() {
        struct Pretender: Error, CustomStringConvertible { var description: String { "connection refused" } }
        guard case .unknown = GraphClient.transportOutcome(Pretender()) else {
            Issue.record("an error whose text says refused, of no known type, is not proof that nothing was sent")
            return
        }
    }
}
