import Dispatcher
import Foundation
import Sandbox
import StoreTesting
import Testing

@testable import Engine
@testable import Store
@testable import WhatsApp

/// Meta's side of templates, played by the sandbox: the account's template list with statuses,
/// named parameters, a template paused in the middle of a run.
@Suite("Templates at Meta (sandbox)")
struct TemplateAccountTests {
    @Test("the account's templates, read page by page, with each language's status; a language Meta lacks is absent")
    func listPaged() async throws {
        let scenario = Scenario(
            missingLanguages: ["invoice:fr"], templateStatuses: ["invoice_pdf:en": "PAUSED", "rentcall": "PENDING"])
        try await Harness.run(scenario: scenario) { h in
            let client = GraphClient(configuration: h.graph)
            let listed = await result { try await client.messageTemplates(businessAccountID: "WABA-1", pageSize: 3) }
            try? await client.shutdown()
            let templates = try listed.get()
            let catalog = try TemplateCatalog(directory: testPackageRoot.appendingPathComponent("templates").path)
            let expected = catalog.templates.values.reduce(0) { $0 + $1.languages.count } - 1
            #expect(templates.count == expected)
            #expect(Set(templates.map { "\($0.name):\($0.language)" }).count == expected, "an entry twice across pages")
            #expect(!templates.contains { $0.name == "invoice" && $0.language == "fr" })
            #expect(templates.first { $0.name == "invoice_pdf" && $0.language == "en" }?.status == "PAUSED")
            #expect(templates.filter { $0.name == "rentcall" }.allSatisfy { $0.status == "PENDING" })
            let es = try #require(templates.first { $0.name == "invoice_pdf" && $0.language == "es" })
            #expect(es.status == "APPROVED" && es.headerFormat == "DOCUMENT" && es.category == "UTILITY")
            #expect(es.body == catalog["invoice_pdf"]?.languages["es"]?.body)
            #expect(catalog["invoice_pdf"]?.differences(from: templates).contains { $0.contains("en: status PAUSED") } == true)
        }
    }

