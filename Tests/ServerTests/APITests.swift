import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import StoreTesting
import Testing

@testable import Server
@testable import Store
@testable import WhatsApp

func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

func json(_ response: TestResponse) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any])
}

@Suite("Status API")
struct APITests {
    @Test("every API route needs the bearer token; the webhook, health and metrics do not", arguments: engines)
    func authentication(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        try await withRouter(server(store)) { client in
            for path in ["/message-status/x", "/message-statuses", "/runs", "/runs/march", "/runs/march/report.html"] {
                let none = try await client.execute(uri: path, method: .get)
                #expect(none.status == .unauthorized, "\(path)")
                #expect(none.headers[.wwwAuthenticate] == "Bearer")
                let r1 = try await client.execute(uri: path, method: .get, headers: bearer("wrong"))
                #expect(r1.status == .unauthorized)
            }
            let r2 = try await client.execute(uri: "/runs", method: .get, headers: bearer("api-token"))
            #expect(r2.status == .ok)
            let r3 = try await client.execute(uri: "/health", method: .get)
            #expect(r3.status == .ok)
            let r4 = try await client.execute(uri: "/metrics", method: .get)
            #expect(r4.status == .ok)
        }
    }

    @Test(
        "with organizations from a file, a property-system token reaches only its account's organizations' runs, messages, reports and sending; the static token reaches all",
        arguments: engines)
    func accessPerOrganization(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let caribe = try await seed(store, run: "march@caribe", invoice: "C-1")[0]
        let norte = try await seed(store, run: "march@norte", invoice: "N-1", phones: ["18095550202"])[0]
        _ = try await seed(store, run: "march", invoice: "D-1", phones: ["18095550303"])
        let reports = URL(fileURLWithPath: try freshSQLitePath()).deletingLastPathComponent()
        for folder in ["march/caribe", "march/norte"] {
            let url = reports.appendingPathComponent(folder)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            try "report \(folder)".write(to: url.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        }
        let secret = "the-property-systems-access-token-secret"
        var configuration = ServerConfiguration(
            appSecret: appSecret, apiToken: "api-token", jwtSecret: secret, reportsDirectory: reports.path,
            organizationAccess: OrganizationAccess(members: ["caribe": ["Ana@Caribe.do"], "norte": ["luis@norte.com"]]))
        configuration.verifyToken = nil
        let tokens = try #require(HS256Verifier(secret: secret))
        let now = Date().timeIntervalSince1970
        let ana = try await tokens.sign(AccessClaims(expires: now + 600, email: "ana@caribe.do"))
        let stranger = try await tokens.sign(AccessClaims(expires: now + 600, email: "eve@example.com"))
        let anonymous = try await tokens.sign(AccessClaims(expires: now + 600))
        try await withRouter(DispatcherServer(store: store, configuration: configuration)) { client in
            func get(_ path: String, _ token: String) async throws -> TestResponse {
                try await client.execute(uri: path, method: .get, headers: bearer(token))
            }
            let runs = try json(try await get("/runs", ana))["runs"] as? [[String: Any]] ?? []
            #expect(runs.compactMap { $0["run"] as? String ?? $0["name"] as? String } == ["march@caribe"], "\(runs)")
            #expect(try await get("/runs/march@caribe", ana).status == .ok)
            // As a browser's encodeURIComponent writes it.
            #expect(try await get("/runs/march%40caribe", ana).status == .ok)
            #expect(try await get("/runs/march%40caribe/report.html", ana).status == .ok)
            #expect(try await get("/runs/march%40..%2F..%2Fx/report.html", "api-token").status == .badRequest)
            #expect(try await get("/runs/march%00/report.html", "api-token").status == .badRequest)
            #expect(try await get("/runs/march%zz", ana).status == .badRequest)
            #expect(try await get("/runs/march@norte", ana).status == .notFound)
            #expect(try await get("/runs/march", ana).status == .notFound)
            #expect(try await get("/message-status/\(caribe)", ana).status == .ok)
            #expect(try await get("/message-status/\(norte)", ana).status == .notFound)
            #expect(try await get("/message-statuses", ana).status == .forbidden)
            #expect(try await get("/message-statuses?run=march@norte", ana).status == .notFound)
            let listed = try json(try await get("/message-statuses?run=march@caribe", ana))["messages"] as? [[String: Any]] ?? []
            #expect(listed.count == 1)
            #expect(try await get("/runs/march@caribe/report.html", ana).status == .ok)
            #expect(String(buffer: try await get("/runs/march@caribe/report.html", ana).body) == "report march/caribe")
            #expect(try await get("/runs/march@norte/report.html", ana).status == .notFound)
            #expect(try await get("/runs/march@../report.html", "api-token").status == .badRequest)
            // One `@` at most: not another organization's per-landlord folder under a name that ends in ours.
            #expect(try await get("/runs/march@norte@caribe/report.html", ana).status == .badRequest)
            #expect(try await get("/runs/nosuch@caribe/report.html", ana).status == .notFound)
            // Nothing for an account in no organization, or a token without one.
            for token in [stranger, anonymous] {
                #expect((try json(try await get("/runs", token))["runs"] as? [[String: Any]] ?? []).isEmpty)
                #expect(try await get("/message-status/\(caribe)", token).status == .notFound)
            }
            // Sending for another organization: refused before anything else.
            let send = try await client.execute(
                uri: "/send-invoice", method: .post,
                headers: [.authorization: "Bearer \(ana)", HTTPField.Name("organizationId")!: "norte", .contentType: "application/json"],
                body: ByteBuffer(string: #"{"invoiceId":"X","phoneNumbers":["+18095550101"],"tenantName":"T","totalAmount":10}"#))
            #expect(send.status == .forbidden)
            #expect(String(buffer: send.body).contains("not a member of organization 'norte'"))
            // The operator's token sees every run.
            #expect((try json(try await get("/runs", "api-token"))["runs"] as? [[String: Any]] ?? []).count == 3)
        }
    }

    @Test("the property system's own access tokens: valid accepted; expired, forged and alg=none refused", arguments: engines)
    func propertySystemTokens(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let secret = "the-property-systems-access-token-secret"
        let now = Date().timeIntervalSince1970
        let tokens = try #require(HS256Verifier(secret: secret))
        let valid = try await tokens.sign(AccessClaims(expires: now + 600))
        let expired = try await tokens.sign(AccessClaims(expires: now - 10))
        let forged = try await #require(HS256Verifier(secret: "someone-elses-secret-just-as-long-as-ours")).sign(
            AccessClaims(expires: now + 600))
        func base64URL(_ text: String) -> String {
            Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let unsigned = base64URL(#"{"alg":"none"}"#) + "." + base64URL(#"{"exp":9999999999}"#) + "."
        // The right secret's signature on a header that says `none`: still only our key decides.
        let relabelled =
            base64URL(#"{"alg":"none","typ":"JWT"}"#) + "." + valid.split(separator: ".")[1] + "." + valid.split(separator: ".")[2]
        let neverExpires = try await tokens.sign(AccessClaims(expires: nil))
        let notYet = try await tokens.sign(AccessClaims(expires: now + 7200, notBefore: now + 3600))
        #expect(await tokens.verify(notYet, now: now) == .invalid)
        #expect(await tokens.verify(notYet, now: now + 3601) == .valid)
        #expect(await tokens.verify(relabelled, now: now) == .invalid)
        try await withRouter(server(store, jwtSecret: secret)) { client in
            let r5 = try await client.execute(uri: "/runs", method: .get, headers: bearer(valid))
            #expect(r5.status == .ok)
            let old = try await client.execute(uri: "/runs", method: .get, headers: bearer(expired))
            #expect(old.status == .unauthorized)
            #expect(String(buffer: old.body).contains("expired"))
            let r6 = try await client.execute(uri: "/runs", method: .get, headers: bearer(forged))
            #expect(r6.status == .unauthorized)
            let r7 = try await client.execute(uri: "/runs", method: .get, headers: bearer(unsigned))
            #expect(r7.status == .unauthorized)
            let r8 = try await client.execute(uri: "/runs", method: .get, headers: bearer(neverExpires))
            #expect(r8.status == .unauthorized)
        }
        // Without the secret configured, even a valid property-system token is refused.
        try await withRouter(server(store)) { client in
            let response = try await client.execute(uri: "/runs", method: .get, headers: bearer(valid))
            #expect(response.status == .unauthorized)
        }
    }

    @Test("a message's status: ours and the old service's fields, by id or wamid; 404 when unknown", arguments: engines)
    func messageStatus(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let id = try await seed(store)[0]
        try await store.recordAccepted(messageID: id, attempt: try await store.beginAttempt(messageID: id, at: 1), wamid: "wamid.A", at: 2)
        _ = try await ingest(store, [status("wamid.A", "failed", at: 1_772_000_100, error: 131026)])
        try await withRouter(server(store)) { client in
            for key in [id, "wamid.A"] {
                let response = try await client.execute(uri: "/message-status/\(key)", method: .get, headers: bearer("api-token"))
                #expect(response.status == .ok)
                let object = try json(response)
                #expect(object["id"] as? String == id)
                #expect(object["wamid"] as? String == "wamid.A")
                #expect(object["run"] as? String == "march")
                #expect(object["invoice_id"] as? String == "INV-1")
                #expect(object["phone"] as? String == "+18095550101")
                #expect(object["state"] as? String == "failed")
                let error = try #require(object["error"] as? [String: Any])
                #expect(error["code"] as? Int == 131026)
                #expect(error["details"] as? String == "details 131026")
                let events = try #require(object["events"] as? [[String: Any]])
                #expect(events.map { $0["status"] as? String } == ["failed"])
                #expect(events.first?["timestamp"] as? String == "2026-02-25T06:15:00Z")
                #expect(object["success"] as? Bool == false)
                #expect(object["messageId"] as? String == "wamid.A")
                #expect(object["status"] as? String == "failed")
                #expect(object["recipientId"] as? String == "18095550101")
                #expect(object["lastUpdated"] is String)
            }
            let missing = try await client.execute(uri: "/message-status/m-nope", method: .get, headers: bearer("api-token"))
            #expect(missing.status == .notFound)
            #expect(String(buffer: missing.body) == #"{"error":"no message m-nope"}"#)
        }
    }

    @Test("message statuses are filtered and paginated; a bad filter is a 400 saying why", arguments: engines)
    func messageStatuses(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        try await seed(store, phones: (0..<5).map { "1809555010\($0)" })
        try await withRouter(server(store)) { client in
            var ids: [String] = []
            var uri = "/message-statuses?run=march&limit=2"
            while true {
                let page = try json(try await client.execute(uri: uri, method: .get, headers: bearer("api-token")))
                ids += (page["messages"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                guard let next = page["next"] as? String else { break }
                uri = "/message-statuses?run=march&limit=2&after=\(next)"
            }
            #expect(ids.count == 5)
            // The list is ours alone: each field once (the old service's names only on /message-status/{id}).
            let first = try #require(
                (try json(try await client.execute(uri: "/message-statuses?run=march&limit=1", method: .get, headers: bearer("api-token")))[
                    "messages"] as? [[String: Any]])?.first)
            #expect(first["state"] as? String == "queued" && first["updated_at"] is String)
            #expect(Set(first.keys).isDisjoint(with: ["success", "messageId", "status", "timestamp", "recipientId", "lastUpdated"]))
            let bad = try await client.execute(uri: "/message-statuses?state=lost", method: .get, headers: bearer("api-token"))
            #expect(bad.status == .badRequest)
            #expect(String(buffer: bad.body).contains("state 'lost' is not one of"))
            let queued = try json(
                try await client.execute(uri: "/message-statuses?state=queued&landlord=Caribe", method: .get, headers: bearer("api-token")))
            #expect((queued["messages"] as? [Any])?.count == 5)
        }
    }

    @Test("runs list their messages by state", arguments: engines)
    func runs(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        try await seed(store, phones: ["18095550101", "18095550102"])
        try await withRouter(server(store)) { client in
            let object = try json(try await client.execute(uri: "/runs/march", method: .get, headers: bearer("api-token")))
            #expect(object["messages"] as? Int == 2)
            #expect((object["states"] as? [String: Int])?["queued"] == 2)
            let r9 = try await client.execute(uri: "/runs/april", method: .get, headers: bearer("api-token"))
            #expect(r9.status == .notFound)
            let r10 = try await client.execute(uri: "/runs/march/report.html", method: .get, headers: bearer("api-token"))
            #expect(r10.status == .notFound)
        }
    }

    @Test("a run's cost: what its statuses say Meta charged, on the rate card of the run's day, per landlord", arguments: engines)
    func runCost(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let ids = try await seed(store, phones: ["18095550101", "18095550102"])
        for (i, id) in ids.enumerated() {
            try await store.recordAccepted(
                messageID: id, attempt: try await store.beginAttempt(messageID: id, at: 1), wamid: "wamid.\(i)", at: 2)
        }
        var charged = status("wamid.0", "delivered", at: 10)
        charged.pricingCategory = "utility"
        charged.pricingType = "regular"
        var free = status("wamid.1", "delivered", at: 10)
        free.pricingCategory = "utility"
        free.pricingType = "free_customer_service"
        _ = try await ingest(store, [charged, free])
        try await withRouter(server(store)) { client in
            let object = try json(try await client.execute(uri: "/runs/march", method: .get, headers: bearer("api-token")))
            let cost = try #require(object["cost"] as? [String: Any])
            // The run began 2026-02-25, before every card: the oldest, 2026-04-01. One message
            // charged, Dominican Republic ("Rest of Latin America"), utility: 0.0113.
            #expect(cost["rate_card_effective"] as? String == "2026-04-01")
            #expect(cost["currency"] as? String == "USD")
            #expect(cost["total"] as? String == "0.011300")
            #expect(cost["charged_messages"] as? Int == 1)
            #expect(cost["not_charged"] as? [String: Int] == ["free_customer_service": 1])
            let landlords = try #require(cost["landlords"] as? [[String: Any]])
            #expect(landlords.first?["landlord"] as? String == "Caribe")
            #expect(landlords.first?["cost"] as? String == "0.011300")
        }
    }

    @Test("metrics count what the receiver did, in Prometheus' format", arguments: engines, Via.allCases)
    func metrics(engine: StoreEngine, via: Via) async throws {
        let store = try await makeStore(engine)
        let id = try await seed(store)[0]
        try await withRouter(server(store), via: via) { client in
            _ = try await signedPost(client, statusPayload([("wamid.A", "delivered", 100, id)]))
            _ = try await signedPost(client, "{}", signature: "sha256=00")
            _ = try await signedPost(client, "{}", signature: signer.header(for: Array("[]".utf8)))
            let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(text.contains(#"dispatcher_statuses_applied_total{state="delivered"} 1"#))
            #expect(text.contains("dispatcher_webhooks_received_total 1"))
            #expect(text.contains(#"dispatcher_webhooks_rejected_total{reason="malformed_signature"} 1"#))
            #expect(text.contains(#"dispatcher_webhooks_rejected_total{reason="bad_signature"} 1"#))
            #expect(text.contains("dispatcher_webhook_intake_seconds_count 1"))
            #expect(!text.contains(appSecret))
        }
    }

    @Test("without a sender, the drop-in send route says what to configure", arguments: engines)
    func sendNotConfigured(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        try await withRouter(server(store)) { client in
            let response = try await client.execute(
                uri: "/send-invoice", method: .post, headers: bearer("api-token"), body: ByteBuffer(string: "{}"))
            #expect(response.status == .serviceUnavailable)
            #expect(String(buffer: response.body).contains("WHATSAPP_ACCESS_TOKEN"))
        }
    }
}

@Suite("The receiver over a real socket")
struct LiveServerTests {
    @Test("a signed status posted over loopback is readable from the status API", arguments: engines)
    func live(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let id = try await seed(store)[0]
        let app = Application(
            router: server(store, basePath: "/api/v2/whatsapp").router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let r11 = try await signedPost(client, statusPayload([("wamid.LIVE", "read", 100, id)]), path: "/api/v2/whatsapp/webhook")
            #expect(r11.status == .ok)
            let object = try json(
                try await client.execute(uri: "/api/v2/whatsapp/message-status/wamid.LIVE", method: .get, headers: bearer("api-token")))
            #expect(object["state"] as? String == "read")
        }
    }
}
