import Dispatcher
import Foundation
import Logging
import StoreTesting
import Testing

@testable import Engine
@testable import Server
@testable import Store
@testable import WhatsApp

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The property system's PDFs, which Meta cannot fetch (they answer only with the caller's token):
/// fetched from a stand-in property system, uploaded to the sandbox's media endpoint, sent by id.
@Suite("Invoice PDFs by upload")
struct DocumentUploadTests {
    func manifest(rows: [(tenant: String, link: String)]) throws -> String {
        var text = "invoice_id,tenant_name,phone,amount,currency,period,document_url\n"
        for (i, row) in rows.enumerated() {
            text += "D-\(i + 1),\(row.tenant),+1809555\(String(format: "%04d", (i + 1) * 100)),\(100 + i).00,DOP,2026-03,\(row.link)\n"
        }
        let path = try freshPath().replacingOccurrences(of: "dispatcher.sqlite", with: "documents.csv")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test(
        "relative and same-origin links are fetched with the service token, uploaded once per PDF, sent by id; a PDF that cannot be had fails its invoice with the reason; a re-run reuses the upload",
        arguments: engines)
    func batchRun(engine: StoreEngine) async throws {
        try await PropertySystemStandIn.run(tokens: ["service-token"]) { base, standIn in
            try await Harness.run(engine: engine) { h in
                var logger = Logger(label: "test")
                logger.logLevel = .critical
                let system = try #require(PropertySystem(url: base))
                let catalog = try TemplateCatalog(directory: testPackageRoot.appendingPathComponent("templates").path)
                let e = RunEngine(
                    store: h.store, client: GraphClient(configuration: h.graph),
                    renderer: try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es"),
                    validation: ValidationOptions(propertySystem: system), logger: logger)
                let fetcher = DocumentFetcher()
                defer {
                    Task {
                        try? await e.client.shutdown()
                        try? await fetcher.shutdown()
                    }
                }
                let path = try manifest(rows: [
                    ("Ana", "/api/v2/documents/invoice/T1/2026030100"),
                    ("Bea", "\(base)/api/v2/documents/invoice/T2/2026030100"),
                    ("Cy", "/api/v2/documents/invoice/MISSING/2026030100"),
                    ("Di", "/api/v2/documents/invoice/LOGIN/2026030100"),
                    ("Eve", "https://docs.example.com/public.pdf"),
                ])
                let options = RunOptions(run: "docs", manifest: path, rate: 80)
                let preparation = try await e.prepare(options)
                #expect(preparation.preview.isValid, "\(preparation.preview.errors)")
                let stager = MediaStager(
                    uploader: DocumentUploader(store: h.store, client: e.client, fetcher: fetcher), propertySystem: system,
                    headers: [("Authorization", "Bearer service-token"), ("organizationId", "org-42")], logger: logger)
                let report = try await stager.stage(run: "docs")
                #expect(report.uploaded == 2 && report.reused == 0 && report.failed == 2, "\(report)")
                #expect(report.reasons.contains { $0.contains("HTTP 404") })
                #expect(report.reasons.contains { $0.contains("is not a PDF (text/html)") })
                let counters = try await h.control("counters") as? [String: Int] ?? [:]
                #expect(counters["media_uploads"] == 2)

                _ = try await e.dispatch(options)
                let sent = try await h.requests()
                #expect(sent.count == 3, "\(sent)")
                #expect(sent.allSatisfy { $0["httpStatus"] as? Int == 200 }, "\(sent)")
                let messages = try await h.store.messages(MessageFilter(run: "docs", limit: 10)).messages
                let byTenant = Dictionary(uniqueKeysWithValues: messages.map { ($0.invoiceID, $0) })
                for id in ["D-1", "D-2"] {
                    let body = try #require(byTenant[id]?.requestBody)
                    #expect(body.contains(#""document":{"id":"#) && !body.contains(#""link""#), "\(body)")
                    #expect(body.contains(#""filename":"\#(id).pdf""#))
                }
                #expect(byTenant["D-5"]?.requestBody?.contains(#""link":"https://docs.example.com/public.pdf""#) == true)
                for id in ["D-3", "D-4"] {
                    #expect(byTenant[id]?.state == .failed)
                    #expect(byTenant[id]?.errorTitle == "not sent: the invoice PDF could not be sent")
                }

                // Another run with the same PDFs: fetched again (they may have changed), not uploaded again.
                let fetchesBefore = standIn.fetchCount
                let again = RunOptions(run: "docs-again", manifest: path, rate: 80, resend: true)
                _ = try await e.prepare(again)
                let second = try await stager.stage(run: "docs-again")
                #expect(second.uploaded == 0 && second.reused == 2, "\(second)")
                #expect(standIn.fetchCount == fetchesBefore + 4)
                #expect((try await h.control("counters") as? [String: Int])?["media_uploads"] == 2)
            }
        }
    }

    @Test("a wrong service token fails each invoice with the property system's refusal, never the run")
    func refused() async throws {
        try await PropertySystemStandIn.run(tokens: ["service-token"]) { base, _ in
            try await Harness.run { h in
                let client = GraphClient(configuration: h.graph)
                let fetcher = DocumentFetcher()
                let uploader = DocumentUploader(store: h.store, client: client, fetcher: fetcher)
                let outcome = await result {
                    try await uploader.mediaID(
                        for: "\(base)/api/v2/documents/invoice/T1/1", filename: "T1.pdf",
                        headers: [("Authorization", "Bearer wrong"), ("organizationId", "org-42")])
                }
                try? await client.shutdown()
                try? await fetcher.shutdown()
                guard case .failure(let error as DocumentProblem) = outcome else {
                    Issue.record("not a document problem: \(outcome)")
                    return
                }
                #expect(error.description.contains("HTTP 401"))
                #expect(error.description.contains("DISPATCHER_PROPERTY_SYSTEM_TOKEN"))
            }
        }
    }

    @Test("the landlord UI's body: its invoiceUrl on the property system, its own token and organizationId fetch the PDF, sent by id")
    func landlordUI() async throws {
        let secret = "property-system-access-token-secret"
        let token = try await #require(HS256Verifier(secret: secret)).sign(AccessClaims(expires: Date().timeIntervalSince1970 + 600))
        try await PropertySystemStandIn.run(tokens: [token]) { base, standIn in
            try await Harness.run(jwtSecret: secret, propertySystem: PropertySystem(url: base)) { h in
                func post(_ url: String, token: String) async throws -> [String: Any] {
                    // Each document its own invoice (the tenant id in the link).
                    let invoiceID = url.split(separator: "/").dropLast().last.map(String.init) ?? "I"
                    var request = URLRequest(url: URL(string: "\(h.receiverURL)/send-invoice")!)
                    request.httpMethod = "POST"
                    request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
                    request.setValue("org-42", forHTTPHeaderField: "organizationId")
                    request.httpBody = Data(
                        #"{"phoneNumbers": ["+1 809 555 0101"], "tenantName": "María Pérez", "invoicePeriod": "marzo 2026", "totalAmount": "12345.5", "currency": "RD$", "organizationName": "Inmobiliaria Caribe", "invoiceUrl": "\#(url)", "locale": "es-CO", "templateName": "invoice", "dueDate": "10/03/2026", "invoiceId": "\#(invoiceID)"}"#
                            .utf8)
                    let (data, _) = try await URLSession.shared.data(for: request)
                    return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
                }
                // A local install's http:// origin, as the UI builds it: fetched with the caller's token.
                let answer = try await post("\(base)/api/v2/documents/invoice/T1/2026030100", token: token)
                let results = try #require(answer["results"] as? [[String: Any]], "\(answer)")
                #expect(results.first?["state"] as? String == "accepted", "\(answer)")
                #expect(standIn.fetchCount == 1)
                let id = try #require(results.first?["id"] as? String)
                let body = try #require(try await h.store.message(id)?.requestBody)
                #expect(body.contains(#""document":{"id":"#) && body.contains(#""filename":"#), "\(body)")
                #expect(body.contains(#""text":"10 de marzo de 2026""#), "\(body)")  // the UI's day-first due date

                // The same call again, by the operator (whose service token the property system refuses):
                // answered from the ledger, never "not sent" for an invoice that was.
                let replay = try await post("\(base)/api/v2/documents/invoice/T1/2026030100", token: "api-token")
                #expect((replay["results"] as? [[String: Any]])?.first?["success"] as? Bool == true, "\(replay)")
                #expect(standIn.fetchCount == 1)

                // A relative link, as the UI may send it: resolved on the property system, fetched, sent by id.
                let relative = try await post("/api/v2/documents/invoice/T5/2026030100", token: token)
                let relativeID = try #require((relative["results"] as? [[String: Any]])?.first?["id"] as? String, "\(relative)")
                #expect((relative["results"] as? [[String: Any]])?.first?["state"] as? String == "accepted", "\(relative)")
                let relativeBody = try #require(try await h.store.message(relativeID)?.requestBody)
                #expect(relativeBody.contains(#""document":{"id":"#) && !relativeBody.contains("/api/v2/"), "\(relativeBody)")

                // A PDF the property system does not have: that invoice is not sent, and says why.
                let missing = try await post("/api/v2/documents/invoice/MISSING/2026030100", token: token)
                let failed = try #require(missing["results"] as? [[String: Any]], "\(missing)")
                #expect(failed.first?["success"] as? Bool == false)
                #expect((failed.first?["error"] as? String)?.contains("HTTP 404") == true, "\(missing)")

                // Our static API token is never handed to the property system: the service token goes instead.
                let operator_ = try await post("/api/v2/documents/invoice/T9/2026030100", token: "api-token")
                let refused = try #require(operator_["results"] as? [[String: Any]], "\(operator_)")
                #expect((refused.first?["error"] as? String)?.contains("HTTP 401") == true, "\(operator_)")
                #expect(!standIn.tokensSeen.contains("api-token"))
                #expect(standIn.tokensSeen.last == "service-token")
                // Two invoices sent (T1, T5: the second after Meta's 6-second pair window), nothing else.
                #expect(try await h.requests().filter { $0["httpStatus"] as? Int == 200 }.count == 2)
            }
        }
    }
}
