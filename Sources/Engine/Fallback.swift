import AsyncHTTPClient
import Dispatcher
public import Foundation
import NIOCore
import NIOHTTP1
public import Store
import Synchronization

/// How an invoice WhatsApp could not carry goes out instead (`dispatcher fallback`).
public protocol FallbackChannel: Sendable {
    /// `smtp` or `property-system`, as stored with each fallback.
    var name: String { get }
    /// The address the invoice goes to, or nil when this channel has none for it (it is then
    /// recorded as needing a call).
    func address(for invoice: InvoiceRecord) -> String?
    /// Hands the invoice over; throws `FallbackProblem` with what went wrong. Returns a note kept
    /// with the record (e.g. "PDF attached", or the emailer's answer).
    func send(_ invoice: InvoiceRecord, to address: String) async throws(FallbackProblem) -> String
}

public struct FallbackProblem: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What a fallback pass did, invoice by invoice.
public struct FallbackReport: Sendable {
    public enum Outcome: Sendable, Equatable {
        case sent(address: String, note: String)
        case wouldSend(address: String)
        case failed(address: String, reason: String)
        case noAddress
        /// Sent by an earlier pass (never twice).
        case sentBefore(address: String?, at: Double)
        /// An earlier pass was stopped while handing it over: it may have gone. Not sent again
        /// by itself; the operator checks the mailbox.
        case uncertain(address: String?, since: Double)
    }

    public var outcomes: [(invoice: InvoiceRecord, reason: String, outcome: Outcome)] = []

    public func count(_ match: (Outcome) -> Bool) -> Int { outcomes.filter { match($0.outcome) }.count }
}

/// Sends each candidate of a run once through a channel, recording the claim before and the
/// outcome after, so that a crash or a second pass never sends an invoice twice.
public struct FallbackRunner: Sendable {
    public let store: any DispatchStore
    public let channel: any FallbackChannel

    public init(store: any DispatchStore, channel: any FallbackChannel) {
        self.store = store
        self.channel = channel
    }

    /// `again`: invoices to send once more although a pass sent them (or was stopped while
    /// handing them over): the operator's decision, after checking the mailbox.
    public func run(
        _ run: String, dryRun: Bool, again: Set<String> = [], now: @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) async throws -> FallbackReport {
        var report = FallbackReport()
        for candidate in try await store.fallbackCandidates(run: run) {
            let invoice = candidate.invoice
            func add(_ outcome: FallbackReport.Outcome) { report.outcomes.append((invoice, candidate.reason, outcome)) }
            if let done = candidate.fallback, again.contains(invoice.invoiceID), done.state == .sending || done.state == .sent {
                if !dryRun {
                    try await store.finishFallback(
                        run: run, invoiceID: invoice.invoiceID, via: done.via, state: .failed,
                        detail: "to be sent again (--again; it was \(done.state.rawValue))", at: now())
                }
            } else if let done = candidate.fallback {
                switch done.state {
                case .sent:
                    add(.sentBefore(address: done.address, at: done.finishedAt ?? done.startedAt))
                    continue
                case .sending:
                    add(.uncertain(address: done.address, since: done.startedAt))
                    continue
                case .failed, .noAddress:
                    break
                }
            }
            guard let address = channel.address(for: invoice) else {
                if !dryRun {
                    try await store.finishFallback(
                        run: run, invoiceID: invoice.invoiceID, via: channel.name, state: .noAddress,
                        detail: "no email address in the manifest: call the tenant", at: now())
                }
                add(.noAddress)
                continue
            }
            if dryRun {
                add(.wouldSend(address: address))
                continue
            }
            guard try await store.claimFallback(run: run, invoiceID: invoice.invoiceID, via: channel.name, address: address, at: now())
            else {
                // Another pass claimed it meanwhile.
                add(.uncertain(address: address, since: now()))
                continue
            }
            let sent: Result<String, FallbackProblem>
            do throws(FallbackProblem) {
                sent = .success(try await channel.send(invoice, to: address))
            } catch {
                sent = .failure(error)
            }
            switch sent {
            case .success(let note):
                try await store.finishFallback(
                    run: run, invoiceID: invoice.invoiceID, via: channel.name, state: .sent, detail: note, at: now())
                add(.sent(address: address, note: note))
            case .failure(let problem):
                try await store.finishFallback(
                    run: run, invoiceID: invoice.invoiceID, via: channel.name, state: .failed, detail: problem.description, at: now())
                add(.failed(address: address, reason: problem.description))
            }
        }
        return report
    }
}

