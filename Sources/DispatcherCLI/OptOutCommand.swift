import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Server
import Store
import WhatsApp

/// `dispatcher optout list|add|remove`: who gets no more messages, and the way back in.
struct OptOutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "optout",
        abstract: "List, add or remove opt-outs (tenants who asked to receive no more messages).",
        discussion: """
            A tenant who replies STOP (or BAJA, ARRET…) is opted out under the ids Meta gives: their \
            WhatsApp id and, for username users, their user id. Runs skip every number that Meta \
            answered under such an id. Every change is kept: `list --history` shows them all.
            """,
        subcommands: [List.self, Add.self, Remove.self],
        defaultSubcommand: List.self)

    /// A number as the manifest would read it, or a user id as Meta gives it.
    struct Who: ParsableArguments {
        @Argument(help: "A phone number (+52 55 1234 5678, or national with --default-country-code) or a user id (US.1349…).")
        var who: String

        @Option(
            help: ArgumentHelp(
                "Country calling code for a number written without + or 00 (env DISPATCHER_DEFAULT_COUNTRY_CODE).",
                valueName: "code"))
        var defaultCountryCode: String?

        /// The id to keep: E.164 digits for a number, the user id as given otherwise.
        /// `strict`: a user id must have a user id's shape (adding one); removing takes any id
        /// kept, whatever shape a webhook gave it.
        func resolved(settings: Settings, strict: Bool = true) throws -> (id: String, kind: OptOutKind) {
            let text = who.trimmingCharacters(in: .whitespaces)
            // A user id has letters (`US.13491208655302741918`: a country's letters, a dot, its
            // id); a number has none.
            if text.contains(where: \.isLetter) {
                if !strict { return (text, .userID) }
                let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, (2...3).contains(parts[0].count), parts[0].allSatisfy({ $0.isASCII && $0.isUppercase }),
                    (1...120).contains(parts[1].count), parts[1].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) })
                else {
                    throw ValidationError(
                        "'\(who)' is neither a phone number nor a WhatsApp user id (written like US.13491208655302741918, as `optout list` and the webhooks show them)"
                    )
                }
                return (text, .userID)
            }
            let code = (defaultCountryCode ?? settings.defaultCountryCode).map { $0.hasPrefix("+") ? String($0.dropFirst()) : $0 }
            switch PhoneNormalizer(defaultCountryCode: code).normalize(text) {
            case .success(let digits): return (digits, .waID)
            case .failure(let error): throw ValidationError("'\(who)': \(error.message)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Who is opted out now (or, with --history, every change).")

        @OptionGroup var database: DatabaseOptions

        @Flag(help: "Every opt-out and opt-in ever made, oldest first.")
        var history = false

        @Flag(help: "Print one JSON object on stdout.")
        var json = false

        func run() async throws {
            let settings = Settings(environment: ProcessInfo.processInfo.environment)
            let store = try await database.openExisting(settings: settings)
            if history {
                let changes = try await store.optOutChanges()
                if json { return try Console(json: true).emit(["changes": changes.map(OptOutChangeJSON.init)]) }
                if changes.isEmpty { print("no opt-out ever in \(database.describe(settings: settings))") }
                for c in changes {
                    let what = c.change == .optedOut ? "opted out" : "opted in "
                    let why = c.source == .reply ? "replied \(c.word ?? "")" : "by hand"
                    print("\(iso(c.at))  \(what)  \(display(c.id, c.kind))  \(why)\(c.note.map { " — \($0)" } ?? "")")
                }
                return
            }
            let optOuts = try await store.optOuts()
            if json { return try Console(json: true).emit(["opt_outs": optOuts.map(OptOutJSON.init)]) }
            if optOuts.isEmpty { print("nobody is opted out in \(database.describe(settings: settings))") }
            for o in optOuts {
                let why = o.source == .reply ? "replied \(o.word)" : "added by hand"
                print("\(display(o.id, o.kind))  since \(iso(o.at))  \(why)\(o.note.map { " — \($0)" } ?? "")")
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Opt a tenant out by hand: no run sends to them until they are removed.")

        @OptionGroup var who: Who
        @OptionGroup var database: DatabaseOptions

        @Option(help: "Why (kept with the change).")
        var note: String?

        func run() async throws {
            let settings = Settings(environment: ProcessInfo.processInfo.environment)
            let (id, kind) = try who.resolved(settings: settings)
            let store = try await database.open(settings: settings)
            if try await store.addOptOut(id, kind: kind, note: note, at: Date().timeIntervalSince1970) {
                print("opted out \(display(id, kind)): runs send nothing to it from now on")
            } else {
                print("\(display(id, kind)) was opted out already: nothing changed")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Opt a tenant back in (they wrote STOP by mistake, or asked to receive invoices again).",
            discussion: "Removes the opt-outs kept under the number, its national variants and every id Meta answered for it.")

        @OptionGroup var who: Who
        @OptionGroup var database: DatabaseOptions

        @Option(help: "Why (kept with the change; e.g. who asked).")
        var note: String?

        func run() async throws {
            let settings = Settings(environment: ProcessInfo.processInfo.environment)
            let (id, kind) = try who.resolved(settings: settings, strict: false)
            let store = try await database.openExisting(settings: settings)
            let removed = try await store.removeOptOut(id, note: note, at: Date().timeIntervalSince1970)
            if removed.isEmpty {
                FileHandle.standardError.write(Data("error: \(display(id, kind)) is not opted out (see dispatcher optout list)\n".utf8))
                throw ExitCode(1)
            }
            for o in removed { print("opted back in: \(display(o.id, o.kind)) (opted out \(iso(o.at)))") }
        }
    }
}

/// `+18095550101` for a WhatsApp id, the user id as it is otherwise.
private func display(_ id: String, _ kind: OptOutKind) -> String {
    kind == .waID ? "+" + id : "user " + id
}

struct OptOutJSON: Encodable {
    var id: String
    var kind: String
    var at: String
    var source: String
    var word: String
    var note: String?
    var wamid: String?

    init(_ o: OptOut) {
        id = o.id
        kind = o.kind.rawValue
        at = iso(o.at)
        source = o.source.rawValue
        word = o.word
        note = o.note
        wamid = o.wamid
    }
}

struct OptOutChangeJSON: Encodable {
    var id: String
    var kind: String
    var change: String
    var at: String
    var source: String
    var word: String?
    var note: String?
    var wamid: String?

    init(_ c: OptOutChange) {
        id = c.id
        kind = c.kind.rawValue
        change = c.change == .optedOut ? "opted_out" : "opted_in"
        at = iso(c.at)
        source = c.source.rawValue
        word = c.word
        note = c.note
        wamid = c.wamid
    }
}
