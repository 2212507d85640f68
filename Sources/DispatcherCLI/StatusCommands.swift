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
        let store = try await database.openExisting(settings: settings)
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

/// `status --json`, in the convention every `--json` follows: snake_case keys, ISO 8601 times
/// (UTC, `Z`).
struct StatusJSON: Encodable {
    struct Message: Encodable {
        var id, run, invoice_id, phone, template, language, state: String
        var wamid, error_title, error_details, skip_reason: String?
        var error_code: Int?
        var attempts: Int
        var created_at, updated_at: String
        var accepted_at, sent_at, delivered_at, read_at, failed_at: String?
        var landlord, tenant_name: String?
    }
    struct Event: Encodable {
        var wamid, status, timestamp, received_at: String
        var applied: Bool
        var error_code: Int?
        var error_title, error_details: String?
    }
    struct Attempt: Encodable {
        var number: Int
        var started_at: String
        var finished_at: String?
        var outcome: String
        var wamid: String?
        var error_code: Int?
        var error_title: String?
    }
    var message: Message
    var events: [Event]
    var attempts: [Attempt]

    init(message m: MessageRecord, events: [StatusEventRecord], attempts: [AttemptRecord]) {
        message = Message(
            id: m.id, run: m.run, invoice_id: m.invoiceID, phone: m.phone, template: m.template, language: m.language,
            state: m.state.rawValue, wamid: m.wamid, error_title: m.errorTitle, error_details: m.errorDetails, skip_reason: m.skipReason,
            error_code: m.errorCode, attempts: m.attempts, created_at: iso(m.createdAt), updated_at: iso(m.updatedAt),
            accepted_at: iso8601(m.acceptedAt), sent_at: iso8601(m.sentAt), delivered_at: iso8601(m.deliveredAt),
            read_at: iso8601(m.readAt), failed_at: iso8601(m.failedAt), landlord: m.landlord, tenant_name: m.tenantName)
        self.events = events.map {
            Event(
                wamid: $0.wamid, status: $0.status, timestamp: iso($0.timestamp), received_at: iso($0.receivedAt), applied: $0.applied,
                error_code: $0.errorCode, error_title: $0.errorTitle, error_details: $0.errorDetails)
        }
        self.attempts = attempts.map {
            Attempt(
                number: $0.number, started_at: iso($0.startedAt), finished_at: iso8601($0.finishedAt), outcome: $0.outcome.rawValue,
                wamid: $0.wamid, error_code: $0.errorCode, error_title: $0.errorTitle)
        }
    }
}

struct RunsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "runs", abstract: "List runs with their messages counted by state.")

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let store = try await database.openExisting(settings: settings)
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