// MARK: - By email, through the machine's mail transfer agent

/// The invoice as an email through the standard `sendmail` interface (`sendmail -i -t`: msmtp,
/// Postfix, Exim…): the MTA is configured for the operator's SMTP account; no SMTP is spoken here.
public struct SendmailChannel: FallbackChannel {
    public let name = "smtp"
    /// The program and its arguments (`/usr/sbin/sendmail`, `msmtp -C /etc/msmtp-billing`).
    public let command: [String]
    public let from: String
    /// Fetches the PDF to attach; nil (or a failed fetch) sends the link instead.
    public let attachments: (@Sendable (InvoiceRecord) async -> Result<[UInt8], DocumentProblem>)?
    public var timeout: Duration = .seconds(60)

    public init(
        command: [String], from: String, attachments: (@Sendable (InvoiceRecord) async -> Result<[UInt8], DocumentProblem>)?
    ) {
        self.command = command
        self.from = from
        self.attachments = attachments
    }

    public func address(for invoice: InvoiceRecord) -> String? {
        guard let email = invoice.email?.trimmingCharacters(in: .whitespaces), InvoiceEmail.isAddress(email) else { return nil }
        return email
    }

    public func send(_ invoice: InvoiceRecord, to address: String) async throws(FallbackProblem) -> String {
        var pdf: [UInt8]? = nil
        var note: String
        switch await attachments?(invoice) {
        case .success(let bytes)?:
            pdf = bytes
            note = "PDF attached"
        case .failure(let problem)?:
            note = "link sent (PDF not attached: \(problem.description))"
        case nil:
            note = invoice.documentURL == nil ? "no document" : "link sent"
        }
        let message = InvoiceEmail(invoice: invoice, from: from, to: address, pdf: pdf).rendered()
        let arguments = Array(command.dropFirst()) + ["-i", "-f", from, "-t"]
        let (status, errorText) = try await Self.run(command[0], arguments, input: message, timeout: timeout)
        guard status == 0 else {
            throw FallbackProblem(
                "\(command[0]) exited with status \(status)\(errorText.isEmpty ? "" : ": \(errorText.prefix(300))")")
        }
        if note == "link sent", invoice.documentURL == nil { note = "no document" }
        return note
    }

