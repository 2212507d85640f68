import Foundation
import Testing

@testable import Dispatcher

/// Templates as a real WhatsApp Business Account has them: a text-only default with a document
/// variant, named parameters, and what Meta says of them (`templates pull`, `check`, the
/// approval check before a run).
@Suite("Templates as Meta has them")
struct AccountTemplateTests {
    let catalog: TemplateCatalog
    init() throws { catalog = try TemplateCatalog(directory: templatesPath) }

    func invoice(document: String? = nil, locale: String = "es-DO", name: String = "María Pérez") -> Invoice {
        Invoice(
            line: 2, invoiceID: "INV-1", tenantName: name, phones: ["18095550101"],
            amount: Money(minorUnits: 1_234_550, currency: Currency(code: "DOP")!),
            period: BillingPeriod(year: 2026, month: 3), dueDate: CalendarDate(year: 2026, month: 3, day: 10),
            landlord: "Inmobiliaria Caribe", locale: locale, documentURL: document)
    }

    func definition(_ json: String) throws -> TemplateDefinition {
        try JSONDecoder().decode(TemplateDefinition.self, from: Data(json.utf8))
    }

    @Test("the default template sends a row without a PDF as text, and a row with one through its document variant, under one identity")
    func textOnlyDefault() throws {
        let renderer = try MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es")
        let text = try renderer.render(invoice()).get()[0]
        #expect(text.request.template.name == "invoice")
        #expect(text.request.template.components.map(\.type) == ["body"])
        #expect(text.document == nil)
        #expect(text.body.hasPrefix("Hola María Pérez, le informamos que su factura de marzo 2026 por un total de RD$12,345.50"))

        let withPDF = try renderer.render(invoice(document: "https://docs.example.com/INV-1.pdf")).get()[0]
        #expect(withPDF.request.template.name == "invoice_pdf")
        #expect(withPDF.request.template.components.map(\.type) == ["header", "body"])
        #expect(withPDF.document?.link == "https://docs.example.com/INV-1.pdf")
        // A row that gains its PDF link between two runs is the same message: never sent twice.
        #expect(withPDF.id == text.id)
        #expect(withPDF.key.template == "invoice")
    }

