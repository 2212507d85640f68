import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Server
import Store
import WhatsApp

struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the settings (values masked), the database, the templates and, with --check-token, the token against Meta.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Ask the Graph API about WHATSAPP_PHONE_NUMBER_ID with WHATSAPP_ACCESS_TOKEN.")
    var checkToken = false

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        var problems = 0
        func line(_ ok: Bool?, _ text: String) {
            let mark = ok == nil ? "  " : (ok! ? "ok" : "!!")
            if ok == false { problems += 1 }
            print("\(mark) \(text)")
        }
        print("Settings")
        for note in settings.notes { line(note == settings.ignoredJWTSecret ? false : nil, note) }
        line(settings.accessToken != nil, "WHATSAPP_ACCESS_TOKEN          \(Settings.masked(settings.accessToken))")
        line(settings.phoneNumberID != nil, "WHATSAPP_PHONE_NUMBER_ID       \(settings.phoneNumberID ?? "(not set)")")
        line(
            nil,
            "WHATSAPP_BUSINESS_ACCOUNT_ID   \(settings.businessAccountID ?? "(not set: templates are not checked against Meta before sending)")"
        )
        line(settings.appSecret != nil, "WHATSAPP_APP_SECRET            \(Settings.masked(settings.appSecret))")
        line(settings.verifyToken != nil, "WHATSAPP_WEBHOOK_VERIFY_TOKEN  \(Settings.masked(settings.verifyToken))")
        line(nil, "WHATSAPP_TEMPLATE_NAME         \(settings.templateName)")
        for (kind, key) in Settings.kindTemplateKeys {
            if let name = settings.templateNames[kind] {
                line(nil, "\(key.padding(toLength: 31, withPad: " ", startingAt: 0))\(name) (for \(kind))")
            }
        }
        line(nil, "WHATSAPP_TEMPLATE_LANGUAGE     \(settings.templateLanguage)")
        line(nil, "WHATSAPP_API_BASE_URL          \(settings.apiBaseURL) (\(settings.apiVersion))")
        line(settings.apiToken != nil || settings.jwtSecret != nil, "DISPATCHER_API_TOKEN           \(Settings.masked(settings.apiToken))")
        let jwtProblem = settings.jwtSecret.flatMap(HS256Verifier.problem(withSecret:))
        line(
            jwtProblem == nil ? nil : false,
            "DISPATCHER_JWT_SECRET          \(Settings.masked(settings.jwtSecret))\(jwtProblem.map { "  (\($0))" } ?? "")")
        line(nil, "DISPATCHER_DEFAULT_COUNTRY_CODE \(settings.defaultCountryCode ?? "(not set: numbers need +CC)")")
        let propertySystem = Result { try settings.propertySystem() }
        switch propertySystem {
        case .success(let system?):
            line(nil, "DISPATCHER_PROPERTY_SYSTEM_URL \(system.origin) (its PDFs are fetched and uploaded to Meta)")
            line(
                settings.propertySystemToken != nil ? nil : false,
                "DISPATCHER_PROPERTY_SYSTEM_TOKEN \(Settings.masked(settings.propertySystemToken))"
                    + (settings.propertySystemToken == nil ? "  (batch runs cannot fetch its PDFs)" : ""))
        case .success(nil): line(nil, "DISPATCHER_PROPERTY_SYSTEM_URL (not set: document links must be public https)")
        case .failure(let error): line(false, "\(error)")
        }

        print("Database")
        do {
            let store = try await database.open(settings: settings)
            try await store.ping()
            line(true, "\(database.describe(settings: settings)): reachable and migrated, \(try await store.runs().count) runs")
        } catch {
            line(false, "\(database.describe(settings: settings)): \(error)")
        }

        print("Templates")
        do {
            let catalog = try TemplateCatalog(directory: common.templatesDirectory)
            line(true, "\(catalog.templates.count) WhatsApp templates: \(catalog.templates.keys.sorted().joined(separator: ", "))")
            _ = try MessageRenderer(catalog: catalog, templateName: settings.templateName, defaultLanguage: settings.templateLanguage)
            line(true, "default template '\(settings.templateName)' has language '\(settings.templateLanguage)'")
        } catch {
            line(false, "\(error)")
        }
        let reports = (common.templatesDirectory as NSString).appendingPathComponent("reports")
        let needed = ["preview.mustache", "delivery.mustache"]
        let missing = needed.filter { !FileManager.default.fileExists(atPath: (reports as NSString).appendingPathComponent($0)) }
        line(
            missing.isEmpty,
            missing.isEmpty
                ? "report templates in \(reports): \(needed.joined(separator: ", "))"
                : "report templates in \(reports): \(missing.joined(separator: " and ")) missing (run where templates/ is, or give --templates DIR)"
        )

        if checkToken {
            print("Meta")
            if let token = settings.accessToken, let id = settings.phoneNumberID {
                let client = GraphClient(
                    configuration: GraphConfiguration(
                        baseURL: settings.apiBaseURL, apiVersion: settings.apiVersion,
                        phoneNumberID: id, accessToken: token, timeout: .seconds(15)))
                switch await client.phoneNumberInfo() {
                case .success(let info):
                    line(
                        true,
                        "the token works: \(info["display_phone_number"] ?? "?") (\(info["verified_name"] ?? "?")), quality \(info["quality_rating"] ?? "?")"
                    )
                case .failure(let error):
                    line(false, "\(error.description)")
                    // Meta's codes have their advice; anything else is this check's to say (not a
                    // run's "what was not sent is still queued").
                    line(
                        nil,
                        knownAdvice(error)
                            ?? (error.code == nil
                                ? "Meta could not be reached at \(settings.apiBaseURL): check the network (a proxy, a firewall) and WHATSAPP_API_BASE_URL."
                                : "Fix the cause above, then run `dispatcher doctor --check-token` again."))
                }
                try? await client.shutdown()
            } else {
                line(false, "set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID to check them")
            }
        }
        print(problems == 0 ? "All good." : "\(problems) problem(s) above.")
        if problems > 0 { throw ExitCode(1) }
    }
}
