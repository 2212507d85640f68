import Dispatcher
import Foundation
import Testing

@testable import WhatsApp

/// Meta's side of our code: the JSON we send and how we read Meta's errors.
@Suite("WhatsApp wire format and errors")
struct WhatsAppTests {
    let templates = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("templates").path

    @Test("the request body is Meta's JSON shape")
    func requestJSON() throws {
        let invoice = Invoice(
            line: 2, invoiceID: "INV-1", tenantName: "María Pérez", phones: ["18095550101"],
            amount: Money(minorUnits: 145_000, currency: Currency(code: "USD")!),
            period: BillingPeriod(year: 2026, month: 3), dueDate: nil, landlord: "Inmobiliaria Caribe",
            locale: "en", documentURL: "https://docs.example.com/INV-1.pdf")
        let renderer = try MessageRenderer(
            catalog: try TemplateCatalog(directory: templates), templateName: "invoice", defaultLanguage: "es")
        let message = try renderer.render(invoice).get()[0]
        // No due date: the English sentence still reads as one.
        #expect(message.body.contains("Please pay by return. Thank you"), "\(message.body)")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = String(decoding: try encoder.encode(message.request), as: UTF8.self)
        #expect(
            json
                == #"{"biz_opaque_callback_data":"\#(message.id)","messaging_product":"whatsapp","recipient_type":"individual","template":{"components":[{"parameters":[{"document":{"filename":"INV-1.pdf","link":"https://docs.example.com/INV-1.pdf"},"type":"document"}],"type":"header"},{"parameters":[{"text":"María Pérez","type":"text"},{"text":"March 2026","type":"text"},{"currency":{"amount_1000":1450000,"code":"USD","fallback_value":"$1,450.00"},"type":"currency"},{"text":"return","type":"text"}],"type":"body"}],"language":{"code":"en"},"name":"invoice_pdf"},"to":"18095550101","type":"template"}"#
        )
    }

    @Test("one meaning of retryable: halts are, once fixed; 131049 not before 24 hours")
    func retryPolicy() {
        #expect(ErrorClass.of(code: 190).isRetryable)
        #expect(ErrorClass.of(code: 131005) == .halt)
        #expect(ErrorClass.of(code: 131037) == .halt)
        #expect(!ErrorClass.of(code: 131026).isRetryable)
        #expect(ErrorClass.of(code: 131049).earliestRetry(failedAt: 1000) == 87_400)
        #expect(ErrorClass.of(code: 131000).earliestRetry(failedAt: 1000) == nil)
    }

    @Test(
        "one retry schedule: a run retries transient errors 5 times over a minute, the landlord UI twice in 1.5 s and waits out the pair rule once"
    )
    func retrySchedule() {
        let run = RetryPolicy.billingRun
        #expect((1...6).map { run.backoff(retry: $0) } == [1, 2, 4, 8, 16, 32].map { Duration.seconds($0) })
        #expect(run.backoff(retry: 8) == .seconds(60))
        #expect(run.backoff(retry: 1, jitter: 1.25) == .milliseconds(1250))
        #expect(run.retriesNow(.transient, transientRetries: 4) && !run.retriesNow(.transient, transientRetries: 5))
        #expect(run.retriesNow(.pairRate, transientRetries: 0) && run.retriesNow(.throttled, transientRetries: 99))
        for never: ErrorClass in [.waitDay, .halt, .final, .unknownCode] { #expect(!run.retriesNow(never, transientRetries: 0)) }
        let ui = RetryPolicy.interactive
        #expect([ui.backoff(retry: 1), ui.backoff(retry: 2)] == [.milliseconds(500), .seconds(1)])
        #expect(!ui.retriesNow(.transient, transientRetries: 2) && ui.pairWaits == 1 && RetryPolicy.billingRun.pairWaits == 0)
        #expect(RetryPolicy.pairDelay(retry: 0) == .seconds(1) && RetryPolicy.pairDelay(retry: 2) == .seconds(16))
        #expect(RetryPolicy.throttlePause(retryAfter: nil, retry: 1) == 1 && RetryPolicy.throttlePause(retryAfter: nil, retry: 9) == 60)
        #expect(RetryPolicy.throttlePause(retryAfter: 7, retry: 1) == 7)
    }

    @Test("the body written directly is the JSON JSONEncoder writes, escapes and all")
    func directJSON() throws {
        let tricky = [
            "María \"la Jefa\" Pérez", "back\\slash", "tab\there", "line\nbreak", "\u{01}ctl", "emoji 🏠 ñ", "https://x.example/a/b?c=d&e=f",
            "",
        ]
        for (n, text) in tricky.enumerated() {
            let request = TemplateMessageRequest(
                to: "18095550101", callbackData: "m-\(n)",
                template: .init(
                    name: "invoice", language: .init(code: "es"),
                    components: [
                        .init(
                            type: "header", parameters: [.document(link: "https://docs.example.com/\(text).pdf", filename: "\(text).pdf")]),
                        .init(
                            type: "body",
                            parameters: [
                                .text(text), .currency(fallback: "RD$1,234.50", code: "DOP", amount1000: -1_234_500),
                                .named("tenant_name", .text(text)),
                                .named("total", .currency(fallback: "RD$1,234.50", code: "DOP", amount1000: 1)),
                            ]),
                        .init(type: "button", subType: "url", index: "0", parameters: [.text(text)]),
                    ]))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.withoutEscapingSlashes]
            let expected = try JSONSerialization.jsonObject(with: try encoder.encode(request)) as? NSDictionary
            let direct = try JSONSerialization.jsonObject(with: Data(request.jsonBody.utf8)) as? NSDictionary
            #expect(direct != nil && direct == expected, "\(text)")
            #expect(!request.jsonBody.contains("\\/"))
        }
    }

    @Test("a named parameter carries its parameter_name beside its type, a positional one none")
    func namedParameterJSON() throws {
        let request = TemplateMessageRequest(
            to: "18095550101", callbackData: "m-1",
            template: .init(
                name: "aviso", language: .init(code: "es"),
                components: [.init(type: "body", parameters: [.named("tenant_name", .text("Ana")), .text("x")])]))
        #expect(
            request.jsonBody.contains(
                #""parameters":[{"type":"text","parameter_name":"tenant_name","text":"Ana"},{"type":"text","text":"x"}]"#))
    }
}