    @Test("with_document must name a template with a document header, from one without")
    func documentVariantChecks() throws {
        let text =
            #"{"name":"t","category":"UTILITY","with_document":"%@","body":[{"source":"tenant_name"}],"languages":{"es":{"body":"Hola {{1}}"}}}"#
        let doc =
            #"{"name":"t_pdf","category":"UTILITY","header":{"format":"DOCUMENT","link":"document_url"},"body":[{"source":"tenant_name"}],"languages":{"es":{"body":"Hola {{1}}"}}}"#
        let plain = #"{"name":"t_plain","category":"UTILITY","body":[{"source":"tenant_name"}],"languages":{"es":{"body":"Hola {{1}}"}}}"#
        _ = try TemplateCatalog(templates: [try definition(text.replacingOccurrences(of: "%@", with: "t_pdf")), try definition(doc)])
        #expect(throws: TemplateError.self) {
            try TemplateCatalog(templates: [try definition(text.replacingOccurrences(of: "%@", with: "missing"))])
        }
        #expect(throws: TemplateError.self) {
            try TemplateCatalog(templates: [try definition(text.replacingOccurrences(of: "%@", with: "t_plain")), try definition(plain)])
        }
    }

    static let namedJSON =
        #"{"name":"aviso","category":"UTILITY","parameter_format":"NAMED","body":[{"source":"tenant_name"},{"source":"amount","name":"total","type":"currency"},{"source":"period","name":"mes"}],"languages":{"es":{"body":"Hola {{tenant_name}}, su renta de {{mes}} es {{total}}."}}}"#

    @Test("a NAMED template: parameters carry their names, the text is filled by name")
    func namedParameters() throws {
        let catalog = try TemplateCatalog(templates: [try definition(Self.namedJSON)])
        let message = try MessageRenderer(catalog: catalog, templateName: "aviso", defaultLanguage: "es").render(invoice()).get()[0]
        #expect(message.body == "Hola María Pérez, su renta de marzo 2026 es RD$12,345.50.")
        let body = try #require(message.request.template.components.first { $0.type == "body" })
        #expect(
            body.parameters == [
                .named("tenant_name", .text("María Pérez")),
                .named("total", .currency(fallback: "RD$12,345.50", code: "DOP", amount1000: 12_345_500)),
                .named("mes", .text("marzo 2026")),
            ])
    }

    @Test("a NAMED template whose names and text disagree is refused at load, naming the names")
    func namedMismatch() throws {
        let missing = Self.namedJSON.replacingOccurrences(of: "{{mes}}", with: "{{periodo}}")
        do {
            _ = try TemplateCatalog(templates: [try definition(missing)])
            Issue.record("accepted")
        } catch let error as TemplateError {
            #expect(error.description.contains("mapped but not in the text: mes"))
            #expect(error.description.contains("in the text but not mapped: periodo"))
        }
        let positional = Self.namedJSON.replacingOccurrences(of: "{{mes}}", with: "{{1}}")
        #expect(throws: TemplateError.self) { try TemplateCatalog(templates: [try definition(positional)]) }
        let badName = Self.namedJSON.replacingOccurrences(of: #""name":"mes""#, with: #""name":"Mes""#)
            .replacingOccurrences(of: "{{mes}}", with: "{{Mes}}")
        #expect(throws: TemplateError.self) { try TemplateCatalog(templates: [try definition(badName)]) }
    }

    func entry(
        _ name: String, _ language: String, status: String = "APPROVED", body: String, header: String? = nil, format: String? = nil,
        category: String = "UTILITY"
    ) -> AccountTemplate {
        AccountTemplate(
            id: "\(name)-\(language)", name: name, language: language, status: status, category: category, parameterFormat: format,
            quality: "GREEN", headerFormat: header, body: body)
    }

    @Test("pull keeps the local mapping, takes Meta's texts and records each language's status")
    func pullUpdates() throws {
        let local = try #require(catalog["invoice"])
        let now = Date(timeIntervalSince1970: 1_780_000_000)
        let updated = local.updated(
            from: [
                entry("invoice", "es", body: "Estimado {{1}}: factura de {{2}}, total {{3}}, vence {{4}}."),
                entry("invoice", "de", status: "PENDING", body: "Hallo {{1}} {{2}} {{3}} {{4}}"),
                entry("other", "es", body: "x"),
            ], at: now)
        #expect(updated.body.map(\.source) == local.body.map(\.source))
        #expect(updated.withDocument == "invoice_pdf")
        #expect(updated.languages["es"]?.body == "Estimado {{1}}: factura de {{2}}, total {{3}}, vence {{4}}.")
        #expect(updated.languages["en"] == local.languages["en"])
        #expect(updated.meta?.languages["es"]?.status == "APPROVED")
        #expect(updated.meta?.languages["de"]?.status == "PENDING")
        #expect(updated.meta?.pulledAt == "2026-05-28T20:26:40Z")
        try TemplateCatalog.validate(updated)
        // Written and read back as the same definition.
        let data = try JSONEncoder().encode(updated)
        #expect(try JSONDecoder().decode(TemplateDefinition.self, from: data).meta == updated.meta)
    }

    @Test("a template new to the folder: named parameters called like manifest fields are mapped, the rest must be")
    func pullNew() throws {
        let named = try TemplateDefinition.new(
            from: [entry("recordatorio", "es", body: "Hola {{tenant_name}}, debe {{saldo}}.", header: "DOCUMENT", format: "NAMED")],
            at: Date()
        ).get()
        #expect(named.isNamed)
        #expect(named.body.map(\.source) == ["tenant_name", "unmapped_saldo"])
        #expect(named.body.map(\.placeholderName) == ["tenant_name", "saldo"])
        #expect(named.header?.link == "document_url")
        #expect(named.unmappedSources == ["unmapped_saldo"])
        let catalog = try TemplateCatalog(templates: [named])
        do {
            _ = try MessageRenderer(catalog: catalog, templateName: "recordatorio", defaultLanguage: "es")
            Issue.record("a template with an unmapped parameter was accepted for sending")
        } catch let error as TemplateError {
            #expect(error.description.contains("unmapped_saldo"))
            #expect(error.description.contains("templates/whatsapp/recordatorio.json"))
        }

        let positional = try TemplateDefinition.new(from: [entry("p", "en", body: "Hi {{1}}, {{2}}")], at: Date()).get()
        #expect(positional.body.map(\.source) == ["unmapped_1", "unmapped_2"])

        #expect(throws: TemplateError.self) {
            try TemplateDefinition.new(from: [entry("promo", "es", body: "x", header: "IMAGE", category: "MARKETING")], at: Date()).get()
        }
        #expect(throws: TemplateError.self) {
            try TemplateDefinition.new(from: [entry("otp", "es", body: "{{1}}", category: "AUTHENTICATION")], at: Date()).get()
        }
    }

    @Test("a template name is Meta's kind of name, never a path")
    func templateNames() throws {
        #expect(isTemplateName("invoice_pdf_2"))
        for bad in ["../evil", "Invoice", "a/b", "", "factura-marzo", String(repeating: "a", count: 513)] {
            #expect(!isTemplateName(bad), "\(bad)")
        }
        let pathLike = #"{"name":"../../etc/x","category":"UTILITY","body":[],"languages":{"es":{"body":"Hola"}}}"#
        #expect(throws: TemplateError.self) { try TemplateCatalog(templates: [try definition(pathLike)]) }
    }

    @Test("check explains each difference with Meta, and none when they agree")
    func differences() throws {
        let local = try #require(catalog["invoice_pdf"])
        let same = local.languages.map { language, text in
            entry("invoice_pdf", language, body: text.body, header: "DOCUMENT", format: "POSITIONAL")
        }
        let withFooters = same.map { e in
            var e = e
            e.footer = local.languages[e.language]?.footer
            return e
        }
        #expect(local.differences(from: withFooters) == [])

        var changed = withFooters.filter { $0.language != "fr" }
        changed[0].status = "PAUSED"
        changed[0].body = "Otro texto {{1}} {{2}} {{3}} {{4}}"
        let notes = local.differences(from: changed)
        #expect(notes.contains { $0.contains("language fr: defined here, not at Meta") })
        #expect(notes.contains { $0.contains("status PAUSED") })
        #expect(notes.contains { $0.contains("body differs") && $0.contains("Otro texto") })
        #expect(
            local.differences(from: []) == ["Meta has no template named 'invoice_pdf' in this business account (sends would answer 132001)"]
        )
        let named = withFooters.map { e in
            var e = e
            e.parameterFormat = "NAMED"
            return e
        }
        #expect(local.differences(from: named).contains { $0.contains("parameter format: here POSITIONAL, at Meta NAMED") })
    }

    @Test("before a run: each (template, language) it needs must be APPROVED; each other is named with its status")
    func approval() {
        let account = [
            entry("invoice", "es", body: ""), entry("invoice", "fr", status: "PAUSED", body: ""),
            entry("invoice_pdf", "es", status: "DISABLED", body: ""),
        ]
        let problems = UnapprovedTemplate.find(
            needed: [("invoice", "es"), ("invoice", "fr"), ("invoice_pdf", "es"), ("invoice", "de"), ("invoice", "fr")], account: account)
        #expect(
            problems == [
                UnapprovedTemplate(template: "invoice", language: "de", status: nil),
                UnapprovedTemplate(template: "invoice", language: "fr", status: "PAUSED"),
                UnapprovedTemplate(template: "invoice_pdf", language: "es", status: "DISABLED"),
            ])
        #expect(problems[0].description.contains("132001"))
        #expect(problems[1].description.contains("3 hours"))
        #expect(problems[2].description.contains("132016"))
        #expect(UnapprovedTemplate.find(needed: [("invoice", "es")], account: account).isEmpty)
    }
}
