import ArgumentParser
import Dispatcher
import Engine
import Foundation
import Server
import Store
import WhatsApp

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "One message's state and history, by dispatcher id (m-…) or wamid.")

    @Argument(help: "The message's id (m-…) or Meta's wamid.")
    var messageID: String

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let store = try await database.open(settings: settings)
        guard let message = try await store.message(messageID) else {
            FileHandle.standardError.write(Data("error: no message \(messageID) in \(database.describe(settings: settings))\n".utf8))
            throw ExitCode(1)
        }
        let events = try await store.events(messageID: message.id)
        let attempts = try await store.attempts(messageID: message.id)
        if json {
            try Console(json: true).emit(StatusJSON(message: message, events: events, attempts: attempts))
            return
        }
        print("\(message.id)  \(message.state.rawValue)")
        print(
            "  run \(message.run), invoice \(message.invoiceID), to +\(message.phone), template \(message.template) (\(message.language))")
        if let wamid = message.wamid { print("  wamid \(wamid)") }
        if let code = message.errorCode {
            print("  error \(code): \(message.errorTitle ?? "")\(message.errorDetails.map { " — \($0)" } ?? "")")
        }
        for attempt in attempts {
            print(
                "  attempt \(attempt.number) at \(iso(attempt.startedAt)): \(attempt.outcome.rawValue)\(attempt.errorCode.map { " (\($0))" } ?? "")"
            )
        }
        for event in events {
            print(
                "  \(iso(event.timestamp))  \(event.status)\(event.applied ? "" : " (changed nothing)")\(event.errorCode.map { " error \($0)" } ?? "")"
            )
        }
    }
}

struct StatusJSON: Encodable {
    var message: MessageRecord
    var events: [StatusEventRecord]
    var attempts: [AttemptRecord]
}

struct RunsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "runs", abstract: "List runs with their messages counted by state.")

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let store = try await database.open(settings: settings)
        let runs = try await store.runs()
        let others = try await store.statusesForOtherNumbers()
        if json {
            try Console(json: true).emit(
                RunsJSON(runs: runs.map(RunJSON.init), statuses_for_other_numbers: Dictionary(uniqueKeysWithValues: others)))
            return
        }
        if runs.isEmpty { print("no runs yet in \(database.describe(settings: settings))") }
        for summary in runs {
            let counts = MessageState.allCases.compactMap { state in summary.counts[state].map { "\(state.rawValue) \($0)" } }
            print(
                "\(summary.run.name)  \(summary.run.status.rawValue)  \(iso(summary.run.createdAt))  \(summary.invoices) invoices, \(summary.messages) messages: \(counts.joined(separator: ", "))"
            )
        }
        for (number, statuses) in others {
            print(
                "\(statuses) statuses came for number \(number) and were applied to no message: kept (a number no run was sent from, or about another number's message)"
            )
        }
    }
}

struct RunsJSON: Encodable {
    var runs: [RunJSON]
    /// Statuses Meta sent for numbers no run was sent from, per number: kept, applied to nothing.
    var statuses_for_other_numbers: [String: Int]
}

struct RunJSON: Encodable {
    var run: String
    var status: String
    var created_at: String
    var invoices: Int
    var messages: Int
    var states: [String: Int]

    init(_ s: RunSummary) {
        run = s.run.name
        status = s.run.status.rawValue
        created_at = iso(s.run.createdAt)
        invoices = s.invoices
        messages = s.messages
        states = Dictionary(uniqueKeysWithValues: MessageState.allCases.map { ($0.rawValue, s.counts[$0] ?? 0) })
    }
}

func iso(_ seconds: Double) -> String { iso8601(seconds) ?? "" }
