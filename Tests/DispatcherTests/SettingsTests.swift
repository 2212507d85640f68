import Testing

@testable import Dispatcher

/// The environment as the service this replaces left it: its names still work, and say so.
@Suite("Settings, old names included")
struct SettingsTests {
    @Test("the old service's names are read when the new ones are not set, each said once")
    func oldNames() {
        let old = Settings(environment: [
            "ACCESS_TOKEN_SECRET": "the-property-systems-secret-of-32-bytes!",
            "WHATSAPP_API_URL": "https://graph.facebook.com/v18.0/", "WHATSAPP_PORT": "4800",
            "WHATSAPP_INVOICE_TEMPLATE": "factura2", "WHATSAPP_PAYMENT_NOTICE_TEMPLATE": "payment_notice",
            "WHATSAPP_FINAL_NOTICE_TEMPLATE": "final_notice",
        ])
        #expect(old.jwtSecret == "the-property-systems-secret-of-32-bytes!")
        #expect(old.apiBaseURL == "https://graph.facebook.com" && old.apiVersion == "v18.0")
        #expect(old.apiBaseURLProblem == nil)
        #expect(old.servePort == 4800)
        #expect(old.templateNames == ["invoice": "factura2", "rentcall": "payment_notice", "rentcall_last_reminder": "final_notice"])
        #expect(old.templateName == "factura2")
        #expect(old.notes.count == 3, "\(old.notes)")
        #expect(old.notes.contains { $0.contains("ACCESS_TOKEN_SECRET") && $0.contains("DISPATCHER_JWT_SECRET") })
        // Secrets are never in what is said.
        #expect(!old.notes.joined().contains("the-property-systems-secret"))

        let both = Settings(environment: [
            "ACCESS_TOKEN_SECRET": "old-secret", "DISPATCHER_JWT_SECRET": "new-secret", "WHATSAPP_API_URL": "https://old.example.com/v17.0",
            "WHATSAPP_API_BASE_URL": "https://graph.facebook.com", "WHATSAPP_TEMPLATE_NAME": "invoice",
            "WHATSAPP_INVOICE_TEMPLATE": "factura2",
        ])
        #expect(both.jwtSecret == "new-secret")
        #expect(both.apiBaseURL == "https://graph.facebook.com" && both.apiVersion == "v23.0")
        #expect(both.templateName == "invoice")
        #expect(both.notes.isEmpty)

        // A short secret under the old name is not taken (jwt-kit would refuse it), and said as a problem.
        let short = Settings(environment: ["ACCESS_TOKEN_SECRET": "old-secret"])
        #expect(short.jwtSecret == nil)
        #expect(short.ignoredJWTSecret?.contains("shorter than 32 bytes") == true)
        #expect(short.notes == [short.ignoredJWTSecret!])
        #expect(old.ignoredJWTSecret == nil && both.ignoredJWTSecret == nil)

        #expect(Settings(environment: ["WHATSAPP_PORT": "http"]).servePort == nil)
        #expect(Settings(environment: ["WHATSAPP_PORT": "http"]).notes == ["WHATSAPP_PORT 'http' is not a port: ignored"])
        #expect(Settings(environment: ["WHATSAPP_API_URL": "http://127.0.0.1:9000"]).apiBaseURL == "http://127.0.0.1:9000")
    }
}
