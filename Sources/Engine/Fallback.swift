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
    /// The hand-over may have happened (a timeout, a gateway's 502 after the request left): the
    /// invoice stays claimed and is not sent again by itself (never twice).
    public var uncertain: Bool
    public init(_ description: String, uncertain: Bool = false) {
        self.description = description
        self.uncertain = uncertain
    }
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
        /// An earlier pass was stopped while handing it over, or the hand-over's answer did not
        /// say (`reason`): it may have gone. Not sent again by itself; the operator checks.
        case uncertain(address: String?, since: Double, reason: String?)
        /// Another pass claimed it while this one ran: it is that pass's to send.
        case inProgress(address: String?)
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
            var known = candidate.fallback
            if let done = known, again.contains(invoice.invoiceID), done.state == .sending || done.state == .sent {
                if dryRun {
                    known = nil
                } else if try await store.markFallback(
                    run: run, invoiceID: invoice.invoiceID, via: done.via, state: .failed,
                    detail: "to be sent again (--again; it was \(done.state.rawValue))", expecting: done, at: now())
                {
                    known?.state = .failed
                } else {
                    add(.inProgress(address: done.address))
                    continue
                }
            }
            if let done = known {
                switch done.state {
                case .sent:
                    add(.sentBefore(address: done.address, at: done.finishedAt ?? done.startedAt))
                    continue
                case .sending:
                    add(.uncertain(address: done.address, since: done.startedAt, reason: done.detail))
                    continue
                case .failed, .noAddress:
                    break
                }
            }
            guard let address = channel.address(for: invoice) else {
                if !dryRun {
                    _ = try await store.markFallback(
                        run: run, invoiceID: invoice.invoiceID, via: channel.name, state: .noAddress,
                        detail: "no email address in the manifest: call the tenant", expecting: nil, at: now())
                }
                add(.noAddress)
                continue
            }
            if dryRun {
                add(.wouldSend(address: address))
                continue
            }
            let claimedAt = now()
            guard try await store.claimFallback(run: run, invoiceID: invoice.invoiceID, via: channel.name, address: address, at: claimedAt)
            else {
                add(.inProgress(address: address))
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
                _ = try await store.finishFallback(
                    run: run, invoiceID: invoice.invoiceID, claimedAt: claimedAt, state: .sent, detail: note, at: now())
                add(.sent(address: address, note: note))
            case .failure(let problem) where problem.uncertain:
                // Kept `sending`, with why: the operator checks, then `--again`.
                _ = try await store.finishFallback(
                    run: run, invoiceID: invoice.invoiceID, claimedAt: claimedAt, state: .sending, detail: problem.description, at: now())
                add(.uncertain(address: address, since: claimedAt, reason: problem.description))
            case .failure(let problem):
                _ = try await store.finishFallback(
                    run: run, invoiceID: invoice.invoiceID, claimedAt: claimedAt, state: .failed, detail: problem.description, at: now())
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
        // The program's exit first (the killer bounds it), then its error output, briefly: a
        // program that leaves a child holding the pipe must not hold us.
        process.waitUntilExit()
        killer.cancel()
        _ = done.wait(timeout: .now() + 2)
        let errorBytes = errorData.withLock { $0 }
        if process.terminationReason == .uncaughtSignal {
            // Stopped mid-way: the message may have been accepted already.
            return .failure(FallbackProblem("\(path) did not finish within \(timeout) (stopped)", uncertain: true))
        }
        return .success(
            (process.terminationStatus, String(decoding: errorBytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}

/// The email for one invoice: a text part in the tenant's language (es, fr, pt, else en) with the
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

    /// The email's words in the tenant's language: the property system's locales (es, fr, pt,
    /// else English).
    struct Words {
        var subject, greeting, invoice, due, attached, link, why: String
    }

    var words: Words {
        let id = invoice.invoiceID, period = invoice.period
        switch invoice.locale.lowercased().prefix(2) {
        case "es":
            return Words(
                subject: "Factura \(id) — \(period)", greeting: "Hola \(invoice.tenantName):",
                invoice: "Le enviamos su factura \(id) de \(period) por un total de %@.", due: "Fecha límite de pago: %@.",
                attached: "La factura va adjunta en PDF.", link: "Puede verla aquí: %@",
                why: "No pudimos enviársela por WhatsApp; por eso le llega por correo.")
        case "fr":
            return Words(
                subject: "Facture \(id) — \(period)", greeting: "Bonjour \(invoice.tenantName),",
                invoice: "Voici votre facture \(id) de \(period), d'un montant de %@.", due: "Date limite de paiement : %@.",
                attached: "La facture est jointe en PDF.", link: "Vous pouvez la consulter ici : %@",
                why: "Nous n'avons pas pu vous l'envoyer par WhatsApp ; elle vous parvient donc par courriel.")
        case "pt":
            return Words(
                subject: "Fatura \(id) — \(period)", greeting: "Olá \(invoice.tenantName),",
                invoice: "Segue a sua fatura \(id) de \(period), no valor de %@.", due: "Vencimento: %@.",
                attached: "A fatura segue em anexo, em PDF.", link: "Pode consultá-la aqui: %@",
                why: "Não conseguimos enviá-la pelo WhatsApp; por isso chega por e-mail.")
        default:
            return Words(
                subject: "Invoice \(id) — \(period)", greeting: "Hello \(invoice.tenantName),",
                invoice: "Here is your invoice \(id) for \(period), amounting to %@.", due: "Please pay by %@.",
                attached: "The invoice is attached as a PDF.", link: "You can see it here: %@",
                why: "We could not send it over WhatsApp, so it comes by email.")
        }
    }

    public var subject: String { words.subject }

    public var text: String {
        let w = words
        let amount =
            Currency(code: invoice.currency).map {
                LocaleFormatting(locale: invoice.locale).money(Money(minorUnits: invoice.amountMinor, currency: $0))
            } ?? "\(invoice.amountMinor) \(invoice.currency)"
        // `%@` is filled by replacing it, not by String(format:): the manifest's text is never a format.
        var lines = [w.greeting, "", w.invoice.replacingOccurrences(of: "%@", with: amount)]
        if let due = invoice.dueDate { lines.append(w.due.replacingOccurrences(of: "%@", with: due)) }
        if pdf != nil {
            lines.append(w.attached)
        } else if let link = invoice.documentURL {
            lines.append(w.link.replacingOccurrences(of: "%@", with: link))
        }
        lines += ["", w.why]
        if let landlord = invoice.landlord { lines.append(landlord) }
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
            // The display name as an encoded word whatever it holds: a `,` `<` `@` in a name
            // ("Smith, John") can never make another recipient for `sendmail -t`.
            "To: =?UTF-8?B?\(Data(Self.header(invoice.tenantName).utf8).base64EncodedString())?= <\(Self.header(to))>",
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
        var configuration = HTTPClient.Configuration()
        // Never follow the emailer elsewhere: its headers (organizationId) would go along.
        configuration.redirectConfiguration = .disallow
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
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
        do {
            response = try await http.execute(request, timeout: .seconds(30))
        } catch {
            // Refused before the request left: nothing was sent. Anything else (a timeout, a
            // connection dropped after the request) may have reached the emailer.
            let refused = "\(error)".contains("connectTimeout") || "\(error)".localizedCaseInsensitiveContains("connection refused")
            throw FallbackProblem("the property system's emailer at \(endpoint) did not answer: \(error)", uncertain: !refused)
        }
        let answer: String
        do {
            answer = String(buffer: try await response.body.collect(upTo: 64 * 1024))
        } catch {
            throw FallbackProblem("the property system's emailer's answer was cut: \(error)", uncertain: true)
        }
        let code = Int(response.status.code)
        guard (200..<300).contains(code) else {
            // A 4xx refused the request; a 5xx (or a gateway's 502/504) may come after the mail left.
            throw FallbackProblem(
                "the property system's emailer answered HTTP \(code): \(answer.prefix(300))", uncertain: code >= 500)
        }
        // Its answer per tenant: an empty list, or an entry that says it failed, sent nothing.
        if let entries = (try? JSONSerialization.jsonObject(with: Data(answer.utf8))) as? [Any] {
            let failed = entries.compactMap { $0 as? [String: Any] }.filter {
                $0["error"] != nil || ["failed", "error"].contains(($0["status"] as? String)?.lowercased() ?? "")
            }
            if entries.isEmpty || failed.count == entries.count {
                throw FallbackProblem("the property system's emailer sent nothing: \(answer.prefix(300)) (no email address there?)")
            }
        }
        return "emailer: HTTP \(code) \(answer.prefix(500))"
    }
}