    /// Runs the MTA with the message on its standard input, on a thread of its own.
    static func run(
        _ program: String, _ arguments: [String], input: [UInt8], timeout: Duration
    ) async throws(FallbackProblem)
        -> (Int32, String)
    {
        let result: Result<(Int32, String), FallbackProblem> = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: runBlocking(program, arguments, input: input, timeout: timeout))
            }
        }
        return try result.get()
    }

    static func runBlocking(
        _ program: String, _ arguments: [String], input: [UInt8], timeout: Duration
    ) -> Result<
        (Int32, String), FallbackProblem
    > {
        let process = Process()
        let path =
            program.contains("/")
            ? program
            : (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/bin").split(separator: ":")
                .map { "\($0)/\(program)" }.first { FileManager.default.isExecutableFile(atPath: $0) } ?? program
        guard FileManager.default.isExecutableFile(atPath: path) else {
            return .failure(FallbackProblem("no mail program at \(program): install one (e.g. msmtp) or give --sendmail"))
        }
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let stdin = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch {
            return .failure(FallbackProblem("cannot start \(path): \(error.localizedDescription)"))
        }
        let deadline = DispatchTime.now() + .seconds(Int(timeout.components.seconds))
        let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: deadline, execute: killer)
        // A mail program that exits without reading its input must not take us with it: SIGPIPE
        // is ignored (the write then fails, and the exit status says why).
        signal(SIGPIPE, SIG_IGN)
        // Its error output is read on another thread while the message is written: a program that
        // fills its stderr pipe before reading stdin would otherwise wait on us for ever.
        let errorData = Mutex(Data())
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let bytes = stderr.fileHandleForReading.readDataToEndOfFile()
            errorData.withLock { $0 = bytes }
            done.signal()
        }
        try? stdin.fileHandleForWriting.write(contentsOf: Data(input))
        try? stdin.fileHandleForWriting.close()
        done.wait()
        let errorBytes = errorData.withLock { $0 }
        process.waitUntilExit()
        killer.cancel()
        if process.terminationReason == .uncaughtSignal {
            return .failure(FallbackProblem("\(path) did not finish within \(timeout) (stopped)"))
        }
        return .success(
            (process.terminationStatus, String(decoding: errorBytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}

/// The email for one invoice: a text part in the tenant's language (Spanish or English) with the
/// amount, period, due date and, when no PDF is attached, the link; the PDF attached when there
/// is one. Header values are stripped of line breaks (no header injection from a manifest) and
/// encoded per RFC 2047 when they are not ASCII.
public struct InvoiceEmail: Sendable {
    public var invoice: InvoiceRecord
    public var from: String
    public var to: String
    public var pdf: [UInt8]?
    public var date = Date()

    public init(invoice: InvoiceRecord, from: String, to: String, pdf: [UInt8]?) {
        self.invoice = invoice
        self.from = from
        self.to = to
        self.pdf = pdf
    }

    /// A plain address: one `@`, no spaces, no line breaks, no brackets or quotes.
    public static func isAddress(_ text: String) -> Bool {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".") && text.count <= 254
            && text.unicodeScalars.allSatisfy { $0.value > 32 && $0.value < 127 && !"<>()[]\\,;:\"".unicodeScalars.contains($0) }
    }

    var spanish: Bool { invoice.locale.lowercased().hasPrefix("es") }

    public var subject: String {
        spanish ? "Factura \(invoice.invoiceID) — \(invoice.period)" : "Invoice \(invoice.invoiceID) — \(invoice.period)"
    }

    public var text: String {
        let amount =
            Currency(code: invoice.currency).map {
                LocaleFormatting(locale: invoice.locale).money(Money(minorUnits: invoice.amountMinor, currency: $0))
            } ?? "\(invoice.amountMinor) \(invoice.currency)"
        var lines: [String] = []
        if spanish {
            lines.append("Hola \(invoice.tenantName):")
            lines.append("")
            lines.append("Le enviamos su factura \(invoice.invoiceID) de \(invoice.period) por un total de \(amount).")
            if let due = invoice.dueDate { lines.append("Fecha límite de pago: \(due).") }
            if pdf != nil {
                lines.append("La factura va adjunta en PDF.")
            } else if let link = invoice.documentURL {
                lines.append("Puede verla aquí: \(link)")
            }
            lines.append("")
            lines.append("No pudimos enviársela por WhatsApp; por eso le llega por correo.")
            if let landlord = invoice.landlord { lines.append(landlord) }
        } else {
            lines.append("Hello \(invoice.tenantName),")
            lines.append("")
            lines.append("Here is your invoice \(invoice.invoiceID) for \(invoice.period), amounting to \(amount).")
            if let due = invoice.dueDate { lines.append("Please pay by \(due).") }
            if pdf != nil {
                lines.append("The invoice is attached as a PDF.")
            } else if let link = invoice.documentURL {
                lines.append("You can see it here: \(link)")
            }
            lines.append("")
            lines.append("We could not send it over WhatsApp, so it comes by email.")
            if let landlord = invoice.landlord { lines.append(landlord) }
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// The whole message, CRLF line ends, ready for `sendmail -t`.
    public func rendered() -> [UInt8] {
        let boundary = "dispatcher-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        let idPart = (invoice.run + "." + invoice.invoiceID).unicodeScalars.map {
            CharacterSet.alphanumerics.contains($0) && $0.isASCII ? String($0) : "-"
        }.joined()
        let domain = from.split(separator: "@").last.map(String.init) ?? "dispatcher.invalid"
        var head = [
            "From: \(Self.header(from))",
            "To: \(Self.encodedWord(invoice.tenantName)) <\(Self.header(to))>",
            "Subject: \(Self.encodedWord(subject))",
            "Date: \(formatter.string(from: date))",
            "Message-ID: <fallback.\(idPart)@\(Self.header(domain))>",
            "MIME-Version: 1.0",
        ]
        var body = ""
        let textPart =
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + Self.base64Lines(Array(text.utf8))
        if let pdf {
            head.append("Content-Type: multipart/mixed; boundary=\"\(boundary)\"")
            let filename = idPart.isEmpty ? "invoice.pdf" : "\(Self.header(invoice.invoiceID).filter { $0 != "\"" }).pdf"
            body += "--\(boundary)\r\n" + textPart
            body += "--\(boundary)\r\n"
            body += "Content-Type: application/pdf; name=\"\(filename)\"\r\n"
            body += "Content-Disposition: attachment; filename=\"\(filename)\"\r\n"
            body += "Content-Transfer-Encoding: base64\r\n\r\n"
            body += Self.base64Lines(pdf)
            body += "--\(boundary)--\r\n"
        } else {
            head.append(contentsOf: ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64"])
            body = Self.base64Lines(Array(text.utf8))
        }
        return Array((head.joined(separator: "\r\n") + "\r\n\r\n" + body).utf8)
    }

    /// A header value without line breaks or control characters.
    static func header(_ value: String) -> String {
        String(value.unicodeScalars.filter { $0.value >= 32 && $0.value != 127 }.map(Character.init))
    }

    /// `=?UTF-8?B?…?=` when the text is not printable ASCII.
    static func encodedWord(_ value: String) -> String {
        let clean = header(value)
        if clean.unicodeScalars.allSatisfy({ $0.isASCII }) && !clean.contains("\"") { return clean }
        return "=?UTF-8?B?\(Data(clean.utf8).base64EncodedString())?="
    }

    static func base64Lines(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed]) + "\r\n"
    }
}

