import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import StoreTesting
import Testing

@testable import Server
@testable import Store
@testable import WhatsApp

/// docs/openapi.yaml is what `scripts/fuzz api` (schemathesis) and API users read: it must list
/// exactly the routes `serve` has, with the authentication each really needs.
@Suite("docs/openapi.yaml describes the API as served")
struct OpenAPITests {
    struct Operation: Hashable, CustomStringConvertible {
        var method: String
        var path: String
        var description: String { "\(method) \(path)" }
    }

    /// The paths and methods of the description, and which operations need no token
    /// (`security: []`). A line reader for the file's own layout: paths at two spaces, methods at four.
    static func described() throws -> (operations: Set<Operation>, open: Set<Operation>) {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/openapi.yaml")
        let lines = try String(contentsOf: url, encoding: .utf8).components(separatedBy: "\n")
        var operations = Set<Operation>(), open = Set<Operation>()
        var inPaths = false, path: String? = nil, current: Operation? = nil
        for line in lines {
            if line == "paths:" { inPaths = true; continue }
            guard inPaths else { continue }
            if !line.hasPrefix(" ") && !line.isEmpty { break }  // the next top-level key
            if line.hasPrefix("  /") && !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())  // "  /runs/{run}:" → "/runs/{run}"
                current = nil
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
                current = Operation(method: String(method), path: path)
                operations.insert(current!)
            } else if let operation = current, line.trimmingCharacters(in: .whitespaces) == "security: []" {
                open.insert(operation)
            }
        }
        return (operations, open)
    }

    @Test("every route served is described, and every route described is served")
    func sameRoutes() async throws {
        let store = try await makeStore(.sqlite)
        let served = Set(
            server(store).router().routes.map { route in
                // Hummingbird writes captures `:id`; OpenAPI `{id}`.
                Operation(
                    method: route.method.rawValue,
                    path: "/"
                        + route.path.description.split(separator: "/").map { part in
                            part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
                        }.joined(separator: "/"))
            })
        let (described, _) = try Self.described()
        #expect(described.count >= 10)
        #expect(served.subtracting(described).isEmpty, "served but not described: \(served.subtracting(described))")
        #expect(described.subtracting(served).isEmpty, "described but not served: \(described.subtracting(served))")
    }

    @Test("routes described as open never ask for a bearer token; every other one answers 401 with a Bearer challenge without one")
    func authentication() async throws {
        let store = try await makeStore(.sqlite)
        let (described, open) = try Self.described()
        try await withRouter(server(store)) { client in
            for operation in described {
                let uri = operation.path.replacingOccurrences(of: "{id}", with: "m-1").replacingOccurrences(of: "{run}", with: "march")
                let response = try await client.execute(uri: uri, method: HTTPRequest.Method(operation.method)!)
                // (The webhook's own 401 is for a missing signature: no bearer challenge.)
                let challenge = response.headers[.wwwAuthenticate]
                if open.contains(operation) {
                    #expect(challenge == nil, "\(operation) asked for a token")
                } else {
                    #expect(
                        response.status == .unauthorized && challenge == "Bearer",
                        "\(operation) answered \(response.status) without a token")
                }
            }
        }
    }
}
