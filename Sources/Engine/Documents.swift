import AsyncHTTPClient
import Crypto
public import Dispatcher
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
public import Store
public import WhatsApp

/// Why one invoice's PDF cannot be sent: that invoice fails with it, never the run.
public struct DocumentProblem: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Fetches invoice PDFs from the property system with the credentials given (its answer is
/// checked: a 200, at most `maxBytes`, and a PDF, not a login page). Redirects are not followed:
/// the credentials must not travel to another host.
public final class DocumentFetcher: Sendable {
    private let http: HTTPClient
    public let maxBytes: Int
    public let timeout: Duration

    public init(maxBytes: Int = 20 * 1024 * 1024, timeout: Duration = .seconds(30)) {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout.connect = .seconds(5)
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        self.maxBytes = maxBytes
        self.timeout = timeout
    }

    public func shutdown() async throws { try await http.shutdown() }

    public func fetch(_ url: String, headers: [(String, String)]) async throws(DocumentProblem) -> [UInt8] {
        var request = HTTPClientRequest(url: url)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "Accept", value: "application/pdf")
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeAmount(timeout))
        } catch {
            throw DocumentProblem("the invoice PDF could not be fetched from \(url): \(error)")
        }
        guard response.status == .ok else {
            let hint =
                [401, 403].contains(Int(response.status.code))
                ? " (the property system refused the credentials: check DISPATCHER_PROPERTY_SYSTEM_TOKEN or the caller's token and organizationId)"
                : ""
            throw DocumentProblem("the property system answered HTTP \(response.status.code) for the invoice PDF \(url)\(hint)")
        }
        if let length = response.headers.first(name: "Content-Length").flatMap(Int.init), length > maxBytes {
            throw DocumentProblem("the invoice PDF \(url) is \(length) bytes, more than the \(maxBytes) allowed")
        }
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: maxBytes)
        } catch {
            throw DocumentProblem("the invoice PDF \(url) is larger than the \(maxBytes) bytes allowed, or was cut: \(error)")
        }
        let bytes = Array(body.readableBytesView)
        guard bytes.starts(with: Array("%PDF-".utf8)) else {
            let type = response.headers.first(name: "Content-Type") ?? "no Content-Type"
            throw DocumentProblem("the property system's answer for \(url) is not a PDF (\(type))")
        }
        return bytes
    }
}

/// A PDF's media id for one sender number: fetched, hashed, and uploaded to Meta unless the same
/// link gave the same bytes less than 29 days ago (Meta keeps uploads 30 days).
public struct DocumentUploader: Sendable {
    public let store: any DispatchStore
    public let client: GraphClient
    public let fetcher: DocumentFetcher
    /// How long an uploaded id is reused: a day short of Meta's 30.
    public static let reuseSeconds: Double = 29 * 24 * 3600

    public init(store: any DispatchStore, client: GraphClient, fetcher: DocumentFetcher) {
        self.store = store
        self.client = client
        self.fetcher = fetcher
    }

    /// Throws `DocumentProblem` (this invoice cannot be sent) or, when Meta refuses the upload in
    /// a way that dooms every upload (token, permissions, account: `ErrorClass.halt`), `GraphError`.
    public func mediaID(for url: String, filename: String, headers: [(String, String)]) async throws -> (id: String, reused: Bool) {
        let bytes = try await fetcher.fetch(url, headers: headers)
        let hash = lowercaseHex(SHA256.hash(data: bytes))
        let sender = client.configuration.phoneNumberID
        let now = Date().timeIntervalSince1970
        if let id = try await store.cachedMedia(url: url, sha256: hash, sender: sender, notBefore: now - Self.reuseSeconds) {
            return (id, true)
        }
        var lastError: GraphError? = nil
        for retry in 0..<3 {
            if retry > 0 { try await Task.sleep(for: RetryPolicy.billingRun.backoff(retry: retry)) }
            do {
                let id = try await client.uploadMedia(bytes, filename: filename)
                try await store.saveMedia(url: url, sha256: hash, sender: sender, mediaID: id, at: Date().timeIntervalSince1970)
                return (id, false)
            } catch let error as GraphError {
                lastError = error
                switch error.code.map(ErrorClass.of(code:)) {
                case .halt?: throw error
                case .transient?, .throttled?, nil: continue  // no answer, or a passing error: again
                default: break
                }
                break
            }
        }
        throw DocumentProblem("Meta refused the invoice PDF's upload: \(lastError?.description ?? "no answer")")
    }
}

