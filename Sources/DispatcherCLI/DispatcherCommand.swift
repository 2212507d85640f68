import ArgumentParser
import Dispatcher
import Foundation
import NIOCore
import NIOPosix

@main
struct DispatcherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatcher",
        abstract: "Send the month's invoices to tenants over WhatsApp, paced within Meta's limits, and report on delivery.",
        discussion: """
            Settings come from the environment (WHATSAPP_ACCESS_TOKEN, WHATSAPP_PHONE_NUMBER_ID, \
            WHATSAPP_TEMPLATE_NAME, WHATSAPP_TEMPLATE_LANGUAGE, DISPATCHER_DATABASE_URL…): see docs/configuration.md.
            """,
        subcommands: [
            PreviewCommand.self, SendCommand.self, RetryCommand.self, ReportCommand.self, RunsCommand.self, StatusCommand.self,
            OptOutCommand.self, TemplatesCommand.self, PricingCommand.self, FallbackCommand.self, ServeCommand.self, SandboxCommand.self,
            DoctorCommand.self,
        ]
    )

    static func main() async {
        // `serve` runs its tasks on NIO's event loops, where its sockets are: no hop between
        // NIO's threads and Swift's pool for every request (measured in docs/benchmarks.md).
        if CommandLine.arguments.dropFirst().first == "serve",
            ProcessInfo.processInfo.environment["DISPATCHER_NIO_EXECUTOR"] != "0"
        {
            NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        do {
            var command = try parseAsRoot(nil)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            // Thrown by a command as it runs (a file's content, a run that is not there): the
            // message says what to fix; the root command's usage, which ArgumentParser would add,
            // says nothing about it. (Errors in the arguments themselves still show the
            // subcommand's usage: they are thrown while parsing.)
            FileHandle.standardError.write(Data("Error: \(error.message)\n".utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every command shares.
struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("templates"), help: "Folder with whatsapp/*.json and reports/*.mustache.")
    var templatesDirectory: String = "templates"

    @Option(
        help: ArgumentHelp(
            "Country calling code for numbers written without + or 00 (env DISPATCHER_DEFAULT_COUNTRY_CODE).",
            valueName: "code"))
    var defaultCountryCode: String?

    var settings: Settings { Settings(environment: ProcessInfo.processInfo.environment) }

    func countryCode() throws -> String? { try countryCode(organization: nil) }

    /// The flag, else the organization's own, else the environment's.
    func countryCode(organization: String?) throws -> String? {
        guard let code = defaultCountryCode ?? organization ?? settings.defaultCountryCode else { return nil }
        let digits = code.hasPrefix("+") ? String(code.dropFirst()) : code
        guard (1...3).contains(digits.count), digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), !digits.hasPrefix("0") else {
            throw ValidationError("--default-country-code '\(code)' is not a country calling code (1 to 3 digits, e.g. 1 or 34)")
        }
        return digits
    }
}

/// Writes human output to stderr when stdout is reserved for `--json`.
struct Console {
    var json: Bool
    /// Put before every line (`[caribe] `) when a run spans several organizations.
    var prefix = ""

    func say(_ text: String) {
        if json {
            FileHandle.standardError.write(Data((prefix + text + "\n").utf8))
        } else {
            print(prefix + text)
        }
    }

    func warn(_ text: String) {
        FileHandle.standardError.write(Data((prefix + "warning: " + text + "\n").utf8))
    }

    /// Prints one JSON object on stdout.
    func emit<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}

/// `march-2026.csv` → `march-2026`: the default run name, safe as a folder name.
func runName(forManifest path: String) -> String {
    let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    let safe = base.map { isRunNameCharacter($0) ? $0 : "-" }
    // Not "." or "..", nor hidden: the name is a folder under reports/.
    let name = String(safe.drop { $0 == "." })
    return name.isEmpty ? "run" : name
}

/// What a run's name is made of (it is a folder under reports/): ASCII letters and digits, `-`, `_`, `.`.
func isRunNameCharacter(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == ".") }

/// The one-organization setup's word after a row of another organization.
func oneOrganizationHint(_ organization: String?) -> String {
    organization.map { "this setup sends for one organization (--organization \($0)): configure several with --config to send the others" }
        ?? "this setup sends for one organization: name it with --organization, or configure several with --config"
}

/// `--organization`, when given, must be one of `known` (the configuration file's).
func checkOrganizationOption(_ organization: String?, known: [String]) throws {
    if let organization, !known.contains(organization) {
        throw ValidationError("--organization \(organization) is not configured (configured: \(known.joined(separator: ", ")))")
    }
}

/// A manifest is a file that is there (a folder was read as one, and its report written).
func checkManifestPath(_ path: String) throws {
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else { throw ValidationError("no manifest at \(path)") }
    if isFolder.boolValue { throw ValidationError("\(path) is a folder: name the manifest file in it (a .csv or .xml)") }
}

/// `--run NAME`: a folder under reports/ (reports/NAME/), so letters, digits, `-`, `_` and `.`
/// (not first), at most 100; `@` is the organization's, added by `send` (`march@caribe`).
func checkRunName(_ name: String?) throws {
    guard let name else { return }
    guard name.allSatisfy(isRunNameCharacter), !name.isEmpty, !name.hasPrefix("."), name.count <= 100 else {
        throw ValidationError(
            "--run '\(name)' cannot name a run: use letters, digits, '-', '_' and '.' (not first), at most 100 (it is the report's folder, reports/NAME/)"
        )
    }
}

/// The documented exit codes.
enum Exit {
    static let invalidManifest = ExitCode(65)
    static let halted = ExitCode(69)
}

/// The renderer of an organization's billing run, in `send` and in `preview` alike: `template`
/// (the flag) over its own `invoice` template (from the organizations file) over the
/// environment's; `language` (the flag) over its own. With the file, an error names the
/// organization whose template or language it is.
func organizationRenderer(
    catalog: TemplateCatalog, organization: Organization, fromFile: Bool, template: String?, language: String? = nil,
    settings: Settings
) throws -> MessageRenderer {
    do {
        return try MessageRenderer(
            catalog: catalog,
            templateName: template ?? (fromFile ? organization.templateNames["invoice"] : nil) ?? settings.templateName,
            defaultLanguage: language ?? organization.language)
    } catch let error as TemplateError where fromFile {
        throw TemplateError("organization \(organization.id): \(error.description)")
    }
}

/// The organizations to send for: `--config`'s file (or `DISPATCHER_CONFIG`), else the single-number
/// environment settings as one organization (id `default`; none without a token and number id).
/// `requireTokens: false` for commands that send nothing (`preview`).
func loadOrganizations(
    config: String?, settings: Settings, requireTokens: Bool = true
) throws -> (
    organizations: [Organization], fromFile: Bool
) {
    guard let path = config ?? ProcessInfo.processInfo.environment["DISPATCHER_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) else {
        return (Organization.fromEnvironment(settings).map { [$0] } ?? [], false)
    }
    do {
        return (
            try OrganizationsFile(contentsOf: path, environment: ProcessInfo.processInfo.environment, requireTokens: requireTokens)
                .organizations, true
        )
    } catch let error as ConfigurationError {
        throw ValidationError(error.description)
    }
}