    @Test("a wrong token is Meta's 190, not an empty list")
    func listRefused() async throws {
        try await Harness.run { h in
            var graph = h.graph
            graph.accessToken = "wrong"
            let client = GraphClient(configuration: graph)
            let listed = await result { try await client.messageTemplates(businessAccountID: "WABA-1") }
            try? await client.shutdown()
            #expect(throws: GraphError.self) { try listed.get() }
            if case .failure(let error as GraphError) = listed { #expect(error.code == 190) }
        }
    }

    @Test("a NAMED template is taken with each parameter's name and refused without them (100)")
    func namedAtMeta() async throws {
        let named = try JSONDecoder().decode(
            TemplateDefinition.self,
            from: Data(
                #"{"name":"aviso","category":"UTILITY","parameter_format":"NAMED","body":[{"source":"tenant_name"},{"source":"period","name":"mes"}],"languages":{"es":{"body":"Hola {{tenant_name}}, {{mes}}."}}}"#
                    .utf8))
        try await Harness.run(templates: try TemplateCatalog(templates: [named])) { h in
            let client = GraphClient(configuration: h.graph)
            func request(_ parameters: [TemplateMessageRequest.Parameter], to phone: String) -> TemplateMessageRequest {
                TemplateMessageRequest(
                    to: phone, callbackData: "m-\(phone)",
                    template: .init(name: "aviso", language: .init(code: "es"), components: [.init(type: "body", parameters: parameters)]))
            }
            let good = await client.send(request([.named("tenant_name", .text("Ana")), .named("mes", .text("marzo"))], to: "18095550100"))
            let bare = await client.send(request([.text("Ana"), .text("marzo")], to: "18095550200"))
            let swapped = await client.send(
                request([.named("mes", .text("marzo")), .named("tenant_name", .text("Ana"))], to: "18095550300"))
            try? await client.shutdown()
            guard case .accepted = good else {
                Issue.record("a named send was refused: \(good)")
                return
            }
            for outcome in [bare, swapped] {
                guard case .rejected(let error) = outcome else {
                    Issue.record("accepted without the right names")
                    continue
                }
                #expect(error.code == 100)
                #expect(error.details?.contains("parameter_name") == true)
            }
        }
    }

    @Test("the (template, language) pairs a run's queue needs, and skipping one, on both engines", arguments: engines)
    func queuedTemplates(engine: StoreEngine) async throws {
        try await Harness.run(engine: engine) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            let path = try freshPath().replacingOccurrences(of: "dispatcher.sqlite", with: "mixed.csv")
            try """
            invoice_id,tenant_name,phone,amount,currency,period,locale,document_url
            A-1,Ana,+18095550100,100.00,DOP,2026-03,es-DO,
            A-2,Bea,+18095550200,200.00,DOP,2026-03,es-DO,https://docs.example.com/A-2.pdf
            A-3,Cy,+18095550300,300.00,DOP,2026-03,fr-FR,
            A-4,Di,+18095550400,400.00,DOP,2026-03,fr-FR,

            """.write(toFile: path, atomically: true, encoding: .utf8)
            _ = try await e.prepare(RunOptions(run: "mixed", manifest: path, rate: 80))
            let needed = Set(try await h.store.queuedTemplates(run: "mixed"))
            #expect(
                needed == [
                    TemplateLanguage(template: "invoice", language: "es"), TemplateLanguage(template: "invoice_pdf", language: "es"),
                    TemplateLanguage(template: "invoice", language: "fr"),
                ])
            let skipped = try await h.store.skipQueued(
                run: "mixed", template: "invoice", language: "fr", reason: "not sent: PAUSED", at: 1_780_000_000)
            #expect(skipped == 2)
            #expect(try await h.store.stateCounts(run: "mixed") == [.queued: 2, .skipped: 2])
            #expect(!(try await h.store.queuedTemplates(run: "mixed")).contains { $0.language == "fr" })
            let page = try await h.store.messages(MessageFilter(run: "mixed", state: .skipped))
            #expect(page.messages.allSatisfy { $0.skipReason == "not sent: PAUSED" })
        }
    }

    @Test(
        "before the first request: a language Meta lacks halts the run with why, nothing sent; or, asked to, its messages are skipped and the rest queued",
        arguments: engines)
    func checkBeforeSending(engine: StoreEngine) async throws {
        try await Harness.run(scenario: Scenario(missingLanguages: ["fr"]), engine: engine) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            func manifest(_ prefix: String) throws -> String {
                let path = try freshPath().replacingOccurrences(of: "dispatcher.sqlite", with: "\(prefix).csv")
                try """
                invoice_id,tenant_name,phone,amount,currency,period,locale,document_url
                \(prefix)-1,Ana,+18095550100,100.00,DOP,2026-03,es-DO,
                \(prefix)-2,Cy,+18095550300,300.00,DOP,2026-03,fr-FR,
                \(prefix)-3,Di,+18095550400,400.00,DOP,2026-03,fr-FR,

                """.write(toFile: path, atomically: true, encoding: .utf8)
                return path
            }
            // No account to ask: not checked, and said why.
            _ = try await e.prepare(RunOptions(run: "refused", manifest: try manifest("R"), rate: 80))
            guard case .noAccount = try await e.checkTemplates(run: "refused", businessAccountID: nil, skipUnapproved: false) else {
                Issue.record("checked without an account")
                return
            }
            // Refused: the run is halted with the language named, and its messages stay queued.
            guard
                case .refused(let problems) = try await e.checkTemplates(
                    run: "refused", businessAccountID: "SANDBOX-WABA", skipUnapproved: false)
            else {
                Issue.record("not refused")
                return
            }
            #expect(problems.map(\.language) == ["fr"])
            let halted = try #require(try await h.store.run(named: "refused"))
            #expect(halted.status == .halted)
            #expect(halted.haltReason?.contains("fr") == true, "\(halted.haltReason ?? "")")
            #expect(try await h.store.stateCounts(run: "refused") == [.queued: 3])
            // Skipped instead: the French messages skipped with the reason, the Spanish one queued.
            _ = try await e.prepare(RunOptions(run: "skipping", manifest: try manifest("S"), rate: 80))
            guard
                case .skipped(let skipped) = try await e.checkTemplates(
                    run: "skipping", businessAccountID: "SANDBOX-WABA", skipUnapproved: true)
            else {
                Issue.record("not skipped")
                return
            }
            #expect(skipped.map(\.messages) == [2])
            #expect(try await h.store.stateCounts(run: "skipping") == [.queued: 1, .skipped: 2])
            #expect(try await h.store.run(named: "skipping")?.status != .halted)
            // The same command without the flag leaves them skipped (the run's other messages are
            // not held up by a refusal); with it, they are put back in the queue to be checked
            // again (still not approved here: skipped again, with the reason).
            _ = try await e.prepare(RunOptions(run: "skipping", manifest: try manifest("S"), rate: 80))
            #expect(try await h.store.stateCounts(run: "skipping") == [.queued: 1, .skipped: 2])
            var again = RunOptions(run: "skipping", manifest: try manifest("S"), rate: 80)
            again.requeueTemplateSkips = true
            _ = try await e.prepare(again)
            #expect(try await h.store.stateCounts(run: "skipping") == [.queued: 3])
            guard case .skipped = try await e.checkTemplates(run: "skipping", businessAccountID: "SANDBOX-WABA", skipUnapproved: true)
            else {
                Issue.record("not skipped again")
                return
            }
            #expect(try await h.store.stateCounts(run: "skipping") == [.queued: 1, .skipped: 2])
            // And `retry` of the run with the flag takes them too (not with --codes, nor without it).
            #expect(try await e.requeueForRetry(run: "skipping").requeued.isEmpty)
            #expect(try await e.requeueForRetry(run: "skipping", codes: [131000], includeTemplateSkips: true).requeued.isEmpty)
            let retry = try await e.requeueForRetry(run: "skipping", includeTemplateSkips: true)
            #expect(retry.requeued.count == 2)
            #expect(try await h.store.stateCounts(run: "skipping") == [.queued: 3])
            #expect(try await h.requests().isEmpty, "nothing is sent by the checks")
        }
    }

    @Test("Meta's message_status: a held message is taken but held, and its statuses release it")
    func heldMessage() async throws {
        let scenario = Scenario(rules: [.init(match: "18095550100", outcome: .heldForQuality)])
        try await Harness.run(scenario: scenario) { h in
            let client = GraphClient(configuration: h.graph)
            let held = await client.send(invoiceRequest(to: "18095550100", id: "m-held"))
            let plain = await client.send(invoiceRequest(to: "18095550200", id: "m-plain"))
            try? await client.shutdown()
            guard case .accepted(_, _, let isHeld) = held, case .accepted(_, _, let plainHeld) = plain else {
                Issue.record("not accepted: \(held) \(plain)")
                return
            }
            #expect(isHeld && !plainHeld)

            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            let options = RunOptions(run: "held", manifest: try manifest(["18095550100", "18095550300"], invoicePrefix: "H"), rate: 50)
            _ = try await e.prepare(options)
            _ = try await e.dispatch(options)
            let first = try #require(try await h.store.messages(MessageFilter(run: "held")).messages.first { $0.phone == "18095550100" })
            // Held at once, unless its statuses (0.2 s later) already came in.
            #expect([.held, .sent, .delivered].contains(first.state), "\(first.state)")
            try await h.eventually { try await h.store.message(first.id)?.state == .delivered }
        }
    }

    @Test("a template Meta pauses in the middle of a run halts it (132015) with what to do; the rest stay queued")
    func pausedMidRun() async throws {
        let scenario = Scenario(pauseTemplate: .init(template: "invoice_pdf", afterSends: 3))
        try await Harness.run(scenario: scenario) { h in
            let e = try makeEngine(h)
            defer { Task { try? await e.client.shutdown() } }
            let options = RunOptions(run: "paused", manifest: try manifest(phones(12)), rate: 40)
            let outcome = try await BillingRun(engine: e, run: "paused", settleWindow: .seconds(5)).perform(prepare: { engine in
                _ = try await engine.prepare(options)
                return options
            })
            guard case .halted(let error) = outcome.stop else {
                Issue.record("not halted: \(String(describing: outcome.stop))")
                return
            }
            #expect(error.code == 132015)
            #expect(haltAdvice(error).contains("3 hours the first time"))
            #expect(try await acceptedByMessage(h).count == 3)
            #expect(outcome.counts[.queued, default: 0] == 9, "\(outcome.counts)")
        }
    }
}

/// The outcome of `body`, thrown or not (so that a client can be shut down before expectations).
func result<T: Sendable>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}
