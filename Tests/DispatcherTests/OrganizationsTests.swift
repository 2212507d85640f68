import Foundation
import Testing

@testable import Dispatcher

@Suite("Organizations file")
struct OrganizationsTests {
    let environment = ["CARIBE_TOKEN": "token-caribe", "NORTE_TOKEN": "token-norte"]

    func load(_ json: String) throws -> [Organization] {
        try OrganizationsFile(json: Data(json.utf8), source: "dispatcher.json", environment: environment).organizations
    }

    @Test("each organization with its number, its token from the environment, its templates and defaults")
    func twoOrganizations() throws {
        let organizations = try load(
            #"""
            {"organizations": [
              {"id": "caribe", "name": "Inmobiliaria Caribe", "phone_number_id": "1111", "token_env": "CARIBE_TOKEN",
               "business_account_id": "9001", "templates": {"invoice": "factura2", "rentcall": "payment_notice"},
               "default_country_code": "1", "currency": "DOP", "language": "es"},
              {"id": "norte", "phone_number_id": "2222", "token_env": "NORTE_TOKEN", "currency": "EUR", "language": "fr"}
            ]}
            """#)
        #expect(organizations.map(\.id) == ["caribe", "norte"])
        #expect(organizations[0].accessToken == "token-caribe" && organizations[1].accessToken == "token-norte")
        #expect(organizations[0].templateNames == ["invoice": "factura2", "rentcall": "payment_notice"])
        #expect(organizations[0].defaultCountryCode == "1" && organizations[1].defaultCountryCode == nil)
        #expect(organizations[1].name == "norte" && organizations[1].currency == "EUR" && organizations[1].language == "fr")
    }

    @Test("what cannot be used is refused, naming the organization and the field")
    func refusals() throws {
        let cases: [(String, String)] = [
            (#"{"organizations": [{"id": "a", "phone_number_id": "1", "token": "EAAG…"}]}"#, "organization 'a': token must not be written"),
            (#"{"organizations": [{"id": "a", "phone_number_id": "1", "token_env": "MISSING"}]}"#, "names MISSING, which is not set"),
            (
                #"{"organizations": [{"id": "a", "phone_number_id": "1", "token_env": "CARIBE_TOKEN"}, {"id": "b", "phone_number_id": "1", "token_env": "NORTE_TOKEN"}]}"#,
                "organization 'b': phone_number_id is another organization's"
            ),
            (#"{"organizations": [{"phone_number_id": "1", "token_env": "CARIBE_TOKEN"}]}"#, "organization #1: id is required"),
            (
                #"{"organizations": [{"id": "a", "phone_number_id": "1", "token_env": "CARIBE_TOKEN", "templates": {"promo": "x"}}]}"#,
                "names kind 'promo'"
            ),
            (
                #"{"organizations": [{"id": "a", "phone_number_id": "1", "token_env": "CARIBE_TOKEN", "currency": "RD$"}]}"#,
                "currency 'RD$' is not an ISO 4217 code"
            ),
            (#"{"organizations": [{"id": "a/../b", "phone_number_id": "1", "token_env": "CARIBE_TOKEN"}]}"#, "id 'a/../b' may hold only"),
            (
                #"{"organizations": [{"id": "a", "phone_number_id": "1", "token_env": "CARIBE_TOKEN", "members": ["ana"]}]}"#,
                "members 'ana' is not an email address"
            ),
            (#"{"organizations": []}"#, "no organizations"),
            ("{", "not valid JSON (Unexpected end of file"),
            (#"{"organizations": [{"id": 5}]}"#, "Expected to decode String but found number instead. at organizations.[0].id"),
            (#"{"organizations": [{"id": ".a", "phone_number_id": "1", "token_env": "CARIBE_TOKEN"}]}"#, "id '.a' may not begin with '.'"),
        ]
        for (json, expected) in cases {
            do {
                _ = try load(json)
                Issue.record("accepted: \(json)")
            } catch let error as ConfigurationError {
                #expect(error.description.contains(expected), "\(error)")
                #expect(!error.description.contains("token-caribe"))
            }
        }
    }

    @Test("the single-number environment is a one-organization configuration")
    func fromEnvironment() {
        #expect(Organization.fromEnvironment(Settings(environment: [:])) == nil)
        let single = Organization.fromEnvironment(
            Settings(environment: ["WHATSAPP_ACCESS_TOKEN": "t", "WHATSAPP_PHONE_NUMBER_ID": "p", "WHATSAPP_INVOICE_TEMPLATE": "factura2"]))
        #expect(single?.id == "default" && single?.phoneNumberID == "p" && single?.templateNames == ["invoice": "factura2"])
    }
}

@Suite("Property system links")
struct PropertySystemTests {
    @Test("only its documents, on its origin or relative to it, are fetched with credentials")
    func documentsOnly() throws {
        let system = try #require(PropertySystem(url: "https://pm.example.com/"))
        #expect(
            system.resolve("/api/v2/documents/invoice/T1/2026030100") == "https://pm.example.com/api/v2/documents/invoice/T1/2026030100")
        #expect(
            system.resolve("https://PM.example.com/api/v2/documents/invoice/T1/1") == "https://PM.example.com/api/v2/documents/invoice/T1/1"
        )
        for outside in [
            "/api/v2/tenants/T1", "/api/v2/documents/../tenants", "/api/v2/documents/%2e%2e/tenants",
            "https://pm.example.com.evil.com/api/v2/documents/x",
            "https://pm.example.com@evil.com/api/v2/documents/x", "//evil.com/api/v2/documents/x",
            "https://other.example.com/api/v2/documents/x",
            "http://pm.example.com/api/v2/documents/x", "/api/v2/documents/x\\..\\y",
            // What a server in front may still normalise into a path outside the documents.
            "/api/v2/documents/..?x=1", "/api/v2/documents/..#frag", "/api/v2/documents/x/..;/..;/admin",
            "/api/v2/documents/..%2f..%2fadmin", "/api/v2/documents/%252e%252e/admin", "/api/v2/documents/.",
            "https://pm.example.com/api/v2/documents/x/..?y",
        ] {
            #expect(system.resolve(outside) == nil, "\(outside)")
        }
        // Dots inside a name, a query or a fragment are not a way out.
        for inside in ["/api/v2/documents/invoice..pdf", "/api/v2/documents/x/1?name=../a", "/api/v2/documents/x#../y"] {
            #expect(system.resolve(inside) != nil, "\(inside)")
        }
        #expect(PropertySystem(url: "ftp://pm.example.com") == nil)
        #expect(PropertySystem(url: "http://localhost:8080")?.origin == "http://localhost:8080")
    }

    @Test("a manifest's link on the property system but outside its documents is refused saying so, not 'must be https'")
    func outsideDocumentsSaid() throws {
        let system = try #require(PropertySystem(url: "http://localhost:8080"))
        let path = try temporaryFile(
            "links.csv",
            """
            invoice_id,tenant_name,phone,amount,currency,period,document_url
            A,Ana,+18095550101,10.00,DOP,2026-03,/api/v2/documents/invoice/T1/2026030100
            B,Beto,+18095550102,10.00,DOP,2026-03,http://localhost:8080/other/x.pdf
            C,Cira,+18095550103,10.00,DOP,2026-03,/api/v2/tenants/T1
            D,Dora,+18095550104,10.00,DOP,2026-03,https://docs.example.com/D.pdf

            """)
        let summary = try ManifestImporter(options: ValidationOptions(propertySystem: system)).importManifest(path: path) { _ in }
        #expect(summary.issues.map(\.invoiceID) == ["B", "C"], "\(summary.issues)")
        for issue in summary.issues {
            #expect(issue.field == "document_url")
            #expect(issue.message.contains("is on the property system but not one of its documents: only links under /api/v2/documents/"))
        }
    }
}

@Suite("A manifest's rows by organization")
struct OrganizationScopeTests {
    let scope = OrganizationScope(organization: "caribe", known: ["caribe", "norte"], fallback: nil, reportsStrays: true)

    @Test("each row is this run's, another organization's, or nobody's with the reason; a fallback takes rows that name none")
    func owners() {
        #expect(scope.owner(of: "caribe") == .this("caribe"))
        #expect(scope.owner(of: "norte") == .other)
        guard case .nobody(let unknown) = scope.owner(of: "sur") else { Issue.record("sur was accepted"); return }
        #expect(unknown.contains("'sur' is not a configured organization (configured: caribe, norte)"))
        guard case .nobody(let missing) = scope.owner(of: nil) else { Issue.record("a row without one was accepted"); return }
        #expect(missing.contains("is missing: several organizations are configured"))
        var fallback = scope
        fallback.fallback = "caribe"
        #expect(fallback.owner(of: "") == .this("caribe"))
        fallback.organization = nil
        #expect(fallback.owner(of: "norte") == .this("norte"))
    }

    @Test("the validator sends only this organization's rows, reports strays once, and still sees every invoice id")
    func validation() throws {
        let path = try temporaryFile(
            "orgs.csv",
            """
            invoice_id,organization,tenant_name,phone,amount,currency,period
            A-1,caribe,Ana,+18095550101,10.00,DOP,2026-03
            B-1,norte,Bea,+18095550102,10.00,DOP,2026-03
            A-1,norte,Dup,+18095550103,10.00,DOP,2026-03
            X-1,sur,Xavier,+18095550104,10.00,DOP,2026-03

            """)
        var options = ValidationOptions()
        options.organizations = scope
        var valid: [String] = []
        let caribe = try ManifestImporter(options: options).importManifest(path: path) { valid.append($0.invoiceID) }
        #expect(valid == ["A-1"])
        #expect(caribe.elsewhere == 2)
        #expect(caribe.issues.map(\.field) == ["organization"])
        options.organizations?.organization = "norte"
        options.organizations?.reportsStrays = false
        valid = []
        let norte = try ManifestImporter(options: options).importManifest(path: path) { valid.append($0.invoiceID) }
        // The duplicate id is norte's row, caught although the first A-1 is caribe's.
        #expect(valid == ["B-1"])
        #expect(norte.issues.map(\.message).contains { $0.contains("duplicate invoice_id") })
        #expect(!norte.issues.contains { $0.field == "organization" })
        let census = OrganizationCensus(path: path, scope: scope)
        #expect(census.rows == ["caribe": 1, "norte": 2])
        #expect(census.strayCount == 1)
        #expect(census.strays.first?.line == 5)
    }

    @Test("an XML manifest's root organization is its rows' default")
    func xmlRoot() throws {
        let path = try temporaryFile(
            "orgs.xml",
            """
            <invoices organization="norte" currency="DOP">
              <invoice><invoice_id>N-1</invoice_id><tenant_name>Ana</tenant_name><phone>+18095550101</phone><amount>10</amount><period>2026-03</period></invoice>
              <invoice><invoice_id>C-1</invoice_id><organization>caribe</organization><tenant_name>Bea</tenant_name><phone>+18095550102</phone><amount>10</amount><period>2026-03</period></invoice>
            </invoices>
            """)
        let census = OrganizationCensus(path: path, scope: scope)
        #expect(census.rows == ["norte": 1, "caribe": 1])
        #expect(census.strayCount == 0)
        var options = ValidationOptions()
        options.organizations = scope
        var valid: [String] = []
        _ = try ManifestImporter(options: options).importManifest(path: path) { valid.append($0.invoiceID) }
        #expect(valid == ["C-1"])
    }
}
