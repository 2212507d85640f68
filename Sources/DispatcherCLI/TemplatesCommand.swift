import ArgumentParser
import Dispatcher
import Engine
import Foundation
import WhatsApp

struct TemplatesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "templates",
        abstract: "The WhatsApp templates: read them from Meta, list them with their status, compare them with Meta's.",
        discussion: """
            pull and check read the business account's templates (WHATSAPP_BUSINESS_ACCOUNT_ID, and a token \
            with the whatsapp_business_management permission); list reads only the folder.
            """,
        subcommands: [TemplatesPullCommand.self, TemplatesListCommand.self, TemplatesCheckCommand.self])
}

/// The business account's templates from Meta (or from `WHATSAPP_API_BASE_URL`'s sandbox).
func accountTemplates(settings: Settings) async throws -> [AccountTemplate] {
    guard let token = settings.accessToken, let account = settings.businessAccountID else {
        throw ValidationError(
            "set WHATSAPP_ACCESS_TOKEN and WHATSAPP_BUSINESS_ACCOUNT_ID (WhatsApp Manager → Account tools; docs/operating.md)")
    }
    if let problem = settings.apiBaseURLProblem { throw ValidationError(problem) }
    let client = GraphClient(
        configuration: GraphConfiguration(
            baseURL: settings.apiBaseURL, apiVersion: settings.apiVersion, phoneNumberID: settings.phoneNumberID ?? "",
            accessToken: token, timeout: .seconds(30)))
    let result: Result<[AccountTemplate], any Error>
    do {
        result = .success(try await client.messageTemplates(businessAccountID: account))
    } catch {
        result = .failure(error)
    }
    try? await client.shutdown()
    do {
        return try result.get()
    } catch let error as GraphError {
        let advice = error.code == nil ? "" : "\n" + haltAdvice(error)
        FileHandle.standardError.write(Data("error: Meta would not list the templates: \(error.description)\(advice)\n".utf8))
        throw ExitCode(69)
    }
}

/// `de_DE APPROVED` for each language, as `meta` recorded them.
private func statuses(_ record: TemplateDefinition.AccountRecord?) -> String {
    guard let record else { return "never pulled" }
    return record.languages.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.status)" }.joined(separator: ", ")
}

struct TemplatesPullCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Read every template of the business account and write or update templates/whatsapp/*.json.",
        discussion: """
            Meta's texts, category, parameter format and status per language are written; the local mapping \
            (which manifest field fills which parameter) is kept. A template new to the folder gets the mapping \
            that can be guessed (named parameters called like a manifest field, document_url for a document \
            header); the rest is written unmapped_… and must be edited before sending with it. A definition \
            that would no longer match Meta's placeholders is not written: the reason is printed.
            """)

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let settings = common.settings
        let templates = try await accountTemplates(settings: settings)
        let folder = URL(fileURLWithPath: common.templatesDirectory).appendingPathComponent("whatsapp")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let now = Date()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var failures = 0
        let byName = Dictionary(grouping: templates, by: \.name)
        print("\(templates.count) templates in \(byName.count) names at Meta (business account \(settings.businessAccountID ?? ""))")
        for (name, entries) in byName.sorted(by: { $0.key < $1.key }) {
            guard isTemplateName(name) else {
                print("  '\(name)': skipped: not a template name Meta gives (lowercase letters, digits, _); nothing written")
                failures += 1
                continue
            }
            let file = folder.appendingPathComponent("\(name).json")
            let definition: TemplateDefinition
            let verb: String
            if FileManager.default.fileExists(atPath: file.path) {
                do {
                    let local = try JSONDecoder().decode(TemplateDefinition.self, from: Data(contentsOf: file))
                    definition = local.updated(from: entries, at: now)
                    verb = "updated"
                } catch {
                    print("  \(name): not updated: \(file.path) cannot be read (\(error))")
                    failures += 1
                    continue
                }
            } else {
                switch TemplateDefinition.new(from: entries, at: now) {
                case .success(let new):
                    definition = new
                    verb = "new"
                case .failure(let reason):
                    print("  \(name): skipped: \(reason)")
                    continue
                }
            }
            do {
                try TemplateCatalog.validate(definition)
            } catch {
                print("  \(name): not written: \(error) (Meta's texts no longer match the mapping: edit \(file.path))")
                failures += 1
                continue
            }
            try encoder.encode(definition).write(to: file, options: .atomic)
            let unmapped = definition.unmappedSources
            print(
                "  \(name): \(verb) (\(statuses(definition.meta)))"
                    + (unmapped.isEmpty ? "" : "; map \(unmapped.joined(separator: ", ")) to manifest fields before sending with it"))
        }
        let localOnly = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
            .filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.filter { byName[$0] == nil }.sorted()
        for name in localOnly { print("  \(name): in the folder, not at Meta (sending it would answer 132001)") }
        if failures > 0 { throw ExitCode(1) }
    }
}

struct TemplatesListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "The templates of the folder with their status at Meta when last pulled.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let catalog = try TemplateCatalog(directory: common.templatesDirectory)
        for (name, t) in catalog.templates.sorted(by: { $0.key < $1.key }) {
            var line = "\(name)  \(t.category)  \((t.parameterFormat ?? .positional).rawValue.lowercased())"
            line += "  header \(t.header?.format.lowercased() ?? "none")"
            if let variant = t.withDocument { line += "  rows with a PDF: \(variant)" }
            print(line)
            print("    languages here: \(t.languages.keys.sorted().joined(separator: ", "))")
            print("    at Meta: \(statuses(t.meta))" + (t.meta.map { " (pulled \($0.pulledAt))" } ?? " (dispatcher templates pull)"))
            if !t.unmappedSources.isEmpty { print("    unmapped: \(t.unmappedSources.joined(separator: ", "))") }
        }
    }
}

struct TemplatesCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Compare the folder's templates with the account's at Meta now and explain each difference (exit 1 if any).")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let catalog = try TemplateCatalog(directory: common.templatesDirectory)
        let templates = try await accountTemplates(settings: common.settings)
        var differences = 0
        for (name, t) in catalog.templates.sorted(by: { $0.key < $1.key }) {
            let notes = t.differences(from: templates)
            if notes.isEmpty {
                print(
                    "\(name): as at Meta (\(templates.filter { $0.name == name }.map { "\($0.language) \($0.status)" }.sorted().joined(separator: ", ")))"
                )
            } else {
                differences += notes.count
                print("\(name):")
                for note in notes { print("  - \(note)") }
            }
        }
        let atMetaOnly = Set(templates.map(\.name)).subtracting(catalog.templates.keys).sorted()
        if !atMetaOnly.isEmpty { print("at Meta, not in the folder (dispatcher templates pull): \(atMetaOnly.joined(separator: ", "))") }
        print(differences == 0 ? "The folder agrees with Meta." : "\(differences) difference(s).")
        if differences > 0 { throw ExitCode(1) }
    }
}
