import Dispatcher
import Foundation
import HTTPTypes
import StoreTesting
import Synchronization
import Testing

@testable import Engine
@testable import Store

@Suite("Email fallback: the message, and the property system's emailer (a stand-in over HTTP)")
struct FallbackTests {
    static func invoice(name: String = "María Pérez", email: String? = "maria@example.com", locale: String = "es-DO") -> InvoiceRecord {
        InvoiceRecord(
            run: "march", invoiceID: "INV-1", line: 2, tenantName: name, tenantID: "T-1", landlord: "Caribe", amountMinor: 1_234_550,
            currency: "DOP", period: "2026-03", dueDate: "2026-03-10", locale: locale, documentURL: "https://example.com/INV-1.pdf",
            email: email)
    }

    @Test("the email: headers cannot be injected, names are RFC 2047 words, the PDF is a base64 part, the text in the tenant's language")
    func message() throws {
        var invoice = Self.invoice(name: "Eve\r\nBcc: thief@example.com")
        invoice.invoiceID = "INV-1\r\nX-Evil: 1"
        let text = String(
            decoding: InvoiceEmail(invoice: invoice, from: "billing@example.com", to: "eve@example.com", pdf: nil).rendered(), as: UTF8.self
        )
        let head = text.components(separatedBy: "\r\n\r\n")[0]
        #expect(!head.contains("\r\nBcc:"))
        #expect(!head.contains("\r\nX-Evil:"))
        #expect(head.components(separatedBy: "\r\n").allSatisfy { $0.contains(": ") })

        // A comma or angle brackets in a name make no second recipient for `sendmail -t`.
        let comma = String(
            decoding: InvoiceEmail(
                invoice: Self.invoice(name: "Smith, John <x@evil.example>"), from: "b@example.com", to: "j@example.com", pdf: nil
            )
            .rendered(), as: UTF8.self)
        #expect(
            comma.contains("\r\nTo: =?UTF-8?B?\(Data("Smith, John <x@evil.example>".utf8).base64EncodedString())?= <j@example.com>\r\n"))
        let french = InvoiceEmail(invoice: Self.invoice(locale: "fr-FR"), from: "b@example.com", to: "m@example.com", pdf: nil)
        #expect(french.subject == "Facture INV-1 — 2026-03")
        #expect(french.text.hasPrefix("Bonjour María Pérez,"))

        let spanish = InvoiceEmail(
            invoice: Self.invoice(), from: "billing@example.com", to: "maria@example.com", pdf: Array("%PDF-1.4".utf8))
        let rendered = String(decoding: spanish.rendered(), as: UTF8.self)
        #expect(rendered.contains("To: =?UTF-8?B?\(Data("María Pérez".utf8).base64EncodedString())?= <maria@example.com>"))
        #expect(rendered.contains("Content-Type: application/pdf; name=\"INV-1.pdf\""))
        #expect(rendered.contains(Data("%PDF-1.4".utf8).base64EncodedString()))
        #expect(spanish.text.contains("por un total de RD$12,345.50"))
        #expect(spanish.text.contains("La factura va adjunta en PDF."))
        #expect(!spanish.text.contains("https://example.com/INV-1.pdf"))  // attached: no link
        let english = InvoiceEmail(invoice: Self.invoice(locale: "en"), from: "b@example.com", to: "m@example.com", pdf: nil)
        #expect(english.text.contains("You can see it here: https://example.com/INV-1.pdf"))
        #expect(english.subject == "Invoice INV-1 — 2026-03")
    }

    @Test("addresses and terms: what the manifest gives is checked before anything is sent")
    func addresses() {
        #expect(InvoiceEmail.isAddress("maria.perez@example.com"))
        for bad in ["", "maria", "a@b", "a b@example.com", "a@example.com\r\nBcc: x@y.z", "<a@example.com>", "a@b@example.com"] {
            #expect(!InvoiceEmail.isAddress(bad), "\(bad)")
        }
        #expect(PropertySystemEmailChannel.term("2026-03") == 2_026_030_100)
        #expect(PropertySystemEmailChannel.term("2026030100") == 2_026_030_100)
        #expect(PropertySystemEmailChannel.term("2026-03-15") == 2_026_031_500)
        #expect(PropertySystemEmailChannel.term("March") == nil)
        #expect(
            SendmailChannel(command: ["msmtp"], from: "b@example.com", attachments: nil).address(for: Self.invoice(email: "not an address"))
                == nil)
    }

    @Test(
        "--via property-system posts the UI's own body with the service token, once; its emailer down is a failure retried later",
        arguments: engines)
    func propertySystem(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        // One invoice not on WhatsApp (131026), its tenant id in the property system T-1.
        try await store.saveRun(RunRecord(name: "march", manifest: "m.csv", template: "invoice", sender: "123", createdAt: 1_772_000_000))
        try await store.addInvoices([Self.invoice()])
        _ = try await store.addMessages([
            NewMessage(id: "m-1", run: "march", invoiceID: "INV-1", phone: "18095550107", template: "invoice", language: "es")
        ])
        try await store.recordAccepted(
            messageID: "m-1", attempt: try await store.beginAttempt(messageID: "m-1", at: 1), wamid: "wamid.1", at: 2)
        _ = try await ingest(store, [status("wamid.1", "failed", at: 10, error: 131026)])

        try await PropertySystemStandIn.run(tokens: ["service"]) { base, standIn in
            let channel = PropertySystemEmailChannel(
                origin: base, headers: [("Authorization", "Bearer service"), ("organizationId", "org-42")])
            defer { Task { try? await channel.shutdown() } }
            let runner = FallbackRunner(store: store, channel: channel)

            // Refused (a 4xx): nothing went; the next pass sends it.
            standIn.emailStatus.withLock { $0 = .unprocessableContent }
            let refused = try await runner.run("march", dryRun: false)
            guard case .failed(let address, let reason)? = refused.outcomes.first?.outcome else {
                Issue.record("\(refused.outcomes)")
                return
            }
            #expect(address == "tenant T-1")
            #expect(reason.contains("HTTP 422"))

            standIn.emailStatus.withLock { $0 = .ok }
            let sent = try await runner.run("march", dryRun: false)
            #expect(sent.count { if case .sent = $0 { true } else { false } } == 1)
            let bodies = standIn.emails.withLock { $0 }
            #expect(bodies.count == 2)
            let body = try #require(try JSONSerialization.jsonObject(with: Data(bodies[1].utf8)) as? [String: Any])
            #expect(body["document"] as? String == "invoice")
            #expect(body["tenantIds"] as? [String] == ["T-1"])
            #expect(body["terms"] as? [Int] == [2_026_030_100])

            let again = try await runner.run("march", dryRun: false)
            #expect(again.count { if case .sentBefore = $0 { true } else { false } } == 1)
            #expect(standIn.emails.withLock { $0.count } == 2)
            #expect(try await store.fallbacks(run: "march")["INV-1"]?.detail?.contains("queued") == true)

            // Sent once more on the operator's word; a gateway's 502 may come after the mail left:
            // uncertain, kept claimed, not posted again by the next pass.
            standIn.emailStatus.withLock { $0 = .badGateway }
            let gateway = try await runner.run("march", dryRun: false, again: ["INV-1"])
            #expect(gateway.count { if case .uncertain = $0 { true } else { false } } == 1)
            standIn.emailStatus.withLock { $0 = .ok }
            let after = try await runner.run("march", dryRun: false)
            #expect(after.count { if case .uncertain = $0 { true } else { false } } == 1)
            #expect(standIn.emails.withLock { $0.count } == 3)
        }
    }
}