// MARK: - Through the property system's emailer

/// The property system's own emailer, as its landlord UI calls it: `POST {origin}/api/v2/emails`
/// `{"document": "invoice", "tenantIds": [id], "terms": [term]}` with the service token; the
/// emailer finds the tenant's addresses and attaches the invoice itself.
public struct PropertySystemEmailChannel: FallbackChannel {
    public let name = "property-system"
    public let endpoint: String
    public let headers: [(String, String)]
    public let document: String
    let http: HTTPClient

    public init(origin: String, headers: [(String, String)], document: String = "invoice", path: String = "/api/v2/emails") {
        endpoint = origin + path
        self.headers = headers
        self.document = document
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)
    }

    public func shutdown() async throws { try await http.shutdown() }

    /// The property system's term (`YYYYMMDDHH`) of a period as the manifest gave it: `2026-03`
    /// (a month: `2026030100`), `2026-03-15` (`2026031500`) or the term itself.
    public static func term(_ period: String) -> Int? {
        let digits = period.filter(\.isNumber)
        guard digits.count == period.filter({ $0 != "-" }).count else { return nil }
        switch digits.count {
        case 6: return Int(digits + "0100")
        case 8: return Int(digits + "00")
        case 10: return Int(digits)
        default: return nil
        }
    }

    /// The tenant's id in the property system: the emailer needs it (and the term); the address is
    /// the property system's to know.
    public func address(for invoice: InvoiceRecord) -> String? {
        guard let id = invoice.tenantID?.trimmingCharacters(in: .whitespaces), !id.isEmpty else { return nil }
        return "tenant " + id
    }

    public func send(_ invoice: InvoiceRecord, to address: String) async throws(FallbackProblem) -> String {
        guard let tenant = invoice.tenantID?.trimmingCharacters(in: .whitespaces), !tenant.isEmpty else {
            throw FallbackProblem("no tenant id")
        }
        struct Body: Encodable {
            var document: String
            var tenantIds: [String]
            var terms: [Int]
        }
        guard let term = Self.term(invoice.period) else {
            throw FallbackProblem("the period '\(invoice.period)' is not a term the property system knows (e.g. 2026-03 or 2026030100)")
        }
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "Content-Type", value: "application/json")
        do {
            request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(Body(document: document, tenantIds: [tenant], terms: [term]))))
        } catch {
            throw FallbackProblem("cannot encode the request: \(error)")
        }
        let response: HTTPClientResponse
        let answer: String
        do {
            response = try await http.execute(request, timeout: .seconds(30))
            answer = String(buffer: try await response.body.collect(upTo: 64 * 1024))
        } catch {
            throw FallbackProblem("the property system's emailer at \(endpoint) did not answer: \(error)")
        }
        guard (200..<300).contains(Int(response.status.code)) else {
            throw FallbackProblem("the property system's emailer answered HTTP \(response.status.code): \(answer.prefix(300))")
        }
        // Its answer, per tenant, kept as given (the emailer reports which addresses it used).
        return "emailer: HTTP \(response.status.code) \(answer.prefix(500))"
    }
}