/// Before a run sends: every queued message whose document is on the property system gets its
/// PDF uploaded to Meta and is then sent by media id; one whose PDF cannot be had fails with the
/// reason (the rest of the run goes on). Links elsewhere (public https) stay links.
public struct MediaStager: Sendable {
    public let uploader: DocumentUploader
    public let propertySystem: PropertySystem
    /// Sent to the property system with each fetch (its service token, `organizationId`).
    public let headers: [(String, String)]
    public let logger: Logger
    public var concurrency = 4

    public init(uploader: DocumentUploader, propertySystem: PropertySystem, headers: [(String, String)], logger: Logger) {
        self.uploader = uploader
        self.propertySystem = propertySystem
        self.headers = headers
        self.logger = logger
    }

    public struct Report: Sendable, Equatable {
        public var uploaded = 0
        public var reused = 0
        /// Messages failed because their PDF could not be had, and the first reasons.
        public var failed = 0
        public var reasons: [String] = []

        public init() {}

        /// No document of the run is on the property system.
        public var isEmpty: Bool { uploaded == 0 && reused == 0 && failed == 0 }
    }

    public func stage(run: String) async throws -> Report {
        let store = uploader.store
        // Ids only (bodies are read back per message when rewritten): memory stays small
        // whatever the run's size.
        var byLink: [String: [(id: String, filename: String)]] = [:]
        var after: Int64? = nil
        while true {
            let page = try await store.queuedMessages(run: run, after: after, limit: 1000)
            guard let last = page.last else { break }
            after = last.sequence
            for message in page {
                guard let body = message.requestBody, let document = TemplateMessageRequest.documentLink(inBody: body),
                    propertySystem.owns(document.link)
                else { continue }
                byLink[document.link, default: []].append((message.id, document.filename ?? "invoice.pdf"))
            }
        }
        guard !byLink.isEmpty else { return Report() }
        logger.info("uploading the property system's PDFs to Meta", metadata: ["documents": "\(byLink.count)"])
        var report = Report()
        let links = Array(byLink.keys.sorted())
        let headers = self.headers
        let uploader = self.uploader
        try await withThrowingTaskGroup(of: (String, Result<(id: String, reused: Bool), DocumentProblem>).self) { group in
            var next = 0
            func startNext() {
                guard next < links.count else { return }
                let link = links[next]
                let filename = byLink[link]![0].filename
                next += 1
                group.addTask {
                    do {
                        return (link, .success(try await uploader.mediaID(for: link, filename: filename, headers: headers)))
                    } catch let problem as DocumentProblem {
                        return (link, .failure(problem))
                    }
                }
            }
            for _ in 0..<concurrency { startNext() }
            while let (link, result) = try await group.next() {
                let now = Date().timeIntervalSince1970
                switch result {
                case .success(let media):
                    if media.reused { report.reused += 1 } else { report.uploaded += 1 }
                    for message in byLink[link]! {
                        guard let stored = try await store.message(message.id), stored.state == .queued else { continue }
                        if let body = stored.requestBody.flatMap({
                            TemplateMessageRequest.body($0, sendingDocument: link, asMedia: media.id)
                        }) {
                            _ = try await store.replaceQueuedRequest(messageID: message.id, body: body, at: now)
                        } else if try await store.failQueued(
                            messageID: message.id, title: "not sent: the invoice PDF could not be sent",
                            details: "its stored request does not carry the link \(link) any more", at: now)
                        {
                            // Never sent with a link Meta cannot fetch (its 131053 would halt the run).
                            report.failed += 1
                        }
                    }
                case .failure(let problem):
                    for message in byLink[link]! {
                        if try await store.failQueued(
                            messageID: message.id, title: "not sent: the invoice PDF could not be sent", details: problem.description,
                            at: now)
                        {
                            report.failed += 1
                        }
                    }
                    if report.reasons.count < 5 { report.reasons.append(problem.description) }
                }
                startNext()
            }
        }
        return report
    }
}
