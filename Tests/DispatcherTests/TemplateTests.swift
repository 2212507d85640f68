import Foundation
import Testing

@testable import Dispatcher

@Suite("WhatsApp templates")
struct TemplateTests {
    let catalog: TemplateCatalog
    init() throws { catalog = try TemplateCatalog(directory: templatesPath) }

    func invoice(
        locale: String = "es-DO", amount: Int64 = 1_234_550, currency: String = "DOP",
        due: CalendarDate? = CalendarDate(year: 2026, month: 3, day: 10),
        name: String = "María Pérez", document: String? = "https://docs.example.com/INV-1.pdf", phones: [String] = ["18095550101"]
    ) -> Invoice {
        Invoice(
            line: 2, invoiceID: "INV-1", tenantName: name, phones: phones,
            amount: Money(minorUnits: amount, currency: Currency(code: currency)!),
            period: BillingPeriod(year: 2026, month: 3), dueDate: due, landlord: "Inmobiliaria Caribe",
            locale: locale, documentURL: document)
    }

    func render(_ invoice: Invoice, template: String = "invoice") throws -> Result<[RenderedMessage], InvoiceProblems> {
        try MessageRenderer(catalog: catalog, templateName: template, defaultLanguage: "es").render(invoice)
    }

    @Test("es-DO: the text the tenant reads, and Meta's currency parameter")
    func spanishDominican() throws {
        let message = try render(invoice()).get()[0]
        #expect(message.language == "es")
        #expect(
            message.body
                == "Hola María Pérez, le enviamos su factura de marzo 2026 por un total de RD$12,345.50. Fecha límite de pago: 10 de marzo de 2026. Gracias por su pago puntual."
        )
        #expect(message.document?.filename == "INV-1.pdf")
        let body = try #require(message.request.template.components.first { $0.type == "body" })
        #expect(body.parameters[2] == .currency(fallback: "RD$12,345.50", code: "DOP", amount1000: 12_345_500))
        #expect(message.request.bizOpaqueCallbackData == message.id)
        #expect(message.request.to == "18095550101")
    }

    @Test("placeholders are filled in one pass: a tenant's name that reads {{2}} stays as written")
    func placeholdersOnePass() throws {
        #expect(fillPlaceholders("Hola {{1}}, total {{2}}.", ["Ana {{2}}", "RD$5.00"]) == "Hola Ana {{2}}, total RD$5.00.")
        #expect(fillPlaceholders("{{2}}{{1}}{{3}}", ["a", "b"]) == "ba{{3}}")
        #expect(fillPlaceholders("{ {{1}} }} {{x}} {{", ["ñ"]) == "{ ñ }} {{x}} {{")
        #expect(fillPlaceholders("no placeholders", ["a"]) == "no placeholders")
        let message = try render(invoice(name: "Ana {{3}}")).get()[0]
        #expect(message.body.hasPrefix("Hola Ana {{3}}, le enviamos"))
        #expect(checkTextParameter("a    b") == nil)
        #expect(checkTextParameter("a     b") == "contains more than four consecutive spaces")
        #expect(checkTextParameter(String(repeating: "é", count: 1024)) == nil)
        #expect(checkTextParameter(String(repeating: "é", count: 1025)) == "is longer than 1,024 characters")
    }

    @Test(
        "amounts in the tenant's locale",
        arguments: [
            ("es-DO", "DOP", "RD$12,345.50"), ("en", "USD", "$12,345.50"), ("es-DO", "USD", "US$12,345.50"),
            ("es-ES", "EUR", "12.345,50\u{A0}€"), ("fr-FR", "EUR", "12\u{202F}345,50\u{A0}€"), ("pt-BR", "BRL", "R$\u{A0}12.345,50"),
            ("es-CO", "COP", "$\u{A0}12.345,50"), ("en", "DOP", "RD$12,345.50"), ("en", "CHF", "CHF\u{A0}12,345.50"),
        ])
    func money(locale: String, currency: String, expected: String) {
        #expect(LocaleFormatting(locale: locale).money(Money(minorUnits: 1_234_550, currency: Currency(code: currency)!)) == expected)
    }

    @Test(
        "amounts of every size: signs, groups of three, zero-padded decimals, currencies without decimals",
        arguments: [
            ("es-DO", "DOP", 0, "RD$0.00"), ("es-DO", "DOP", 5, "RD$0.05"), ("es-DO", "DOP", -5, "-RD$0.05"),
            ("es-DO", "DOP", 99_999, "RD$999.99"), ("es-DO", "DOP", 100_000, "RD$1,000.00"),
            ("es-DO", "DOP", 100_000_000, "RD$1,000,000.00"), ("es-DO", "DOP", -12_345_678_901, "-RD$123,456,789.01"),
            ("es-DO", "DOP", Int64.max, "RD$92,233,720,368,547,758.07"), ("en", "JPY", 1_234_567, "¥1,234,567"),
            ("es-ES", "EUR", -100, "-1,00\u{A0}€"), ("fr-FR", "EUR", 123_456_789, "1\u{202F}234\u{202F}567,89\u{A0}€"),
        ] as [(String, String, Int64, String)])
    func moneySizes(locale: String, currency: String, minorUnits: Int64, expected: String) {
        #expect(LocaleFormatting(locale: locale).money(Money(minorUnits: minorUnits, currency: Currency(code: currency)!)) == expected)
    }

    @Test("a parameter's text is checked the same whether its bytes alone settle it or its characters must be walked")
    func parameterChecks() {
        #expect(checkTextParameter("Ana María Pérez, Torre \"Norte\"; Apto 4") == nil)
        #expect(checkTextParameter("€5 por día ¡gracias!") == nil)
        #expect(checkTextParameter("a\u{2028}b") == "contains a line break or tab")
        #expect(checkTextParameter("a\u{85}b") == "contains a line break or tab")
        #expect(checkTextParameter("a\tb") == "contains a line break or tab")
        #expect(checkTextParameter("a\u{80}b") == "contains a control character (U+0080)")
        #expect(checkTextParameter("a\u{7F}") == "contains a control character (U+007F)")
        #expect(checkTextParameter("a\u{1B}[0m") == "contains a control character (U+001B)")
        #expect(checkTextParameter("€     €") == "contains more than four consecutive spaces")
        #expect(checkTextParameter(String(repeating: "a", count: 1024)) == nil)
        #expect(checkTextParameter(String(repeating: "a", count: 1025)) == "is longer than 1,024 characters")
        #expect(checkTextParameter(String(repeating: "€", count: 1024)) == nil)
    }

    @Test("a locale picks the template's language; one it lacks falls back to the default and says so")
    func languages() throws {
        let renderer = try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es")
        #expect(renderer.language(for: "es-DO") == ("es", false))
        #expect(renderer.language(for: "pt-BR") == ("pt_BR", false))
        #expect(renderer.language(for: "pt") == ("pt_BR", false))
        #expect(renderer.language(for: "de-DE") == ("es", true))
        let message = try render(invoice(locale: "de-DE")).get()[0]
        #expect(message.languageFallback)
        #expect(message.body.contains("marzo 2026"))
    }

    @Test("an empty due date uses the template's wording for it")
    func ifEmpty() throws {
        #expect(try render(invoice(due: nil)).get()[0].body.contains("Fecha límite de pago: al recibir esta factura."))
    }

    @Test("a missing PDF link (for a template that needs one), a line break in a name: caught before sending, naming the field")
    func parameterProblems() throws {
        guard case .failure(let noDocument) = try render(invoice(document: nil), template: "invoice_pdf") else {
            Issue.record("rendered")
            return
        }
        #expect(noDocument.issues.map(\.field) == ["document_url"])
        guard case .failure(let newline) = try render(invoice(name: "María\nPérez")) else { Issue.record("rendered"); return }
        #expect(newline.issues.map(\.field) == ["tenant_name"])
        #expect(newline.issues[0].message.contains("132018"))
        #expect(newline.issues[0].line == 2)
        #expect(newline.issues[0].invoiceID == "INV-1")
    }

    @Test("one message per number, each with its own stable id")
    func messagePerPhone() throws {
        let messages = try render(invoice(phones: ["18095550101", "18295550102"])).get()
        #expect(messages.map(\.phone) == ["18095550101", "18295550102"])
        #expect(Set(messages.map(\.id)).count == 2)
        #expect(messages[0].id == MessageKey(invoiceID: "INV-1", phone: "18095550101", template: "invoice").messageID)
        #expect(messages[0].id.count == 26)
        #expect(try render(invoice(phones: ["18095550101"])).get()[0].id == messages[0].id)
    }

    @Test("message ids are the same as every earlier version made them: a re-run after an upgrade sends nothing twice")
    func messageIDsPinned() {
        // SHA-256 of "invoice␟phone␟template", its first 12 bytes in hex (Python's hashlib gives the same).
        #expect(MessageKey(invoiceID: "INV-1", phone: "18095550101", template: "invoice").messageID == "m-388125a4dd3500bfff6711ae")
        #expect(
            MessageKey(invoiceID: "FAC-ñ/2026", phone: "18095550101", template: "invoice_pdf").messageID == "m-9e727561abd3511be3a239ac")
    }

    @Test("a compiled body reads as the one-pass fill of its text, whatever stands around the placeholders")
    func compiledBodies() throws {
        let texts = [
            "Hola {{1}}, total {{2}}.", "{{2}}{{1}}", "{{1}}", "sin nada", "", "{ {{1}} }} {{x}} {{", "{{{1}}}", "{{3}} {{ 1}} {{2}}",
            "ñ{{2}}é{{1}}ü", "{{1}}{{1}}{{1}}", "{{01}} {{1x}} {{" + String(repeating: "9", count: 70) + "}}",
        ]
        for text in texts {
            let escaped = text.replacingOccurrences(of: "\"", with: "\\\"")
            let template = try definition(
                #"{"name":"t","category":"UTILITY","body":[{"source":"tenant_name"},{"source":"invoice_id"}],"languages":{"es":{"body":"\#(escaped)"}}}"#
            )
            let compiled = CompiledTemplate(template)
            let texts = try #require(compiled.texts["es"])
            let values = ["Ana {{2}}", "INV-ñ"]
            // What the renderer filled before templates were compiled: each placeholder looked up
            // by its exact text (`{{01}}` is not `{{1}}`).
            let byPlaceholder = ["1": values[0], "2": values[1]]
            #expect(
                CompiledTemplate.fill(texts.body, values: values)
                    == fillPlaceholders(text) { byPlaceholder[String($0)] }, "\(text)")
        }
    }

    @Test("one memo over a month of rows gives each row what rendering it alone gives: periods, due dates, labels, locales, templates")
    func memoAcrossRows() throws {
        var rows: [Invoice] = []
        for (i, due) in [
            CalendarDate(year: 2026, month: 3, day: 10), CalendarDate(year: 2026, month: 3, day: 10), nil,
            CalendarDate(year: 2026, month: 4, day: 1), CalendarDate(year: 2026, month: 3, day: 10),
        ].enumerated() {
            for locale in ["es-DO", "en-US", "fr"] {
                for document in ["https://docs.example.com/INV-1.pdf", nil] as [String?] {
                    var row = invoice(locale: locale, due: due, document: document)
                    row.period = BillingPeriod(year: 2026, month: i % 2 == 0 ? 3 : 4)
                    if i == 4 { row.periodLabel = "marzo-abril" }
                    rows.append(row)
                }
            }
        }
        let renderer = try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es")
        let memo = MessageRenderer.Memo()
        for row in rows {
            let alone = try renderer.render(row).get()[0], remembered = try renderer.render(row, memo: memo).get()[0]
            #expect(remembered.body == alone.body && remembered.request == alone.request && remembered.language == alone.language)
            #expect(remembered.document?.filename == alone.document?.filename)
        }
        // A memo handed to a renderer of another template gives it that template's texts, not the first one's.
        let other = try MessageRenderer(catalog: catalog, templateName: "rentcall", defaultLanguage: "es")
        let row = invoice()
        let alone = try other.render(row).get()[0].body
        #expect(try other.render(row, memo: memo).get()[0].body == alone)
        #expect(try renderer.render(row, memo: memo).get()[0].body != alone)
    }

    @Test("a document's file name: each {field} filled, anything else kept as written")
    func documentFilename() throws {
        for (pattern, expected) in [
            ("Factura {invoice_id} {period}.pdf", "Factura INV-1 marzo 2026.pdf"), ("{invoice_id}", "INV-1"),
            ("{nope}-{invoice_id}{.pdf", "-INV-1{.pdf"), ("plain.pdf", "plain.pdf"), ("{landlord}}.pdf", "Inmobiliaria Caribe}.pdf"),
        ] {
            let template = try definition(
                #"{"name":"doc","category":"UTILITY","header":{"format":"DOCUMENT","link":"document_url","filename":"\#(pattern)"},"body":[{"source":"tenant_name"}],"languages":{"es":{"body":"Hola {{1}}"}}}"#
            )
            let catalog = try TemplateCatalog(templates: [template])
            let message = try MessageRenderer(catalog: catalog, templateName: "doc", defaultLanguage: "es").render(invoice()).get()[0]
            #expect(message.document?.filename == expected)
            #expect(message.body == "Hola María Pérez")
        }
    }

    @Test("an unknown template or language is refused as Meta would (132001)")
    func unknownTemplate() throws {
        #expect(throws: TemplateError.self) { try MessageRenderer(catalog: catalog, templateName: "nope", defaultLanguage: "es") }
        #expect(throws: TemplateError.self) { try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "ja") }
    }

    func definition(_ json: String) throws -> TemplateDefinition {
        try JSONDecoder().decode(TemplateDefinition.self, from: Data(json.utf8))
    }

    @Test("a definition whose placeholders and parameters disagree is refused at load (132000)")
    func countMismatch() throws {
        let bad = try definition(
            #"{"name":"t","category":"UTILITY","body":[{"source":"tenant_name"}],"languages":{"es":{"body":"Hola {{1}}, {{2}}"}}}"#)
        do {
            _ = try TemplateCatalog(templates: [bad])
            Issue.record("accepted")
        } catch let error as TemplateError {
            #expect(error.description.contains("2 placeholders but 1 parameters"))
            #expect(error.description.contains("132000"))
        }
        let gap = try definition(
            #"{"name":"t","category":"UTILITY","body":[{"source":"tenant_name"},{"source":"period"}],"languages":{"es":{"body":"{{1}} {{3}}"}}}"#
        )
        #expect(throws: TemplateError.self) { try TemplateCatalog(templates: [gap]) }
    }

    @Test("a currency parameter fed by something other than the amount is refused (132012)")
    func formatMismatch() throws {
        let bad = try definition(
            #"{"name":"t","category":"UTILITY","body":[{"source":"tenant_name","type":"currency"}],"languages":{"es":{"body":"{{1}}"}}}"#)
        #expect(throws: TemplateError.self) { try TemplateCatalog(templates: [bad]) }
    }

    @Test("a URL button takes its parameter and shows the final link")
    func urlButton() throws {
        let template = try definition(
            #"{"name":"pay","category":"UTILITY","body":[{"source":"tenant_name"}],"buttons":[{"index":0,"sub_type":"url","source":"invoice_id"}],"languages":{"es":{"body":"Hola {{1}}","buttons":[{"text":"Pagar","url":"https://pay.example.com/i/{{1}}"}]}}}"#
        )
        let catalog = try TemplateCatalog(templates: [template])
        let message = try MessageRenderer(catalog: catalog, templateName: "pay", defaultLanguage: "es").render(invoice()).get()[0]
        #expect(message.buttons.first?.url == "https://pay.example.com/i/INV-1")
        #expect(message.request.template.components.last == .init(type: "button", subType: "url", index: "0", parameters: [.text("INV-1")]))
        let unmapped = try definition(
            #"{"name":"pay","category":"UTILITY","body":[],"languages":{"es":{"body":"Hola","buttons":[{"text":"Pagar","url":"https://pay.example.com/i/{{1}}"}]}}}"#
        )
        #expect(throws: TemplateError.self) { try TemplateCatalog(templates: [unmapped]) }
    }

    @Test("every shipped template loads and renders in each of its languages")
    func shippedTemplates() throws {
        #expect(Set(catalog.templates.keys) == ["invoice", "invoice_pdf", "rentcall", "rentcall_reminder", "rentcall_last_reminder"])
        for (name, template) in catalog.templates {
            for language in template.languages.keys {
                let locale = language.replacingOccurrences(of: "_", with: "-")
                let messages = try MessageRenderer(catalog: catalog, templateName: name, defaultLanguage: language).render(
                    invoice(locale: locale)
                ).get()
                #expect(!messages[0].body.contains("{{"), "\(name) \(language)")
            }
        }
    }
}

@Suite("Preview")
struct PreviewTests {
    func preview(_ sample: String) throws -> PreviewResult {
        let renderer = try MessageRenderer(
            catalog: TemplateCatalog(directory: templatesPath), templateName: "invoice", defaultLanguage: "es")
        return try Previewer(options: .init(), renderer: renderer).run(path: samplePath(sample))
    }

    @Test("the CSV sample: 24 invoices, one with nothing due, 26 messages to 26 numbers")
    func csvSample() throws {
        let result = try preview("march-2026.csv")
        #expect(result.isValid)
        #expect(result.invoices == 24)
        #expect(result.skipped.map(\.invoiceID) == ["CAR-2026-03-008"])
        #expect(result.messages == 26)
        #expect(result.recipients == 26)
        #expect(result.warnings == ["extra columns kept for templates: unit_floor"])
        #expect(result.languages["en"] == 2)
    }

    @Test("the XML sample: 10 invoices, 13 messages")
    func xmlSample() throws {
        let result = try preview("march-2026.xml")
        #expect(result.isValid)
        #expect(result.invoices == 10)
        #expect(result.messages == 13)
        #expect(result.billed["USD"]?.minorUnits == 145_000)
    }

    @Test("the broken sample: 10 problems, each on its documented line; the valid rows still render")
    func brokenSample() throws {
        let result = try preview("broken.csv")
        #expect(!result.isValid)
        #expect(result.errors.compactMap(\.line) == [3, 4, 5, 6, 7, 9, 10, 11, 12, 13])
        #expect(
            result.errors.compactMap(\.field) == [
                "tenant_name", "phone", "phone", "amount", "amount", "currency", "period", "due_date", "invoice_id", "document_url",
            ])
        #expect(result.messages == 3)
        #expect(result.skipped.map(\.invoiceID) == ["BRK-2026-03-013"])
    }

    @Test("messaging-limit warning only above the tier")
    func messagingLimit() {
        #expect(MessagingLimit.warning(recipients: 250, limit: 250) == nil)
        #expect(MessagingLimit.warning(recipients: 251, limit: 250)?.contains("1 tenants would not get their invoice today") == true)
        #expect(MessagingLimit.warning(recipients: 251, limit: 250)?.contains("2,000-user tier") == true)
        #expect(MessagingLimit.warning(recipients: 10, limit: nil) == nil)
    }
}
